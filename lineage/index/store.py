"""The lineage index: record -> dataset version -> training run -> registered model version.

A cache, in any SQLAlchemy database (SQLite in LINEAGE_HOME by default), of what MLflow
already holds, so an audit over hundreds of models reads one indexed table instead of
downloading hundreds of manifests. It is filled when a training run completes and can be
rebuilt from MLflow alone (`lineage index rebuild`; the run params carry what came from git).
Datasets are stored once however many runs used them.

Because it is a cache it is never trusted blindly: before answering, the set of registered
versions (and their runs) is compared with the registry, the rows of every dataset are
counted against the manifest's row count, and (every `LINEAGE_INDEX_VERIFY_INTERVAL`
seconds, and on `lineage index verify`) every dataset's rows are compared with its manifest
in MLflow, whose sha256 the training run recorded. Any difference stops the audit with the
instruction to rebuild: an edited index never answers.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError

from lineage.config import Settings
from lineage.credentials import write_private
from lineage.errors import LineageError
from lineage.index.source import (
    AuditError,
    ModelData,
    model_data,
    read_manifest,
    registered_versions,
)
from lineage.manifest import ManifestRow
from lineage.registry import get_run
from lineage.sqlstore import SqlStore

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ENV_VAR = "LINEAGE_INDEX_DB"
INTERVAL_ENV = "LINEAGE_INDEX_VERIFY_INTERVAL"
DEFAULT_VERIFY_INTERVAL_S = 3600.0  # rows against the manifests at least hourly (0: always)
VERIFIED_FILE = "index-verified.json"  # in LINEAGE_HOME, outside the index's database
INSERT_CHUNK = 20_000
WRITE_ATTEMPTS = 20
T = TypeVar("T")

metadata = MetaData()
datasets = Table(
    "idx_datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_md5", String(64), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("records", Integer, nullable=False),
    Index("idx_datasets_key", "dataset_md5", "manifest_sha256", unique=True),
)
records = Table(
    "idx_records",
    metadata,
    Column("dataset_id", Integer, ForeignKey("idx_datasets.id"), nullable=False),
    Column("record_id", String(256), nullable=False),
    Column("patient_id", String(128), nullable=False),
    Column("scan_id", String(128), nullable=False),
    Column("split", String(16), nullable=False),
    Column("label", String(128), nullable=False),
    Column("file_path", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Index("idx_records_patient", "patient_id"),
    Index("idx_records_dataset", "dataset_id"),
)
runs = Table(
    "idx_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("dataset_id", Integer, ForeignKey("idx_datasets.id"), nullable=False),
    Column("trained_ms", BigInteger, nullable=False),
    Column("tag", String(256), nullable=False),
    Column("commit", String(64), nullable=False),
    Column("dataset_md5", String(64), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("pattern", String(16), nullable=False),
    Column("consent_snapshot_sha256", String(64)),
    Column("consent_as_of", String(32)),
)
models = Table(
    "idx_models",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("run_id", String(64), ForeignKey("idx_runs.run_id"), nullable=False),
    Index("idx_models_run", "run_id"),
)


def _row(r: Any) -> ManifestRow:
    return ManifestRow(
        file_path=r.file_path,
        record_id=r.record_id,
        split=r.split,
        label=r.label,
        sha256=r.sha256,
        patient_id=r.patient_id,
        scan_id=r.scan_id,
    )


@dataclass(frozen=True)
class IndexSummary:
    index: str
    models: int
    runs: int
    datasets: int
    records: int
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class IndexVerification:
    """Every indexed dataset's rows against its manifest (`lineage index verify`)."""

    datasets: int
    records: int
    mismatches: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def row_key(row: ManifestRow) -> tuple[str, ...]:
    """A record as both the manifest and the index hold it."""
    return (
        row.record_id,
        row.patient_id,
        row.scan_id,
        row.split,
        row.label,
        row.file_path,
        row.sha256,
    )


