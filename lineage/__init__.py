"""model-lineage: every model traceable to the exact records that trained it.

The Python API is the same set of functions the command line calls, returning typed results::

    from lineage import Settings, trace, reproduce, verify, compare

    chain = trace(Settings.from_env(), model="digits-mobilenetv3@champion")
    assert chain.ok, chain.failed

They are imported lazily, so ``import lineage`` (and the CLI's start) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lineage.version import __version__

_API = {
    "Settings": "lineage.config",
    "trace": "lineage.query.trace",
    "reproduce": "lineage.ops.reproduce",  # the data check, and retraining (an operation)
    "verify": "lineage.query.verify",
    "compare": "lineage.query.compare",
}

__all__ = ["Settings", "__version__", "compare", "reproduce", "trace", "verify"]

if TYPE_CHECKING:
    from lineage.config import Settings
    from lineage.ops.reproduce import reproduce
    from lineage.query.compare import compare
    from lineage.query.trace import trace
    from lineage.query.verify import verify


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'lineage' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
