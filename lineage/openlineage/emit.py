"""Send events to a lineage catalogue the standard way, without ever failing a job for it.

Configured exactly as the official client is (`OPENLINEAGE_URL`, `OPENLINEAGE_CONFIG`,
`OPENLINEAGE__TRANSPORT__*`, `OPENLINEAGE_API_KEY`); off when none is set, or when
`OPENLINEAGE_DISABLED=true`. When on, every event is first written to the job's keep
directory (so nothing is lost), then sent in a bounded attempt (`LINEAGE_OPENLINEAGE_TIMEOUT`
seconds, default 10): a catalogue that is down costs the job at most that, logs one warning
naming what to do, and the kept events can be sent later with
`lineage export --replay DIR --to URL`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lineage import contract
from lineage.credentials import write_private
from lineage.errors import LineageError
from lineage.redact import redact_text, redact_url

log = logging.getLogger("lineage.openlineage")

TIMEOUT_ENV = "LINEAGE_OPENLINEAGE_TIMEOUT"
KEEP_DIR = contract.OPENLINEAGE_KEEP_DIR  # under a job's output: the events it produced
ENDPOINT = "api/v1/lineage"


def configured(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OPENLINEAGE_URL")
        or env.get("OPENLINEAGE_CONFIG")
        or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env)
    )


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The OpenLineage settings a job started from here needs (they travel in the job's
    environment, like the stack's credentials, never in its config files)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k.startswith("OPENLINEAGE")}


@dataclass
class EventSink:
    """Where a job's events go: its keep directory, then the catalogue (when configured)."""

    keep_dir: Path
    timeout_s: float = 10.0
    sent: int = 0
    kept: list[Path] = field(default_factory=list)
    _client: Any = None
    _warned: bool = False

    @classmethod
    def from_env(cls, keep_dir: Path) -> EventSink | None:
        if not configured():
            return None
        from lineage.config import env_float

        return cls(keep_dir, env_float(os.environ, TIMEOUT_ENV, 10.0))

    def emit(self, event: Any) -> None:
        """Keep `event`, then try to send it; never raises."""
        from openlineage.client.serde import Serde

        body = Serde.to_json(event)
        self.keep_dir.mkdir(parents=True, exist_ok=True)
        path = self.keep_dir / f"{len(self.kept) + 1:03d}-{event.eventType.value}.json"
        write_private(path, body + "\n")
        self.kept.append(path)
        error = self._send(event)
        if error is None:
            self.sent += 1
            return
        if not self._warned:
            log.warning(
                "the lineage catalogue did not take the %s event (%s); the job goes on. It is "
                "kept in %s: send it later with `lineage export --replay %s --to URL`",
                event.eventType.value,
                redact_text(error)[:300],
                self.keep_dir,
                self.keep_dir,
            )
            self._warned = True

    def _send(self, event: Any) -> str | None:
        outcome: list[str | None] = []

        def attempt() -> None:
            try:
                if self._client is None:
                    from openlineage.client import OpenLineageClient

                    self._client = OpenLineageClient()
                self._client.emit(event)
                outcome.append(None)
            except Exception as exc:  # noqa: BLE001 - any transport failure: the job must not care
                outcome.append(f"{exc.__class__.__name__}: {exc}")

        worker = threading.Thread(target=attempt, daemon=True, name="openlineage-emit")
        worker.start()
        worker.join(self.timeout_s)
        if not outcome:
            return f"no answer within {self.timeout_s:.0f} s"
        return outcome[0]


def kept_events(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every kept event under `directory`, oldest first."""
    found = []
    for path in sorted(directory.rglob("*.json")):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(event, dict) and {"eventType", "eventTime", "run", "job"} <= event.keys():
            found.append((path, event))
    yield from sorted(found, key=lambda item: (str(item[1]["eventTime"]), str(item[0])))


@dataclass(frozen=True)
class Replay:
    url: str
    sent: list[str]
    failed: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"to": self.url, "ok": self.ok, "sent": self.sent, "failed": self.failed}


def replay(directory: Path, url: str, api_key: str | None = None, timeout_s: float = 15) -> Replay:
    """POST every kept event under `directory` to the catalogue at `url` (its OpenLineage
    HTTP API), oldest first. Catalogues key events by run id and type: a resent event is not
    a duplicate run."""
    if not directory.is_dir():
        raise LineageError(f"{directory} is not a directory", "pass a job's kept events")
    events = list(kept_events(directory))
    if not events:
        raise LineageError(
            f"no OpenLineage events under {directory}",
            "jobs keep them in <output>/openlineage when OPENLINEAGE_URL is set",
        )
    target = url.rstrip("/") + "/" + ENDPOINT
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    sent, failed = [], {}
    with httpx.Client(timeout=timeout_s) as client:
        for path, event in events:
            try:
                answer = client.post(target, content=json.dumps(event), headers=headers)
                if answer.status_code >= 300:
                    failed[str(path)] = f"HTTP {answer.status_code}: {answer.text[:200]}"
                    continue
            except httpx.HTTPError as exc:
                failed[str(path)] = f"{exc.__class__.__name__}: {exc}"
                continue
            sent.append(str(path))
    return Replay(redact_url(url), sent, failed)


class JobRun:
    """One job's run as OpenLineage sees it: START on entry, COMPLETE on a clean exit, FAIL
    (with the error message) on an exception, which is re-raised. A no-op without a sink."""

    def __init__(
        self,
        sink: EventSink | None,
        *,
        run_id: str,
        job: Any,
        inputs: list[Any] | None = None,
        parent: Any = None,
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        self.sink = sink
        self.run_id = run_id
        self.job = job
        self.inputs = list(inputs or [])
        self.outputs: list[Any] = []
        self.parent = parent
        self.facts: dict[str, Any] = dict(facts or {})

    def with_outputs(self, outputs: list[Any]) -> JobRun:
        self.outputs = list(outputs)
        return self

    def _emit(self, state: Any, error: str | None = None) -> None:
        if self.sink is None:
            return
        from lineage.openlineage.events import run_event

        self.sink.emit(
            run_event(
                state,
                run_id=self.run_id,
                job=self.job,
                inputs=self.inputs,
                outputs=self.outputs,
                facts=self.facts,
                parent_facet=self.parent,
                error=error,
            )
        )

    def __enter__(self) -> JobRun:
        from openlineage.client.event_v2 import RunState

        self._emit(RunState.START)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, _tb: Any) -> None:
        from openlineage.client.event_v2 import RunState

        if exc is None:
            self._emit(RunState.COMPLETE)
        else:
            self._emit(RunState.FAIL, str(exc) or exc.__class__.__name__)
