"""What every local job shares: the launch, its log, and the outcome."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lineage import contract
from lineage.config import merge_env
from lineage.credentials import private_dir, write_private
from lineage.errors import ConfigError, LineageError

RUNTIMES = ("process", "docker")


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: str  # Completed | Failed
    exit_code: int
    message: str  # ExitMessage (processing) / FailureReason (training)
    base_dir: Path  # the job's /opt/ml (the leader's, on several hosts)
    log_file: Path
    seconds: float
    root: Path | None = None  # the job's directory, when it is not base_dir's grandparent
    hosts: tuple[str, ...] = ("algo-1",)

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "processing" / "output"

    @property
    def job_dir(self) -> Path:
        return self.root or self.base_dir.parent.parent

    @property
    def model_archive(self) -> Path:
        """A training job's model.tar.gz (the leader's /opt/ml/model, tarred)."""
        return model_archive(self.job_dir)

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"


def model_archive(job_dir: Path) -> Path:
    """Where a completed training job's model.tar.gz lies, as SageMaker's S3 output does."""
    return job_dir / "output" / contract.MODEL_ARCHIVE


def output_archive(job_dir: Path) -> Path:
    """Where a completed training job's output.tar.gz (/opt/ml/output/data) lies."""
    return job_dir / "output" / contract.OUTPUT_ARCHIVE


def fresh_base_dir(jobs_root: Path, name: str, host: str | None = None) -> Path:
    """`<jobs_root>/<name>/opt/ml` (`<jobs_root>/<name>/<host>/opt/ml` for one host of
    several), empty: each run starts from a clean /opt/ml."""
    job = private_dir(private_dir(jobs_root) / name)  # configs, logs, leftovers: owner only
    home = private_dir(job / host) if host else job
    base = home / "opt" / "ml"
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
    return merge_env(os.environ, job_vars(base, runtime_env, environment, **platform))


def job_vars(
    base: Path,
    runtime_env: Mapping[str, str],
    environment: Mapping[str, str],
    **platform: str,
) -> dict[str, str]:
    """What a job gets beyond the machine's own environment (a container gets only this)."""
    return {
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
        from local.images.docker import require_engine

        require_engine()


# Set inside a container by the image or the runtime, never copied from this machine.
_HOST_ONLY = frozenset({contract.BASE_DIR_ENV, "PYTHONUNBUFFERED"})


def job_command(
    runtime: str,
    *,
    image: str,
    module: str,
    args: list[str],
    base: Path,
    job_vars: Mapping[str, str],
    name: str,
    entrypoint: list[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start a job under `runtime`.

    `process`: the job's module in this Python, `/opt/ml` at `base` (SAGEMAKER_BASE_DIR).
    `docker`: the job's image with `base` bind-mounted as `/opt/ml`, exactly the job's
    variables (passed by name, so no value shows in `ps`), the host network (the local stack
    is on 127.0.0.1), every GPU when there is one, and the image's identity so the job can
    record which image ran it.
    """
    if runtime == "process":
        command = entrypoint or [sys.executable, "-m", module]
        return [*command, *args], merge_env(os.environ, job_vars)
    from local.images.docker import gpus_available, inspect_image

    info = inspect_image(image)
    container_vars = {k: v for k, v in job_vars.items() if k not in _HOST_ONLY}
    container_vars |= {
        "PYTHONUNBUFFERED": "1",
        "LINEAGE_IMAGE_URI": image,
        "LINEAGE_IMAGE_DIGEST": info.digest,
    }
    argv = [
        "docker",
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--volume",
        f"{base}:{contract.DEFAULT_BASE_DIR}",
    ]
    key_file = container_vars.get(contract.SIGNING_KEY_FILE_ENV)
    if key_file:  # the signing key: a read-only mount of the file, never its bytes
        argv += ["--volume", f"{Path(key_file).resolve()}:{contract.SIGNING_KEY_MOUNT}:ro"]
        container_vars[contract.SIGNING_KEY_FILE_ENV] = contract.SIGNING_KEY_MOUNT
    if os.getuid() != 0:  # files in the bind mount stay the caller's
        argv += ["--user", f"{os.getuid()}:{os.getgid()}", "--env", "HOME=/tmp"]
    if gpus_available():
        argv += ["--gpus", "all"]
    for key in sorted(container_vars):
        argv += ["--env", key]
    if entrypoint:  # Docker semantics of ContainerEntrypoint: the rest go before the args
        argv += ["--entrypoint", entrypoint[0]]
        args = [*entrypoint[1:], *args]
    return [*argv, image, *args], merge_env(os.environ, container_vars)


def launch(argv: list[str], env: Mapping[str, str], log_file: Path, stream: bool) -> int:
    """Run the job, copying its output to `log_file` (and to the terminal when `stream`)."""
    private_dir(log_file.parent)
    if stream and sys.stdout.isatty():
        # A terminal: let the job draw its progress bars itself.
        write_private(log_file, "(output went to the terminal)\n")
        return subprocess.run(argv, env=dict(env), check=False).returncode
    # `with Popen` closes the job's output pipe and reaps it however the copy ends (a failed
    # job, an interrupt): a bare Popen left the pipe to the garbage collector.
    with (
        os.fdopen(  # the job's output may name paths and hosts: owner only
            os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w"
        ) as log,
        subprocess.Popen(
            argv,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as proc,
    ):
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


def require_completed(outcome: JobOutcome, kind: str) -> None:
    """A failed job is an error carrying the job's own failure reason."""
    if not outcome.succeeded:
        raise LineageError(
            f"{kind} job {outcome.name} failed: {outcome.message}",
            f"full log: {outcome.log_file}",
        )
