"""The record-level questions, as plain functions over a `LineageSource`.

- `audit_record`: was patient X in which model's training data, which split, which scans,
  under which consent snapshot?
- `impact`: patient X withdrew: every registered version, alias and running endpoint whose
  data includes X.
- `audit_model`: every patient of a model, and whether each had consent at training time
  (the registry's history re-derived at the dataset's snapshot time, its hash re-checked).
- `audit_excluded`: since a date, is X out of every model? PASSED or FAILED with the list.

Endpoints are the runtimes' business, so the caller passes their listers in: the local
endpoints always (`endpoints=`, an `EndpointLister`) and, when asked (`sagemaker=`, a
`SageMakerLister`; the CLI's `--sagemaker` passes `lineage.sagemaker.endpoints.find_endpoints`),
the SageMaker endpoints whose lineage tags name the version. Looking at SageMaker needs AWS
credentials and a region, so it is never done silently; every answer says whether it was
asked (`SageMakerCheck`), so "none" never stands in for "not looked".

Erasure is deliberately not done here: history stays reproducible for audits. `impact`
names every dataset version and scan that holds the patient, which is the plan an erasure
step (deleting those objects from the DVC remote, and re-publishing) would execute.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from lineage.config import Settings
from lineage.consent.events import ConsentEvent, format_time, parse_time
from lineage.consent.store import ConsentStore
from lineage.index.source import AuditError, LineageSource, ModelData, ScanSource, describe_rows
from lineage.manifest import ManifestRow
from lineage.registry import mlflow_client
from lineage.serving import EndpointListing, SageMakerEndpoint

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ASK_SAGEMAKER = "pass --sagemaker"


class EndpointLister(Protocol):
    """The running endpoints, each as ``{"url", "model_name", "model_version", "run_id"}``.

    Endpoints are a runtime's business (the local one: ``lineage.ops.deploy.running_endpoints``),
    so the audits do not find them themselves: the caller (the CLI, an operation) passes the
    runtime's lister. An endpoint that runs but cannot say what it serves is the lister's
    error to raise: an audit that skipped it could miss a deployed model.
    """

    def __call__(self, settings: Settings, /) -> list[dict[str, Any]]: ...


class SageMakerLister(Protocol):
    """The lineage-tagged SageMaker endpoints of one region (the SageMaker runtime's:
    ``lineage.sagemaker.endpoints.find_endpoints``, AWS calls in the AWS configuration's
    region). Passed only when asked: an audit given none says "not asked". An endpoint whose
    tags cannot be read is the lister's error to raise, as for `EndpointLister`.
    """

    def __call__(self) -> EndpointListing: ...


def all_aliases(client: MlflowClient) -> dict[str, dict[str, list[str]]]:
    """name -> version -> aliases, live from the registry (aliases move more often than any
    cache is rebuilt), every registered model in one paginated call."""
    found: dict[str, dict[str, list[str]]] = {}
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for registered in page:
            by_version: dict[str, list[str]] = defaultdict(list)
            for alias, version in (registered.aliases or {}).items():
                by_version[str(version)].append(alias)
            found[registered.name] = by_version
        token = page.token
        if not token:
            return found


def trained_at(model: ModelData) -> str:
    return format_time(datetime.fromtimestamp(model.trained_ms / 1000, UTC))


@dataclass(frozen=True)
class SageMakerCheck:
    """The SageMaker side of an answer: not asked (`listing` None), or the lineage-tagged
    endpoints found in one region, kept to the versions the answer is about."""

    listing: EndpointListing | None = None

    @property
    def asked(self) -> bool:
        return self.listing is not None

    def of(self, ref: str) -> list[SageMakerEndpoint]:
        return [] if self.listing is None else self.listing.of(ref)

    def only(self, refs: Iterable[str]) -> SageMakerCheck:
        """The same check, kept to the endpoints serving `refs` (NAME/VERSION)."""
        if self.listing is None:
            return self
        wanted = set(refs)
        kept = tuple(e for e in self.listing.endpoints if e.model in wanted)
        return SageMakerCheck(replace(self.listing, endpoints=kept))

    def to_json(self) -> dict[str, Any]:
        if self.listing is None:
            return {"asked": False, "region": None, "endpoints": []}
        return {
            "asked": True,
            "region": self.listing.region,
            "endpoints": [e.to_json() for e in self.listing.endpoints],
        }

    def line(self, ask: str = ASK_SAGEMAKER) -> str:
        """One line for people: "not asked (how to ask)", or each endpoint and its model."""
        if self.listing is None:
            return f"SageMaker endpoints: not asked ({ask})"
        shown = ", ".join(f"{e.name} ({e.status}, {e.model})" for e in self.listing.endpoints)
        return f"SageMaker endpoints in {self.listing.region}: {shown or 'none'}"


@dataclass(frozen=True)
class ModelHit:
    """A model version whose training data holds the patient."""

    model: str
    aliases: list[str]
    endpoints: list[str]
    run_id: str
    trained_at: str
    tag: str
    commit: str
    consent_snapshot_sha256: str | None
    consent_as_of: str | None
    consent_at_training: str | None  # the patient's status at the snapshot, from the registry
    splits: list[str]
    scans: list[dict[str, str]]

    @property
    def deployed(self) -> bool:
        return bool(self.aliases or self.endpoints)


@dataclass
class Context:
    """What every audit reads: the source of records, the registry, the consent log."""

    settings: Settings
    client: MlflowClient
    source: LineageSource
    consent: ConsentStore
    endpoint_lister: EndpointLister
    _aliases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _endpoints: list[dict[str, Any]] | None = None
    _events: list[ConsentEvent] | None = None
    _states: dict[str | None, dict[str, str]] = field(default_factory=dict)
    _erasure_log: Any = None
    sagemaker: SageMakerCheck = field(default_factory=SageMakerCheck)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        endpoints: EndpointLister,
        sagemaker: SageMakerLister | None = None,
        scan: bool = False,
    ) -> Context:
        """The audits' context; `sagemaker`: also look up SageMaker endpoints with it (AWS
        calls); None: not asked."""
        from lineage.index.store import LineageIndex

        client = mlflow_client(settings.mlflow_uri)
        with ThreadPoolExecutor(max_workers=1) as pool:  # two registry round trips at once
            aliases = pool.submit(all_aliases, client)
            source: LineageSource = (
                ScanSource(client) if scan else LineageIndex.from_settings(settings).source(client)
            )
            context = cls(settings, client, source, ConsentStore.from_settings(settings), endpoints)
            context._aliases = aliases.result()
        if sagemaker is not None:
            context.sagemaker = SageMakerCheck(sagemaker())
        return context

    def aliases(self, model: ModelData) -> list[str]:
        return sorted(self._aliases.get(model.name, {}).get(model.version, []))

    def endpoints(self, model: ModelData) -> list[str]:
        if self._endpoints is None:
            self._endpoints = self.endpoint_lister(self.settings)
        local = [
            e["url"]
            for e in self._endpoints
            if e["model_name"] == model.name and e["model_version"] == model.version
        ]
        return local + [e.url for e in self.sagemaker.of(model.ref)]

    def events(self) -> list[ConsentEvent]:
        if self._events is None:
            self._events = self.consent.events()
        return self._events

    def erasures(self, patient_id: str) -> list[dict[str, Any]]:
        """The patient's erasures, from the tombstones (verified erasure log): what was
        erased, under which request, and which dataset versions and models had held it."""
        from lineage.erasure import ErasureLog

        if self._erasure_log is None:
            self._erasure_log = ErasureLog.from_settings(self.settings)
        found = []
        for event in self._erasure_log.of_patient(patient_id):
            datasets = {d["dataset_md5"] for t in event.tombstones for d in t.datasets}
            found.append(
                {
                    "seq": event.seq,
                    "request": event.request,
                    "actor": event.actor,
                    "at": event.at,
                    "records": len(event.tombstones),
                    "scans": sorted({t.scan_id for t in event.tombstones}),
                    "dataset_versions": sorted(
                        {d["tag"] for t in event.tombstones for d in t.datasets}
                    ),
                    "models_trained_on_them": [
                        m.ref for m in self.source.models() if m.dataset_md5 in datasets
                    ],
                }
            )
        return found

    def status_at(self, patient_id: str, moment: str | None) -> str | None:
        """The patient's consent at `moment` (now when None); None when not yet known."""
        if moment not in self._states:
            states: dict[str, str] = {}
            for event in self.events():
                if moment is not None and event.at > moment:
                    break
                states[event.patient_id] = event.status
            self._states[moment] = states
        return self._states[moment].get(patient_id)

    def hit(self, model: ModelData, rows: list[ManifestRow], patient_id: str) -> ModelHit:
        described = describe_rows(rows)
        return ModelHit(
            model=model.ref,
            aliases=self.aliases(model),
            endpoints=self.endpoints(model),
            run_id=model.run_id,
            trained_at=trained_at(model),
            tag=model.tag,
            commit=model.commit,
            consent_snapshot_sha256=model.consent_snapshot_sha256,
            consent_as_of=model.consent_as_of,
            consent_at_training=self.status_at(patient_id, model.consent_as_of)
            if model.consent_as_of
            else None,
            splits=described["splits"],
            scans=described["scans"],
        )

    def hits(self, patient_id: str) -> tuple[list[ModelHit], list[ModelData]]:
        """The versions holding the patient, and every version checked."""
        checked = self.source.models()
        found = self.source.records_of_patient(patient_id)
        by_ref = {m.ref: m for m in checked}
        hits = [self.hit(by_ref[ref], rows, patient_id) for ref, rows in sorted(found.items())]
        return hits, checked


