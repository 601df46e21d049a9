"""Deleted is gone: what an erasure does below the S3 API, and how it checks it.

A `DeleteObject` on SeaweedFS only marks the needle deleted; the bytes stay in the volume file
(`<bucket>_<n>.dat`) until the volume is compacted, and with the default garbage threshold
(30%) that may be never. On AWS, a versioned bucket keeps every noncurrent version of the key.
So after deleting through the API an erasure

- removes every version and delete marker of the key the store lists (`purge_versions`);
- on the embedded store of the process runtime (its volumes are on this machine), asks the
  SeaweedFS master to vacuum with a threshold that forces compaction, and searches the
  bucket's volume files for the object's bytes until none is left (`EmbeddedStore`).

The search looks for windows of the object's bytes (its start, middle and end), and first
confirms they *are* found before the delete (a positive control): a store that kept the bytes
in another form (compressed, encrypted) is reported as "not searchable", never as gone.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from botocore.exceptions import ClientError

from lineage.config import Settings
from lineage.dvcremote import DvcRemote
from lineage.erasure.plan import PlannedObject
from lineage.errors import LineageError

WINDOW = 1024  # bytes per sample: long enough to be one record's, short enough to sit in one chunk
VACUUM_DEADLINE_S = 60.0  # the filer hands deletions to the volumes within seconds
# compaction of every volume holding any garbage (SeaweedFS's default threshold is 0.3)
FORCE_THRESHOLD = "0.000001"


class DiskError(LineageError):
    """The store could not be compacted, or the erased bytes are still on its disk."""


def windows(data: bytes) -> list[bytes]:
    """The samples of `data` a search looks for: all of it when short, else three windows."""
    if len(data) <= 3 * WINDOW:
        return [data]
    middle = len(data) // 2
    return [data[:WINDOW], data[middle : middle + WINDOW], data[-WINDOW:]]


def purge_versions(client: Any, bucket: str, key: str) -> int:
    """Delete every version and delete marker of `key` the store lists; how many (0 on an
    unversioned bucket). A store without the versions API keeps none to purge."""
    removed = 0
    try:
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry.get("Key") != key or entry.get("VersionId") in (None, "null"):
                    continue
                client.delete_object(Bucket=bucket, Key=key, VersionId=entry["VersionId"])
                removed += 1
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NotImplemented", "MethodNotAllowed"):
            return 0
        raise
    return removed


@dataclass(frozen=True)
class EmbeddedStore:
    """The stack's own SeaweedFS, when its volumes are on this machine."""

    volumes_dir: Path
    master_url: str

    @classmethod
    def of(cls, settings: Settings) -> EmbeddedStore | None:
        """The process runtime's embedded store; None for an external store or one in a
        container (its disk is not ours to search)."""
        directory = settings.home / "s3"
        if not settings.embedded_s3 or settings.stack_runtime != "process":
            return None
        if not directory.is_dir():
            return None
        return cls(directory, f"http://127.0.0.1:{settings.seaweed_ports[0]}")

    def volumes(self, bucket: str) -> list[Path]:
        return sorted(self.volumes_dir.glob(f"{bucket}_*.dat"))

    def holding(self, bucket: str, samples: Mapping[str, list[bytes]]) -> dict[str, list[str]]:
        """For each object (by md5), the volume files holding any of its samples."""
        found: dict[str, list[str]] = {md5: [] for md5 in samples}
        if not samples:
            return found
        for volume in self.volumes(bucket):
            if volume.stat().st_size == 0:
                continue
            with (
                volume.open("rb") as handle,
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
            ):
                for md5, pieces in samples.items():
                    if any(data.find(piece) != -1 for piece in pieces):
                        found[md5].append(volume.name)
        return found

    def vacuum(self) -> None:
        try:
            response = httpx.get(
                f"{self.master_url}/vol/vacuum",
                params={"garbageThreshold": FORCE_THRESHOLD},
                timeout=300,
            )
        except httpx.HTTPError as exc:
            raise DiskError(
                f"the SeaweedFS master at {self.master_url} did not compact the volumes ({exc})",
                "the objects are deleted but their bytes may still be on disk: bring the stack "
                "back (`lineage stack up`) and run the same `lineage erase` again",
            ) from None
        if not response.is_success:
            raise DiskError(
                f"the SeaweedFS master answered {response.status_code} to a vacuum",
                "run the same `lineage erase` again once the store is healthy",
            )

    def vacuum_until_gone(
        self, bucket: str, samples: Mapping[str, list[bytes]], deadline_s: float = VACUUM_DEADLINE_S
    ) -> None:
        """Compact until no volume holds any sample (the filer passes deletions on to the
        volume servers asynchronously, so the first vacuum may come too early)."""
        deadline = time.monotonic() + deadline_s
        while True:
            self.vacuum()
            left = {md5: where for md5, where in self.holding(bucket, samples).items() if where}
            if not left:
                return
            if time.monotonic() > deadline:
                shown = "; ".join(f"{md5} in {', '.join(where)}" for md5, where in left.items())
                raise DiskError(
                    f"erased objects' bytes are still in the store's volume files: {shown}",
                    "nothing was recorded yet; run the same `lineage erase` again (it vacuums "
                    "again), and check the store's garbage settings",
                )
            time.sleep(1)


