"""The lineage bridge: the exact dataset of a tag, verified before a single step of training.

Clone the DVC repo at the tag, `dvc pull`, then verify every byte, fail-closed
(`lineage.datarepo.pull_and_verify`): any mismatch fails the job and names the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lineage import datarepo
from lineage.datarepo import DataVerificationError
from lineage.dvcremote import ErasedObject
from lineage.manifest import ManifestRow

log = logging.getLogger("lineage.training")

__all__ = ["DataVerificationError", "FetchedDataset", "fetch_dataset"]


@dataclass(frozen=True)
class FetchedDataset:
    dir: Path
    tag: str
    commit: str
    dataset_md5: str
    manifest_sha256: str
    rows: list[ManifestRow]  # the records to train on (erased ones left out)
    manifest_path: Path
    erased: list[ErasedObject] = field(default_factory=list)

    @property
    def repo_dir(self) -> Path:
        return self.dir.parent


def fetch_dataset(
    repo_url: str, tag: str, workdir: Path, erased: Mapping[str, str] | None = None
) -> FetchedDataset:
    """`erased`: md5 -> request of every object an erasure removed (the `erasures` channel);
    those records are left out, every other byte is verified as usual."""
    log.info("step: git clone --depth 1 --branch %s", tag)
    commit = datarepo.clone(repo_url, workdir, tag=tag)
    verified = datarepo.pull_and_verify(workdir, tag, erased=erased)
    return FetchedDataset(
        dir=verified.dir,
        tag=tag,
        commit=commit,
        dataset_md5=verified.dataset_md5,
        manifest_sha256=verified.manifest_sha256,
        rows=verified.rows,
        manifest_path=verified.manifest_path,
        erased=verified.erased,
    )
