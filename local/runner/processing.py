"""Run a Processing job locally, as SageMaker would: config files, env, paths, exit message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lineage import contract
from lineage.errors import ConfigError
from lineage.jobspec import ProcessingJobSpec

RUNTIMES = ("process", "docker")


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: str  # Completed | Failed
    exit_code: int
    message: str  # DescribeProcessingJob's ExitMessage / FailureReason
    base_dir: Path
    log_file: Path
    seconds: float

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "processing" / "output"

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"


def _container_path(base: Path, local_path: str) -> Path:
    return base / Path(local_path).relative_to(contract.DEFAULT_BASE_DIR)


def prepare_base_dir(spec: ProcessingJobSpec, jobs_root: Path) -> Path:
    """Lay out `/opt/ml` for the job under `jobs_root/<name>/opt/ml`, as the platform does."""
    base = jobs_root / spec.name / "opt" / "ml"
    if base.exists():
        shutil.rmtree(base)
    paths = contract.ProcessingPaths(base)
    paths.config_dir.mkdir(parents=True)
    paths.job_config_file.write_text(json.dumps(spec.job_config(), indent=2))
    paths.resource_config_file.write_text(json.dumps(spec.resource_config()))
    for item in spec.inputs:
        target = _container_path(base, item.local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = Path(item.source)
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / source.name)
    for out in spec.outputs:  # the platform creates output dirs before the entrypoint starts
        _container_path(base, out.local_path).mkdir(parents=True, exist_ok=True)
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
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}", f"use one of {', '.join(RUNTIMES)}")
    if runtime == "docker":
        raise ConfigError(
            "the docker runtime needs the container images, which are not built yet",
            "use --runtime process",
        )
    spec.validate()
    base = prepare_base_dir(spec, jobs_root)
    log_file = base.parent.parent / "job.log"
    env = {
        **os.environ,
        **runtime_env,
        **spec.environment,
        contract.BASE_DIR_ENV: str(base),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [*(spec.entrypoint or [sys.executable, "-m", "processing"]), *spec.arguments]
    started = time.monotonic()
    exit_code = _launch(argv, env, log_file, stream)
    message_file = contract.ProcessingPaths(base).message_file
    message = message_file.read_text(errors="replace").strip() if message_file.exists() else ""
    status = "Completed" if exit_code == 0 else "Failed"
    if exit_code != 0 and not message:
        message = f"the job exited with code {exit_code} without a message; see {log_file}"
    if status == "Completed":
        shutil.rmtree(base / "processing" / "work", ignore_errors=True)
    return JobOutcome(
        spec.name, status, exit_code, message, base, log_file, round(time.monotonic() - started, 2)
    )


def _launch(argv: list[str], env: Mapping[str, str], log_file: Path, stream: bool) -> int:
    """Run the job, copying its output to `log_file` (and the terminal when `stream`)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if stream and sys.stdout.isatty():
        # A terminal: let the job draw its progress bars itself.
        log_file.write_text("(output went to the terminal)\n")
        return subprocess.run(argv, env=dict(env), check=False).returncode
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if stream:
                sys.stderr.write(line)
        return proc.wait()
