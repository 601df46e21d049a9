"""A dataset version in its git repository: tag -> commit -> `.dvc` pointer -> verified bytes.

Shared by the training job (fetch the exact data before a single step) and by the audit
queries (trace, reproduce, verify): one definition of "this is the data that tag names".
Verification is fail-closed and recomputes everything from bytes:

1. the pulled directory hashes to the md5 in the commit's `.dvc` file (DVC's own address);
2. every file matches the sha256 the manifest lists, and nothing else is there.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lineage import manifest
from lineage.dvchash import directory_md5
from lineage.dvcremote import DirEntry, DvcRemote, ErasedObject, s3_watch, summarize
from lineage.errors import LineageError
from lineage.gitops import (
    GIT_TIMEOUT_S,
    GitError,
    ServiceDownError,
    dvc,
    dvc_out_md5,
    git,
    split_credentials,
    tool_env,
)
from lineage.hashing import bytes_sha256, file_md5
from lineage.manifest import DATASET_DIR, DVC_FILE, ManifestRow
from lineage.paths import PathContainmentError, contained
from lineage.redact import redact_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("lineage.data")


class DataVerificationError(LineageError):
    """The data is not the data the commit names."""


class TagError(LineageError):
    """A dataset tag is missing or does not point where the lineage says."""


@dataclass(frozen=True)
class Pointer:
    """The `.dvc` file of a dataset commit: DVC's address of the directory."""

    md5: str
    nfiles: int
    size: int


@dataclass(frozen=True)
class VerifiedData:
    dir: Path
    dataset_md5: str
    manifest_sha256: str
    rows: list[ManifestRow]  # every record still there (all of them unless some were erased)
    manifest_path: Path
    erased: list[ErasedObject] = field(default_factory=list)