@dataclass
class DiskCheck:
    """The embedded store's volume files, searched before the delete (a positive control)
    and after a forced vacuum (nothing left)."""

    store: EmbeddedStore | None
    samples: dict[str, dict[str, list[bytes]]]  # bucket -> md5 -> windows of its bytes
    before: dict[str, list[str]]  # md5 -> volume files holding it before the delete
    buckets: set[str]

    @classmethod
    def prepare(
        cls,
        store: EmbeddedStore | None,
        targets: list[PlannedObject],
        remotes: dict[str, DvcRemote],
    ) -> DiskCheck:
        samples: dict[str, dict[str, list[bytes]]] = {}
        before: dict[str, list[str]] = {}
        buckets = {remotes[item.remote_url].bucket for item in targets}
        if store is None:
            return cls(None, samples, before, buckets)
        for item in targets:
            remote = remotes[item.remote_url]
            data = remote.read(item.md5) if item.present else None
            if data:
                samples.setdefault(remote.bucket, {})[item.md5] = windows(data)
        for bucket, objects in samples.items():
            before.update(store.holding(bucket, objects))
        return cls(store, samples, before, buckets)

    def finish(self, absence: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        if self.store is None:
            for checks in absence.values():
                checks["disk"] = "not searched: the store's disk is not on this machine"
            return absence
        searched = {
            bucket: {md5: pieces for md5, pieces in objects.items() if self.before.get(md5)}
            for bucket, objects in self.samples.items()
        }
        for bucket in self.buckets:
            self.store.vacuum_until_gone(bucket, searched.get(bucket, {}))
        for md5, checks in absence.items():
            if self.before.get(md5):
                bucket = next(b for b, objects in searched.items() if md5 in objects)
                checks["disk"] = (
                    f"found before the delete in {', '.join(self.before[md5])}; after a forced "
                    f"vacuum, in none of the {len(self.store.volumes(bucket))} volume files "
                    f"of {bucket}"
                )
            elif any(md5 in objects for objects in self.samples.values()):
                checks["disk"] = (
                    "vacuumed; not searchable: the store does not keep the bytes as they are"
                )
            else:
                checks["disk"] = (
                    "vacuumed; NOT confirmed: an earlier, interrupted run deleted the object, "
                    "so its bytes could not be searched for (a store killed before it passed "
                    "the delete on to its volumes keeps them as orphaned chunks: run "
                    "`volume.fsck -reallyDeleteFromVolume` in `weed shell`)"
                )
        return absence
