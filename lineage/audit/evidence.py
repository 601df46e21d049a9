"""`lineage evidence bundle`: everything an auditor needs to check a model offline, in one
file (the format and its verification: `lineage.attest.bundle`).

Made only for a model whose chain verifies now (every check `trace` makes, signatures
included): a bundle vouches for what it holds. The audit report is written, signed as an
`audit-report` decision and put in the log first, so the bundle's newest tree head covers it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.attest.bundle import FORMAT, verify_bundle
from lineage.attest.envelopes import Envelope
from lineage.attest.host import Evidence, decisions_of_run
from lineage.attest.keys import AttestationError, utc_now
from lineage.attest.merkle import TreeHead
from lineage.attest.statements import DATASET_STATEMENT_FILE, PROVENANCE_FILE, ModelProvenance
from lineage.audit.queries import EndpointLister
from lineage.audit.report import write_report
from lineage.config import Settings
from lineage.credentials import write_private
from lineage.errors import LineageError
from lineage.index.store import LineageIndex
from lineage.query.chain import locate
from lineage.registry import download_artifact, mlflow_client


@dataclass(frozen=True)
class BundleWritten:
    path: Path
    model: str
    statements: int
    tree_size: int
    report_verdict: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "model": self.model,
            "statements": self.statements,
            "tree_size": self.tree_size,
            "report_verdict": self.report_verdict,
        }


@dataclass(frozen=True)
class _Gathered:
    """What the bundle holds besides the log's proofs: the signed statements and the report."""

    provenance: Envelope
    dataset: Envelope | None
    decisions: list[Envelope]
    report_html: str
    report_json: dict[str, Any]
    verdict: str

    @property
    def statements(self) -> list[Envelope]:
        return [self.provenance, *([self.dataset] if self.dataset else []), *self.decisions]


def write_bundle(
    settings: Settings, model: str, out: Path, *, endpoints: EndpointLister
) -> BundleWritten:
    client = mlflow_client(settings.mlflow_uri)
    version, run = locate(client, model=model)
    if version is None:
        raise LineageError(
            f"{model} is not a registered version", "pass NAME/VERSION or NAME@ALIAS"
        )
    evidence = Evidence(settings)
    # the report's audit answers from the index: bring it in step with the registry first
    LineageIndex.from_settings(settings).sync(client)
    gathered = _gather(settings, client, version.ref, run.run_id, endpoints)
    head = evidence.head()
    bundle = {
        "format": FORMAT,
        "created": utc_now(),
        "model": {
            "ref": version.ref,
            "name": version.name,
            "version": version.version,
            "aliases": version.aliases,
            "run_id": run.run_id,
        },
        "trusted_keys": evidence.trust.to_json(),
        "statements": {
            "provenance": gathered.provenance.to_json(),
            "dataset": None if gathered.dataset is None else gathered.dataset.to_json(),
            "decisions": [d.to_json() for d in gathered.decisions],
        },
        "tree_head": head.to_json(),
        "inclusion": _inclusion(evidence, gathered.statements, head),
        "consistency": _consistency(evidence, gathered.provenance, gathered.dataset, head),
        "report": {"html": gathered.report_html, "json": gathered.report_json},
    }
    checked = verify_bundle(bundle, evidence.trust)
    if not checked.ok:  # e.g. the log was rewritten below a head a statement carries
        failure = checked.failure
        raise AttestationError(
            f"the evidence of {version.ref} does not verify: "
            f"{failure.name if failure else ''}: {failure.detail if failure else ''}",
            "investigate with `lineage log verify` and `lineage trace`; no bundle was written",
        )
    write_private(out, json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    return BundleWritten(out, version.ref, len(gathered.statements), head.size, gathered.verdict)


def _gather(
    settings: Settings, client: Any, ref: str, run_id: str, endpoints: EndpointLister
) -> _Gathered:
    """The audit report (written and signed now: refused unless the model verifies), the
    model's provenance and dataset statement, the signed decisions kept with its run."""
    with tempfile.TemporaryDirectory(prefix="lineage-bundle-") as tmp:
        html, _, verdict = write_report(
            settings, ref, Path(tmp) / "report.html", endpoints=endpoints
        )
        if not verdict.startswith("Verified"):
            raise LineageError(
                f"{ref} does not verify ({verdict})",
                "a bundle vouches for what it holds: fix the failed checks first "
                f"(`lineage trace --model {ref}`)",
            )
        model_dir = Path(download_artifact(client, run_id, "model", str(Path(tmp) / "m")))
        dataset_path = model_dir / DATASET_STATEMENT_FILE
        return _Gathered(
            provenance=Envelope.read(model_dir / PROVENANCE_FILE),
            dataset=Envelope.read(dataset_path) if dataset_path.is_file() else None,
            decisions=decisions_of_run(settings, run_id),
            report_html=html.read_text(),
            report_json=json.loads(html.with_suffix(".json").read_text()),
            verdict=verdict,
        )


def _inclusion(evidence: Evidence, statements: list[Envelope], head: TreeHead) -> dict[str, Any]:
    proofs: dict[str, Any] = {}
    with evidence.log.engine.begin() as connection:
        for envelope in statements:
            leaf = evidence.log.find(connection, "attestation", digest=envelope.digest)
            if leaf is None or leaf.index > head.size:
                raise AttestationError(
                    f"statement {envelope.digest[:16]} is not in the transparency log",
                    "it was never recorded by an operator: do not vouch for it",
                )
            proofs[envelope.digest] = {
                "index": leaf.index,
                "entry": leaf.body(),
                "proof": evidence.log.prove_inclusion(connection, leaf.index, head.size),
            }
    return proofs


def _consistency(
    evidence: Evidence, provenance: Envelope, dataset: Envelope | None, head: TreeHead
) -> list[dict[str, Any]]:
    carried = []
    tree_head = ModelProvenance.of(provenance.body()).tree_head
    if tree_head:
        carried.append(TreeHead.from_json(tree_head))
    if dataset is not None:
        found = dataset.body().get("predicate", {}).get("transparency_log")
        if found:
            carried.append(TreeHead.from_json(found))
    proofs = []
    with evidence.log.engine.begin() as connection:
        for older in carried:
            proofs.append(
                {
                    "from_size": older.size,
                    "to_size": head.size,
                    "proof": evidence.log.prove_consistency(connection, older.size, head.size),
                }
            )
    return proofs
