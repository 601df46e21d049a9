"""The lineage questions as plain functions returning typed results (the CLI only prints).

- `trace`: which data trained this model (endpoint, alias, version or run)?
- `reproduce`: is the recorded data still byte for byte restorable (and, with the training
  step `lineage.ops.reproduce` gives it, does retraining on it give the recorded metrics)?
- `verify`: is every object of a dataset version still in the remote, intact?
- `compare`: why did two model versions perform differently?
"""
