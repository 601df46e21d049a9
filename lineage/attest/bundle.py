"""The evidence bundle: one file an auditor verifies with the signer's public key alone.

It holds the model's signed provenance, its dataset's signed statement, the signed decisions
about it (promote, deploy, the audit report), the audit report itself, the transparency
log's newest signed head, an inclusion proof for every statement, and a consistency proof
from each older head the statements carry to the newest one. `verify_bundle` needs no
stack, no LINEAGE_HOME and no network: it checks every signature and proof against the keys
it is *given* (never the keys the bundle names), recomputes the digests of the model and
dataset files it is pointed at, and stops at the first thing that fails, naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage.attest.checks import (
    dataset_facts,
    lineage_disagreements,
    verify_model,
)
from lineage.attest.envelopes import Envelope, verify
from lineage.attest.keys import AttestationError, TrustStore
from lineage.attest.merkle import (
    TreeHead,
    check_consistency,
    check_inclusion,
    entry_bytes,
    verify_head,
)
from lineage.attest.statements import DATASET, DECISION, PROVENANCE, ModelProvenance, statement_time
from lineage.check import Check

FORMAT = "model-lineage-evidence/v1"


@dataclass
class BundleVerification:
    """The checks made, in order; the first failure ends the verification."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def to_json(self) -> dict[str, Any]:
        failure = self.failure
        return {
            "ok": self.ok,
            "first_failure": None if failure is None else failure.to_json(),
            "checks": [c.to_json() for c in self.checks],
        }


class _FirstFailureError(Exception):
    """The first failed check: nothing after it is believed."""


def verify_bundle(
    bundle: Mapping[str, Any],
    trust: TrustStore,
    *,
    model_dir: Path | None = None,
    data_dir: Path | None = None,
) -> BundleVerification:
    result = BundleVerification()

    def step(name: str, check: Callable[[], str]) -> None:
        try:
            detail = check()
        except (AttestationError, KeyError, TypeError, ValueError) as exc:
            result.checks.append(Check(name, False, _reason(exc)))
            raise _FirstFailureError from None
        result.checks.append(Check(name, True, detail))

    try:
        for name, check in _steps(bundle, trust, model_dir, data_dir):
            step(name, check)
    except _FirstFailureError:
        pass
    return result


def _steps(
    bundle: Mapping[str, Any], trust: TrustStore, model_dir: Path | None, data_dir: Path | None
) -> Iterator[tuple[str, Callable[[], str]]]:
    """The checks in the order each one's trust rests on the ones before."""
    state: dict[str, Any] = {}

    def fmt() -> str:
        if bundle.get("format") != FORMAT:
            raise AttestationError(f"not an evidence bundle ({bundle.get('format')!r})")
        if not trust:
            raise AttestationError("no public key given to check the bundle with")
        return f"{FORMAT}, checked against {len(trust.keys)} key(s) given by the verifier"

    yield "bundle", fmt

    def head() -> str:
        state["head"] = verify_head(TreeHead.from_json(bundle["tree_head"]), trust)
        h = state["head"]
        return f"signed tree head: {h.size} leaves, root {h.root[:16]}, at {h.timestamp}"

    yield "tree head", head

    statements = bundle["statements"]
    named = [("model provenance", statements["provenance"], PROVENANCE)]
    if statements.get("dataset"):
        named.append(("dataset statement", statements["dataset"], DATASET))
    named += [
        (f"decision {i + 1}", d, DECISION) for i, d in enumerate(statements.get("decisions", []))
    ]
    for what, raw, kind in named:
        yield what, _statement_step(what, raw, kind, trust, bundle, state)
    yield "provenance cites the dataset", lambda: _cites_dataset(state)
    for number, older in enumerate(_older_heads(state), start=1):
        yield f"log consistency {number}", _consistency_step(older, bundle, trust, state)
    if bundle.get("report"):
        yield "audit report", lambda: _report(bundle["report"], state)
    if model_dir is not None:
        yield "model files", lambda: _model_dir(model_dir, trust, state)
    if data_dir is not None:
        yield "dataset files", lambda: _data_dir(data_dir, state)


