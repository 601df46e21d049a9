"""The lineage bridge: the exact dataset of a tag, verified before a single step of training.

Clone the DVC repo at the tag, `dvc pull`, then check, fail-closed:
1. the pulled directory hashes (recomputed from the bytes) to the md5 in the tag's `.dvc`;
2. every file matches the sha256 the manifest lists, and nothing else is there.
Any mismatch fails the job and names the file.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from lineage import manifest
from lineage.dvchash import directory_md5
from lineage.errors import LineageError
from lineage.gitops import GitError, dvc, dvc_out_md5, git
from lineage.hashing import bytes_sha256
from lineage.manifest import DATASET_DIR, DVC_FILE, ManifestRow

log = logging.getLogger("lineage.training")


class DataVerificationError(LineageError):
    """The pulled data is not the data the tag names."""


@dataclass(frozen=True)
class FetchedDataset:
    dir: Path
    tag: str
    commit: str
    dataset_md5: str
    manifest_sha256: str
    rows: list[ManifestRow]
    manifest_path: Path


def fetch_dataset(repo_url: str, tag: str, workdir: Path) -> FetchedDataset:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log.info("step: git clone --depth 1 --branch %s", tag)
    try:
        git(
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--branch",
            tag,
            repo_url,
            str(workdir),
            cwd=workdir.parent,
            secrets=[repo_url],
        )
    except GitError as exc:
        if "not found in upstream" in exc.message or "Remote branch" in exc.message:
            raise LineageError(
                f"tag {tag} does not exist in the dataset repository",
                "list the published versions with `git ls-remote --tags <repo>`, or run "
                "`lineage process` first",
            ) from None
        raise LineageError(
            f"cannot clone the dataset repository: {exc.message}",
            "check DVC_REPO_URL and that the git server is reachable",
        ) from None
    commit = git("rev-parse", "HEAD", cwd=workdir).stdout.strip()
    if not (workdir / DVC_FILE).is_file():
        raise DataVerificationError(f"tag {tag} has no {DVC_FILE}: not a dataset version")
    expected_md5, nfiles, _ = dvc_out_md5(workdir / DVC_FILE)

    log.info("step: dvc pull (%s, %d files)", expected_md5, nfiles)
    try:
        dvc("pull", "--jobs", "8", cwd=workdir)
    except LineageError as exc:
        raise LineageError(
            f"dvc pull of {tag} failed: {exc.message[-600:]}",
            "check the S3 store and credentials, and `lineage verify --tag` for missing objects",
        ) from None

    data_dir = workdir / DATASET_DIR
    log.info("step: verify dataset against %s and the manifest", expected_md5)
    actual_md5 = directory_md5(data_dir)
    rows = manifest.read(data_dir / manifest.MANIFEST_NAME)
    problems = manifest.verify_files(data_dir, rows)
    listed = {r.file_path for r in rows} | {manifest.MANIFEST_NAME}
    extra = sorted(
        p.relative_to(data_dir).as_posix()
        for p in data_dir.rglob("*")
        if p.is_file() and p.relative_to(data_dir).as_posix() not in listed
    )
    problems += [f"{path}: not in the manifest" for path in extra]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise DataVerificationError(
            f"dataset {tag} failed verification: {shown}",
            "the data in the remote was changed after it was published; do not train on it. "
            "Restore the objects or publish a new version",
        )
    if actual_md5 != expected_md5:
        raise DataVerificationError(
            f"dataset {tag} hashes to {actual_md5}, but {DVC_FILE} at {commit[:12]} records "
            f"{expected_md5}",
            "the data in the remote was changed after it was published; do not train on it",
        )
    manifest_bytes = (data_dir / manifest.MANIFEST_NAME).read_bytes()
    return FetchedDataset(
        dir=data_dir,
        tag=tag,
        commit=commit,
        dataset_md5=expected_md5,
        manifest_sha256=bytes_sha256(manifest_bytes),
        rows=rows,
        manifest_path=data_dir / manifest.MANIFEST_NAME,
    )
