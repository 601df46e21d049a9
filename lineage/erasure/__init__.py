"""Erasure: a withdrawn patient's images removed from every copy, with tombstones that keep
the lineage verifiable (`plan` finds the copies, `erase` deletes and records, `log` keeps the
hash-chained, anchored tombstones, `evidence` writes the record a regulator files)."""

from __future__ import annotations

from lineage.config import Settings
from lineage.dvcremote import ErasedObject, ObjectProblem
from lineage.erasure.log import ErasureEvent, ErasureLog, Tombstone

__all__ = [
    "ErasedObject",
    "ErasureEvent",
    "ErasureLog",
    "Tombstone",
    "erased_objects",
    "separate_erased",
]


def erased_objects(settings: Settings) -> dict[str, str]:
    """md5 -> the request that erased it, for every object the erasure log tombstoned."""
    erased = ErasureLog.from_settings(settings).erased()
    return {md5: event.request for md5, (event, _) in erased.items()}


def separate_erased(
    settings: Settings, problems: list[ObjectProblem]
) -> tuple[list[ErasedObject], list[ObjectProblem]]:
    """Missing objects that an erasure removed (with a tombstone), and the real problems.
    The erasure log is read only when something is missing: a whole dataset never needs it."""
    if not any(p.problem == "missing" for p in problems):
        return [], problems
    erased = erased_objects(settings)
    found = [
        ErasedObject(p.relpath, p.md5, erased[p.md5])
        for p in problems
        if p.problem == "missing" and p.md5 in erased
    ]
    rest = [p for p in problems if not (p.problem == "missing" and p.md5 in erased)]
    return found, rest


def summarize_erased(erased: list[ErasedObject]) -> str:
    """`N records erased under request REF[, REF2]`."""
    requests = sorted({e.request for e in erased})
    return f"{len(erased)} records erased under request {', '.join(requests)}"
