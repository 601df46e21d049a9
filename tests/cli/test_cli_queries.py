"""`lineage trace | verify | reproduce | compare | export`: what each passes to its query,
the JSON it prints, and the exit code a CI gate relies on (non-zero when a check fails, with
--json too)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lineage.config import Settings
from lineage.dvcremote import ObjectProblem
from lineage.integrity import Check
from lineage.openlineage.emit import Replay
from lineage.query.compare import Comparison, RecordDiff, Row, Side
from lineage.query.export import Export
from lineage.query.reproduce import Reproduction
from lineage.query.trace import DataLink, ModelLink, RunLink, Trace
from lineage.query.verify import Verification
from tests.helpers import CliRun

Cli = Callable[..., CliRun]
OK = Check("run status", True, "run r1 is FINISHED")
BROKEN = Check("registry tags", False, "digits/2: dataset_md5: x (the run recorded y)")


def a_trace(*checks: Check) -> Trace:
    return Trace(
        model=ModelLink("digits", "2", ["champion"]),
        run=RunLink("r1", "train-digits", "1", 1_767_225_600_000, {"test_accuracy": 0.9}),
        data=DataLink(
            repo_url="http://127.0.0.1:8300/git/datasets.git",
            tag="v1-x",
            commit="c" * 40,
            data_version="v1",
            dataset_md5="d" * 32 + ".dir",
            nfiles=100,
            size_bytes=2_500_000,
            remote_url="s3://lineage-dvc/files/md5",
            listing_url="s3://lineage-dvc/files/md5/dd/dd.dir",
            manifest_sha256="e" * 64,
            records={"train": 80, "val": 10, "test": 10},
            labels=10,
        ),
        checks=list(checks),
    )


def test_trace_prints_the_chain_and_passes_what_names_the_model(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, Any]] = []

    def trace(_: Settings, **kwargs: Any) -> Trace:
        asked.append(kwargs)
        return a_trace(OK)

    monkeypatch.setattr("lineage.cli.query.trace", trace)
    ran = cli("trace", "--model", "digits@champion")
    assert ran.code == 0, ran.stderr
    for link in ("model digits v2 (alias champion)", "run r1 (2026-01-01 00:00 UTC)", "tag v1-x"):
        assert link in ran.stdout
    assert (
        "(100 files, 2.5 MB in s3:" in ran.stdout
        and "train 80, val 10, test 10 records" in ran.stdout
    )
    cli("trace", "--endpoint", "http://127.0.0.1:8080", "--repo-url", "https://git/x.git")
    assert asked == [
        {"model": "digits@champion", "run_id": None, "endpoint": None, "repo_url": None},
        {
            "model": None,
            "run_id": None,
            "endpoint": "http://127.0.0.1:8080",
            "repo_url": "https://git/x.git",
        },
    ]


def test_a_broken_chain_fails_the_command_with_json_too(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lineage.cli.query.trace", lambda *_, **__: a_trace(OK, BROKEN))
    ran = cli("trace", "--run", "r1")
    assert ran.code == 1 and "chain NOT verified: registry tags disagree" in ran.stderr
    assert "FAILED" in ran.stdout and "the run recorded y" in ran.stdout
    as_json = cli("trace", "--run", "r1", "--json")
    assert as_json.code == 1
    shown = as_json.json()
    assert set(shown) == {"ok", "endpoint", "model", "run", "data", "checks"}
    assert shown["ok"] is False and shown["model"] == {
        "name": "digits",
        "version": "2",
        "aliases": ["champion"],
    }
    assert [c["ok"] for c in shown["checks"]] == [True, False]


def test_verify_names_each_missing_object_and_fails(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[dict[str, Any]] = []

    def verify(_: Settings, **kwargs: Any) -> Verification:
        asked.append(kwargs)
        problem = ObjectProblem("train/3/a.png", "a" * 32, "missing")
        return Verification("u", "v1-x", "c" * 40, "d.dir", "s3://r", 2, 2, problems=[problem])

    monkeypatch.setattr("lineage.cli.query.verify", verify)
    ran = cli("verify", "--tag", "v1-x")
    assert ran.code == 1 and "NOT intact: 1 objects missing or changed" in ran.stderr
    assert f"train/3/a.png ({'a' * 32}): missing" in ran.stdout
    assert asked == [{"tag": "v1-x", "model": None, "repo": "datasets", "repo_url": None}]
    shown = cli("verify", "--model", "digits/2", "--repo", "cxr", "--json").json()
    assert shown["ok"] is False and shown["problems"][0]["problem"] == "missing"
    assert asked[-1]["repo"] == "cxr" and asked[-1]["model"] == "digits/2"


def test_reproduce_passes_the_checkout_and_retraining_and_fails_on_a_failed_check(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[dict[str, Any]] = []

    def reproduce(_: Settings, **kwargs: Any) -> Reproduction:
        asked.append(kwargs)
        checks = [OK] if kwargs["model"] else [OK, BROKEN]
        return Reproduction("digits/2", "r1", "u", "v1-x", "c" * 40, "d", "e", 100, None, checks)

    monkeypatch.setattr("lineage.cli.query.reproduce", reproduce)
    ran = cli("reproduce", "--model", "digits/2", "--dir", str(tmp_path / "out"), "--retrain")
    assert ran.code == 0 and "reproduced" in ran.stdout
    assert asked[0] == {
        "model": "digits/2",
        "run_id": None,
        "directory": tmp_path / "out",
        "retrain": True,
        "repo_url": None,
        "pretrained": None,
        "stream": True,
    }
    failed = cli("reproduce", "--run", "r1", "--json")
    assert failed.code == 1 and failed.json()["ok"] is False and asked[1]["stream"] is False


def test_compare_json_has_both_sides_and_the_record_difference(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def side(version: str) -> Side:
        return Side(
            f"digits/{version}", "digits", version, [], "r" + version, "v1", "t", "c", "d", {}
        )

    def compare(_: Settings, a: str, b: str) -> Comparison:
        assert (a, b) == ("digits/1", "digits/2")
        records = RecordDiff([{"record_id": "n", "split": "train", "label": "1"}], [], [], 9)
        return Comparison(side("1"), side("2"), [Row("epochs", "3", "5")], [], records)

    monkeypatch.setattr("lineage.cli.query.compare", compare)
    ran = cli("compare", "--model", "digits/1", "--model", "digits/2", "--json")
    assert ran.code == 0, ran.stderr
    shown = ran.json()
    assert set(shown) == {
        "a", "b", "summary", "params", "metrics", "records", "ok", "disagreements"
    }  # fmt: skip
    assert shown["params"] == [{"name": "epochs", "a": "3", "b": "5", "same": False}]
    assert shown["summary"] == (
        "1 training/validation records added, 0 removed; hyperparameters differ: epochs"
    )
    printed = cli("compare", "--model", "digits/1", "--model", "digits/2").stdout
    assert "1 added, 0 removed, 0 changed, 9 in both" in printed and "added: n" in printed


def test_export_takes_a_model_or_an_endpoint_and_writes_privately(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def export(_: Settings, model: str, fmt: str, endpoint: str | None = None) -> Export:
        return Export(fmt, json.dumps({"model": model, "endpoint": endpoint}), "digits/2", 7)

    monkeypatch.setattr("lineage.query.export.export", export)
    for args in ([], ["--model", "m/1", "--endpoint", "http://e"]):
        refused = cli("export", *args)
        assert refused.code == 1
        assert refused.stderr == (
            "error: export takes --model or --endpoint (or --replay DIR --to URL)\n"
        )
    printed = cli("export", "--endpoint", "http://e")
    assert json.loads(printed.stdout) == {"model": "", "endpoint": "http://e"}
    out = tmp_path / "prov.json"
    ran = cli("export", "--model", "m/1", "--format", "prov-json", "--out", str(out), "--json")
    assert ran.json() == {"model": "digits/2", "format": "prov-json", "out": str(out), "checks": 7}
    assert json.loads(out.read_text())["model"] == "m/1"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_replay_needs_a_catalogue_and_fails_when_an_event_was_not_sent(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    refused = cli("export", "--replay", str(tmp_path))
    assert (refused.code, refused.stderr) == (
        1,
        "error: --replay needs --to URL (or OPENLINEAGE_URL)\n",
    )
    sent_to: list[tuple[Path, str, str | None]] = []

    def replay(directory: Path, url: str, api_key: str | None = None) -> Replay:
        sent_to.append((directory, url, api_key))
        return Replay(url, ["a.json"], {"b.json": "HTTP 500"})

    monkeypatch.setattr("lineage.openlineage.emit.replay", replay)
    monkeypatch.setenv("OPENLINEAGE_URL", "http://marquez:5000")
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "k")
    ran = cli("export", "--replay", str(tmp_path))
    assert ran.code == 1 and "sent 1 event(s) to http://marquez:5000" in ran.stdout
    assert "not sent b.json: HTTP 500" in ran.stdout
    assert sent_to == [(tmp_path, "http://marquez:5000", "k")]
    shown = cli("export", "--replay", str(tmp_path), "--to", "http://other", "--json")
    assert shown.code == 1 and shown.json()["to"] == "http://other"
