"""model-lineage: every model traceable to the exact records that trained it.

The shared core (configuration, errors, redaction, later git/DVC, MLflow and consent logic)
and the `lineage` command line live here; the jobs (`processing`, `training`, `inference`)
and the local harness (`local`) build on it.
"""

__version__ = "0.1.0"
