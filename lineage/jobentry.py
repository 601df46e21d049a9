"""How a job container starts and ends, shared by the jobs (as the SageMaker training
toolkit's ``trainer.train()`` is by its containers).

`require_command`: ``docker run IMAGE <command>`` runs the one command the image serves
(``train``, ``serve``); anything else exits 2 with a line on stderr.

`run_job`: the job's log setup, the MLflow client's bounded waits, SIGTERM handling, and its
end: on failure, the reason (credentials removed, 1 KiB) goes where the platform reads it
(DescribeProcessingJob's ExitMessage from /opt/ml/output/message, DescribeTrainingJob's
FailureReason from /opt/ml/output/failure), to the log, and the job exits 1.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn, TypeVar

from lineage import contract
from lineage.errors import LineageError

EXIT_FAILURE = 1  # a failed job (its reason in the reason file)
EXIT_USAGE = 2  # a container started with a command it does not run

T = TypeVar("T")
SignalHandler = Callable[[int, FrameType | None], None]


class JobStopped(BaseException):
    """SIGTERM arrived (a BaseException, so no `except Exception` swallows it)."""


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise JobStopped(signum)


def require_command(command: str, argv: Sequence[str] | None = None) -> None:
    """``python -m <job> [command]``: no command, or `command`, runs; any other exits 2."""
    args = sys.argv if argv is None else argv
    if len(args) > 1 and args[1] != command:
        sys.stderr.write(f"unknown command {args[1]!r}: this container runs `{command}`\n")
        sys.exit(EXIT_USAGE)


def run_job(
    job: Callable[[], T],
    reason_file: Path,
    *,
    log: logging.Logger,
    errors: tuple[type[Exception], ...] = (LineageError,),
    on_sigterm: SignalHandler | None = None,
    stopped_reason: str = "stopped by SIGTERM",
    keep_earlier_reason: bool = False,
) -> T:
    """Run `job` and return what it returns; on failure write the reason and exit 1.

    `errors`: failures whose message is the reason; any other exception is an internal error
    (logged with its traceback, the reason names its class). SIGTERM (SageMaker's stop, a
    spot interruption) calls `on_sigterm` when given (e.g. a flag the job checks to stop
    cleanly and fail with its own reason); otherwise the job stops at once and fails with
    `stopped_reason`. As PID 1 in a container a signal without a handler is ignored, so the
    job would run on until SIGKILL. `keep_earlier_reason`: a reason file already written
    (by the job itself, as the training toolkit allows) is kept.
    """
    from lineage import tracking  # not at import: the inference image has no MLflow client

    contract.configure_job_logging(sys.stdout)
    tracking.bound_client_waits()
    signal.signal(signal.SIGTERM, on_sigterm or _raise_stopped)
    try:
        return job()
    except JobStopped:
        _fail(log, reason_file, stopped_reason, keep_earlier_reason)
    except errors as exc:
        _fail(log, reason_file, str(exc), keep_earlier_reason)
    except Exception as exc:  # the platform needs a reason for any failure
        log.exception("unexpected failure")
        reason = f"internal error: {exc.__class__.__name__}: {exc}"
        _fail(log, reason_file, reason, keep_earlier_reason)


def _fail(log: logging.Logger, reason_file: Path, reason: str, keep_earlier: bool) -> NoReturn:
    log.error("%s", reason)
    if not (keep_earlier and reason_file.exists()):
        contract.write_reason(reason_file, reason)
    sys.exit(EXIT_FAILURE)
