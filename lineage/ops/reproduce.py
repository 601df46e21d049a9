"""`lineage reproduce`: the data check of `lineage.query.reproduce` and, with ``retrain``,
the training job again on that data with the recorded hyperparameters and seed, its metrics
compared with the original run's (training is an operation, so it lives here, above the
queries; the query takes it as its `Retrainer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lineage.config import Settings
from lineage.errors import LineageError
from lineage.ops.train import TrainOptions, train
from lineage.query.chain import RecordedData
from lineage.query.reproduce import (
    EPOCH_METRICS,
    FINAL_METRICS,
    GPU_TOLERANCE,
    MetricComparison,
    Reproduction,
    Retraining,
)
from lineage.query.reproduce import reproduce as reproduce_data
from lineage.registry import RunRecord, metric_history


def reproduce(
    settings: Settings,
    *,
    model: str | None = None,
    run_id: str | None = None,
    directory: Path | None = None,
    retrain: bool = False,
    repo_url: str | None = None,
    pretrained: str | None = None,
    stream: bool = False,
) -> Reproduction:
    """Restore the exact data of a model and re-hash every file (and optionally retrain)."""

    def again(client: Any, data: RecordedData, erased: int) -> Retraining:
        return retrain_run(settings, client, data, pretrained, stream, erased)

    return reproduce_data(
        settings,
        model=model,
        run_id=run_id,
        directory=directory,
        retrain=again if retrain else None,
        repo_url=repo_url,
    )


def retrain_run(
    settings: Settings,
    client: Any,
    data: RecordedData,
    pretrained: str | None,
    stream: bool,
    erased: int = 0,
) -> Retraining:
    run = data.run
    if run.params.get("pretrained") == "True" and not pretrained:
        raise LineageError(
            f"run {run.run_id} started from pretrained weights",
            "pass the same weights file with --pretrained PATH to retrain",
        )
    result = train(
        settings,
        TrainOptions(
            tag=data.tag,
            epochs=int(run.param("epochs")),
            learning_rate=float(run.param("learning_rate")),
            batch_size=int(run.param("batch_size")),
            image_size=int(run.param("image_size")),
            seed=int(run.param("seed")),
            model_name=run.tags.get("model_name") or None,
            pretrained=pretrained or "none",
            repo_url=data.repo_url,
            experiment=_experiment_name(client, run),
            register=False,
            reproduces=run.run_id,
            # the same number of hosts: each host's shard, hence every step, depends on it
            instance_count=int(run.params.get("instance_count") or 1),
        ),
        stream=stream,
    )
    again = str(result.output.run_id)
    device = str(result.output.device)
    exact = device == "cpu" and run.params.get("device", "cpu") == "cpu"
    comparisons = [
        _compare(
            name,
            metric_history(client, run.run_id, name),
            metric_history(client, again, name),
            exact,
        )
        for name in EPOCH_METRICS
    ]
    reproduced_run = client.get_run(again)
    for name in FINAL_METRICS:
        if name in run.metrics:
            comparisons.append(
                _compare(
                    name,
                    [run.metrics[name]],
                    [float(reproduced_run.data.metrics.get(name, float("nan")))],
                    exact,
                )
            )
    return Retraining(again, device, comparisons, erased)


def _experiment_name(client: Any, run: RunRecord) -> str:
    return str(client.get_experiment(run.experiment_id).name)


def _compare(name: str, original: list[float], again: list[float], exact: bool) -> MetricComparison:
    if exact:
        tolerance = 0.0
    elif "accuracy" in name:
        tolerance = GPU_TOLERANCE
    else:
        tolerance = 0.05 * max((abs(v) for v in original), default=0.0)
    ok = len(original) == len(again) and all(
        abs(a - b) <= tolerance for a, b in zip(original, again, strict=True)
    )
    return MetricComparison(name, original, again, tolerance, ok)
