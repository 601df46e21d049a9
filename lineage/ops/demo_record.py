"""`lineage demo --pattern record`: the healthcare scenario of the reference sample, end to end.

Import the consent registry; publish v1.0 (consent-filtered, split by patient) and train it;
promote and deploy it; three patients withdraw: record it and show the impact (the model,
its alias, its endpoint); publish v2.0, which excludes them, and train it; prove it with
`audit excluded` (v2 passes; v1, still registered and deployed, fails); move production to
v2; re-derive the consent snapshot v1 was filtered with from the registry's history; write
the audit report of the production model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from lineage.audit.queries import Exclusion, Impact, audit_excluded, audit_model, impact
from lineage.audit.report import write_report
from lineage.config import Settings
from lineage.consent import cohort, registry_csv
from lineage.consent.store import ConsentStore
from lineage.erasure.erase import erase
from lineage.errors import LineageError
from lineage.index.store import LineageIndex
from lineage.ops.demo import CHAMPION, Reporter, Step, Timeline, model_ref
from lineage.ops.deploy import DeployResult, deploy, running_endpoints
from lineage.ops.process import ProcessOptions
from lineage.ops.train import PipelineResult, TrainOptions, pipeline, promote
from lineage.query.verify import verify
from lineage.registry import mlflow_client

SOURCE = "synthetic-cxr"
WITHDRAWALS = 3
ACTOR = "lineage-demo"
DEMO_REQUEST = "DEMO-ERASURE-1"  # the reference of the (demo) patient's erasure request


@dataclass(frozen=True)
class RecordDemoOptions:
    fraction: float = 1.0
    epochs: int = 5
    port: int = 8080
    repo: str = "patients"
    model_name: str | None = None


@dataclass(frozen=True)
class ConsentCheck:
    """A model's consent snapshot re-derived from the registry's history: does it match?"""

    model: str
    as_of: str | None
    sha256: str | None  # the snapshot the model's data was filtered with
    recomputed: str | None  # the registry's consenting set at `as_of`, hashed again
    matches: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "as_of": self.as_of,
            "sha256": self.sha256,
            "recomputed": self.recomputed,
            "matches": self.matches,
        }


@dataclass
class RecordDemoResult:
    versions: dict[str, PipelineResult] = field(default_factory=dict)
    withdrawn: list[str] = field(default_factory=list)
    impacts: list[Impact] = field(default_factory=list)
    exclusions: dict[str, Exclusion] = field(default_factory=dict)
    consent_check: ConsentCheck | None = None
    endpoint: DeployResult | None = None
    report: dict[str, str] = field(default_factory=dict)
    erasure: dict[str, Any] = field(default_factory=dict)  # the last step: one patient erased
    steps: list[Step] = field(default_factory=list)
    mlflow_ui: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": {label: made.to_json() for label, made in self.versions.items()},
            "withdrawn": self.withdrawn,
            "impacts": [i.to_json() for i in self.impacts],
            "exclusions": {k: e.to_json() for k, e in self.exclusions.items()},
            "consent_check": {} if self.consent_check is None else self.consent_check.to_json(),
            "endpoint": {} if self.endpoint is None else self.endpoint.to_json(),
            "report": self.report,
            "erasure": self.erasure,
            "steps": [s.__dict__ for s in self.steps],
            "mlflow_ui": self.mlflow_ui,
        }


def _ref(version: PipelineResult) -> str:
    return model_ref(version.training.output)


def run_record_demo(  # long: the scenario as one story; acts can split later
    settings: Settings,
    options: RecordDemoOptions,
    reporter: Reporter | None = None,
    *,
    stream: bool = False,
) -> RecordDemoResult:
    from local.stack import stack_for

    timeline = Timeline(reporter)
    result = RecordDemoResult(steps=timeline.steps)
    run = timeline.run
    run("stack up", lambda: stack_for(settings).up(), lambda _: "git, s3, mlflow healthy")

    registry = settings.home / "demo" / "registry.csv"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(cohort.registry_csv())
    store = ConsentStore.from_settings(settings)
    run(
        f"consent import {registry.name} ({SOURCE})",
        lambda: store.import_rows(registry_csv.read(registry), source=registry.name, actor=ACTOR),
        lambda r: (
            f"{r.rows} scans, {len(r.patients_added)} new patients"
            + ("" if r.changed else " (already imported: nothing changed)")
        ),
    )
    client = mlflow_client(settings.mlflow_uri)
    index = LineageIndex.from_settings(settings)
    run(
        "index rebuild",
        lambda: index.rebuild(client),
        lambda s: f"{s.models} versions, {s.records} records",
    )

    def version(label: str) -> PipelineResult:
        return pipeline(
            settings,
            ProcessOptions(
                version=label,
                fraction=options.fraction,
                source=SOURCE,
                repo=options.repo,
                pattern="record",
            ),
            TrainOptions(tag="", epochs=options.epochs, model_name=options.model_name),
            stream=stream,
        )

    def described(made: PipelineResult) -> str:
        processing, training = made.processing.output, made.training.output
        patients = sum((processing.patients or {}).values())
        consent = processing.consent or {}
        return (
            f"{_ref(made)}: {patients} patients "
            f"({consent['excluded_patients']} excluded without consent), "
            f"best val {training.metrics['best_val_accuracy']:.3f}"
        )

    v1 = run("v1.0: process (record pattern) + train", lambda: version("v1.0"), described)
    result.versions["v1.0"] = v1
    v1_ref = _ref(v1)
    run(
        f"promote {v1_ref} to {CHAMPION}",
        lambda: promote(settings, v1_ref, CHAMPION),
        lambda p: f"{p.model_name}@{CHAMPION} -> {p.version}",
    )
    name = v1.training.output.model_name
    result.endpoint = run(
        f"deploy {name}@{CHAMPION}",
        lambda: deploy(settings, f"{name}@{CHAMPION}", port=options.port),
        lambda d: d.endpoint,
    )

    result.withdrawn = _pick_patients(settings, v1_ref)
    for patient in result.withdrawn:
        result.impacts.append(
            run(
                f"{patient} withdraws consent",
                functools.partial(_withdraw, settings, store, patient),
                lambda i: (
                    f"in {len(i.models)} model versions; aliases "
                    f"{', '.join(i.aliases) or 'none'}; endpoints "
                    f"{', '.join(e['url'] for e in i.endpoints) or 'none'}"
                ),
            )
        )

    v2 = run("v2.0: process (record pattern) + train", lambda: version("v2.0"), described)
    result.versions["v2.0"] = v2
    v2_ref = _ref(v2)
    for ref in (v1_ref, v2_ref):
        result.exclusions[ref] = run(
            f"audit excluded {', '.join(result.withdrawn)} from {ref}",
            functools.partial(_excluded_all, settings, result.withdrawn, ref),
            lambda e: (
                ("PASSED" if e.passed else "FAILED: still held by ")
                + ", ".join(sorted({h.model for h in [*e.violations, *e.in_use]}))
            ),
        )
    run(
        f"promote {v2_ref} to {CHAMPION} and redeploy",
        lambda: (
            promote(settings, v2_ref, CHAMPION),
            deploy(settings, f"{name}@{CHAMPION}", port=options.port),
        )[1],
        lambda d: f"{d.endpoint} now serves {d.model.model_name} v{d.model.model_version}",
    )
    result.consent_check = run(
        f"re-derive {v1_ref}'s consent snapshot from the registry's history",
        lambda: _consent_check(settings, v1_ref),
        lambda c: ("identical" if c.matches else "DIFFERENT") + f" ({(c.sha256 or '')[:16]}...)",
    )
    out = settings.home / "demo" / "audit-report.html"
    html_path, json_path, verdict = run(
        f"audit report of {name}@{CHAMPION}",
        lambda: write_report(settings, f"{name}@{CHAMPION}", out, endpoints=running_endpoints),
        lambda r: str(r[0]),
    )
    result.report = {"html": str(html_path), "json": str(json_path), "verdict": verdict}
    erased_patient = result.withdrawn[0]
    erasure = run(
        f"erase {erased_patient}'s images from every dataset version (request {DEMO_REQUEST})",
        lambda: erase(
            settings,
            erased_patient,
            request=DEMO_REQUEST,
            actor=ACTOR,
            impact_of=functools.partial(impact, settings, endpoints=running_endpoints),
        ),
        lambda e: (
            f"{len(e.deleted_objects)} objects deleted, {len(e.plan.kept)} kept (shared), "
            f"{len(e.deleted_files)} local copies; evidence {e.evidence.get('html')}"
        ),
    )
    result.erasure = erasure.to_json()
    checked = run(
        f"verify {v1.processing.output.tag} after the erasure",
        lambda: verify(settings, tag=v1.processing.output.tag, repo=options.repo),
        lambda v: f"intact except {len(v.erased)} erased records" if v.ok else "NOT intact",
    )
    result.erasure["verify_after"] = checked.to_json()
    result.mlflow_ui = settings.mlflow_uri
    return result


def _pick_patients(settings: Settings, ref: str) -> list[str]:
    """Three consenting patients from the training split of `ref` (the ones who withdraw)."""
    audit = audit_model(settings, ref, endpoints=running_endpoints)
    chosen = [
        p.patient_id for p in audit.patients if "train" in p.splits and p.consent_now == "granted"
    ][:WITHDRAWALS]
    if len(chosen) < WITHDRAWALS:
        raise LineageError(f"{ref} has fewer than {WITHDRAWALS} consenting training patients")
    return chosen


def _withdraw(settings: Settings, store: ConsentStore, patient: str) -> Impact:
    store.record(patient, "withdraw", actor=ACTOR, reason="demo: patient request")
    return impact(settings, patient, endpoints=running_endpoints)


def _excluded_all(settings: Settings, patients: list[str], ref: str) -> Exclusion:
    """One exclusion verdict over several patients (each since their own withdrawal)."""
    verdicts = [
        audit_excluded(settings, p, model=ref, endpoints=running_endpoints) for p in patients
    ]
    return Exclusion(
        patient_id=", ".join(patients),
        since=min(v.since for v in verdicts),
        violations=[h for v in verdicts for h in v.violations],
        in_use=[h for v in verdicts for h in v.in_use],
        clean=sorted({ref for v in verdicts for ref in v.clean}),
        models_checked=max(v.models_checked for v in verdicts),
        source=verdicts[0].source,
    )


def _consent_check(settings: Settings, ref: str) -> ConsentCheck:
    audit = audit_model(settings, ref, endpoints=running_endpoints)
    return ConsentCheck(
        model=ref,
        as_of=audit.model.consent_as_of,
        sha256=audit.model.consent_snapshot_sha256,
        recomputed=audit.snapshot_recomputed,
        matches=audit.snapshot_ok,
    )