def _consent_summary(context: Context, patient_id: str) -> dict[str, Any] | None:
    history = [e for e in context.events() if e.patient_id == patient_id]
    if not history:
        return None
    return {
        "status": history[-1].status,
        "since": history[-1].at,
        "events": [e.to_json() for e in history],
    }


@dataclass(frozen=True)
class RecordAudit:
    patient_id: str
    consent: dict[str, Any] | None
    models: list[ModelHit]
    models_checked: int
    source: str
    erasures: list[dict[str, Any]] = field(default_factory=list)  # from the tombstones
    sagemaker: SageMakerCheck = field(default_factory=SageMakerCheck)

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "consent": self.consent,
            "models": [h.__dict__ for h in self.models],
            "models_checked": self.models_checked,
            "source": self.source,
            "erasures": self.erasures,
            "sagemaker": self.sagemaker.to_json(),
        }


def audit_record(
    settings: Settings,
    patient_id: str,
    *,
    endpoints: EndpointLister,
    sagemaker: SageMakerLister | None = None,
    scan: bool = False,
) -> RecordAudit:
    context = Context.open(settings, endpoints=endpoints, sagemaker=sagemaker, scan=scan)
    hits, checked = context.hits(patient_id)
    return RecordAudit(
        patient_id,
        _consent_summary(context, patient_id),
        hits,
        len(checked),
        context.source.kind,
        context.erasures(patient_id),
        context.sagemaker.only(h.model for h in hits),
    )


