"""Publish a dataset version: DVC objects to S3 first, then the `.dvc` commit and its tag.

The rules that make the lineage trustworthy:

- Data first, tag last. The tag is pushed only after `dvc push` and the commit succeeded
  and after the processing run recorded the version (the job calls `push_tag` last), so no
  published tag points at data that is not in the remote or at a version whose run failed.
- Unique tags. An existing tag is an error, checked before anything is written; never moved.
- Unchanged data reuses the current commit (no empty commits); the new tag points at it.
- Concurrent publishers both land: a rejected (non-fast-forward) push fetches the new tip,
  re-applies our one-file change on top of it and tries again.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.dvcremote import s3_watch
from lineage.errors import LineageError
from lineage.gitops import (
    GitError,
    ServiceDownError,
    dvc,
    dvc_out_md5,
    dvc_out_md5_from_text,
    git,
    split_credentials,
)
from lineage.manifest import DATASET_DIR, DVC_FILE
from lineage.redact import redact_url

log = logging.getLogger("lineage.processing")

BRANCH = "main"
REMOTE_NAME = "storage"
MAX_PUSH_ATTEMPTS = 8


class PublishError(LineageError):
    """Publishing failed; the message says what was and was not published."""


@dataclass(frozen=True)
class PublishResult:
    tag: str
    commit: str
    dataset_md5: str
    nfiles: int
    size: int
    reused_commit: bool


class DatasetRepo:
    """A working clone of the dataset repository on the git server."""

    def __init__(
        self, url: str, workdir: Path, remote_url: str, step: Callable[[str], None] = log.info
    ) -> None:
        # credentials in the URL go to git through its environment, never argv or .git/config
        self.url, self.auth = split_credentials(url)
        self.shown_url = redact_url(url)
        self.dir = workdir
        self.remote_url = remote_url
        self.step = step

    @property
    def dataset_dir(self) -> Path:
        return self.dir / DATASET_DIR

    def _git(self, *args: str, check: bool = True) -> str:
        return git(
            *args, cwd=self.dir, check=check, env=self.auth, secrets=[self.url]
        ).stdout.strip()

    # -- before the data is written ------------------------------------------------------------
    def prepare(self, tag: str) -> None:
        """Clone, refuse an existing tag, and make sure the repo is a DVC repo with a remote."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.step("clone dataset repository")
        try:
            git(
                "clone",
                "--quiet",
                self.url,
                str(self.dir),
                cwd=self.dir.parent,
                env=self.auth,
                secrets=[self.url],
            )
        except GitError as exc:
            raise PublishError(
                f"cannot clone the dataset repository: {exc.message}",
                "check DVC_REPO_URL and that the git server is reachable; nothing was published",
            ) from None
        git("check-ref-format", f"refs/tags/{tag}", cwd=self.dir)
        if self._remote_tag_commit(tag) is not None:
            raise PublishError(
                f"tag {tag} already exists on the git server",
                "tags are never moved: choose another --data-version or PIPELINE_RUN_ID; "
                "nothing was changed",
            )
        if not self._has_commits():
            self._git("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
        if not (self.dir / ".dvc" / "config").is_file():
            self.step("initialise DVC in the dataset repository")
            dvc("init", "--quiet", cwd=self.dir)
            dvc("remote", "add", "--default", REMOTE_NAME, self.remote_url, cwd=self.dir)
            dvc("config", "core.analytics", "false", cwd=self.dir)
        elif not dvc("remote", "default", cwd=self.dir, check=False).stdout.strip():
            dvc("remote", "add", "--default", REMOTE_NAME, self.remote_url, cwd=self.dir)

    # -- after the data is written -------------------------------------------------------------
    def publish(
        self,
        tag: str,
        message: str,
        committed: dict[str, bytes] | None = None,
    ) -> PublishResult:
        """Push the data, then commit the `.dvc` file (and the `committed` files beside it,
        e.g. `dataset.json`); the tag comes last (`push_tag`)."""
        committed = committed or {}
        for name, data in committed.items():
            (self.dir / name).write_bytes(data)
        self.step("dvc add dataset (hash every file)")
        dvc("add", "--quiet", DATASET_DIR, cwd=self.dir)
        md5, nfiles, size = dvc_out_md5(self.dir / DVC_FILE)

        self.step(f"dvc push (dataset {md5}, {nfiles} files) to {self.remote_url}")
        try:
            pushed = dvc("push", "--jobs", "8", cwd=self.dir, watch=s3_watch(self.remote_url))
        except ServiceDownError as exc:
            raise PublishError(exc.message, exc.hint) from None
        except LineageError as exc:
            raise PublishError(
                f"dvc push to {self.remote_url} failed: {exc.message[-600:]}",
                "check the S3 store and credentials; no tag was pushed, so no published "
                "version points at missing data",
            ) from None
        log.info("dvc push: %s", pushed.stdout.strip().splitlines()[-1:] or ["done"])

        commit, reused = self._commit_and_push_branch(message, md5, committed)
        return PublishResult(tag, commit, md5, nfiles, size, reused)

    def push_tag(self, published: PublishResult, tag_metadata: dict[str, Any]) -> None:
        """The last step of a publication: the annotated tag on the published commit."""
        tag, commit = published.tag, published.commit
        self.step(f"tag {tag} -> {commit[:12]} and push it")
        self._git(
            "tag",
            "--annotate",
            tag,
            commit,
            "--message",
            f"dataset {tag}\n\n{json.dumps(tag_metadata, indent=2, sort_keys=True)}",
        )
        push = git(
            "push",
            "--quiet",
            "origin",
            f"refs/tags/{tag}",
            cwd=self.dir,
            check=False,
            env=self.auth,
            secrets=[self.url],
        )
        if push.returncode != 0:
            detail = (push.stderr.strip().splitlines() or ["(no message)"])[-1]
            try:
                existing = self._remote_tag_commit(tag)
            except LineageError:
                existing = None
            if existing is not None and existing != commit:
                raise PublishError(
                    f"tag {tag} was created by another run at the same moment (it points at "
                    f"{existing[:12]}, ours is {commit[:12]})",
                    "the data and commit are published; rerun with another version",
                )
            raise PublishError(
                f"the git server at {self.shown_url} did not take the tag {tag}: {detail}",
                "the data and commit are published but no version is (no tag); check the git "
                "server (`lineage stack status`) and rerun: the data is reused, not uploaded again",
            )

    def _commit_and_push_branch(
        self, message: str, md5: str, committed: dict[str, bytes]
    ) -> tuple[str, bool]:
        for attempt in range(1, MAX_PUSH_ATTEMPTS + 1):
            head_md5 = self._head_dataset_md5()
            if head_md5 == md5 and all(self._head_file(n) == d for n, d in committed.items()):
                self.step("dataset unchanged since the last version: reusing its commit")
                return self._git("rev-parse", "HEAD"), True
            for name, data in committed.items():  # a rebase onto a new tip resets the tree
                (self.dir / name).write_bytes(data)
            self._git("add", "--all", ".dvc", ".dvcignore", DVC_FILE, ".gitignore", *committed)
            self._git("commit", "--quiet", "--message", message)
            commit = self._git("rev-parse", "HEAD")
            self.step(f"push commit {commit[:12]} to {BRANCH}")
            push = git(
                "push",
                "--quiet",
                "origin",
                f"HEAD:refs/heads/{BRANCH}",
                cwd=self.dir,
                check=False,
                env=self.auth,
                secrets=[self.url],
            )
            if push.returncode == 0:
                return commit, False
            if "rejected" not in push.stderr and "fetch first" not in push.stderr:
                raise PublishError(
                    f"pushing the dataset commit failed: {push.stderr.strip()[-400:]}",
                    "the data is in the remote but no version was tagged: check the git "
                    "server and rerun",
                )
            # Someone published in between: put our one-file change on top of their tip.
            log.info("push rejected (attempt %d): another version landed first; retrying", attempt)
            self._git("fetch", "--quiet", "origin", BRANCH)
            self._git("reset", "--quiet", "--mixed", f"origin/{BRANCH}")
        raise PublishError(
            f"could not push the dataset commit after {MAX_PUSH_ATTEMPTS} attempts",
            "too many concurrent publishers: rerun",
        )

    # -- helpers -------------------------------------------------------------------------------
    def _has_commits(self) -> bool:
        return (
            git("rev-parse", "--verify", "--quiet", "HEAD", cwd=self.dir, check=False).returncode
            == 0
        )

    def _head_dataset_md5(self) -> str | None:
        if not self._has_commits():
            return None
        shown = git("show", f"HEAD:{DVC_FILE}", cwd=self.dir, check=False)
        return dvc_out_md5_from_text(shown.stdout) if shown.returncode == 0 else None

    def _head_file(self, name: str) -> bytes | None:
        if not self._has_commits():
            return None
        shown = subprocess.run(
            ["git", "show", f"HEAD:{name}"], cwd=self.dir, capture_output=True, check=False
        )
        return shown.stdout if shown.returncode == 0 else None

    def _remote_tag_commit(self, tag: str) -> str | None:
        out = self._git("ls-remote", "--tags", "origin", f"refs/tags/{tag}")
        return out.split()[0] if out else None