def tag_commit(repo_url: str, tag: str) -> str | None:
    """The commit `tag` points at on the server (peeled), or None when there is no such tag."""
    url, auth = split_credentials(repo_url)
    try:
        result = subprocess.run(
            ["git", "ls-remote", "--tags", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"],
            capture_output=True,
            text=True,
            env=tool_env(auth),
            check=False,
            timeout=GIT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise LineageError(
            f"the git server of {redact_url(repo_url)} did not answer within {GIT_TIMEOUT_S}s",
            "check that the git server is up (`lineage stack status`)",
        ) from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or [str(result.returncode)]
        raise LineageError(
            f"cannot list tags of {redact_url(repo_url)}: {detail[0].replace(url, '')}",
            "check that the git server is up (`lineage stack status`) and the URL is right",
        )
    refs: dict[str, str] = {}
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref:
            refs[ref] = sha
    return refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")


def require_tag(repo_url: str, tag: str, commit: str | None = None) -> str:
    """`tag`'s commit; fail closed when the tag is gone or points elsewhere than `commit`."""
    found = tag_commit(repo_url, tag)
    if found is None:
        raise TagError(
            f"tag {tag} does not exist in {redact_url(repo_url)} (never published there, or "
            "deleted since)",
            "the chain from this model to its data is broken at the tag: restore the tag "
            "(`git push origin <commit>:refs/tags/<tag>`) from the run's data_git_commit_id",
        )
    if commit is not None and found != commit:
        raise TagError(
            f"tag {tag} points at {found[:12]}, but the lineage records {commit[:12]}",
            "the tag was moved after training: tags must never move; restore it",
        )
    return found


def clone(
    repo_url: str, workdir: Path, *, tag: str | None = None, commit: str | None = None
) -> str:
    """Clone at `tag` (shallow, `refs/tags/<tag>` asked for by name: a branch of the same
    name can never stand in for it) or at `commit` (full history, then checkout); the commit."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    url, auth = split_credentials(repo_url)  # credentials: in git's env, not argv or .git
    if tag and not commit:
        return _fetch_tag(repo_url, url, auth, workdir, tag)
    try:
        git("clone", "--quiet", url, str(workdir), cwd=workdir.parent, env=auth, secrets=[repo_url])
    except GitError as exc:
        raise LineageError(
            f"cannot clone the dataset repository: {exc.message}",
            "check the repository URL and that the git server is reachable",
        ) from None
    if commit:
        checked = git("checkout", "--quiet", commit, cwd=workdir, check=False)
        if checked.returncode != 0:
            raise LineageError(
                f"commit {commit} is not in {redact_url(repo_url)}",
                "the dataset history was rewritten; the recorded version cannot be restored",
            )
    return git("rev-parse", "HEAD", cwd=workdir).stdout.strip()


def _fetch_tag(repo_url: str, url: str, auth: dict[str, str], workdir: Path, tag: str) -> str:
    """A new repository holding exactly `refs/tags/<tag>` (shallow), checked out detached."""
    git("init", "--quiet", str(workdir), cwd=workdir.parent)
    git("remote", "add", "origin", url, cwd=workdir)
    refspec = f"+refs/tags/{tag}:refs/tags/{tag}"
    try:
        git(
            "fetch", "--quiet", "--depth", "1", "--no-tags", "origin", refspec,
            cwd=workdir, env=auth, secrets=[repo_url],
        )  # fmt: skip
    except GitError as exc:
        if "couldn't find remote ref" in exc.message or "not our ref" in exc.message:
            raise TagError(
                f"tag {tag} does not exist in the dataset repository",
                "list the published versions with `git ls-remote --tags <repo>`, or run "
                "`lineage process` first",
            ) from None
        raise LineageError(
            f"cannot fetch tag {tag} of the dataset repository: {exc.message}",
            "check the repository URL and that the git server is reachable",
        ) from None
    git("checkout", "--quiet", "--detach", f"refs/tags/{tag}^{{commit}}", cwd=workdir)
    return git("rev-parse", "HEAD", cwd=workdir).stdout.strip()


def read_pointer(repo_dir: Path) -> Pointer:
    """The `.dvc` pointer of a checked-out version, after refusing a checkout whose git tree
    holds symbolic links (a link named `dataset` would let `dvc checkout` write elsewhere)."""
    links = [
        line.split("\t", 1)[1]
        for line in git("ls-files", "--stage", cwd=repo_dir, check=False).stdout.splitlines()
        if line.startswith("120000 ")
    ]
    if links:
        raise PathContainmentError(
            f"the dataset commit holds symbolic links ({', '.join(links[:5])})",
            "a dataset repository never needs links; the commit was crafted: do not use it",
        )
    path = repo_dir / DVC_FILE
    if path.is_symlink() or (repo_dir / DATASET_DIR).is_symlink():
        raise PathContainmentError(
            f"{DVC_FILE} or {DATASET_DIR}/ is a symbolic link in {repo_dir}",
            "the checkout was tampered with: do not use it",
        )
    if not path.is_file():
        raise DataVerificationError(f"{DVC_FILE} is missing: this commit is not a dataset version")
    md5, nfiles, size = dvc_out_md5(path)
    return Pointer(md5, nfiles, size)


def remote_url(repo_dir: Path) -> str:
    """The default DVC remote's URL, as committed in `.dvc/config`."""
    parser = configparser.ConfigParser()
    parser.read(repo_dir / ".dvc" / "config")
    name = parser.get("core", "remote", fallback=None)
    url = parser.get(f"'remote \"{name}\"'", "url", fallback=None) if name else None
    if not url:
        raise LineageError(
            f"the dataset repository has no default DVC remote in {repo_dir / '.dvc' / 'config'}",
            "it was not published by `lineage process`",
        )
    return url


def tag_metadata(repo_dir: Path, tag: str) -> dict[str, Any]:
    """The JSON block the processing job wrote into the annotated tag (source, version...)."""
    shown = git("tag", "-l", "--format=%(contents)", tag, cwd=repo_dir, check=False).stdout
    start = shown.find("{")
    if start < 0:
        return {}
    try:
        data: dict[str, Any] = json.loads(shown[start:])
    except json.JSONDecodeError:
        return {}
    return data


def committed_metadata(repo_dir: Path) -> dict[str, Any]:
    """`dataset.json` (committed with the `.dvc` file) when the version has one."""
    path = repo_dir / manifest.DATASET_METADATA
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def pull_and_verify(
    repo_dir: Path,
    label: str,
    s3: S3Client | None = None,
    env: Mapping[str, str] | None = None,
    erased: Mapping[str, str] | None = None,
) -> VerifiedData:
    """`dvc pull` the checked-out version, then verify every byte (see the module doc).

    `env` adds the S3 endpoint and credentials for DVC (a job has them in its environment
    already). When the pull fails, the remote is read object by object to name what is missing.
    """
    pointer = read_pointer(repo_dir)
    entries = check_listing(repo_dir, pointer, label, s3)
    tombstoned = erased or {}
    gone = [
        ErasedObject(e.relpath, e.md5, tombstoned[e.md5]) for e in entries if e.md5 in tombstoned
    ]
    if gone:
        # DVC checks a directory out whole or not at all, and erased objects are gone from
        # the remote on purpose: the remainder is read object by object instead, each object
        # re-hashed to its name and written inside the dataset directory only
        log.info("step: read %d objects (%d erased) of %s", len(entries), len(gone), pointer.md5)
        remote = DvcRemote(_s3_or_default(s3), remote_url(repo_dir))
        fetch_remainder(remote, entries, {e.relpath for e in gone}, repo_dir / DATASET_DIR, label)
        verified = verify_erased_directory(repo_dir / DATASET_DIR, entries, gone, label)
        return replace(verified, dataset_md5=pointer.md5)
    log.info("step: dvc pull (%s, %d files)", pointer.md5, pointer.nfiles)
    try:
        dvc("pull", "--jobs", "8", cwd=repo_dir, env=env, watch=s3_watch(remote_url(repo_dir), env))
    except ServiceDownError:
        raise
    except LineageError as exc:
        _diagnose_pull(repo_dir, pointer, label, s3)
        raise LineageError(
            f"dvc pull of {label} failed: {exc.message[-600:]}",
            "check the S3 store and credentials, and `lineage verify --tag` for missing objects",
        ) from None
    data_dir = repo_dir / DATASET_DIR
    log.info("step: verify dataset against %s and the manifest", pointer.md5)
    return verify_directory(data_dir, pointer.md5, label)


def fetch_remainder(
    remote: DvcRemote, entries: list[DirEntry], erased: set[str], data_dir: Path, label: str
) -> None:
    """Write every listed file but the erased ones from the remote, each checked against its
    md5 name; a missing or changed object (without a tombstone) stops with its path."""
    from concurrent.futures import ThreadPoolExecutor

    def one(entry: DirEntry) -> str | None:
        data = remote.read(entry.md5)
        if data is None:
            return f"{entry.relpath} ({entry.md5}): missing"
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if actual != entry.md5:
            return f"{entry.relpath} ({entry.md5}): changed: bytes hash to {actual}"
        target = contained(data_dir, entry.relpath, f"entry {entry.relpath} of {label}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return None

    data_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(one, [e for e in entries if e.relpath not in erased]) if p]
    if problems:
        raise DataVerificationError(
            f"dataset {label} cannot be restored: {'; '.join(sorted(problems)[:5])}",
            "objects were deleted or changed in the DVC remote without an erasure; restore "
            "them from a backup",
        )


def check_listing(
    repo_dir: Path, pointer: Pointer, label: str, s3: S3Client | None = None
) -> list[DirEntry]:
    """Read the version's `.dir` listing from the remote and check it *before* `dvc pull`:
    it must hash to its name, name as many files as the `.dvc` file records, and every
    relpath must stay inside the dataset directory (DVC would write wherever it says)."""
    try:
        entries = DvcRemote(_s3_or_default(s3), remote_url(repo_dir)).listing(pointer.md5)
    except LineageError as exc:
        raise DataVerificationError(
            f"dataset {label} cannot be used: {exc.message}", exc.hint
        ) from None
    if len(entries) != pointer.nfiles:
        raise DataVerificationError(
            f"dataset {label}: the listing {pointer.md5} names {len(entries)} files, "
            f"{DVC_FILE} records {pointer.nfiles}",
            "the listing or the pointer was changed after publication; do not use it",
        )
    return entries


def verify_directory(data_dir: Path, expected_md5: str, label: str) -> VerifiedData:
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
            f"dataset {label} failed verification: {shown}",
            "the data in the remote was changed after it was published; do not use it. "
            "Restore the objects or publish a new version",
        )
    actual_md5 = directory_md5(data_dir)
    if actual_md5 != expected_md5:
        raise DataVerificationError(
            f"dataset {label} hashes to {actual_md5}, but {DVC_FILE} records {expected_md5}",
            "the data in the remote was changed after it was published; do not use it",
        )
    manifest_path = data_dir / manifest.MANIFEST_NAME
    return VerifiedData(
        dir=data_dir,
        dataset_md5=expected_md5,
        manifest_sha256=bytes_sha256(manifest_path.read_bytes()),
        rows=rows,
        manifest_path=manifest_path,
    )


def verify_erased_directory(
    data_dir: Path, entries: list[DirEntry], erased: list[ErasedObject], label: str
) -> VerifiedData:
    """A version some of whose objects were erased: DVC's directory md5 can no longer be
    recomputed from the bytes, so every file still there is checked against the listing (which
    itself hashed to the version's md5) and against the manifest's sha256; a missing file must
    have a tombstone. The rows returned are the remainder."""
    rows = manifest.read(data_dir / manifest.MANIFEST_NAME)
    erased_paths = {e.relpath for e in erased}
    listed = {e.relpath: e.md5 for e in entries}
    present = [r for r in rows if r.file_path not in erased_paths]
    problems = manifest.verify_files(data_dir, present)
    for row in present:
        path = data_dir / row.file_path
        if path.is_file() and file_md5(path) != listed.get(row.file_path):
            problems.append(f"{row.file_path}: md5 differs from the listing")
    on_disk = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()} - {
        manifest.MANIFEST_NAME
    }
    problems += [f"{path}: not in the manifest" for path in sorted(on_disk - set(listed))]
    problems += [f"{path}: erased, yet present" for path in sorted(on_disk & erased_paths)]
    if problems:
        raise DataVerificationError(
            f"dataset {label} failed verification: {'; '.join(problems[:5])}",
            "the data in the remote was changed after it was published; do not use it",
        )
    manifest_path = data_dir / manifest.MANIFEST_NAME
    return VerifiedData(
        dir=data_dir,
        dataset_md5="",  # filled by the caller from the pointer
        manifest_sha256=bytes_sha256(manifest_path.read_bytes()),
        rows=present,
        manifest_path=manifest_path,
        erased=erased,
    )


def _s3_or_default(s3: S3Client | None) -> S3Client:
    if s3 is not None:
        return s3
    import boto3

    return boto3.client("s3")  # honours AWS_ENDPOINT_URL_S3, as DVC does


def _diagnose_pull(repo_dir: Path, pointer: Pointer, label: str, s3: S3Client | None) -> None:
    """Raise naming the missing or changed objects, if reading the remote finds any."""
    try:
        remote = DvcRemote(_s3_or_default(s3), remote_url(repo_dir))
        problems = remote.check_all(remote.listing(pointer.md5))
    except LineageError as exc:
        raise DataVerificationError(
            f"dataset {label} cannot be restored: {exc.message}", exc.hint
        ) from None
    except Exception as exc:  # noqa: BLE001 - best-effort diagnosis; the pull error is real
        log.warning("could not read the remote to diagnose the pull: %s", exc)
        return
    if problems:
        raise DataVerificationError(
            f"dataset {label} cannot be restored: {summarize(problems)}",
            "objects were deleted or changed in the DVC remote after publication; restore "
            "them from a backup (the version's history is intact in git)",
        )