@dataclass(frozen=True)
class Impact:
    patient_id: str
    status: str | None
    models: list[ModelHit]
    aliases: list[str]
    endpoints: list[dict[str, str]]
    datasets: list[str]  # dataset tags holding the patient (what an erasure would re-publish)
    models_checked: int
    source: str
    sagemaker: SageMakerCheck = field(default_factory=SageMakerCheck)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "models": [h.__dict__ for h in self.models],
            "sagemaker": self.sagemaker.to_json(),
        }


def impact(
    settings: Settings,
    patient_id: str,
    *,
    endpoints: EndpointLister,
    sagemaker: SageMakerLister | None = None,
    scan: bool = False,
) -> Impact:
    context = Context.open(settings, endpoints=endpoints, sagemaker=sagemaker, scan=scan)
    hits, checked = context.hits(patient_id)
    summary = _consent_summary(context, patient_id)
    return Impact(
        patient_id=patient_id,
        status=None if summary is None else summary["status"],
        models=hits,
        aliases=sorted(f"{h.model.rsplit('/', 1)[0]}@{a}" for h in hits for a in h.aliases),
        endpoints=[{"url": url, "model": h.model} for h in hits for url in h.endpoints],
        datasets=sorted({h.tag for h in hits}),
        models_checked=len(checked),
        source=context.source.kind,
        sagemaker=context.sagemaker.only(h.model for h in hits),
    )


