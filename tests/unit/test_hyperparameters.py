"""Hyperparameters as SageMaker clients write them, decoded by the real toolkit parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from training.hyperparameters import HyperparameterError, TrainingHyperparameters, parse

VALUES: dict[str, Any] = {
    "dvc_tag": "v1.0-20260101T000000Z-abc123",
    "epochs": 3,
    "learning_rate": 0.001,
    "batch_size": 64,
    "register": True,
    "model_name": "digits-mobilenetv3",
}

ENCODINGS = {
    # SDK v3 ModelTrainer / boto3 callers: strings as they are
    "raw": {
        k: (v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
        for k, v in VALUES.items()
    },
    # SDK v2 Framework estimators: json.dumps of every value
    "json": {k: json.dumps(v) for k, v in VALUES.items()},
    # SDK v2 generic Estimator without source_dir: str() of every value ("True")
    "str": {k: str(v) for k, v in VALUES.items()},
}


def decode_with_toolkit(tmp_path: Path, raw: dict[str, str]) -> dict[str, Any]:
    """Run the sagemaker-training toolkit's own parser against a hyperparameters.json."""
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(raw))
    script = (
        "import json; from sagemaker_training import environment as e; "
        "print(json.dumps(e.read_hyperparameters()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path)},
        check=True,
    )
    decoded: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return decoded


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_three_client_encodings_parse_to_the_same_values(tmp_path: Path, encoding: str) -> None:
    parsed = parse(decode_with_toolkit(tmp_path, ENCODINGS[encoding]))
    assert parsed == TrainingHyperparameters(
        dvc_tag=VALUES["dvc_tag"],
        epochs=3,
        learning_rate=0.001,
        batch_size=64,
        model_name="digits-mobilenetv3",
        register=True,
    )


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"dvc_tag": "t", "epochs": "abc"}, "epochs='abc' is not an integer"),
        ({"dvc_tag": "t", "epochs": 0}, "must be >= 1"),
        ({"dvc_tag": "t", "learning_rate": "fast"}, "learning_rate='fast' is not a number"),
        ({"epochs": 1}, "dvc_tag is missing"),
        ({"dvc_tag": "t", "epoch": 1}, "unknown hyperparameters"),
        ({"dvc_tag": "t", "register": "maybe"}, "not a boolean"),
    ],
)
def test_bad_values_are_named(values: dict[str, Any], match: str) -> None:
    with pytest.raises(HyperparameterError, match=match):
        parse(values)
