"""The code version every record carries (`code_version`, the OpenLineage producer, reports).

A module of its own, in the core, so that the jobs and the lower layers can read it without
importing the package's public API (``lineage/__init__.py`` names the query functions).
"""

__version__ = "0.1.0"
