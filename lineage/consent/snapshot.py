"""A consent snapshot: who had consent at one instant, and the hash that proves it.

The hash is ``sha256`` of the sorted consenting patient ids, one per line, each line ending
in ``\\n``. A dataset records it with the snapshot time; exporting the registry as of that
time later must give the same hash, which proves the history behind the dataset was not
rewritten. The processing job receives the snapshot as a file and checks the hash itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.consent.events import ConsentError

SNAPSHOT_FILE = "snapshot.json"


def consenting_sha256(patient_ids: list[str] | set[str]) -> str:
    text = "".join(f"{pid}\n" for pid in sorted(patient_ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    as_of: str
    consenting: list[str]  # sorted
    withdrawn: list[str]  # sorted: known patients without consent at `as_of`
    sha256: str
    head_seq: int  # the last event at or before `as_of`: where in the chain this was taken
    head_hash: str
    # which consent log (a keyed id of the registry's database): a head recorded elsewhere
    # is an anchor of this log only, never of another registry's on the same MLflow
    log_id: str = ""

    @classmethod
    def build(
        cls,
        as_of: str,
        states: dict[str, str],
        head_seq: int,
        head_hash: str,
        log_id: str = "",
    ) -> Snapshot:
        consenting = sorted(p for p, s in states.items() if s == "granted")
        withdrawn = sorted(p for p, s in states.items() if s != "granted")
        return cls(
            as_of,
            consenting,
            withdrawn,
            consenting_sha256(consenting),
            head_seq,
            head_hash,
            log_id,
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SNAPSHOT_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> Snapshot:
        """Read a snapshot file and check its hash (a job trusts nothing it did not verify)."""
        path = directory / SNAPSHOT_FILE
        try:
            data = json.loads(path.read_text())
            snapshot = cls(
                as_of=str(data["as_of"]),
                consenting=[str(p) for p in data["consenting"]],
                withdrawn=[str(p) for p in data.get("withdrawn", [])],
                sha256=str(data["sha256"]),
                head_seq=int(data["head_seq"]),
                head_hash=str(data["head_hash"]),
                log_id=str(data.get("log_id", "")),
            )
        except FileNotFoundError:
            raise ConsentError(
                f"no consent snapshot at {path}",
                "the record pattern needs one: `lineage process --pattern record` takes it "
                "from the consent registry (import it first with `lineage consent import`)",
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConsentError(f"the consent snapshot {path} is malformed: {exc}") from None
        if consenting_sha256(snapshot.consenting) != snapshot.sha256:
            raise ConsentError(
                f"the consent snapshot {path} does not hash to its recorded sha256",
                "it was changed after it was taken; take a new one",
            )
        return snapshot
