"""Run a Processing job locally, as SageMaker would: config files, env, paths, exit message."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from lineage import contract
from lineage.credentials import write_private
from lineage.jobspec import ProcessingJobSpec
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


def container_path(base: Path, local_path: str) -> Path:
    """Where a container path (/opt/ml/...) lies under the job's local base dir."""
    return base / Path(local_path).relative_to(contract.DEFAULT_BASE_DIR)


def prepare_base_dir(spec: ProcessingJobSpec, jobs_root: Path) -> Path:
    """Lay out `/opt/ml` for the job under `jobs_root/<name>/opt/ml`, as the platform does."""
    base = fresh_base_dir(jobs_root, spec.name)
    paths = contract.ProcessingPaths(base)
    paths.config_dir.mkdir(parents=True)
    # the job's environment and arguments are in here: private, like the rest of the job dir
    write_private(paths.job_config_file, json.dumps(spec.job_config(), indent=2))
    write_private(paths.resource_config_file, json.dumps(spec.resource_config()))
    for item in spec.inputs:
        stage_input(Path(item.source), container_path(base, item.local_path))
    for out in spec.outputs:  # the platform creates output dirs before the entrypoint starts
        container_path(base, out.local_path).mkdir(parents=True, exist_ok=True)
    (base / "output").mkdir(parents=True, exist_ok=True)
    return base


def run_processing(
    spec: ProcessingJobSpec,
    *,
    jobs_root: Path,
    runtime_env: Mapping[str, str],
    runtime: str = "process",
    stream: bool = True,
) -> JobOutcome:
    """Run `spec` to completion; map its exit code and message file to a job status.

    `runtime_env` is what the platform adds (credentials, endpoints), kept out of the job's
    recorded Environment the way an execution role's credentials are.
    """
    check_runtime(runtime)
    spec.validate()
    base = prepare_base_dir(spec, jobs_root)
    log_file = base.parent.parent / "job.log"
    argv, env = job_command(
        runtime,
        image=spec.image_uri,
        module="processing",
        args=spec.arguments,
        base=base,
        job_vars=job_vars(base, runtime_env, spec.environment),
        name=spec.name,
        entrypoint=spec.entrypoint,
    )
    started = time.monotonic()
    exit_code = launch(argv, env, log_file, stream)
    message = read_reason(contract.ProcessingPaths(base).message_file, exit_code, log_file)
    status = "Completed" if exit_code == 0 else "Failed"
    if status == "Completed":
        shutil.rmtree(base / "processing" / "work", ignore_errors=True)
    return JobOutcome(
        spec.name, status, exit_code, message, base, log_file, round(time.monotonic() - started, 2)
    )
