"""Read a DVC remote directly: the `.dir` listing of a dataset and each object it names.

DVC 3 stores every file under ``<remote>/files/md5/<2 hex>/<30 hex>`` and a directory's
listing (``[{"md5", "relpath"}]``) as ``<dir md5>.dir``. Reading those objects with plain S3
calls answers "is this dataset still in the remote, byte for byte?" without a DVC checkout,
and names the exact file when an object is missing or changed. Object names are content
hashes, so an intact object is one whose bytes hash to its own name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from lineage.config import merge_env
from lineage.errors import LineageError
from lineage.gitops import ServiceWatch
from lineage.paths import safe_relpath

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_MD5 = re.compile(r"[0-9a-f]{32}")


class RemoteError(LineageError):
    """The DVC remote cannot be read (unreachable, denied), as opposed to an object missing."""


@dataclass(frozen=True)
class DirEntry:
    relpath: str
    md5: str


@dataclass(frozen=True)
class ErasedObject:
    """An object missing from a dataset version because an erasure removed it (it has a
    tombstone in the erasure log): reported, not a failure."""

    relpath: str
    md5: str
    request: str


@dataclass(frozen=True)
class ObjectProblem:
    relpath: str
    md5: str
    problem: str  # "missing" | "changed: bytes hash to <md5>"

    def __str__(self) -> str:
        return f"{self.relpath} ({self.md5}): {self.problem}"


class DvcRemote:
    """One ``s3://bucket/prefix`` DVC remote, read through an S3 client."""

    def __init__(self, client: S3Client, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise RemoteError(
                f"DVC remote {url!r} is not an s3:// URL", "only S3-compatible remotes are read"
            )
        self.client = client
        self.url = url.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")

    def key(self, md5: str) -> str:
        name = f"files/md5/{md5[:2]}/{md5[2:]}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def object_url(self, md5: str) -> str:
        return f"s3://{self.bucket}/{self.key(md5)}"

    def read(self, md5: str) -> bytes | None:
        """The object's bytes, or None when it is not in the remote."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(md5))
            return response["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_CODES:
                return None
            raise RemoteError(
                f"cannot read {self.object_url(md5)}: {code or exc}",
                "check the S3 credentials and endpoint (AWS_*, LINEAGE_S3_ENDPOINT)",
            ) from None
        except BotoCoreError as exc:
            raise RemoteError(
                f"the S3 store holding {self.url} is unreachable ({exc.__class__.__name__})",
                "start it (`lineage stack up`) or check LINEAGE_S3_ENDPOINT",
            ) from None

    def listing(self, dir_md5: str) -> list[DirEntry]:
        """The `.dir` listing of a dataset, checked against its own name (fail closed), every
        relpath a plain relative path (a crafted listing must not steer `dvc pull` outside
        the workspace)."""
        data = self.read(dir_md5)
        if data is None:
            raise RemoteError(
                f"the dataset listing {self.object_url(dir_md5)} is missing from the remote",
                "the dataset cannot be restored from this remote: restore the object from a "
                "backup or republish the version",
            )
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest() + ".dir"
        if actual != dir_md5:
            raise RemoteError(
                f"the dataset listing {self.object_url(dir_md5)} was changed (hashes to {actual})",
                "do not trust this version's remote copy; restore the object from a backup",
            )
        try:
            entries = [DirEntry(str(e["relpath"]), str(e["md5"])) for e in json.loads(data)]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteError(f"the dataset listing {dir_md5} is not DVC's format: {exc}") from None
        for number, entry in enumerate(entries, start=1):
            safe_relpath(entry.relpath, f"entry {number} of the DVC listing {dir_md5}")
            if not _MD5.fullmatch(entry.md5):
                raise RemoteError(
                    f"entry {number} of the DVC listing {dir_md5} ({entry.relpath!r}) names "
                    f"the object {entry.md5!r}, which is not an md5",
                    "the listing was crafted or corrupted: do not use this version",
                )
        return entries

    def check(self, entry: DirEntry) -> ObjectProblem | None:
        data = self.read(entry.md5)
        if data is None:
            return ObjectProblem(entry.relpath, entry.md5, "missing")
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if actual != entry.md5:
            return ObjectProblem(entry.relpath, entry.md5, f"changed: bytes hash to {actual}")
        return None

    def check_all(
        self,
        entries: Iterable[DirEntry],
        *,
        jobs: int = 16,
        on_checked: Callable[[int], None] = lambda _: None,
    ) -> list[ObjectProblem]:
        """Download and re-hash every object; the problems found, sorted by path."""
        problems: list[ObjectProblem] = []

        def one(entry: DirEntry) -> ObjectProblem | None:
            result = self.check(entry)
            on_checked(1)
            return result

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            problems = [p for p in pool.map(one, entries) if p is not None]
        return sorted(problems, key=lambda p: p.relpath)


def summarize(problems: list[ObjectProblem], limit: int = 5) -> str:
    shown = "; ".join(str(p) for p in problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def s3_watch(remote_url: str, env: Mapping[str, str] | None = None) -> ServiceWatch:
    """Is the S3 store of a DVC remote still answering? One quick HEAD of its bucket (5 s,
    no retries), made with the endpoint and keys DVC itself uses (`env` over this process's
    environment): any answer but a server error counts, even a denial."""
    import boto3
    from botocore.config import Config

    from lineage.storage import keyed_session

    merged = merge_env(os.environ, env or {})
    bucket = urlsplit(remote_url).netloc
    explicit = "AWS_ACCESS_KEY_ID" in (env or {})
    make = keyed_session().client if explicit else boto3.client
    probe_client = make(
        "s3",
        endpoint_url=merged.get("AWS_ENDPOINT_URL_S3") or merged.get("AWS_ENDPOINT_URL") or None,
        aws_access_key_id=merged.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=merged.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=merged.get("AWS_SESSION_TOKEN") or None,
        config=Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1}),
    )

    def alive() -> bool:
        try:
            probe_client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            return status < 500
        except BotoCoreError:
            return False
        return True

    return ServiceWatch(
        "S3 store",
        str(probe_client.meta.endpoint_url),
        alive,
        "start it (`lineage stack up`, or check LINEAGE_S3_ENDPOINT / AWS_ENDPOINT_URL_S3) and "
        "run again: nothing was tagged, and objects already uploaded are not sent twice",
    )
