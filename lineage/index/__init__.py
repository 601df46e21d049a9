"""Where record-level answers come from: the lineage index (record -> dataset -> run ->
registered version, a rebuildable cache: `store`) or a full scan of MLflow (`source`), both
behind `source.LineageSource`. The audits read either; the index is built from the scan's
readers, so both live here, below the audits."""