def _statement_step(
    what: str,
    raw: Mapping[str, Any],
    kind: str,
    trust: TrustStore,
    bundle: Mapping[str, Any],
    state: dict[str, Any],
) -> Callable[[], str]:
    def check() -> str:
        envelope = Envelope.from_json(raw, what)
        body = envelope.body()
        if body.get("predicateType") != kind:
            raise AttestationError(f"the {what} is a {body.get('predicateType')!r} statement")
        key = verify(envelope, trust, at=statement_time(body), what=what)
        proof = bundle["inclusion"][envelope.digest]
        entry = entry_bytes(proof["entry"])
        if proof["entry"].get("digest") != envelope.digest:
            raise AttestationError(f"the log entry of the {what} names another statement")
        check_inclusion(entry, proof["proof"], state["head"], int(proof["index"]))
        state.setdefault("envelopes", {})[kind if kind != DECISION else what] = envelope
        return (
            f"{envelope.digest[:16]} signed by key {key.key_id[:16]}; leaf {proof['index']} of "
            f"the log's {state['head'].size}"
        )

    return check


def _cites_dataset(state: dict[str, Any]) -> str:
    envelopes = state["envelopes"]
    provenance = ModelProvenance.of(envelopes[PROVENANCE].body())
    state["provenance"] = provenance
    dataset = envelopes.get(DATASET)
    cited = provenance.dataset_statement_digest
    if dataset is None:
        raise AttestationError("the bundle holds no dataset statement")
    if cited != dataset.digest:
        raise AttestationError(
            f"the provenance cites dataset statement {cited[:16] or 'none'}, the bundle holds "
            f"{dataset.digest[:16]}"
        )
    facts = dataset_facts(dataset)
    signed = provenance.lineage
    for name in ("manifest_sha256", "dataset_md5", "dvc_tag", "data_git_commit_id"):
        if facts[name] != signed.get(name):
            raise AttestationError(
                f"{name}: the dataset statement says {facts[name]}, the provenance "
                f"{signed.get(name)}"
            )
    return (
        f"tag {facts['dvc_tag']}, commit {facts['data_git_commit_id'][:12]}, {facts['dataset_md5']}"
    )


def _older_heads(state: dict[str, Any]) -> list[TreeHead]:
    """The heads the statements carry (the log as it was when each was made)."""
    heads = []
    envelopes = state.get("envelopes", {})
    provenance = state.get("provenance")
    if provenance is not None and provenance.tree_head:
        heads.append(TreeHead.from_json(provenance.tree_head, "the provenance's tree head"))
    dataset = envelopes.get(DATASET)
    if dataset is not None:
        carried = dataset.body().get("predicate", {}).get("transparency_log")
        if carried:
            heads.append(TreeHead.from_json(carried, "the dataset statement's tree head"))
    return heads


def _consistency_step(
    older: TreeHead, bundle: Mapping[str, Any], trust: TrustStore, state: dict[str, Any]
) -> Callable[[], str]:
    def check() -> str:
        verify_head(older, trust, "older tree head")
        proofs = {int(p["from_size"]): p.get("proof") for p in bundle.get("consistency", [])}
        check_consistency(older, state["head"], proofs.get(older.size))
        return (
            f"the log of {state['head'].size} leaves extends the head of size {older.size} "
            f"signed at {older.timestamp}"
        )

    return check


def _report(report: Mapping[str, Any], state: dict[str, Any]) -> str:
    html = str(report["html"]).encode("utf-8")
    digest = hashlib.sha256(html).hexdigest()
    for what, envelope in state.get("envelopes", {}).items():
        if not what.startswith("decision"):
            continue
        body = envelope.body()
        if body["predicate"].get("decision") != "audit-report":
            continue
        signed = {s["name"]: s["digest"].get("sha256") for s in body["subject"]}
        if digest in signed.values():
            return f"report.html ({digest[:16]}) is the one the audit-report decision signed"
    raise AttestationError(
        f"no signed audit-report decision names the report's sha256 {digest[:16]}"
    )


