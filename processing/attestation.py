"""The dataset version's signed statement, made by the job that made the version.

Signed right after the tag is pushed (the statement names the commit the tag points at):
its subjects are the manifest and DVC's `.dir` listing of the published data, its predicate
how the version was drawn and, when the operator gave one, the transparency log's signed
head at the job's start (a later truncation of the log is caught against it).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.attest.envelopes import Envelope, sign
from lineage.attest.jobinput import JobEvidence, JobKeys
from lineage.attest.keys import utc_now
from lineage.attest.statements import dataset_statement
from lineage.dvchash import directory_listing
from lineage.errors import LineageError

log = logging.getLogger("lineage.processing")


def listing_bytes(repo_dir: Path, dataset_dir: Path, dataset_md5: str) -> bytes:
    """The `.dir` object DVC published (from its cache; recomputed from the files when the
    cache lacks it), checked against the md5 that names the version."""
    md5 = dataset_md5.removesuffix(".dir")
    cached = repo_dir / ".dvc" / "cache" / "files" / "md5" / md5[:2] / f"{md5[2:]}.dir"
    data = cached.read_bytes() if cached.is_file() else directory_listing(dataset_dir)
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        raise LineageError(
            f"the dataset's .dir listing does not hash to the published md5 {dataset_md5}",
            "the workspace changed during publication: rerun the job",
        )
    return data


def sign_dataset(
    *,
    keys: JobKeys,
    evidence: JobEvidence,
    manifest_sha256: str,
    listing: bytes,
    dataset_md5: str,
    predicate: Mapping[str, Any],
) -> Envelope | None:
    """The signed statement (None, with a warning already logged, when no key is set)."""
    if keys.key is None:
        return None
    body = dataset_statement(
        manifest_sha256=manifest_sha256,
        listing_md5=dataset_md5,
        listing_sha256=hashlib.sha256(listing).hexdigest(),
        predicate={
            **predicate,
            "image": contract.image_identity(),
            "transparency_log": None
            if evidence.tree_head is None
            else evidence.tree_head.to_json(),
            "signed_at": utc_now(),
        },
    )
    envelope = sign(body, keys.key)
    log.info("dataset statement %s signed by key %s", envelope.digest[:16], keys.key.key_id[:16])
    return envelope
