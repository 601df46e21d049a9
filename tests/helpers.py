"""Helpers shared by test modules (so that no test module imports another)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import create_engine, text

from lineage import manifest
from lineage.attest.tlog import LogKeys
from lineage.consent.anchor import ConsentAnchor
from lineage.consent.store import ConsentStore
from lineage.hashing import bytes_sha256
from lineage.index.source import ModelData
from lineage.jobresult import ProcessingResult, TrainingResult
from lineage.jobspec import ProcessingJobSpec, TrainingJobSpec
from lineage.manifest import ManifestRow
from lineage.record import LineageRecord
from lineage.runtime import ProcessingRun, TrainingRun
from tests.conftest import free_port_block


def random_imagefolder(
    root: Path, *, labels: tuple[str, ...] = ("a", "b"), per_label: int = 12, seed: int = 0
) -> Path:
    """`root/<label>/<i>.png` of random 16x16 pixels: images no other test shares, so a test
    may damage their objects in the remote without harming anyone else."""
    rng = np.random.default_rng(seed)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def wait_http(
    url: str, *, alive: Callable[[], bool] | None = None, deadline_s: float = 120
) -> None:
    """Poll `url` until it answers below 500, failing when `alive()` says the server died
    or the deadline passes (never a blind sleep)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if alive is not None:
            assert alive(), f"the server behind {url} exited"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {deadline_s}s"
        time.sleep(0.2)


@contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """moto's server as a real HTTP endpoint (AWS's API shapes: what cannot exist here)."""
    port = free_port_block(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", alive=lambda: server.poll() is None, deadline_s=60)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


POSTGRES_URL_ENV = "LINEAGE_TEST_POSTGRES_URL"


@contextmanager
def postgres_server(root: Path) -> Iterator[str]:
    """A PostgreSQL server for the test session: the one `LINEAGE_TEST_POSTGRES_URL` names
    (CI's, started by .ci/run), else a private cluster under `root` started from the
    machine's binaries (Debian's `postgresql`), on a free loopback port. Yields a
    SQLAlchemy URL of its `postgres` database; `fresh_database` makes one per test."""
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        yield given
        return
    bindir = _postgres_bindir()
    port = free_port_block(1)
    data = root / "pgdata"
    data.mkdir(parents=True)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        subprocess.run(["chown", "-R", "postgres:postgres", str(root)], check=True)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    log = root / "postgres.log"
    subprocess.run(
        [
            *as_postgres,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )


def postgres_available() -> bool:
    return bool(os.environ.get(POSTGRES_URL_ENV)) or bool(
        list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    )


def _postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: `apt-get install postgresql` (as .ci/run does), or "
            f"set {POSTGRES_URL_ENV} to a server"
        )
    return found[-1].parent


def fresh_database(server_url: str, name: str) -> str:
    """A new empty database on the server; its SQLAlchemy URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


# -- the consent registry ------------------------------------------------------------------------

HEADER = "patient_id,scan_id,file_path,label,consent_status\n"
REGISTRY = HEADER + (
    "PAT-00001,PAT-00001-SCAN-0001,images/1.png,normal,granted\n"
    "PAT-00001,PAT-00001-SCAN-0002,images/2.png,normal,granted\n"
    "PAT-00002,PAT-00002-SCAN-0003,images/3.png,tuberculosis,granted\n"
    "PAT-00003,PAT-00003-SCAN-0004,images/4.png,normal,withdrawn\n"
)


def open_store(url: str, home: Path, key: str | None = None) -> ConsentStore:
    """A store with its anchor (key file, legacy head file) and the keys of its transparency
    log (signing key, trust file, witness file) under `home`."""
    return ConsentStore(
        url, anchor=ConsentAnchor.for_database(home, url, key), log_keys=LogKeys.of_home(home)
    )


def edit(url: str, *statements: str) -> None:
    """Write the database directly, as someone with access to it (not through the store)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


class FaultProxy:
    """A TCP proxy in front of a real service that performs `action` (kill the service) the
    moment a client sends bytes matching `trigger` for the `nth` time, before forwarding
    them: a fault at an exact point of a real protocol exchange (a `dvc push` upload, a
    registry call, a tag push), with no hook in the code under test."""

    def __init__(
        self, target_port: int, trigger: bytes, action: Callable[[], None], nth: int = 1
    ) -> None:
        self.target_port = target_port
        self.trigger = re.compile(trigger)
        self.action = action
        self.remaining = nth
        self.fired_at: float | None = None
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()  # the service is gone: the client sees the connection drop
            return
        upstream.settimeout(None)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, inspect: bool) -> None:
        try:
            while data := source.recv(65536):
                if inspect and self._fires(data):
                    self.action()
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _fires(self, data: bytes) -> bool:
        with self.lock:
            if self.fired_at is not None or not self.trigger.search(data):
                return False
            self.remaining -= 1
            if self.remaining > 0:
                return False
            self.fired_at = time.monotonic()
            return True

    def close(self) -> None:
        self.listener.close()


