"""The lineage record: one typed description of what a model is and what data made it.

The same facts are kept in three places on purpose, each with different guarantees: the
training run's params (immutable in MLflow once logged), the registry version's tags (set
in the very call that creates the version) and `lineage.json` inside the model (travels
with the artifact to every endpoint). This module is the only place that knows their names:
the training job writes all three from one `LineageRecord`, and deploy, promote, trace,
audits and the inference server read them back through it and compare them. Any
disagreement, or a fact missing from any copy, is a broken chain.

The *identity facts* (`FACTS`) are the ones every copy must carry and agree on: the data
(commit, tag, DVC md5, manifest sha256), the model's bytes (`weights_sha256`, the exact
`weights.pt`; `model_sha256`, every file of the MLflow model but `lineage.json`) and, in
the record pattern, the consent snapshot and the consent-log head it was taken at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lineage import contract
from lineage.hashing import file_sha256, tree_sha256

if TYPE_CHECKING:
    from lineage.registry import RegisteredVersion, RunRecord

DATA_FACTS = ("data_git_commit_id", "dvc_tag", "data_version", "dataset_md5", "manifest_sha256")
MODEL_FACTS = ("weights_sha256", "model_sha256")
CONSENT_FACTS = (
    "consent_snapshot_sha256",
    "consent_as_of",
    "consent_head_seq",
    "consent_head_hash",
)
# which consent log the head belongs to: kept when the dataset recorded it (older ones did not)
# the ONNX export's digest: every model trained since the export was added carries it
OPTIONAL_FACTS = ("consent_log_id", "onnx_sha256")
FACTS = (*DATA_FACTS, *MODEL_FACTS, "pattern", *CONSENT_FACTS, *OPTIONAL_FACTS)
SERVED_KEYS = ("model_name", "model_version", "run_id", "data_git_commit_id", "dvc_tag")
# in the model directory but not part of its digest: lineage.json is stamped at deploy,
# registered_model_meta is added by MLflow's download of models:/, and the signatures are
# made over the digested files afterwards (lineage.attest)
UNDIGESTED = frozenset(
    {
        contract.MODEL_LINEAGE_FILE,
        "registered_model_meta",
        contract.MODEL_SIGNATURE_FILE,
        contract.MODEL_PROVENANCE_FILE,
        contract.MODEL_DATASET_STATEMENT_FILE,
    }
)


@dataclass(frozen=True)
class Disagreement:
    """One identity fact that two copies of the record do not hold alike."""

    fact: str
    expected: str | None  # None: missing in that copy
    found: str | None

    def __str__(self) -> str:
        if self.found is None:
            return f"{self.fact} is missing"
        if self.expected is None:
            return f"{self.fact} is {self.found} but the reference copy has none"
        return f"{self.fact}: {self.found} (the run recorded {self.expected})"


@dataclass(frozen=True)
class LineageRecord:
    # -- identity facts (FACTS) -------------------------------------------------------------
    data_git_commit_id: str = ""
    dvc_tag: str = ""
    data_version: str = ""
    dataset_md5: str = ""
    manifest_sha256: str = ""
    weights_sha256: str = ""
    model_sha256: str = ""
    onnx_sha256: str = ""
    pattern: str = "dataset"
    consent_snapshot_sha256: str = ""
    consent_as_of: str = ""
    consent_head_seq: str = ""
    consent_head_hash: str = ""
    consent_log_id: str = ""
    # -- the model and the run that made it ----------------------------------------------------
    model_name: str = ""
    model_version: str | None = None
    alias: str | None = None  # stamped at deploy
    run_id: str = ""
    experiment: str = ""
    dvc_repo_url: str = ""  # credentials redacted
    code_version: str = ""
    model_architecture: str = ""
    image_size: int = 0
    classes: list[str] = field(default_factory=list)
    pretrained: bool = False
    training_job_name: str | None = None
    patient_count: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    image_uri: str = ""
    image_digest: str = ""
    image_revision: str = ""
    # one process per host; a multi-host job records its hosts (the leader first)
    instance_count: int = 1
    world_size: int = 1
    hosts: list[str] = field(default_factory=list)
    # the files of the model directory its signature (model.sig) leaves out, relative to it:
    # pass exactly these to `python -m model_signing verify ... --ignore-paths`
    model_signing_ignore: list[str] = field(
        default_factory=lambda: list(contract.MODEL_SIGNING_IGNORE)
    )

    # -- the facts and their copies -----------------------------------------------------------
    @property
    def required(self) -> tuple[str, ...]:
        """The facts every complete copy carries (the consent ones in the record pattern)."""
        base = (*DATA_FACTS, *MODEL_FACTS)
        return (*base, *CONSENT_FACTS) if self.pattern == "record" else base

    def facts(self) -> dict[str, str]:
        """The identity facts this copy holds (empty ones left out)."""
        return {name: str(getattr(self, name)) for name in FACTS if getattr(self, name) != ""}

    def missing(self) -> list[str]:
        return [name for name in self.required if getattr(self, name) == ""]

    def disagreements(self, other: LineageRecord) -> list[Disagreement]:
        """How `other` (a copy) differs from this record (the reference, usually the run's
        params): every required fact missing there, and every fact held differently."""
        mine, theirs = self.facts(), other.facts()
        found = []
        for name in FACTS:
            if name in mine and name not in theirs and name in self.required:
                found.append(Disagreement(name, mine[name], None))
            elif name in theirs and mine.get(name) != theirs[name]:
                found.append(Disagreement(name, mine.get(name), theirs[name]))
        return found

    def to_tags(self) -> dict[str, str]:
        """Registry version tags: the identity facts."""
        return self.facts()

    def to_params(self) -> dict[str, str]:
        """Run params: the identity facts and how the model was made."""
        params = {
            **self.facts(),
            "dvc_repo_url": self.dvc_repo_url,
            "code_version": self.code_version,
            "model_architecture": self.model_architecture,
            "image_size": str(self.image_size) if self.image_size else "",
            "pretrained": str(self.pretrained),
            "patient_count": "" if self.patient_count is None else str(self.patient_count),
            **{k: getattr(self, k) for k in ("image_uri", "image_digest", "image_revision")},
            "instance_count": str(self.instance_count),
            "world_size": str(self.world_size),
            "hosts": ",".join(self.hosts),
        }
        return {k: v for k, v in params.items() if v != ""}

    def to_json(self) -> dict[str, Any]:
        """`lineage.json`: everything."""
        return asdict(self)

    def served(self) -> dict[str, Any]:
        """What every prediction carries."""
        return {key: getattr(self, key) for key in SERVED_KEYS}

    def with_model_bytes(self, model_dir: Path) -> LineageRecord:
        """The record with the digests of the model directory as it is on disk now."""
        onnx = model_dir / contract.MODEL_ONNX_FILE
        return replace(
            self,
            weights_sha256=file_sha256(model_dir / contract.MODEL_WEIGHTS_FILE),
            model_sha256=model_digest(model_dir),
            onnx_sha256=file_sha256(onnx) if onnx.is_file() else "",
        )

    # -- reading the copies --------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LineageRecord:
        """From `lineage.json`, run params or version tags: unknown keys are ignored, values
        are converted to each field's type (params and tags are strings)."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in data or data[spec.name] is None:
                continue
            raw = data[spec.name]
            if spec.name in ("classes", "metrics", "model_signing_ignore"):
                values[spec.name] = raw
            elif spec.name == "hosts":
                values[spec.name] = (
                    [str(h) for h in raw]
                    if isinstance(raw, list)
                    else [h for h in str(raw).split(",") if h]
                )
            elif spec.name in ("image_size", "patient_count", "instance_count", "world_size"):
                values[spec.name] = _as_int(raw)
            elif spec.name == "pretrained":
                values[spec.name] = raw is True or str(raw) == "True"
            elif spec.name in ("model_version", "alias", "training_job_name"):
                values[spec.name] = str(raw)
            else:
                values[spec.name] = str(raw)
        for name in ("image_size", "instance_count", "world_size"):
            if values.get(name) is None:
                values.pop(name, None)
        return cls(**values)

    @classmethod
    def from_run(cls, run: RunRecord) -> LineageRecord:
        """The run's params: the reference copy (MLflow params cannot be changed)."""
        return replace(
            cls.from_mapping(run.params),
            run_id=run.run_id,
            model_name=run.tags.get("model_name", ""),
        )

    @classmethod
    def from_version(cls, version: RegisteredVersion) -> LineageRecord:
        """The registry version's tags."""
        return replace(
            cls.from_mapping(version.tags),
            model_name=version.name,
            model_version=version.version,
            run_id=version.run_id or "",
        )

    @classmethod
    def read(cls, model_dir: Path) -> LineageRecord:
        """`lineage.json` of a model directory (ValueError when it is not JSON)."""
        import json

        data = json.loads((model_dir / contract.MODEL_LINEAGE_FILE).read_text())
        if not isinstance(data, dict):
            raise ValueError("lineage.json does not hold an object")
        return cls.from_mapping(data)

    def write(self, model_dir: Path) -> None:
        import json

        (model_dir / contract.MODEL_LINEAGE_FILE).write_text(
            json.dumps(self.to_json(), indent=2) + "\n"
        )


def model_digest(model_dir: Path) -> str:
    """`model_sha256`: every file of the model directory but `lineage.json`."""
    return tree_sha256(model_dir, UNDIGESTED)


def _as_int(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None
