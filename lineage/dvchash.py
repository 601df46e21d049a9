"""Recompute DVC's directory hash from the files themselves.

DVC names a directory by the md5 of its sorted ``[{"md5", "relpath"}]`` listing (the `.dir`
object). Recomputing it from the pulled workspace, and comparing with the md5 in the `.dvc`
file that git holds, checks the data against the commit, not against whatever the remote or
the local cache claims: a tampered object in S3 (DVC does not verify downloads by default)
or a tampered `.dir` listing is caught.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lineage.hashing import file_md5


def directory_md5(root: Path) -> str:
    """DVC 3's hash of `root` (``<md5>.dir``), computed from file contents."""
    return hashlib.md5(directory_listing(root), usedforsecurity=False).hexdigest() + ".dir"


def directory_listing(root: Path) -> bytes:
    """The bytes of DVC's `.dir` object for `root`: its md5 names the directory, and its
    sha256 is the strong digest a signed dataset statement carries beside it."""
    entries = sorted(
        (
            {"md5": file_md5(path), "relpath": path.relative_to(root).as_posix()}
            for path in root.rglob("*")
            if path.is_file()
        ),
        key=lambda entry: entry["relpath"],
    )
    return json.dumps(entries, sort_keys=True).encode("utf-8")