# -- the CLIs, as users run them --------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON a successful `--json` command printed (its stderr when it failed)."""
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def remote_refs(url: str) -> dict[str, str]:
    out = subprocess.run(["git", "ls-remote", url], capture_output=True, text=True, check=True)
    return {ref: sha for sha, ref in (line.split("\t") for line in out.stdout.splitlines())}


def checkout_with_plain_dvc(stack: Any, url: str, tag: str, dest: Path) -> Path:
    """What an auditor does: git clone, git checkout TAG, dvc pull — the stock CLIs."""
    env = {**os.environ, **stack.settings.client_env(), "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "clone", "--quiet", url, str(dest)], check=True, env=env)
    subprocess.run(["git", "checkout", "--quiet", tag], cwd=dest, check=True, env=env)
    pulled = subprocess.run(
        [sys.executable, "-m", "dvc", "pull", "--quiet"],
        cwd=dest,
        env=env,
        capture_output=True,
        text=True,
    )
    assert pulled.returncode == 0, pulled.stderr
    return dest / "dataset"


# -- data ------------------------------------------------------------------------------------


def digit_images(tmp_path: Path, count: int = 6) -> list[Path]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(count):
        pixels = np.clip(np.rint(digits.images[-1 - i] * (255 / 16)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, mode="L")
        suffix = "png" if i % 2 == 0 else "jpg"
        path = tmp_path / f"digit{i}.{suffix}"
        image.save(path)
        paths.append(path)
    return paths


def _batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [int(x) for x in rng.integers(0, 3, size=n)],
        b"batch_label": b"batch",
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def write_cifar_tarball(path: Path, per_batch: int = 4) -> dict[str, dict[bytes, object]]:
    """A tiny tarball laid out exactly like cifar-10-python.tar.gz."""
    batches: dict[str, dict[bytes, object]] = {
        f"data_batch_{i}": _batch(per_batch, i) for i in range(1, 6)
    }
    batches["test_batch"] = _batch(per_batch, 99)
    meta = {b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072}
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in [*batches.items(), ("batches.meta", meta)]:
            data = pickle.dumps(payload, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return batches


class LineageReceiver:
    """A lineage catalogue's OpenLineage HTTP API on loopback (`POST /api/v1/lineage`), as
    Marquez exposes it: it keeps every event it is sent. Built on a port chosen up front, so
    a test can point jobs at it while it is still down and start it later."""

    def __init__(self, port: int | None = None) -> None:
        # From this worker's ports, not the kernel's ephemeral ones: while the receiver is
        # down its port is free, and an ephemeral port could meanwhile be handed to another
        # worker's listener (a FaultProxy) or connection, which would then get these events.
        self.port = free_port_block(1) if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.events: list[dict[str, Any]] = []
        self._server: Any = None

    def start(self) -> LineageReceiver:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/api/v1/lineage":
                    self.send_response(404)
                else:
                    receiver.events.append(json.loads(body))
                    self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# The shape every OpenLineage RunEvent of spec 2-0-2 (the client's version) must have, written
# from the spec's definitions of RunEvent, Run, Job, InputDataset, OutputDataset and facets:
# the spec file itself ships in no package reachable here.
_FACET = {
    "type": "object",
    "required": ["_producer", "_schemaURL"],
    "properties": {
        "_producer": {"type": "string", "format": "uri", "pattern": "^https?://"},
        "_schemaURL": {"type": "string", "format": "uri", "pattern": "^https?://"},
    },
}
_FACETS = {"type": "object", "additionalProperties": _FACET}
_DATASET = {
    "type": "object",
    "required": ["namespace", "name"],
    "properties": {
        "namespace": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "facets": _FACETS,
        "inputFacets": _FACETS,
        "outputFacets": _FACETS,
    },
}
OPENLINEAGE_RUN_EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": {"type": "string", "format": "uri", "pattern": "^https?://"},
        "schemaURL": {"type": "string", "format": "uri", "pattern": "^https?://"},
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": _FACETS},
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {
                "namespace": {"type": "string", "minLength": 1},
                "name": {"type": "string", "minLength": 1},
                "facets": _FACETS,
            },
        },
        "inputs": {"type": "array", "items": _DATASET},
        "outputs": {"type": "array", "items": _DATASET},
    },
}