def _model_dir(model_dir: Path, trust: TrustStore, state: dict[str, Any]) -> str:
    verified = verify_model(model_dir, trust)
    if verified.provenance_digest != state["envelopes"][PROVENANCE].digest:
        raise AttestationError(
            f"{model_dir} is signed by provenance {verified.provenance_digest[:16]}, not the "
            "bundle's"
        )
    try:
        stored = json.loads((model_dir / "lineage.json").read_text())
    except (OSError, ValueError) as exc:
        raise AttestationError(f"{model_dir}/lineage.json is unreadable ({exc})") from None
    differences = lineage_disagreements(verified.provenance, stored)
    if differences:
        raise AttestationError(
            "lineage.json differs from the signed facts: " + "; ".join(differences[:3])
        )
    return f"{len(verified.provenance.files)} files re-hashed; model.sig and provenance verify"


def _data_dir(data_dir: Path, state: dict[str, Any]) -> str:
    """Every file of the checkout read once (its sha256 against the manifest, its md5 into
    DVC's listing), the manifest and the listing against the signed statement."""
    from lineage import manifest as manifest_format

    root = (
        data_dir / "dataset"
        if (data_dir / "dataset" / manifest_format.MANIFEST_NAME).is_file()
        else data_dir
    )
    manifest_path = root / manifest_format.MANIFEST_NAME
    if not manifest_path.is_file():
        raise AttestationError(f"{data_dir} holds no {manifest_format.MANIFEST_NAME}")
    facts = dataset_facts(state["envelopes"][DATASET])
    hashed = _hash_tree(root)
    manifest_sha = hashed[manifest_format.MANIFEST_NAME][1]
    if manifest_sha != facts["manifest_sha256"]:
        raise AttestationError(
            f"{manifest_path} hashes to {manifest_sha}, the signed statement says "
            f"{facts['manifest_sha256']}"
        )
    rows = manifest_format.parse(manifest_path.read_text())
    for row in rows:
        found = hashed.get(row.file_path)
        if found is None:
            raise AttestationError(
                f"{row.file_path} (record {row.record_id}) is missing from {root}"
            )
        if found[1] != row.sha256:
            raise AttestationError(f"{row.file_path} does not hash to the manifest's sha256")
    entries = [{"md5": md5, "relpath": relpath} for relpath, (md5, _) in sorted(hashed.items())]
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")  # DVC's .dir object
    md5 = hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"
    if (
        md5 != facts["dataset_md5"]
        or hashlib.sha256(listing).hexdigest() != facts["dataset_dir_sha256"]
    ):
        raise AttestationError(
            f"the files of {root} make DVC directory {md5}, the signed statement names "
            f"{facts['dataset_md5']} (a file was added, removed or changed)"
        )
    return f"{len(rows)} records re-hashed; manifest and DVC directory {md5} as signed"


def _hash_tree(root: Path) -> dict[str, tuple[str, str]]:
    """relpath -> (md5, sha256) of every file under `root`, each read once. A dataset is
    many small files: `os.walk` lists them without a stat and a Path per entry (a third
    faster than `rglob` + `relative_to` on 20k scans), and a small file is read whole."""
    found: dict[str, tuple[str, str]] = {}
    base = os.fspath(root)
    for directory, _, names in os.walk(base):
        relative = os.path.relpath(directory, base)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        folder = Path(directory)
        for name in names:
            digests = _file_digests(folder / name)
            if digests is not None:
                found[prefix + name] = digests
    return found


WHOLE_FILE_BYTES = 8 << 20  # read in one call below this; in 1 MiB chunks above


def _file_digests(path: Path) -> tuple[str, str] | None:
    """(md5, sha256) of a regular file (followed through links); None for anything else (a
    FIFO or socket is never opened)."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        return None
    if info.st_size <= WHOLE_FILE_BYTES:
        data = path.read_bytes()
        md5_hex = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return md5_hex, hashlib.sha256(data).hexdigest()
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _reason(exc: Exception) -> str:
    if isinstance(exc, AttestationError):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"the bundle lacks {exc}"
    return f"{exc.__class__.__name__}: {exc}"
