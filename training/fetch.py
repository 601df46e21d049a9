"""The lineage bridge: the exact dataset of a tag, verified before a single step of training.

Clone the DVC repo at the tag, `dvc pull`, then verify every byte, fail-closed
(`lineage.datarepo.pull_and_verify`): any mismatch fails the job and names the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lineage import datarepo
from lineage.datarepo import DataVerificationError
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
    rows: list[ManifestRow]
    manifest_path: Path

    @property
    def repo_dir(self) -> Path:
        return self.dir.parent


def fetch_dataset(repo_url: str, tag: str, workdir: Path) -> FetchedDataset:
    log.info("step: git clone --depth 1 --branch %s", tag)
    commit = datarepo.clone(repo_url, workdir, tag=tag)
    verified = datarepo.pull_and_verify(workdir, tag)
    return FetchedDataset(
        dir=verified.dir,
        tag=tag,
        commit=commit,
        dataset_md5=verified.dataset_md5,
        manifest_sha256=verified.manifest_sha256,
        rows=verified.rows,
        manifest_path=verified.manifest_path,
    )
