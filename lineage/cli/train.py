"""`lineage train`, `lineage pipeline`, `lineage promote`."""

from __future__ import annotations

from typing import Annotated

import typer

from lineage.cli.options import (
    Fraction,
    Json,
    Pattern,
    Repo,
    Runtime,
    Source,
    TestSplit,
    ValSplit,
    Version,
)
from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.ops.process import DEFAULT_REPO, ProcessOptions
from lineage.ops.train import TrainOptions, TrainResult, pipeline, promote, train

Epochs = Annotated[int, typer.Option(help="Training epochs.")]
LearningRate = Annotated[float, typer.Option(help="Adam learning rate.")]
BatchSize = Annotated[int, typer.Option(help="Batch size.")]
ImageSize = Annotated[int, typer.Option(help="Square input size (the seed's 128).")]
Seed = Annotated[int, typer.Option(help="Seed: same seed and data give the same metrics on CPU.")]
ModelName = Annotated[
    str | None, typer.Option(help="Registered model name (default <source>-mobilenetv3).")
]
InstanceCount = Annotated[
    int,
    typer.Option(
        min=1,
        max=100,
        help="Hosts of the training job (SageMaker's InstanceCount): DistributedDataParallel "
        "across them; locally, one process or container per host.",
    ),
]
Pretrained = Annotated[
    str, typer.Option(help="none | torchvision | PATH to a torchvision MobileNetV3-Small .pth")
]


def _print_training(result: TrainResult) -> None:
    out = result.output
    metrics = out.metrics
    console.print(f"[bold]run[/bold]          {out.run_id}")
    console.print(f"[bold]model[/bold]        {out.model_name} version {out.model_version}")
    console.print(f"[bold]data[/bold]         tag {out.dvc_tag} -> commit {out.data_git_commit_id}")
    console.print(
        f"[bold]metrics[/bold]      best val_accuracy {metrics['best_val_accuracy']:.4f}"
        f" (epoch {int(metrics['best_epoch'])}), test_accuracy "
        f"{metrics['test_accuracy']:.4f}"
    )
    if out.world_size > 1:
        console.print(
            f"[bold]hosts[/bold]        {', '.join(out.hosts)} (world size "
            f"{out.world_size}; {out.hosts[0]} led)"
        )
    console.print(f"[bold]model.tar.gz[/bold] {result.model_artifact}")


def train_command(
    tag: Annotated[str, typer.Option("--tag", help="Dataset tag from `lineage process`.")],
    epochs: Epochs = 3,
    learning_rate: LearningRate = 0.001,
    batch_size: BatchSize = 64,
    image_size: ImageSize = 128,
    seed: Seed = 42,
    model_name: ModelName = None,
    pretrained: Pretrained = "none",
    repo: Repo = DEFAULT_REPO,
    runtime: Runtime = "process",
    instance_count: InstanceCount = 1,
    json_output: Json = False,
) -> None:
    """Train MobileNetV3-Small on an exact dataset tag; log and register it in MLflow."""
    result = train(
        Settings.from_env(),
        TrainOptions(
            tag=tag,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            image_size=image_size,
            seed=seed,
            model_name=model_name,
            pretrained=pretrained,
            repo=repo,
            runtime=runtime,
            instance_count=instance_count,
        ),
        stream=not json_output,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        _print_training(result)


def pipeline_command(
    version: Version,
    fraction: Fraction,
    source: Source = "digits",
    val_split: ValSplit = 0.1,
    test_split: TestSplit = 0.1,
    data_seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
    epochs: Epochs = 3,
    learning_rate: LearningRate = 0.001,
    batch_size: BatchSize = 64,
    image_size: ImageSize = 128,
    seed: Seed = 42,
    model_name: ModelName = None,
    pretrained: Pretrained = "none",
    repo: Repo = DEFAULT_REPO,
    runtime: Runtime = "process",
    pattern: Pattern = "dataset",
    instance_count: InstanceCount = 1,
    json_output: Json = False,
) -> None:
    """Process a dataset version, then train on the tag it published."""
    result = pipeline(
        Settings.from_env(),
        ProcessOptions(
            version=version,
            fraction=fraction,
            source=source,
            val_split=val_split,
            test_split=test_split,
            seed=data_seed,
            repo=repo,
            runtime=runtime,
            pattern=pattern,
        ),
        TrainOptions(
            tag="",
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            image_size=image_size,
            seed=seed,
            model_name=model_name,
            pretrained=pretrained,
            repo=repo,
            runtime=runtime,
            instance_count=instance_count,
        ),
        stream=not json_output,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        _print_training(result.training)


def promote_command(
    model: Annotated[str, typer.Option("--model", help="NAME/VERSION")],
    alias: Annotated[str, typer.Option("--alias", help="Registry alias, e.g. champion.")],
    json_output: Json = False,
) -> None:
    """Point a registry alias (e.g. champion) at a model version."""
    result = promote(Settings.from_env(), model, alias)
    if json_output:
        emit_json(result.to_json())
    else:
        was = f" (was version {result.previous_version})" if result.previous_version else ""
        console.print(f"{result.model_name}@{alias} -> version {result.version}{was}")
