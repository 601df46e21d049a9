"""The lineage index (record -> dataset -> run -> registered version), a rebuildable cache."""