@dataclass(frozen=True)
class PatientLine:
    patient_id: str
    records: int
    splits: list[str]
    labels: list[str]
    consent_at_training: str | None
    consent_now: str | None
    withdrawn_at: str | None  # when consent was withdrawn after training, if it was
    erased: str | None = None  # "<time> under <request>" when the patient's data was erased


@dataclass(frozen=True)
class ModelAudit:
    model: ModelData
    aliases: list[str]
    endpoints: list[str]
    records: dict[str, dict[str, int]]  # split -> label -> count
    patients_by_split: dict[str, int]
    patients: list[PatientLine]
    snapshot_recomputed: str | None  # sha256 of the registry's consenting set at the as-of time
    source: str
    sagemaker: SageMakerCheck = field(default_factory=SageMakerCheck)

    @property
    def snapshot_ok(self) -> bool:
        return self.model.pattern != "record" or (
            self.snapshot_recomputed is not None
            and self.snapshot_recomputed == self.model.consent_snapshot_sha256
        )

    @property
    def without_consent(self) -> list[PatientLine]:
        return [p for p in self.patients if p.consent_at_training != "granted"]

    @property
    def withdrawn_since(self) -> list[PatientLine]:
        return [p for p in self.patients if p.withdrawn_at is not None]

    @property
    def ok(self) -> bool:
        return self.snapshot_ok and not self.without_consent

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model.__dict__,
            "trained_at": trained_at(self.model),
            "aliases": self.aliases,
            "endpoints": self.endpoints,
            "records": self.records,
            "patients_by_split": self.patients_by_split,
            "patient_count": len(self.patients),
            "snapshot_recomputed": self.snapshot_recomputed,
            "snapshot_ok": self.snapshot_ok,
            "without_consent": [p.patient_id for p in self.without_consent],
            "withdrawn_since": [
                {"patient_id": p.patient_id, "at": p.withdrawn_at} for p in self.withdrawn_since
            ],
            "patients": [p.__dict__ for p in self.patients],
            "source": self.source,
            "sagemaker": self.sagemaker.to_json(),
        }


