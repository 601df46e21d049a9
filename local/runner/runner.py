"""The local runtimes (`process`, `docker`) as a `JobRunner`: what `lineage process`, `train`
and `pipeline` hand their job descriptions to when they run on this machine.

The jobs reach the local stack (git server, S3 store, MLflow) with the stack's credentials in
their environment, never in their description; a job's outputs stay under
`LINEAGE_HOME/jobs/<name>`, where its result file is read back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from lineage import contract
from lineage.config import Settings
from lineage.gitops import split_credentials
from lineage.jobresult import ProcessingResult, TrainingResult
from lineage.jobspec import ProcessingJobSpec, TrainingJobSpec
from lineage.runtime import ProcessingRun, TrainingRun
from lineage.tracking import fail_unfinished_runs
from local.runner.launch import JobOutcome, check_runtime, require_completed
from local.runner.processing import run_processing
from local.runner.training import run_training

log = logging.getLogger("lineage.train")


class LocalRunner:
    """Runs jobs under a temporary `/opt/ml` on this machine, as a subprocess (`process`)
    or in their image (`docker`), against the local stack of `settings`."""

    def __init__(self, settings: Settings, runtime: str = "process") -> None:
        check_runtime(runtime)
        self.settings = settings
        self.runtime = runtime
        self._finished: dict[str, tuple[TrainingJobSpec, JobOutcome]] = {}

    @property
    def name(self) -> str:
        return self.runtime

    def prepare(self, kinds: Sequence[str]) -> Mapping[str, str]:
        """The engine was checked when the runner was made; local images have no digest
        until they run (the job records the one it ran as)."""
        return {}

    def dataset_repository(self, repo: str, *, create: bool) -> tuple[str, dict[str, str]]:
        if create:
            from local.stack import stack_for

            url, _ = stack_for(self.settings).create_repo(repo)
            return url, {}
        return split_credentials(self.settings.repo_url(repo))

    def stage_input(self, name: str, directory: Path, run_id: str) -> str:
        return str(directory)  # the runner copies it into the job's /opt/ml

    def _env(self, runtime_env: Mapping[str, str]) -> dict[str, str]:
        return {**self.settings.client_env(), **runtime_env}

    def run_processing(
        self, spec: ProcessingJobSpec, *, runtime_env: Mapping[str, str], stream: bool
    ) -> ProcessingRun:
        outcome = run_processing(
            spec,
            jobs_root=self.settings.home / "jobs",
            runtime_env=self._env(runtime_env),
            runtime=self.runtime,
            stream=stream,
        )
        require_completed(outcome, "processing")
        result_dir = outcome.output_dir / contract.PROCESSING_RESULT_DIR
        kept = result_dir / contract.OPENLINEAGE_KEEP_DIR
        return ProcessingRun(
            job_name=outcome.name,
            output=ProcessingResult.read(result_dir / contract.PROCESSING_RESULT_FILE),
            openlineage_events=str(kept) if kept.is_dir() else None,
        )

    def start_training(
        self,
        spec: TrainingJobSpec,
        *,
        runtime_env: Mapping[str, str],
        stream: bool,
        data_commit: str | None = None,
    ) -> str:
        """Runs the job to its end: a local job has no one else to run it meanwhile."""
        outcome = run_training(
            spec,
            jobs_root=self.settings.home / "jobs",
            runtime_env=self._env(runtime_env),
            runtime=self.runtime,
            stream=stream,
        )
        self._finished[outcome.name] = (spec, outcome)
        return outcome.name

    def finish_training(self, job_name: str) -> TrainingRun:
        spec, outcome = self._finished.pop(job_name)
        if not outcome.succeeded:  # a crash or a dead server can leave the run RUNNING
            for run_id in fail_unfinished_runs(self.settings.mlflow_uri, spec.name):
                log.warning("run %s of the failed job %s marked FAILED", run_id, spec.name)
        require_completed(outcome, "training")
        output_data = contract.TrainingPaths(outcome.base_dir).output_data_dir
        kept = output_data / contract.OPENLINEAGE_KEEP_DIR
        return TrainingRun(
            job_name=outcome.name,
            output=TrainingResult.read(output_data / contract.TRAINING_RESULT_FILE),
            model_artifact=str(outcome.model_archive),
            openlineage_events=str(kept) if kept.is_dir() else None,
        )
