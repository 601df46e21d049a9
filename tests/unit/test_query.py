"""The links every lineage question walks (lineage.query.chain) and `compare`, on an
in-memory MLflow (tests.helpers.FakeMlflow): a model reference, an alias or a run id leads to
one version and one training run; anything else is refused with what to do; two versions
are compared parameter by parameter and record by record, from manifests that must hash to
what their runs recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lineage.config import Settings
from lineage.errors import LineageError
from lineage.hashing import bytes_sha256
from lineage.manifest import ManifestRow
from lineage.query.chain import locate, recorded_data, registry_checks
from lineage.query.compare import compare, diff_records
from tests.helpers import FakeMlflow


def row(record: str, split: str = "train", label: str = "0", content: str = "") -> ManifestRow:
    return ManifestRow(
        file_path=f"{split}/{label}/{record}.png",
        record_id=record,
        split=split,
        label=label,
        sha256=bytes_sha256((content or record).encode()),
    )


@pytest.fixture
def mlflow() -> FakeMlflow:
    """digits/1 and digits/2 (alias champion), trained on overlapping datasets."""
    fake = FakeMlflow()
    first = [row("a"), row("b"), row("c", "val"), row("t", "test")]
    second = [row("a"), row("b", label="1"), row("c", content="new"), row("d"), row("t", "test")]
    fake.register(
        "digits",
        "1",
        first,
        trained="2026-01-01",
        pattern="dataset",
        params={"epochs": "3", "learning_rate": "0.001"},
        metrics={"best_val_accuracy": 0.9, "test_accuracy": 0.88},
    )
    fake.register(
        "digits",
        "2",
        second,
        trained="2026-01-02",
        pattern="dataset",
        params={"epochs": "5", "learning_rate": "0.001"},
        metrics={"best_val_accuracy": 0.95, "test_accuracy": 0.9},
    )
    fake.aliases["digits"] = {"champion": "2"}
    return fake


def test_a_reference_an_alias_and_a_run_lead_to_one_version_and_its_run(mlflow: FakeMlflow) -> None:
    version, run = locate(mlflow.client, model="digits/1")
    assert version is not None and (version.ref, run.run_id) == ("digits/1", "run-digits-1")
    version, run = locate(mlflow.client, model="digits@champion")
    assert version is not None and version.ref == "digits/2" and version.aliases == ["champion"]
    version, run = locate(mlflow.client, run_id="run-digits-1")
    assert version is not None and version.ref == "digits/1"
    mlflow.register("digits", "3", [row("a")], trained="2026-01-03", pattern="dataset")
    mlflow.versions[("digits", "3")].run_id = "run-digits-1"  # registered twice from one run
    version, _ = locate(mlflow.client, run_id="run-digits-1")
    assert version is not None and version.version == "1"  # the first version of the run


@pytest.mark.parametrize(
    ("model", "run_id", "message"),
    [
        (None, None, "name exactly one of a model and a run; pass --model or --run"),
        ("digits/1", "run-digits-1", "name exactly one of a model and a run"),
        ("digits", None, "bad model reference 'digits'; use NAME/VERSION or NAME@ALIAS"),
        ("digits/9", None, "digits/9 is not in the model registry"),
        ("digits@prod", None, "digits@prod is not in the model registry: .*; set the alias"),
        (None, "run-nope", "run run-nope is not on the tracking server"),
    ],
)
def test_a_reference_that_leads_nowhere_is_refused_with_what_to_do(
    mlflow: FakeMlflow, model: str | None, run_id: str | None, message: str
) -> None:
    with pytest.raises(LineageError, match=message):
        locate(mlflow.client, model=model, run_id=run_id)


def test_only_a_training_run_with_a_source_run_is_a_lineage_chain(mlflow: FakeMlflow) -> None:
    mlflow.runs["run-digits-1"].data.tags["lineage.stage"] = "processing"
    with pytest.raises(LineageError, match="run run-digits-1 is not a training run"):
        locate(mlflow.client, model="digits/1")
    mlflow.versions[("digits", "2")].run_id = None
    with pytest.raises(LineageError, match="digits/2 has no source run in the registry"):
        locate(mlflow.client, model="digits/2")


def test_the_recorded_data_and_the_registry_checks(mlflow: FakeMlflow) -> None:
    version, run = locate(mlflow.client, model="digits/1")
    run.params["dvc_repo_url"] = "https://***@git.example.com/datasets.git"
    with pytest.raises(LineageError, match=r"credentials removed\); pass the repository URL"):
        recorded_data(run, version)
    usable = recorded_data(run, version, "https://token@git.example.com/datasets.git")
    assert usable.repo_url.startswith("https://token@") and "***" in usable.shown_repo
    assert usable.counts == {"train": 2}
    assert usable.tag == mlflow.versions[("digits", "1")].tags["dvc_tag"]
    assert [c.name for c in registry_checks(usable) if not c.ok] == []
    assert version is not None
    version.tags["dataset_md5"] = "0" * 32 + ".dir"  # a version tag that disagrees with its run
    failed = [c for c in registry_checks(recorded_data(run, version, for_git=False)) if not c.ok]
    assert [c.name for c in failed] == ["registry tags"]
    assert "dataset_md5: " + "0" * 32 in failed[0].detail


def _signed_as_run(mlflow: FakeMlflow) -> Any:
    """The metrics a training job signed: here, what each run shows (untouched runs)."""
    return lambda _settings, client, side: dict(client.get_run(side.run_id).data.metrics)


def test_compare_names_the_changed_parameters_metrics_and_records(
    mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("lineage.query.compare.mlflow_client", lambda _: mlflow.client)
    monkeypatch.setattr("lineage.query.compare.signed_metrics", _signed_as_run(mlflow))
    result = compare(Settings(home=tmp_path), "digits/1", "digits@champion")
    assert result.ok and result.disagreements == []
    assert (result.a.version, result.b.version, result.b.aliases) == ("1", "2", ["champion"])
    assert [(p.name, p.a, p.b) for p in result.params if not p.same] == [("epochs", "3", "5")]
    names = {p.name for p in result.params}
    assert {"epochs", "learning_rate", "pretrained"} <= names
    assert not names & {"dvc_tag", "dataset_md5", "weights_sha256", "dvc_repo_url", "count_train"}
    assert [r["record_id"] for r in result.records.added] == ["d"]
    assert [(c.record_id, c.field) for c in result.records.changed] == [
        ("b", "label"),
        ("c", "split"),
        ("c", "sha256"),
    ]
    assert result.records.common == 4
    assert result.summary == (
        "1 training/validation records added, 0 removed; 3 record fields changed; "
        "hyperparameters differ: epochs; best val accuracy 0.9000 -> 0.9500 (+0.0500)"
    )
    assert result.to_json()["records"]["added"] == [
        {"record_id": "d", "split": "train", "label": "0"}
    ]


def test_compare_fails_when_a_runs_metrics_differ_from_the_signed_ones(
    mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`log_metric` on a finished run changes what MLflow shows; the signed provenance keeps
    what justified the model: compare shows the signed value and fails."""
    monkeypatch.setattr("lineage.query.compare.mlflow_client", lambda _: mlflow.client)
    signed = _signed_as_run(mlflow)

    def lowered(settings: Settings, client: Any, side: Any) -> dict[str, float]:
        found: dict[str, float] = signed(settings, client, side)
        return {**found, "best_val_accuracy": 0.5} if side.version == "2" else found

    monkeypatch.setattr("lineage.query.compare.signed_metrics", lowered)
    result = compare(Settings(home=tmp_path), "digits/1", "digits/2")
    assert not result.ok
    (disagreement,) = result.disagreements
    assert disagreement.startswith("digits/2: best_val_accuracy: the run shows 0.95")
    row = next(r for r in result.metrics if r.name == "best_val_accuracy")
    assert row.b == 0.5  # the signed value is the one shown


def test_compare_refuses_a_manifest_changed_after_training(
    mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("lineage.query.compare.mlflow_client", lambda _: mlflow.client)
    mlflow.artifacts["run-digits-2"] = mlflow.artifacts["run-digits-2"].replace(b",1,", b",0,")
    with pytest.raises(LineageError, match="manifest artifact of run run-digits-2 hashes to"):
        compare(Settings(home=tmp_path), "digits/1", "digits/2")


def test_record_differences_go_by_record_id_whatever_the_order() -> None:
    a = [row("x"), row("y", "test")]
    b = [row("z", "test"), row("x")]
    diff = diff_records(a, b)
    assert [r["record_id"] for r in diff.removed] == ["y"]
    assert [r["record_id"] for r in diff.added] == ["z"]
    assert diff.changed == [] and diff.common == 1
    assert diff_records(b, b) == diff_records(list(reversed(b)), b)
