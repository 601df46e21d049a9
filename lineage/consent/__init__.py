"""The consent registry: an append-only, hash-chained event log of grants and withdrawals.

- `events`: the event record, its hash chain, UTC timestamps;
- `registry_csv`: the reference sample's registry CSV, parsed and validated line by line;
- `snapshot`: the consenting set at an instant, and its sha256 (what a dataset records);
- `store`: the log in any SQLAlchemy database (SQLite by default, PostgreSQL in production).
"""
