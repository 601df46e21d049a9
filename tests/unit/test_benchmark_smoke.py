"""The evidence benchmark at a tiny size, so it cannot rot between the runs that time it
(`python benchmarks/evidence.py`): it builds, signs and verifies what a pipeline does, and
its own assertions check every bundle verifies."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "evidence.py"


def test_the_evidence_benchmark_runs_and_reports_every_figure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("evidence_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["evidence_benchmark"] = module
    try:
        spec.loader.exec_module(module)
        figures = module.main(["--records", "40", "--leaves", "60", "--model-mb", "1"])
    finally:
        sys.modules.pop("evidence_benchmark", None)
    for name in (
        "sign_dataset_s",
        "sign_model_s",
        "operator_record_s",
        "verify_bundle_s",
        "verify_bundle_model_and_data_s",
        "baseline_dataset_rehash_s",
    ):
        assert figures[name] >= 0, name
    assert figures["records"] == 40 and "verify_bundle_s" in capsys.readouterr().out