class LineageIndex(SqlStore):
    env_var = ENV_VAR
    what = "lineage index"
    hint = f"check {ENV_VAR}; the index can be rebuilt any time with `lineage index rebuild`"
    metadata = metadata
    home: Path | None = None  # where the last full verification is remembered
    verify_interval_s: float = DEFAULT_VERIFY_INTERVAL_S

    @classmethod
    def from_settings(cls, settings: Settings) -> LineageIndex:
        import os

        from lineage.config import env_float

        index = super().from_settings(settings)
        index.home = settings.home
        raw = os.environ.get(INTERVAL_ENV, "").strip()
        index.verify_interval_s = (
            0.0
            if raw in ("0", "0.0")
            else env_float(os.environ, INTERVAL_ENV, DEFAULT_VERIFY_INTERVAL_S)
        )
        return index

    @classmethod
    def settings_url(cls, settings: Settings) -> tuple[str, bool]:
        return settings.index_db, settings.index_db_override is None

    # -- filling -------------------------------------------------------------------------------
    def add(self, client: MlflowClient, name: str, version: str, run_id: str) -> None:
        """Index one registered version (its run and dataset, once each)."""
        model = model_data(name, version, get_run(client, run_id))
        with self.engine.connect() as connection:
            known = self._dataset_id(connection, model) is not None
        if not known:
            with tempfile.TemporaryDirectory(prefix="lineage-index-") as tmp:
                self.add_dataset(model, read_manifest(client, model, Path(tmp)))
        self.add_model(model)

    def add_dataset(self, model: ModelData, rows: list[ManifestRow]) -> int:
        """Store a dataset's records once (a no-op when they are already there). Two
        writers adding the same dataset at once: the loser's insert hits the unique key,
        and its retry finds the winner's copy."""
        return self._retrying(lambda: self._add_dataset(model, rows))

    def _retrying(self, write: Callable[[], T]) -> T:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return write()
            except IntegrityError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

    def _add_dataset(self, model: ModelData, rows: list[ManifestRow]) -> int:
        with self.engine.begin() as connection:
            existing = self._dataset_id(connection, model)
            if existing is not None:
                return existing
            inserted = connection.execute(
                datasets.insert().values(
                    dataset_md5=model.dataset_md5,
                    manifest_sha256=model.manifest_sha256,
                    records=len(rows),
                )
            ).inserted_primary_key
            assert inserted is not None
            dataset_id = int(inserted[0])
            for start in range(0, len(rows), INSERT_CHUNK):
                connection.execute(
                    records.insert(),
                    [
                        {
                            "dataset_id": dataset_id,
                            "record_id": r.record_id,
                            "patient_id": r.patient_id,
                            "scan_id": r.scan_id,
                            "split": r.split,
                            "label": r.label,
                            "file_path": r.file_path,
                            "sha256": r.sha256,
                        }
                        for r in rows[start : start + INSERT_CHUNK]
                    ],
                )
            return dataset_id

    def add_model(self, model: ModelData) -> None:
        """Index a version whose dataset is already stored (see `add_dataset`)."""

        def write() -> None:
            with self.engine.begin() as connection:
                dataset_id = self._dataset_id(connection, model)
                if dataset_id is None:
                    raise LineageError(f"the dataset of {model.ref} is not indexed")
                self._add_model(connection, model, dataset_id)

        self._retrying(write)

    def _dataset_id(self, connection: Connection, model: ModelData) -> int | None:
        found = connection.execute(
            select(datasets.c.id).where(
                datasets.c.dataset_md5 == model.dataset_md5,
                datasets.c.manifest_sha256 == model.manifest_sha256,
            )
        ).scalar()
        return None if found is None else int(found)

    def _add_model(self, connection: Connection, model: ModelData, dataset_id: int) -> None:
        if (
            connection.execute(select(runs.c.run_id).where(runs.c.run_id == model.run_id)).first()
            is None
        ):
            connection.execute(
                runs.insert().values(
                    run_id=model.run_id,
                    dataset_id=dataset_id,
                    trained_ms=model.trained_ms,
                    tag=model.tag,
                    commit=model.commit,
                    dataset_md5=model.dataset_md5,
                    manifest_sha256=model.manifest_sha256,
                    pattern=model.pattern,
                    consent_snapshot_sha256=model.consent_snapshot_sha256,
                    consent_as_of=model.consent_as_of,
                )
            )
        connection.execute(
            delete(models).where(models.c.name == model.name, models.c.version == model.version)
        )
        connection.execute(
            models.insert().values(name=model.name, version=model.version, run_id=model.run_id)
        )

    def rebuild(self, client: MlflowClient) -> IndexSummary:
        """Empty the index and fill it again from every registered version in MLflow."""
        import time

        started = time.monotonic()
        versions = list(registered_versions(client))
        with self.engine.begin() as connection:
            for table in (models, runs, records, datasets):
                connection.execute(delete(table))
        for name, version, run_id in versions:
            if run_id is None:
                raise AuditError(
                    f"{name}/{version} has no source run: its training data is unknown",
                    "remove it from the registry or register it from a training run",
                )
            self.add(client, name, version, run_id)
        self._mark_verified()  # every row was just read from its manifest
        return IndexSummary(
            **{**self.summary().to_json(), "seconds": round(time.monotonic() - started, 2)}
        )

    def sync(self, client: MlflowClient) -> int:
        """Index the registered versions the index lacks and forget the ones no longer
        registered (each added version's manifest read from MLflow and checked against its
        run's sha256, as `add` does); how many versions changed."""
        registry = {(n, v, r or "") for n, v, r in registered_versions(client)}
        indexed = self.indexed_versions()
        for name, version, run_id in sorted(registry - indexed):
            if not run_id:
                raise AuditError(
                    f"{name}/{version} has no source run: its training data is unknown",
                    "remove it from the registry or register it from a training run",
                )
            self.add(client, name, version, run_id)
        gone = indexed - registry
        if gone:
            with self.engine.begin() as connection:
                for name, version, _ in gone:
                    connection.execute(
                        delete(models).where(models.c.name == name, models.c.version == version)
                    )
            self.remove_missing()
        return len(registry - indexed) + len(gone)

    def remove_missing(self) -> None:
        """Drop runs and datasets no indexed version uses any more."""
        with self.engine.begin() as connection:
            connection.execute(delete(runs).where(~runs.c.run_id.in_(select(models.c.run_id))))
            used = select(runs.c.dataset_id)
            connection.execute(delete(records).where(~records.c.dataset_id.in_(used)))
            connection.execute(delete(datasets).where(~datasets.c.id.in_(used)))

    def summary(self) -> IndexSummary:
        with self.engine.connect() as connection:

            def count(table: Table) -> int:
                return int(
                    connection.execute(select(func.count()).select_from(table)).scalar() or 0
                )

            return IndexSummary(
                self.shown_url, count(models), count(runs), count(datasets), count(records)
            )

    # -- answering -----------------------------------------------------------------------------
    def indexed_versions(self) -> set[tuple[str, str, str]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(models.c.name, models.c.version, models.c.run_id))
            return {(r.name, r.version, r.run_id) for r in rows}

    def check_fresh(self, client: MlflowClient) -> None:
        """Stop (fail closed) when the registry holds versions the index does not, or the
        reverse; when a dataset's rows do not number its manifest's; and, when the last full
        verification is older than the interval, when any row differs from its manifest."""
        registry = {(n, v, r or "") for n, v, r in registered_versions(client)}
        indexed = self.indexed_versions()
        missing, extra = registry - indexed, indexed - registry
        if missing or extra:
            shown = ", ".join(f"{n}/{v}" for n, v, _ in sorted(missing | extra)[:5])
            raise AuditError(
                f"the lineage index is out of date with MLflow: {len(missing)} registered "
                f"versions not indexed, {len(extra)} indexed versions no longer registered "
                f"({shown})",
                "run `lineage index rebuild` (or pass --scan to read MLflow directly)",
            )
        self._check_counts()
        if self._verification_due():
            result = self.verify(client)
            if not result.ok:
                raise _disagrees(result.mismatches)

    def _check_counts(self) -> None:
        """Each dataset's rows, counted, against the row count its manifest had."""
        with self.engine.connect() as connection:
            stored = {
                int(r.id): (int(r.records), str(r.manifest_sha256))
                for r in connection.execute(select(datasets))
            }
            counted = {
                int(r.dataset_id): int(r.n)
                for r in connection.execute(
                    select(records.c.dataset_id, func.count().label("n")).group_by(
                        records.c.dataset_id
                    )
                )
            }
            tags = {
                int(r.dataset_id): str(r.tag)
                for r in connection.execute(select(runs.c.dataset_id, runs.c.tag))
            }
        wrong = [
            f"{tags.get(i, sha[:12])} has {counted.get(i, 0)} rows, its manifest {n}"
            for i, (n, sha) in sorted(stored.items())
            if counted.get(i, 0) != n
        ]
        if wrong:
            raise _disagrees(wrong)

    def _verification_due(self) -> bool:
        if self.home is None:
            return False
        try:
            import json

            last = float(json.loads(self._verified_file().read_text())["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return True
        return time.time() - last >= self.verify_interval_s

    def verify(self, client: MlflowClient) -> IndexVerification:
        """Every dataset's rows against its manifest, read from MLflow (its sha256 checked
        against the training run's record): a row deleted, added or edited is named."""
        started = time.monotonic()
        with self.engine.connect() as connection:
            owners = {
                int(r.dataset_id): r
                for r in connection.execute(
                    select(runs, models.c.name, models.c.version).join(
                        models, models.c.run_id == runs.c.run_id
                    )
                )
            }
        mismatches: list[str] = []
        total = 0
        with tempfile.TemporaryDirectory(prefix="lineage-index-verify-") as tmp:
            for dataset_id, owner in sorted(owners.items()):
                model = model_data(owner.name, owner.version, get_run(client, owner.run_id))
                expected = sorted(
                    row_key(r) for r in read_manifest(client, model, Path(tmp) / str(dataset_id))
                )
                with self.engine.connect() as connection:
                    found = sorted(
                        row_key(_row(r))
                        for r in connection.execute(
                            select(records).where(records.c.dataset_id == dataset_id)
                        )
                    )
                total += len(found)
                if found != expected:
                    gone = len(set(expected) - set(found))
                    added = len(set(found) - set(expected))
                    mismatches.append(
                        f"{owner.tag}: {gone} manifest rows missing, {added} rows not in the "
                        "manifest"
                    )
        result = IndexVerification(
            len(owners), total, mismatches, round(time.monotonic() - started, 2)
        )
        if result.ok:
            self._mark_verified()
        return result

    def _mark_verified(self) -> None:
        if self.home is not None:
            import json

            write_private(
                self._verified_file(), json.dumps({"at": time.time(), "index": self.shown_url})
            )

    def _verified_file(self) -> Path:
        """When this index (by its URL) was last verified in full: outside its database."""
        import hashlib

        assert self.home is not None
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        return self.home / VERIFIED_FILE.replace(".json", f"-{digest}.json")

    def source(self, client: MlflowClient) -> IndexSource:
        self.check_fresh(client)
        return IndexSource(self)


def _disagrees(problems: list[str]) -> AuditError:
    return AuditError(
        "the lineage index disagrees with the manifests it summarises: " + "; ".join(problems[:5]),
        "do not trust its answers: rebuild it with `lineage index rebuild` (or pass --scan to "
        "read MLflow directly)",
    )


class IndexSource:
    """`LineageSource` answered from the index (checked fresh when it was created)."""

    kind = "index"

    def __init__(self, index: LineageIndex) -> None:
        self.index = index

    def models(self) -> list[ModelData]:
        query = select(models.c.name, models.c.version, runs).join(
            runs, runs.c.run_id == models.c.run_id
        )
        with self.index.engine.connect() as connection:
            found = [
                ModelData(
                    name=r.name,
                    version=r.version,
                    run_id=r.run_id,
                    trained_ms=int(r.trained_ms),
                    tag=r.tag,
                    commit=r.commit,
                    dataset_md5=r.dataset_md5,
                    manifest_sha256=r.manifest_sha256,
                    pattern=r.pattern,
                    consent_snapshot_sha256=r.consent_snapshot_sha256,
                    consent_as_of=r.consent_as_of,
                )
                for r in connection.execute(query)
            ]
        return sorted(found, key=lambda m: (m.name, int(m.version)))

    def records_of_patient(self, patient_id: str) -> dict[str, list[ManifestRow]]:
        """Two indexed lookups (the patient's records, then the versions of their datasets)
        instead of one join: a join lets the planner walk every record of every dataset."""
        with self.index.engine.connect() as connection:
            by_dataset: dict[int, list[ManifestRow]] = defaultdict(list)
            for r in connection.execute(select(records).where(records.c.patient_id == patient_id)):
                by_dataset[int(r.dataset_id)].append(_row(r))
            if not by_dataset:
                return {}
            versions = connection.execute(
                select(models.c.name, models.c.version, runs.c.dataset_id)
                .join(runs, runs.c.run_id == models.c.run_id)
                .where(runs.c.dataset_id.in_(list(by_dataset)))
            )
            out = {f"{v.name}/{v.version}": sorted(by_dataset[int(v.dataset_id)]) for v in versions}
        return out

    def records_of_model(self, ref: str) -> list[ManifestRow]:
        name, _, version = ref.rpartition("/")
        query = (
            select(records)
            .join(runs, runs.c.dataset_id == records.c.dataset_id)
            .join(models, models.c.run_id == runs.c.run_id)
            .where(models.c.name == name, models.c.version == version)
        )
        with self.index.engine.connect() as connection:
            rows = sorted(_row(r) for r in connection.execute(query))
        if not rows and not any(m.ref == ref for m in self.models()):
            raise AuditError(f"{ref} is not a registered model version")
        return rows
