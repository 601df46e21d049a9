"""File hashes used across the chain: sha256 for records (strong, for audits), md5 where DVC
names objects by it (so we can check DVC's own addressing)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_sha256(root: Path, exclude: frozenset[str] = frozenset()) -> str:
    """One digest of a directory's files: sha256 over ``<sha256>  <relpath>\\n`` lines sorted
    by path (sha256sum's format, so `sha256sum` can re-derive it), top-level names in
    `exclude` left out. Used for a model directory, whose `lineage.json` is rewritten at
    deploy and whose `registered_model_meta` MLflow adds on download."""
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).parts[0] not in exclude
    )
    listing = "".join(f"{file_sha256(path)}  {relpath}\n" for relpath, path in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def canonical_sha256(fields: Mapping[str, object]) -> str:
    """sha256 of a record's canonical JSON (sorted keys, no spaces, UTF-8): the hash of one
    event in a hash-chained log (consent, erasure), stable across writers and versions."""
    payload = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
