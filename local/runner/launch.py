"""What every local job shares: the launch, its log, and the outcome."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.errors import ConfigError, LineageError

RUNTIMES = ("process", "docker")


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: str  # Completed | Failed
    exit_code: int
    message: str  # ExitMessage (processing) / FailureReason (training)
    base_dir: Path  # the job's /opt/ml
    log_file: Path
    seconds: float

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "processing" / "output"

    @property
    def job_dir(self) -> Path:
        return self.base_dir.parent.parent

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"


def fresh_base_dir(jobs_root: Path, name: str) -> Path:
    """`<jobs_root>/<name>/opt/ml`, empty: each run starts from a clean /opt/ml."""
    base = jobs_root / name / "opt" / "ml"
    if base.exists():
        shutil.rmtree(base)
    return base


def stage_input(source: Path, target: Path) -> None:
    """Put an input where the platform would: a directory's contents at `target`, a single
    file inside it. A missing source leaves `target` absent, for the job to report."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    elif source.is_file():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / source.name)


def job_env(
    base: Path,
    runtime_env: Mapping[str, str],
    environment: Mapping[str, str],
    **platform: str,
) -> dict[str, str]:
    """The job's environment: this machine's, the platform's credentials and endpoints, the
    job's own Environment map, the base dir, and whatever the platform sets (`platform`)."""
    return {
        **os.environ,
        **runtime_env,
        **environment,
        contract.BASE_DIR_ENV: str(base),
        "PYTHONUNBUFFERED": "1",
        **platform,
    }


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}", f"use one of {', '.join(RUNTIMES)}")
    if runtime == "docker":
        raise ConfigError(
            "the docker runtime needs the container images, which are not built yet",
            "use --runtime process",
        )


def launch(argv: list[str], env: Mapping[str, str], log_file: Path, stream: bool) -> int:
    """Run the job, copying its output to `log_file` (and to the terminal when `stream`)."""
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


def read_reason(path: Path, exit_code: int, log_file: Path) -> str:
    if path.exists():
        text = path.read_text(errors="replace").strip()
        if text:
            return text
    if exit_code != 0:
        return f"the job exited with code {exit_code} without a reason; see {log_file}"
    return ""


def job_result(outcome: JobOutcome, kind: str, result_file: Path) -> dict[str, Any]:
    """The JSON result a completed job left, or the job's own failure reason as an error."""
    if not outcome.succeeded:
        raise LineageError(
            f"{kind} job {outcome.name} failed: {outcome.message}",
            f"full log: {outcome.log_file}",
        )
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["job_name"] = outcome.name
    return result
