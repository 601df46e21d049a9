"""`lineage process | train | pipeline | promote | deploy | invoke`, and what every command
shares: usage errors, an operation's LineageError as one line with its hint, the version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lineage.config import Settings
from lineage.errors import LineageError
from lineage.jobresult import ProcessingResult, TrainingResult
from lineage.ops.deploy import DeployResult, Materialized, ServerHandle
from lineage.ops.process import ProcessOptions, ProcessResult
from lineage.ops.train import PipelineResult, Promotion, TrainOptions, TrainResult
from lineage.version import __version__
from tests.helpers import CliRun

Cli = Callable[..., CliRun]

OUTPUT = ProcessingResult(
    tag="v1-20260101T000000Z-abc123",
    commit="c" * 40,
    dataset_md5="d" * 32 + ".dir",
    manifest_sha256="e" * 64,
    counts={"train": 80, "val": 10, "test": 10},
    classes=["0", "1"],
    nfiles=100,
    size_bytes=12345,
    dvc_repo_url="http://127.0.0.1:8300/git/datasets.git",
    reused_commit=True,
    data_version="v1",
    source="digits",
    mlflow_run_id=None,
    seconds=1.5,
)
PROCESS_RESULT = ProcessResult(output=OUTPUT, job_name="process-v1")
PROCESSED: dict[str, Any] = PROCESS_RESULT.to_json()
TRAIN_RESULT = TrainResult(
    output=TrainingResult(
        run_id="r" * 32,
        model_name="digits-mobilenetv3",
        model_version="2",
        data_git_commit_id="c" * 40,
        dvc_tag=OUTPUT.tag,
        dataset_md5=OUTPUT.dataset_md5,
        manifest_sha256=OUTPUT.manifest_sha256,
        metrics={"best_val_accuracy": 0.91234, "best_epoch": 2.0, "test_accuracy": 0.9},
        pretrained=False,
        device="cpu",
        seconds=3.0,
        world_size=2,
        hosts=["algo-1", "algo-2"],
    ),
    job_name="train-v1",
    model_artifact="s3://lineage-mlflow/1/r/artifacts/model.tar.gz",
    indexed=True,
)
TRAINED: dict[str, Any] = TRAIN_RESULT.to_json()


def test_the_version_and_help_need_no_stack(cli: Cli) -> None:
    assert cli("--version") == CliRun(0, f"lineage {__version__}\n", "")
    assert "Usage: lineage [OPTIONS] COMMAND" in cli().stdout  # no arguments: the help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["process", "--fraction", "0.5"], "Missing option '--version'"),
        (["process", "--version", "v1", "--fraction", "half"], "Invalid value for '--fraction'"),
        (["train"], "Missing option '--tag'"),
        (["train", "--tag", "t", "--instance-count", "0"], "Invalid value for '--instance-count'"),
        (
            ["pipeline", "--version", "v", "--fraction", "1", "--instance-count", "101"],
            "Invalid value for '--instance-count': Input should be less than or equal to 100",
        ),
        (["promote", "--model", "m/1"], "Missing option '--alias'"),
        (["invoke"], "Missing argument 'files'"),
        (["compare", "--model", "a/1"], "--model: give exactly two --model options"),
        (["consent", "withdraw", "PAT-1"], "Missing option '--reason'"),
        (["erase", "PAT-1", "--request", "R-1"], "Missing option '--actor'"),
        (["audit", "excluded"], "Missing argument 'patient_id'"),
        (["sagemaker", "deploy", "--model", "m/1"], "Missing option '--endpoint-name'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_a_usage_error_exits_2_naming_the_option_before_anything_runs(
    cli: Cli, args: list[str], message: str
) -> None:
    ran = cli(*args)
    assert ran.code == 2 and ran.stdout == ""
    assert message in ran.said
    assert "Try 'lineage" in ran.said and "--help' for help." in ran.said  # what to do next


def test_process_passes_every_option_on_and_prints_the_published_tag(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Settings, ProcessOptions, bool]] = []

    def process(settings: Settings, options: ProcessOptions, *, stream: bool) -> ProcessResult:
        seen.append((settings, options, stream))
        return PROCESS_RESULT

    monkeypatch.setattr("lineage.cli.process.process", process)
    ran = cli(
        *("process", "--version", "v1", "--fraction", "0.5", "--source", "synthetic-cxr"),
        *("--pattern", "record", "--seed", "7", "--val-split", "0.2", "--test-split", "0.15"),
        *("--repo", "cxr", "--pipeline-run-id", "run-1", "--runtime", "docker"),
    )
    assert ran.code == 0, ran.stderr
    ((settings, options, stream),) = seen
    assert settings.home == home
    assert options == ProcessOptions(
        version="v1",
        fraction=0.5,
        source="synthetic-cxr",
        val_split=0.2,
        test_split=0.15,
        seed=7,
        repo="cxr",
        pipeline_run_id="run-1",
        runtime="docker",
        pattern="record",
    )
    assert stream  # the job's log is shown to people
    assert PROCESSED["tag"] in ran.stdout and "(reused: data unchanged)" in ran.stdout
    assert "train 80, val 10, test 10" in ran.stdout


def test_process_json_is_the_result_alone_and_the_job_log_is_not_streamed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    streamed: list[bool] = []

    def process(_: Settings, options: ProcessOptions, *, stream: bool) -> ProcessResult:
        streamed.append(stream)
        assert (options.source, options.seed, options.pattern) == ("digits", 42, "dataset")
        return PROCESS_RESULT

    monkeypatch.setattr("lineage.cli.process.process", process)
    ran = cli("process", "--version", "v1", "--fraction", "1", "--json")
    assert ran.code == 0 and ran.json() == PROCESSED and streamed == [False]


def test_train_and_pipeline_build_the_options_the_operations_take(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[TrainOptions] = []
    piped: list[tuple[ProcessOptions, TrainOptions]] = []

    def train(_: Settings, options: TrainOptions, *, stream: bool) -> TrainResult:
        trained.append(options)
        return TRAIN_RESULT

    def pipeline(
        _: Settings, process: ProcessOptions, train: TrainOptions, *, stream: bool
    ) -> PipelineResult:
        piped.append((process, train))
        return PipelineResult(processing=PROCESS_RESULT, training=TRAIN_RESULT)

    monkeypatch.setattr("lineage.cli.train.train", train)
    monkeypatch.setattr("lineage.cli.train.pipeline", pipeline)
    ran = cli("train", "--tag", "v1-x", "--epochs", "5", "--instance-count", "2", "--seed", "1")
    assert ran.code == 0, ran.stderr
    assert trained == [TrainOptions(tag="v1-x", epochs=5, seed=1, instance_count=2)]
    assert "best val_accuracy 0.9123 (epoch 2)" in ran.stdout
    assert "algo-1, algo-2 (world size 2; algo-1 led)" in ran.stdout
    ran = cli(
        *("pipeline", "--version", "v2", "--fraction", "0.25", "--data-seed", "9"),
        *("--seed", "3", "--repo", "cxr", "--pattern", "record", "--json"),
    )
    assert ran.code == 0 and ran.json()["training"] == TRAINED
    ((process, train_options),) = piped
    assert (process.version, process.fraction, process.seed, process.repo) == ("v2", 0.25, 9, "cxr")
    assert (train_options.tag, train_options.seed, train_options.repo) == ("", 3, "cxr")


def test_promote_says_which_version_the_alias_left(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def promote(_: Settings, model: str, alias: str) -> Promotion:
        assert (model, alias) == ("digits/2", "champion")
        return Promotion(model_name="digits", alias=alias, version="2", previous_version="1")

    monkeypatch.setattr("lineage.cli.train.promote", promote)
    ran = cli("promote", "--model", "digits/2", "--alias", "champion")
    assert ran.code == 0 and "digits@champion -> version 2 (was version 1)" in ran.stdout


def test_an_operations_error_is_one_line_with_its_hint_and_exit_code(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def train(*_: Any, **__: Any) -> dict[str, Any]:
        raise LineageError(
            "cannot reach http://alice:s3cret@127.0.0.1:8300/git",
            "start the stack: `lineage stack up`",
            details="last lines of git.log",
            exit_code=3,
        )

    monkeypatch.setattr("lineage.cli.train.train", train)
    for extra in ([], ["--json"]):
        ran = cli("train", "--tag", "t", *extra)
        assert ran.code == 3 and ran.stdout == ""  # --json: still nothing but JSON on stdout
        first, details = ran.stderr.splitlines()
        assert first.startswith("error: cannot reach http://")
        assert first.endswith("127.0.0.1:8300/git; start the stack: `lineage stack up`")
        assert details == "last lines of git.log"
        assert "s3cret" not in ran.stderr and "Traceback" not in ran.stderr


def test_an_interrupt_exits_130_without_a_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def promote(*_: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr("lineage.cli.train.promote", promote)
    assert cli("promote", "--model", "m/1", "--alias", "a") == CliRun(130, "", "")


def test_deploy_needs_a_model_serves_on_8080_and_stops_by_port(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed: list[tuple[str, int, str]] = []
    keys: list[str | None] = []
    stopped: list[int | None] = []

    def deploy(
        _: Settings, ref: str, port: int, runtime: str, trusted_keys: str | None
    ) -> DeployResult:
        deployed.append((ref, port, runtime))
        keys.append(trusted_keys)
        lineage = {"run_id": "r1", "dvc_tag": "v1-x", "data_git_commit_id": "c" * 40}
        model = Materialized(
            model_name="digits",
            model_version="2",
            alias="champion",
            model_dir=Path("/e/opt/ml/model"),
            model_data=Path("/e/model.tar.gz"),
            lineage=lineage,
        )
        server = ServerHandle(log="/e/server.log", pid=123)
        return DeployResult(f"http://127.0.0.1:{port}", runtime, server, model)

    def stop(_: Settings, port: int | None) -> list[int]:
        stopped.append(port)
        return [] if port is None else [port]

    monkeypatch.setattr("lineage.cli.deploy.deploy", deploy)
    monkeypatch.setattr("lineage.cli.deploy.stop", stop)
    missing = cli("deploy")
    assert (missing.code, missing.stderr) == (
        1,
        "error: --model is required; pass --model NAME@ALIAS or NAME/VERSION\n",
    )
    ran = cli("deploy", "--model", "digits@champion")
    assert ran.code == 0 and "digits version 2 (alias champion), run r1" in ran.stdout
    assert cli("deploy", "--model", "digits/2", "--port", "9001", "--runtime", "docker").code == 0
    assert deployed == [("digits@champion", 8080, "process"), ("digits/2", 9001, "docker")]
    assert cli("deploy", "--model", "digits/2", "--trusted-keys", "/k/auditor.pem").code == 0
    assert keys == [None, None, "/k/auditor.pem"]
    for port in ("0", "99999", "-1"):  # refused before anything is made, as a usage error
        refused = cli("deploy", "--model", "digits/2", "--port", port)
        assert (
            refused.code == 2 and "--port" in refused.stderr and "Traceback" not in refused.stderr
        )
    assert len(deployed) == 3
    assert cli("deploy", "--stop", "--port", "9001", "--json").json() == {"stopped_ports": [9001]}
    assert "nothing was running (no local endpoint)" in cli("deploy", "--stop").stdout
    assert stopped == [9001, None]


def test_invoke_prints_each_answer_and_fails_when_one_failed(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[Path]]] = []

    def invoke(endpoint: str, files: list[Path]) -> list[dict[str, Any]]:
        calls.append((endpoint, files))
        lineage = {"model_name": "digits", "model_version": "2", "data_git_commit_id": "c" * 40}
        good = {"file": "a.png", "status": 200, "label": "3", "probabilities": {"3": 0.97}}
        return [good | {"lineage": lineage}, {"file": "b.png", "status": 503, "error": "loading"}]

    monkeypatch.setattr("lineage.cli.deploy.invoke", invoke)
    ran = cli("invoke", "a.png", "b.png", "--endpoint", "http://127.0.0.1:9001")
    assert ran.code == 1
    assert calls == [("http://127.0.0.1:9001", [Path("a.png"), Path("b.png")])]
    assert "0.970" in ran.stdout and "digits/2" in ran.stdout and "503 loading" in ran.stdout
    as_json = cli("invoke", "a.png", "--json")  # the same exit code for scripts
    assert as_json.code == 1 and [a["status"] for a in as_json.json()] == [200, 503]
    assert calls[-1][0] == "http://127.0.0.1:8080"  # SageMaker's port by default
