"""Erasure: a withdrawn patient's images removed from every copy, with tombstones that keep
the lineage verifiable (`plan` finds the copies, `erase` deletes and records, `log` keeps the
hash-chained, anchored tombstones, `evidence` writes the record a regulator files)."""

from __future__ import annotations

from collections.abc import Sequence

from lineage.config import Settings
from lineage.dvcremote import DirEntry, ErasedObject, ObjectProblem
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
    settings: Settings, problems: list[ObjectProblem], entries: Sequence[DirEntry] = ()
) -> tuple[list[ErasedObject], list[ObjectProblem]]:
    """Missing objects that an erasure removed (with a tombstone), and the real problems:
    among them, an erased object that is in the remote again (`entries`: the listing that
    was checked): erased data that came back is a failure, never "intact"."""
    erased = erased_objects(settings)
    found = [
        ErasedObject(p.relpath, p.md5, erased[p.md5])
        for p in problems
        if p.problem == "missing" and p.md5 in erased
    ]
    rest = [p for p in problems if not (p.problem == "missing" and p.md5 in erased)]
    missing = {p.md5 for p in problems if p.problem == "missing"}
    back = [
        ObjectProblem(e.relpath, e.md5, f"erased under {erased[e.md5]} but present again")
        for e in entries
        if e.md5 in erased and e.md5 not in missing
    ]
    return found, sorted([*rest, *back], key=lambda p: p.relpath)


def summarize_erased(erased: list[ErasedObject]) -> str:
    """`N records erased under request REF[, REF2]`."""
    requests = sorted({e.request for e in erased})
    return f"{len(erased)} records erased under request {', '.join(requests)}"
