"""Run a Training job locally, as SageMaker would: the three config files, channels,
`/opt/ml/model` tarred into `model.tar.gz` (contents at the root), failure reason."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from lineage import contract
from lineage.contract import RENDEZVOUS_ADDRESS_ENV, RENDEZVOUS_PORT_ENV, tar_directory
from lineage.credentials import write_private
from lineage.jobspec import TrainingJobSpec
from local.runner.hosts import HostLaunch, failure_reason, launch_hosts
from local.runner.launch import (
    JobOutcome,
    check_runtime,
    fresh_base_dir,
    job_command,
    job_vars,
    launch,
    model_archive,
    output_archive,
    read_reason,
    stage_input,
)


def prepare_base_dir(
    spec: TrainingJobSpec, jobs_root: Path, host: str | None = None, network_interface: str = "lo"
) -> Path:
    """One host's `/opt/ml`: `<jobs>/<name>/opt/ml` on one host, `<jobs>/<name>/<host>/opt/ml`
    for each of several, with the config files SageMaker writes there."""
    base = fresh_base_dir(jobs_root, spec.name, host if spec.instance_count > 1 else None)
    paths = contract.TrainingPaths(base)
    paths.config_dir.mkdir(parents=True)
    write_private(paths.hyperparameters_file, json.dumps(spec.hyperparameters, indent=2))
    write_private(paths.input_data_config_file, json.dumps(spec.input_data_config(), indent=2))
    resource = spec.resource_config(host, network_interface)
    write_private(paths.resource_config_file, json.dumps(resource, indent=2))
    for channel in spec.channels:
        stage_input(Path(channel.source), paths.channel_dir(channel.name))
    for directory in (paths.model_dir, paths.checkpoint_dir, paths.output_data_dir):
        directory.mkdir(parents=True, exist_ok=True)
    return base


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
    if spec.instance_count > 1:
        return _run_hosts(spec, jobs_root, runtime_env, runtime, stream)
    base = prepare_base_dir(spec, jobs_root)
    job_dir = base.parent.parent
    log_file = job_dir / "job.log"
    argv, env = _command(spec, runtime, base, runtime_env, spec.name)
    started = time.monotonic()
    exit_code = launch(argv, env, log_file, stream)
    paths = contract.TrainingPaths(base)
    reason = read_reason(paths.failure_file, exit_code, log_file)
    status = "Completed" if exit_code == 0 else "Failed"
    if status == "Completed":
        _collect_outputs(paths, job_dir)
    return JobOutcome(
        spec.name, status, exit_code, reason, base, log_file, round(time.monotonic() - started, 2)
    )


def _command(
    spec: TrainingJobSpec,
    runtime: str,
    base: Path,
    runtime_env: Mapping[str, str],
    container: str,
    **extra: str,
) -> tuple[list[str], dict[str, str]]:
    return job_command(
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
            **extra,
        ),
        name=container,
    )


def _collect_outputs(paths: contract.TrainingPaths, job_dir: Path) -> None:
    tar_directory(paths.model_dir, model_archive(job_dir))
    tar_directory(paths.output_data_dir, output_archive(job_dir))
    shutil.rmtree(paths.work_dir, ignore_errors=True)


def _run_hosts(
    spec: TrainingJobSpec,
    jobs_root: Path,
    runtime_env: Mapping[str, str],
    runtime: str,
    stream: bool,
) -> JobOutcome:
    """Every host of the job at once, each with its own /opt/ml, on this machine's loopback
    (processes, or containers on the host network): they meet at a free rendezvous port."""
    rendezvous = {
        RENDEZVOUS_ADDRESS_ENV: "127.0.0.1",
        RENDEZVOUS_PORT_ENV: str(_free_port()),
    }
    rendezvous = {k: v for k, v in rendezvous.items() if k not in spec.environment}
    # this machine's multi-host settings reach containers too (a process gets them anyway)
    rendezvous |= {k: os.environ[k] for k in _FORWARDED if k in os.environ}
    # each "instance" gets its share of this machine's cores, as each would have its own
    share = str(max(1, (os.cpu_count() or 1) // spec.instance_count))
    rendezvous |= {k: share for k in ("OMP_NUM_THREADS",) if k not in os.environ}
    job_dir = jobs_root / spec.name
    launches, bases = [], {}
    for host in spec.hosts:
        base = prepare_base_dir(spec, jobs_root, host)
        bases[host] = base
        container = f"{spec.name}-{host}"
        argv, env = _command(spec, runtime, base, {**runtime_env, **rendezvous}, container)
        launches.append(
            HostLaunch(
                host,
                argv,
                env,
                job_dir / host / "job.log",
                container if runtime == "docker" else None,
            )
        )
    started = time.monotonic()
    exits = launch_hosts(launches, stream)
    reasons = {
        host: text
        for host, base in bases.items()
        if (text := read_reason(contract.TrainingPaths(base).failure_file, 0, Path()))
    }
    reason = failure_reason(exits, reasons)
    leader = contract.TrainingPaths(bases[spec.hosts[0]])
    if not reason:
        reason = _followers_wrote_models(spec, bases)
    status = "Failed" if reason else "Completed"
    if status == "Completed":
        _collect_outputs(leader, job_dir)
        for base in bases.values():
            shutil.rmtree(contract.TrainingPaths(base).work_dir, ignore_errors=True)
    exit_code = next((e.exit_code for e in exits if e.exit_code != 0), 0 if not reason else 1)
    return JobOutcome(
        spec.name,
        status,
        exit_code,
        reason,
        leader.base,
        launches[0].log_file,
        round(time.monotonic() - started, 2),
        root=job_dir,
        hosts=tuple(spec.hosts),
    )


_FORWARDED = (
    contract.DIST_BACKEND_ENV,
    contract.RENDEZVOUS_TIMEOUT_ENV,
    contract.COLLECTIVE_TIMEOUT_ENV,
)


def _followers_wrote_models(spec: TrainingJobSpec, bases: Mapping[str, Path]) -> str:
    """Only the leader writes /opt/ml/model: anything else there would be merged into the
    model artifact by SageMaker without a record of it."""
    for host in spec.hosts[1:]:
        found = sorted(p.name for p in contract.TrainingPaths(bases[host]).model_dir.iterdir())
        if found:
            return f"host {host} wrote {', '.join(found[:5])} to /opt/ml/model; only the leader may"
    return ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