def audit_model(
    settings: Settings,
    ref: str,
    *,
    endpoints: EndpointLister,
    sagemaker: SageMakerLister | None = None,
    scan: bool = False,
) -> ModelAudit:
    from lineage.query.chain import locate

    context = Context.open(settings, endpoints=endpoints, sagemaker=sagemaker, scan=scan)
    version, _ = locate(context.client, model=ref)
    assert version is not None
    model = next((m for m in context.source.models() if m.ref == version.ref), None)
    if model is None:
        raise AuditError(f"{version.ref} is not indexed", "run `lineage index rebuild`")
    rows = context.source.records_of_model(model.ref)
    records: dict[str, Counter[str]] = defaultdict(Counter)
    by_patient: dict[str, list[ManifestRow]] = defaultdict(list)
    for row in rows:
        records[row.split][row.label] += 1
        if row.patient_id:
            by_patient[row.patient_id].append(row)
    recomputed = None
    if model.pattern == "record":
        if not model.consent_as_of:
            raise AuditError(f"{model.ref} is a record-pattern model without consent_as_of")
        recomputed = context.consent.snapshot(model.consent_as_of).sha256
    patients = []
    for patient_id, patient_rows in sorted(by_patient.items()):
        now = context.status_at(patient_id, None)
        withdrawn_at = None
        if now == "withdrawn":
            after = [
                e
                for e in context.events()
                if e.patient_id == patient_id and e.at > (model.consent_as_of or "")
            ]
            withdrawn_at = next((e.at for e in reversed(after) if e.action == "withdraw"), None)
        patients.append(
            PatientLine(
                patient_id=patient_id,
                records=len(patient_rows),
                splits=sorted({r.split for r in patient_rows}),
                labels=sorted({r.label for r in patient_rows}),
                consent_at_training=context.status_at(patient_id, model.consent_as_of),
                consent_now=now,
                withdrawn_at=withdrawn_at,
                erased=_erased_line(context, patient_id) if withdrawn_at else None,
            )
        )
    return ModelAudit(
        model=model,
        aliases=context.aliases(model),
        endpoints=context.endpoints(model),
        records={split: dict(sorted(c.items())) for split, c in sorted(records.items())},
        patients_by_split={
            split: len({p for p, rs in by_patient.items() if any(r.split == split for r in rs)})
            for split in ("train", "val", "test")
        },
        patients=patients,
        snapshot_recomputed=recomputed,
        source=context.source.kind,
        sagemaker=context.sagemaker.only([model.ref]),
    )


@dataclass(frozen=True)
class Exclusion:
    patient_id: str
    since: str
    violations: list[ModelHit]  # trained after `since` and holding the patient
    in_use: list[ModelHit]  # trained before, holding the patient, still registered
    clean: list[str]  # trained after `since` without the patient
    models_checked: int
    source: str
    erasures: list[dict[str, Any]] = field(default_factory=list)  # evidence of erasure
    sagemaker: SageMakerCheck = field(default_factory=SageMakerCheck)

    @property
    def passed(self) -> bool:
        return not self.violations and not self.in_use

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "patient_id": self.patient_id,
            "since": self.since,
            "violations": [h.__dict__ for h in self.violations],
            "in_use": [h.__dict__ for h in self.in_use],
            "clean": self.clean,
            "models_checked": self.models_checked,
            "source": self.source,
            "erasures": self.erasures,
            "sagemaker": self.sagemaker.to_json(),
        }


def audit_excluded(
    settings: Settings,
    patient_id: str,
    since: str | None = None,
    *,
    model: str | None = None,
    endpoints: EndpointLister,
    sagemaker: SageMakerLister | None = None,
    scan: bool = False,
) -> Exclusion:
    """PASSED when no model trained after `since` holds the patient and no older model that
    holds the patient is still registered (or only `model`, when given)."""
    context = Context.open(settings, endpoints=endpoints, sagemaker=sagemaker, scan=scan)
    if since is None:
        withdrawals = [
            e.at for e in context.events() if e.patient_id == patient_id and e.action == "withdraw"
        ]
        if not withdrawals:
            raise AuditError(
                f"{patient_id} has never withdrawn consent", "pass --since DATE explicitly"
            )
        since = withdrawals[-1]
    else:
        since = parse_time(since)
    hits, checked = context.hits(patient_id)
    if model is not None:
        from lineage.query.chain import locate

        version, _ = locate(context.client, model=model)
        assert version is not None
        checked = [m for m in checked if m.ref == version.ref]
        hits = [h for h in hits if h.model == version.ref]
    held = {h.model for h in hits}
    return Exclusion(
        patient_id=patient_id,
        since=since,
        violations=[h for h in hits if h.trained_at >= since],
        in_use=[h for h in hits if h.trained_at < since],
        clean=[m.ref for m in checked if trained_at(m) >= since and m.ref not in held],
        models_checked=len(checked),
        source=context.source.kind,
        erasures=context.erasures(patient_id),
        sagemaker=context.sagemaker.only(held),
    )


def _erased_line(context: Context, patient_id: str) -> str | None:
    erasures = context.erasures(patient_id)
    if not erasures:
        return None
    last = erasures[-1]
    return f"{last['at']} under {last['request']}"
