"""Run a Training job locally, as SageMaker would: the three config files, channels,
`/opt/ml/model` tarred into `model.tar.gz` (contents at the root), failure reason."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path

from lineage import contract
from lineage.credentials import write_private
from lineage.jobspec import TrainingJobSpec
from local.runner.launch import (
    JobOutcome,
    check_runtime,
    fresh_base_dir,
    job_command,
    job_vars,
    launch,
    read_reason,
    stage_input,
)


def prepare_base_dir(spec: TrainingJobSpec, jobs_root: Path) -> Path:
    base = fresh_base_dir(jobs_root, spec.name)
    paths = contract.TrainingPaths(base)
    paths.config_dir.mkdir(parents=True)
    write_private(paths.hyperparameters_file, json.dumps(spec.hyperparameters, indent=2))
    write_private(paths.input_data_config_file, json.dumps(spec.input_data_config(), indent=2))
    write_private(paths.resource_config_file, json.dumps(spec.resource_config(), indent=2))
    for channel in spec.channels:
        stage_input(Path(channel.source), paths.channel_dir(channel.name))
    for directory in (paths.model_dir, paths.checkpoint_dir, paths.output_data_dir):
        directory.mkdir(parents=True, exist_ok=True)
    return base


def tar_directory(source: Path, target: Path) -> Path:
    """Tar the *contents* of `source` (no leading dir), following symlinks, like SageMaker."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz", dereference=True) as archive:
        for child in sorted(source.iterdir()):
            archive.add(child, arcname=child.name)
    return target


def run_training(
    spec: TrainingJobSpec,
    *,
    jobs_root: Path,
    runtime_env: Mapping[str, str],
    runtime: str = "process",
    stream: bool = True,
) -> JobOutcome:
    check_runtime(runtime)
    spec.validate()
    base = prepare_base_dir(spec, jobs_root)
    job_dir = base.parent.parent
    log_file = job_dir / "job.log"
    argv, env = job_command(
        runtime,
        image=spec.image_uri,
        module="training",
        args=["train"],
        base=base,
        job_vars=job_vars(
            base,
            runtime_env,
            spec.environment,
            TRAINING_JOB_NAME=spec.name,
            TRAINING_JOB_ARN=spec.arn,
        ),
        name=spec.name,
    )
    started = time.monotonic()
    exit_code = launch(argv, env, log_file, stream)
    paths = contract.TrainingPaths(base)
    reason = read_reason(paths.failure_file, exit_code, log_file)
    status = "Completed" if exit_code == 0 else "Failed"
    if status == "Completed":
        tar_directory(paths.model_dir, job_dir / "output" / "model.tar.gz")
        tar_directory(paths.output_data_dir, job_dir / "output" / "output.tar.gz")
        shutil.rmtree(paths.work_dir, ignore_errors=True)
    return JobOutcome(
        spec.name, status, exit_code, reason, base, log_file, round(time.monotonic() - started, 2)
    )
