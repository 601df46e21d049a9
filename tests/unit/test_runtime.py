"""The operations drive every runtime through one `JobRunner`: what they hand it (the job
descriptions, the tag they chose, the repository, the consent snapshot) and what they check
in what it hands back, shown on a runner that runs nothing (tests.helpers.FakeRunner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lineage.config import Settings
from lineage.errors import LineageError
from lineage.gitops import URL_CREDENTIALS_ENV
from lineage.ops import process as process_ops
from lineage.ops import train as train_ops
from lineage.ops.process import ProcessOptions, process
from lineage.ops.train import TrainOptions, pipeline, start_pipeline, train
from lineage.runtime import JobRunner
from lineage.sagemaker.runner import SageMakerRunner
from local.runner.runner import LocalRunner
from tests.helpers import FakeRunner


def _local_is_a_runner(runner: LocalRunner) -> JobRunner:
    return runner  # mypy checks the local runtime against the interface


def _sagemaker_is_a_runner(runner: SageMakerRunner) -> JobRunner:
    return runner  # and the SageMaker one


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    indexed: list[tuple[str, str | None, str]] = []

    def index_version(_: Settings, name: str, version: str | None, run_id: str) -> bool:
        indexed.append((name, version, run_id))
        return True

    monkeypatch.setattr(train_ops, "index_version", index_version)
    return Settings(home=tmp_path / "home")


def test_a_pipeline_hands_the_runner_one_tag_one_repository_and_the_data_commit(
    settings: Settings,
) -> None:
    runner = FakeRunner()
    result = pipeline(
        settings,
        ProcessOptions(version="v1", fraction=0.5, repo="cxr"),
        TrainOptions(tag="", epochs=2, model_name="cxr"),
        runner=runner,
        stream=False,
    )
    assert runner.prepared == [("processing", "training")]  # both checked before any job
    ((processing, _),) = runner.processed
    ((training, _, data_commit),) = runner.trained
    tag = processing.environment["PIPELINE_RUN_ID"]
    assert tag.startswith("v1-")
    assert result.processing.output.tag == training.hyperparameters["dvc_tag"] == tag
    assert processing.environment["DVC_REPO_URL"] == training.environment["DVC_REPO_URL"]
    assert processing.environment["DVC_REPO_URL"] == runner.repo_url
    assert data_commit == result.processing.output.commit  # labels the training job
    assert runner.finished == [training.name]
    assert result.training.output.dvc_tag == tag
    assert result.training.indexed  # whatever ran it, the version joins the index
    assert result.training.model_artifact.startswith("s3://bucket/training/")


def test_a_given_pipeline_run_id_is_the_tag(settings: Settings) -> None:
    runner = FakeRunner()
    done = process(
        settings,
        ProcessOptions(version="v2", fraction=1.0, pipeline_run_id="v2-run-7"),
        runner=runner,
        stream=False,
    )
    assert done.output.tag == "v2-run-7"
    assert runner.prepared == [("processing",)]


def test_a_job_that_published_another_tag_stops_the_pipeline_before_training(
    settings: Settings,
) -> None:
    """Whatever ran it (an old image, another job), a result for another tag is refused:
    training on it would record lineage for data this run did not publish."""
    runner = FakeRunner(published="v1-someone-elses")
    with pytest.raises(LineageError) as raised:
        pipeline(
            settings,
            ProcessOptions(version="v1", fraction=0.5),
            TrainOptions(tag=""),
            runner=runner,
            stream=False,
        )
    assert "published tag 'v1-someone-elses', expected v1-" in raised.value.message
    assert "PIPELINE_RUN_ID" in (raised.value.hint or "")
    assert runner.trained == []


def test_a_started_pipeline_does_not_wait_for_training(settings: Settings) -> None:
    runner = FakeRunner()
    started = start_pipeline(
        settings,
        ProcessOptions(version="v1", fraction=0.5),
        TrainOptions(tag=""),
        runner=runner,
        stream=False,
    )
    assert started.training_job == runner.trained[0][0].name
    assert runner.finished == []


def test_the_record_pattern_stages_the_consent_snapshot_where_the_runner_says(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def snapshot(_: Settings, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "snapshot.json").write_text(json.dumps({"consenting": ["p1"]}))
        return directory

    monkeypatch.setattr(process_ops, "take_consent_snapshot", snapshot)
    runner = FakeRunner()
    done = process(
        settings,
        ProcessOptions(version="v1", fraction=0.5, pattern="record"),
        runner=runner,
        stream=False,
    )
    ((_, _, run_id),) = [s for s in runner.staged if s[0] == "consent"]
    assert run_id == done.output.tag
    ((spec, _),) = runner.processed
    consent, evidence = spec.inputs
    assert consent.source == f"s3://bucket/consent/{run_id}/"
    assert evidence.source == f"s3://bucket/evidence/{run_id}/"
    assert "--pattern" in spec.arguments


def test_training_alone_takes_the_runner_repository_or_an_explicit_url(
    settings: Settings,
) -> None:
    runner = FakeRunner()
    train(settings, TrainOptions(tag="v1-run", repo="cxr"), runner=runner, stream=False)
    explicit = "https://user:s3cret@git.example.com/cxr.git"
    train(settings, TrainOptions(tag="v1-run", repo_url=explicit), runner=runner, stream=False)
    (first, _, _), (second, env, _) = runner.trained
    assert first.environment["DVC_REPO_URL"] == runner.repo_url
    # credentials leave the URL and travel in the environment the runner adds, never recorded
    assert second.environment["DVC_REPO_URL"] == "https://git.example.com/cxr.git"
    assert "s3cret" not in json.dumps(second.environment)
    assert env[URL_CREDENTIALS_ENV] == "https://git.example.com user:s3cret"
    assert runner.prepared == [("training",), ("training",)]


def _modules_after_import(*modules: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing `modules`."""
    code = f"import sys\nimport {', '.join(modules)}\nprint(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(out.stdout.split())


def test_each_runtime_is_loaded_only_where_it_is_chosen() -> None:
    """The SageMaker commands and runner load no local harness; the operations load neither
    runtime (nor boto3) until one is chosen."""
    sagemaker_side = _modules_after_import(
        "lineage.cli.sagemaker", "lineage.sagemaker.runner", "lineage.ops.train"
    )
    assert not {m for m in sagemaker_side if m == "local" or m.startswith("local.")}
    operations = _modules_after_import("lineage.ops.process", "lineage.ops.train")
    assert not {m for m in operations if m.startswith(("local.", "lineage.sagemaker", "boto3"))}
