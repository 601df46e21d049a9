"""One comparison of two records of the same fact, and whether they agree: what every check
of the chain reports (trace, deploy, promote, the signature checks). A module of its own so
the inference server, which has no MLflow client, can use it too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """One comparison: two records of the same fact, and whether they agree."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def agree(name: str, what: str, expected: object, actual: object) -> Check:
    """A check that two records hold the same value."""
    if expected == actual:
        return Check(name, True, f"{what}: {actual}")
    return Check(name, False, f"{what}: expected {expected}, found {actual}")