def assert_valid_run_event(event: dict[str, Any]) -> None:
    """`event` is a well-formed OpenLineage RunEvent (formats checked, not only types)."""
    import jsonschema

    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    jsonschema.Draft202012Validator(OPENLINEAGE_RUN_EVENT_SCHEMA, format_checker=checker).validate(
        event
    )
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")


# -- the SageMaker Python SDK's local mode, run from its own virtualenv ---------------------------
SDK_PYTHON = Path(__file__).resolve().parent.parent / ".venv-sdk" / "bin" / "python"
SDK_SCRIPTS = Path(__file__).resolve().parent / "container"
# the SDK injects these into every container itself; compose refuses a duplicate
SDK_INJECTED = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"}


def make_sdk_venv() -> None:
    """`make sdk-venv` (the SDK's pins may clash with the project's lock)."""
    root = Path(__file__).resolve().parent.parent
    built = subprocess.run(["make", "sdk-venv"], cwd=root, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]


def run_sdk_script(script: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Run tests/container/`script` with the SDK's interpreter; fail with its output."""
    done = subprocess.run(
        [str(SDK_PYTHON), str(SDK_SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]


def sdk_host_answer(image: str, model_dir: Path, png: Path) -> dict[str, Any]:
    """Host `model_dir` with `image` through the SDK's local mode, invoke it with `png`;
    return the answer (status, decoded body, headers)."""
    import shutil
    import tempfile

    hosting = Path(tempfile.mkdtemp(prefix="lineage-sdk-", dir="/tmp"))
    try:
        run_sdk_script("sdk_host.py", image, str(model_dir), str(png), str(hosting))
        answer: dict[str, Any] = json.loads((hosting / "answer.json").read_text())
    finally:
        shutil.rmtree(hosting, ignore_errors=True)
    return answer


# -- the fast tier: an in-memory MLflow and the in-process command line --------------------


class Page(list[Any]):
    """One page of an MLflow search: its items and the next page's token (None: the last)."""

    def __init__(self, items: list[Any], token: str | None) -> None:
        super().__init__(items)
        self.token = token


def _page(items: list[Any], size: int, token: str | None) -> Page:
    start = int(token or 0)
    return Page(
        items[start : start + size], str(start + size) if start + size < len(items) else None
    )


def epoch_ms(iso: str) -> int:
    """`2026-01-03` or `2026-01-03T10:00:00` (UTC) as MLflow's milliseconds."""
    from datetime import UTC, datetime

    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


class FakeMlflow:
    """The MLflow client calls the lineage questions make (registry search and pages, aliases,
    runs, the manifest artifact), answered from memory. `register` adds what `lineage train`
    leaves behind: a finished training run whose params hold the full data record, a registry
    version whose tags repeat it, and the run's manifest.csv. A small `page_size` makes every
    search come back page by page."""

    def __init__(self, page_size: int = 1000) -> None:
        self.page_size = page_size
        self.runs: dict[str, Any] = {}
        self.versions: dict[tuple[str, str], Any] = {}
        self.aliases: dict[str, dict[str, str]] = {}
        self.artifacts: dict[str, bytes] = {}  # run id -> its manifest.csv

    @property
    def client(self) -> Any:
        """This fake where the code wants an `MlflowClient`."""
        return self

    def register(
        self,
        name: str,
        version: str,
        rows: list[ManifestRow],
        *,
        trained: str,
        pattern: str = "record",
        consent_as_of: str = "",
        consent_snapshot_sha256: str = "",
        params: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> ModelData:
        """A registered version trained at `trained` (ISO) on `rows`; its `ModelData`."""
        record_pattern = pattern == "record"
        columns = manifest.RECORD_COLUMNS if record_pattern else manifest.BASE_COLUMNS
        data = manifest.render(rows, columns)
        sha = bytes_sha256(data)
        record = LineageRecord(
            data_git_commit_id=sha[:40],
            dvc_tag=f"v-{sha[:8]}",
            data_version=f"v-{sha[:8]}",
            dataset_md5=f"{sha[:32]}.dir",
            manifest_sha256=sha,
            weights_sha256="w" * 64,
            model_sha256="m" * 64,
            pattern=pattern,
            consent_snapshot_sha256=consent_snapshot_sha256,
            consent_as_of=consent_as_of,
            dvc_repo_url="https://git.example.com/datasets.git",
            consent_head_seq="1" if record_pattern else "",
            consent_head_hash="h" * 64 if record_pattern else "",
        )
        run_id, ms = f"run-{name}-{version}", epoch_ms(trained)
        self.runs[run_id] = SimpleNamespace(
            info=SimpleNamespace(
                run_id=run_id,
                experiment_id="1",
                run_name=f"train-{name}",
                status="FINISHED",
                start_time=ms,
                end_time=ms + 60_000,
                lifecycle_stage="active",
            ),
            data=SimpleNamespace(
                params={**record.to_params(), "count_train": "2", **(params or {})},
                tags={"lineage.stage": "training", "model_name": name},
                metrics=dict(metrics or {}),
            ),
        )
        self.versions[(name, version)] = SimpleNamespace(
            name=name,
            version=version,
            run_id=run_id,
            tags=record.to_tags(),
            source=f"runs:/{run_id}/model",
            creation_timestamp=ms,
        )
        self.artifacts[run_id] = data
        return ModelData(
            name,
            version,
            run_id,
            ms,
            record.dvc_tag,
            record.data_git_commit_id,
            record.dataset_md5,
            sha,
            pattern,
            consent_snapshot_sha256 or None,
            consent_as_of or None,
        )

    # -- MlflowClient ----------------------------------------------------------------------
    @staticmethod
    def _missing(what: str) -> Exception:
        from mlflow.exceptions import MlflowException

        return MlflowException(f"{what} not found (RESOURCE_DOES_NOT_EXIST)")

    def search_model_versions(
        self,
        filter_string: str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page:
        found = sorted(self.versions.values(), key=lambda v: (v.name, int(v.version)))
        if filter_string:
            run_id = re.fullmatch(r"run_id = '(.*)'", filter_string)
            assert run_id, f"filter not faked: {filter_string}"
            found = [v for v in found if v.run_id == run_id.group(1)]
        return _page(found, min(max_results, self.page_size), page_token)

    def search_registered_models(
        self, max_results: int = 1000, page_token: str | None = None
    ) -> Page:
        names = sorted({name for name, _ in self.versions})
        models = [SimpleNamespace(name=n, aliases=dict(self.aliases.get(n, {}))) for n in names]
        return _page(models, min(max_results, self.page_size), page_token)

    def get_model_version(self, name: str, version: str) -> Any:
        if (name, version) not in self.versions:
            raise self._missing(f"Model Version (name={name}, version={version})")
        return self.versions[(name, version)]

    def get_registered_model(self, name: str) -> Any:
        if not any(n == name for n, _ in self.versions):
            raise self._missing(f"Registered Model with name={name}")
        return SimpleNamespace(name=name, aliases=dict(self.aliases.get(name, {})))

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        version = self.aliases.get(name, {}).get(alias)
        if version is None:
            raise self._missing(f"alias {alias} of {name}")
        return self.versions[(name, version)]

    def get_run(self, run_id: str) -> Any:
        if run_id not in self.runs:
            raise self._missing(f"Run '{run_id}'")
        return self.runs[run_id]

    def download_artifacts(self, run_id: str, path: str, dst_path: str | None = None) -> str:
        if run_id not in self.artifacts or path != "manifest.csv":
            raise self._missing(f"artifact {path} of run {run_id}")
        target = Path(dst_path or ".") / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.artifacts[run_id])
        return str(target)


@dataclass(frozen=True)
class CliRun:
    """How one in-process `lineage` call exited and what it printed where."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as exactly one JSON document (a progress line there would fail this)."""
        return json.loads(self.stdout)

    @property
    def said(self) -> str:
        """stderr as one line: the frame and line breaks of click's error panel taken out."""
        return " ".join(re.sub("[│╭╮╰╯─]", " ", self.stderr).split())


def run_lineage(*args: str) -> CliRun:
    """`lineage ARGS` in this process, through the console script's own entry point
    (`lineage.cli.app.main`, which turns a LineageError into one line and its exit code),
    stdout and stderr captured apart by click's CliRunner."""
    from typer.testing import CliRunner

    from lineage.cli.app import main

    argv, sys.argv = sys.argv, ["lineage", *args]
    try:
        with CliRunner().isolation() as (stdout, stderr, _):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            sys.stdout.flush()
            sys.stderr.flush()
            return CliRun(code, stdout.getvalue().decode(), stderr.getvalue().decode())
    finally:
        sys.argv = argv


# -- a JobRunner that runs nothing: what the operations hand a runtime, recorded -------------
def processing_result(tag: str, **changes: Any) -> ProcessingResult:
    """A complete processing result file for dataset tag `tag`."""
    values: dict[str, Any] = {
        "tag": tag,
        "commit": "c" * 40,
        "dataset_md5": "d" * 32 + ".dir",
        "manifest_sha256": "e" * 64,
        "counts": {"train": 80, "val": 10, "test": 10},
        "classes": ["0", "1"],
        "nfiles": 100,
        "size_bytes": 12345,
        "dvc_repo_url": "https://github.com/acme/datasets.git",
        "reused_commit": False,
        "data_version": tag.split("-")[0],
        "source": "digits",
        "mlflow_run_id": None,
        "seconds": 1.5,
    }
    return ProcessingResult(**{**values, **changes})


def training_result(tag: str, **changes: Any) -> TrainingResult:
    """A complete training result file for a run on dataset tag `tag`."""
    values: dict[str, Any] = {
        "run_id": "r" * 32,
        "model_name": "digits-mobilenetv3",
        "model_version": "7",
        "data_git_commit_id": "c" * 40,
        "dvc_tag": tag,
        "dataset_md5": "d" * 32 + ".dir",
        "manifest_sha256": "e" * 64,
        "metrics": {"best_val_accuracy": 0.9},
        "pretrained": False,
        "device": "cpu",
        "seconds": 3.0,
    }
    return TrainingResult(**{**values, **changes})


@dataclass
class FakeRunner:
    """lineage.runtime.JobRunner: records what the operations hand it; each job "completes"
    with a result that echoes its description (the tag it was given), unless `published`
    says which tag the processing job claims to have published."""

    repo_url: str = "https://github.com/acme/datasets.git"
    published: str | None = None
    runtime: str = "fake"

    def __post_init__(self) -> None:
        self.prepared: list[tuple[str, ...]] = []
        self.staged: list[tuple[str, Path, str]] = []
        self.processed: list[tuple[ProcessingJobSpec, dict[str, str]]] = []
        self.trained: list[tuple[TrainingJobSpec, dict[str, str], str | None]] = []
        self.finished: list[str] = []

    @property
    def name(self) -> str:
        return self.runtime

    def prepare(self, kinds: Sequence[str]) -> Mapping[str, str]:
        self.prepared.append(tuple(kinds))
        return {}

    def dataset_repository(self, repo: str, *, create: bool) -> tuple[str, dict[str, str]]:
        return self.repo_url, {}

    def stage_input(self, name: str, directory: Path, run_id: str) -> str:
        self.staged.append((name, directory, run_id))
        return f"s3://bucket/{name}/{run_id}/"

    def run_processing(
        self, spec: ProcessingJobSpec, *, runtime_env: Mapping[str, str], stream: bool
    ) -> ProcessingRun:
        self.processed.append((spec, dict(runtime_env)))
        tag = self.published or spec.environment["PIPELINE_RUN_ID"]
        return ProcessingRun(spec.name, processing_result(tag))

    def start_training(
        self,
        spec: TrainingJobSpec,
        *,
        runtime_env: Mapping[str, str],
        stream: bool,
        data_commit: str | None = None,
    ) -> str:
        self.trained.append((spec, dict(runtime_env), data_commit))
        return spec.name

    def finish_training(self, job_name: str) -> TrainingRun:
        self.finished.append(job_name)
        spec = next(s for s, _, _ in self.trained if s.name == job_name)
        output = training_result(spec.hyperparameters["dvc_tag"])
        return TrainingRun(job_name, output, f"s3://bucket/training/{job_name}/model.tar.gz")


def stock_model_signing_verify(model: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    """The stock OpenSSF tool, as an outsider runs it: `python -m model_signing verify key`
    in the model directory, the paths written after training ignored."""
    return subprocess.run(
        [
            sys.executable, "-m", "model_signing", "verify", "key",
            "--signature", "model.sig", "--public_key", str(public_key),
            "--ignore-paths", "lineage.json", "--ignore-paths", "registered_model_meta", ".",
        ],
        cwd=model,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip
