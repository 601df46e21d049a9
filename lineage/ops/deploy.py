"""`lineage deploy` / `lineage invoke`: registry version -> model.tar.gz -> /opt/ml/model ->
the inference server, exactly the path SageMaker takes (CreateModel from model.tar.gz)."""

from __future__ import annotations

import mimetypes
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from lineage import contract
from lineage.attest.checks import model_checks
from lineage.attest.host import Evidence, model_subject
from lineage.config import Settings
from lineage.contract import tar_directory
from lineage.credentials import private_dir
from lineage.errors import LineageError
from lineage.integrity import checked_run, model_dir_checks, require
from lineage.record import LineageRecord
from lineage.registry import mlflow_client, resolve

if TYPE_CHECKING:
    from lineage.sagemaker.endpoints import DeployResult as SageMakerDeployResult
    from lineage.sagemaker.runner import SageMakerRunner

# The local runtime (local.stack.process, local.runner, local.images) is imported inside the
# functions that run endpoints here: `lineage sagemaker deploy` uses materialize and
# deploy_lineage_run without loading the local harness.
PING_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Materialized:
    """A registry version as SageMaker gets it: model.tar.gz (`model_data`), extracted as
    `/opt/ml/model` (`model_dir`), with its `lineage.json` (stamped with the registry's name,
    version and alias)."""

    model_name: str
    model_version: str
    alias: str | None
    model_dir: Path
    model_data: Path
    lineage: dict[str, Any]
    attestation_sha256: str = ""  # the signed provenance the checks verified
    signer_key_id: str = ""
    run_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "alias": self.alias,
            "model_dir": str(self.model_dir),
            "model_data": str(self.model_data),
            "lineage": self.lineage,
            "attestation_sha256": self.attestation_sha256,
            "signer_key_id": self.signer_key_id,
        }


@dataclass(frozen=True)
class ServerHandle:
    """How to find a local endpoint's server: its process (`pid`) or its container
    (`container`, `image`), and where its log is."""

    log: str
    pid: int | None = None
    container: str | None = None
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        found = {"pid": self.pid, "container": self.container, "image": self.image}
        return {**{k: v for k, v in found.items() if v is not None}, "log": self.log}


@dataclass(frozen=True)
class DeployResult:
    """What `lineage deploy` did: the endpoint's URL, how it runs, and the model it serves."""

    endpoint: str
    runtime: str
    server: ServerHandle
    model: Materialized

    def to_json(self) -> dict[str, Any]:
        """What `deploy --json` prints (the server's handle, then the model's keys)."""
        return {
            "endpoint": self.endpoint,
            "runtime": self.runtime,
            **self.server.to_json(),
            **self.model.to_json(),
        }


def materialize(settings: Settings, ref: str, endpoint_dir: Path) -> Materialized:
    """Build model.tar.gz from the registered version and extract it as `/opt/ml/model`.

    lineage.json gets the registry's name, version and alias: the registry is the source of
    truth for what is deployed, and its data commit must agree with the artifact's.
    """
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow_client(settings.mlflow_uri)
    registered = resolve(client, ref)
    name, version = registered.name, registered.version
    alias = ref.rsplit("@", 1)[1] if "@" in ref else None
    run = checked_run(client, registered)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
        )
        # the bytes about to be served must be the bytes the run trained, recorded and signed
        require(model_dir_checks(run, local, "the registered"), registered.ref, "deployable")
        signed, verified = model_checks(
            local, Evidence(settings).trust, LineageRecord.from_run(run), "the registered"
        )
        require(signed, registered.ref, "deployable")
        assert verified is not None  # require() refused an unverified model
        served = replace(LineageRecord.read(local), model_version=version, alias=alias)
        served.write(local)
        lineage = served.to_json()
        if endpoint_dir.exists():
            shutil.rmtree(endpoint_dir)
        private_dir(endpoint_dir.parent)  # endpoints/: owner only, like the rest of the home
        tarball = tar_directory(local, endpoint_dir / contract.MODEL_ARCHIVE)
    model_dir = endpoint_dir / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(model_dir, filter="data")
    return Materialized(
        model_name=name,
        model_version=version,
        alias=alias,
        model_dir=model_dir,
        model_data=tarball,
        lineage=lineage,
        attestation_sha256=verified.provenance_digest,
        signer_key_id=verified.signer_key_id,
        run_id=run.run_id,
    )


def _endpoint_files(settings: Settings, port: int) -> tuple[Path, Path, Path]:
    return (
        settings.home / "endpoints" / str(port),
        settings.home / "run" / f"endpoint-{port}.pid",
        settings.home / "logs" / f"endpoint-{port}.log",
    )


def container_name(port: int) -> str:
    return f"lineage-endpoint-{port}"


def _container_file(settings: Settings, port: int) -> Path:
    return settings.home / "run" / f"endpoint-{port}.container"


@dataclass(frozen=True)
class _Server:
    """A starting endpoint, however it runs: is it alive, stop it, what did it say."""

    alive: Callable[[], bool]
    kill: Callable[[], None]
    logs: Callable[[], str]
    handle: ServerHandle


def _start_process(
    settings: Settings, port: int, model: Materialized, trusted_keys: str
) -> _Server:
    from local.stack import process

    endpoint_dir, pid_file, log_file = _endpoint_files(settings, port)
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "LINEAGE_SERVE_HOST": settings.host,
        "SAGEMAKER_BASE_DIR": str(endpoint_dir / "opt" / "ml"),
        "PYTHONUNBUFFERED": "1",
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),  # as the image sets it
        contract.TRUSTED_KEYS_ENV: trusted_keys,
    }
    pid = process.spawn(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(model.model_dir)],
        pid_file=pid_file,
        log_file=log_file,
        env=env,
        cwd=endpoint_dir,
    )

    def kill() -> None:
        process.terminate(pid, 10)
        pid_file.unlink(missing_ok=True)

    return _Server(
        alive=lambda: process.is_alive(pid),
        kill=kill,
        logs=lambda: process.tail(log_file),
        handle=ServerHandle(pid=pid, log=str(log_file)),
    )


def _start_container(
    settings: Settings, port: int, model: Materialized, trusted_keys: str
) -> _Server:
    """The inference image, as SageMaker runs it: `serve`, the model at /opt/ml/model."""
    from local.images import docker

    image = settings.image_uri("inference")
    docker.inspect_image(image)  # a clear error when it is not built
    name = container_name(port)
    docker.remove_container(name, 1)  # a leftover of a crashed run
    argv = [
        "docker",
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--volume",
        f"{model.model_dir}:{contract.DEFAULT_BASE_DIR}/model:ro",
        "--env",
        f"SAGEMAKER_BIND_TO_PORT={port}",
        "--env",
        f"LINEAGE_SERVE_HOST={settings.host}",
        "--env",
        contract.TRUSTED_KEYS_ENV,  # public keys, passed by name like every variable
        image,
        "serve",
    ]
    container = docker.run_detached(argv, {**os.environ, contract.TRUSTED_KEYS_ENV: trusted_keys})
    marker = _container_file(settings, port)
    private_dir(marker.parent)
    marker.write_text(f"{name}\n{container}\n{image}\n")

    def kill() -> None:
        docker.remove_container(name, 10)
        marker.unlink(missing_ok=True)

    return _Server(
        alive=lambda: docker.container_running(name),
        kill=kill,
        logs=lambda: docker.container_logs(name),
        handle=ServerHandle(container=name, image=image, log=f"docker logs {name}"),
    )


def deploy(
    settings: Settings,
    ref: str,
    port: int = 8080,
    runtime: str = "process",
    trusted_keys: str | None = None,
) -> DeployResult:
    """Serve `ref` on `port`: as a local process, or in the inference image (`docker`).
    The server checks the model's signature at load against `trusted_keys` (PEM text or a
    path; default: the keys this home trusts); the deploy is a signed decision."""
    from local.runner.launch import check_runtime
    from local.stack import process

    if not 1 <= port <= 65535:
        raise LineageError(f"port {port} is not a TCP port", "pass --port 1-65535")
    check_runtime(runtime)
    endpoint_dir, _, _ = _endpoint_files(settings, port)
    stop(settings, port)
    if not process.port_free(settings.host, port):
        raise LineageError(
            f"port {port} is in use by another program", "pass --port with a free port"
        )
    evidence = Evidence(settings)
    keys = trusted_pem(trusted_keys) if trusted_keys else evidence.trust.pem_bundle()
    model = materialize(settings, ref, endpoint_dir)
    url = f"http://{settings.host}:{port}"
    with deploy_lineage_run(settings, model, url):
        start = _start_container if runtime == "docker" else _start_process
        server = start(settings, port, model, keys)
        deadline = time.monotonic() + PING_TIMEOUT_S
        while True:
            if not server.alive():
                _give_up(server, "the inference server exited during start-up")
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                _give_up(server, "the inference server did not answer /ping in time")
            time.sleep(0.2)
    decide_deploy(settings, model, url, runtime)
    return DeployResult(endpoint=url, runtime=runtime, server=server.handle, model=model)


def trusted_pem(value: str) -> str:
    """`--trusted-keys` (PEM text or a path) as the PEM text a server is given."""
    from lineage.attest.keys import TrustStore

    return TrustStore.from_value(value).pem_bundle()


def decide_deploy(settings: Settings, model: Materialized, url: str, runtime: str) -> None:
    """The deploy, signed by the operator: which signed model now serves where."""
    from lineage.attest.host import store_decision

    envelope = Evidence(settings).decide(
        "deploy",
        [model_subject(model.model_name, model.model_version, model.attestation_sha256)],
        {"endpoint": url, "runtime": runtime, "alias": model.alias, "run_id": model.run_id},
    )
    store_decision(settings, model.run_id, envelope, "deploy")


def deploy_sagemaker(
    runner: SageMakerRunner, ref: str, endpoint_name: str, instance_type: str
) -> SageMakerDeployResult:
    """Serve `ref` on a SageMaker endpoint: the same model.tar.gz a local deploy serves,
    uploaded to the runner's bucket, hosted by the inference image in ECR, tagged with its
    lineage, and recorded as the same OpenLineage deploy run."""
    from lineage.serving import endpoint_url

    runner.prepare(("inference",))
    settings = runner.settings
    with tempfile.TemporaryDirectory(prefix="lineage-deploy-") as tmp:
        model = materialize(settings, ref, Path(tmp) / "endpoint")
        model_data = runner.stage_model(model.model_data, model.model_name, model.model_version)
    url = endpoint_url(settings.aws_region, endpoint_name)
    with deploy_lineage_run(settings, model, url):
        hosted = runner.host(
            model_data,
            model.model_name,
            model.model_version,
            model.lineage,
            endpoint_name,
            instance_type,
            trusted_keys=Evidence(settings).trust.pem_bundle(),
        )
    decide_deploy(settings, model, url, "sagemaker")
    return hosted


def deploy_lineage_run(settings: Settings, model: Materialized, url: str) -> Any:
    """The deploy as an OpenLineage run `deploy/<model>`: the model version in, the endpoint
    (`url`) out, its parent the training run (when OPENLINEAGE_URL or the like is set). Used
    by the local deploy and the SageMaker one alike."""
    from lineage.gitops import repository_name
    from lineage.openlineage import events as ol
    from lineage.openlineage.emit import KEEP_DIR, EventSink, JobRun

    record = LineageRecord.from_mapping(model.lineage)
    name, version = model.model_name, str(model.model_version)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    keep = settings.home / KEEP_DIR / f"deploy-{name}-{version}-{stamp}"
    repo = repository_name(record.dvc_repo_url)
    job = record.training_job_name
    return JobRun(
        EventSink.from_env(keep),
        run_id=ol.deploy_run_id(name, version, url, stamp),
        job=ol.job(f"deploy/{name}", "MODEL_DEPLOYMENT"),
        inputs=[ol.model_version(settings.mlflow_uri, name, version, record.facts(), output=False)],
        parent=ol.parent(ol.training_run_id(job), f"train/{repo}") if job else None,
        facts={"endpoint": url, "model": f"{name}/{version}", "alias": model.alias},
    ).with_outputs([ol.endpoint_dataset(url)])


def _give_up(server: _Server, reason: str) -> NoReturn:
    """Stop a server that failed to start; the error carries what it said."""
    details = server.logs()
    server.kill()
    raise LineageError(reason, f"see {server.handle.log}", details=details)


def _ports(settings: Settings, port: int | None) -> list[int]:
    if port is not None:
        return [port]
    run_dir = settings.home / "run"
    found = {
        int(path.name.split("-", 1)[1].split(".", 1)[0])
        for pattern in ("endpoint-*.pid", "endpoint-*.container")
        for path in run_dir.glob(pattern)
    }
    return sorted(found)


def stop(settings: Settings, port: int | None = None) -> list[int]:
    """Stop the local endpoint on `port` (all local endpoints when None)."""
    from local.stack import process

    stopped = []
    for each in _ports(settings, port):
        _, pid_file, _ = _endpoint_files(settings, each)
        pid = process.running_pid(pid_file, "inference")
        if pid is not None:
            process.terminate(pid, 30)  # SageMaker's SIGTERM -> SIGKILL window
            stopped.append(each)
        pid_file.unlink(missing_ok=True)
        marker = _container_file(settings, each)
        if marker.exists():
            from local.images import docker

            if docker.remove_container(marker.read_text().split()[0], 30):
                stopped.append(each)
            marker.unlink(missing_ok=True)
    return sorted(set(stopped))


def running_endpoints(settings: Settings) -> list[dict[str, Any]]:
    """Every local endpoint that is running, and the model it says it serves (`/lineage`).

    An endpoint that runs but cannot say what it serves is an error: an audit that skipped it
    could miss a deployed model.
    """
    from local.stack import process

    found = []
    for port in _ports(settings, None):
        _, pid_file, _ = _endpoint_files(settings, port)
        running = process.running_pid(pid_file, "inference") is not None
        marker = _container_file(settings, port)
        if not running and marker.exists():
            from local.images import docker

            running = docker.container_running(marker.read_text().split()[0])
        if not running:
            continue
        url = f"http://{settings.host}:{port}"
        try:
            served = httpx.get(f"{url}/lineage", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            raise LineageError(
                f"the local endpoint {url} runs but does not say what it serves",
                f"restart it (`lineage deploy`) or stop it (`lineage deploy --stop --port {port}`)",
            ) from None
        found.append(
            {
                "url": url,
                "model_name": served.get("model_name"),
                "model_version": str(served.get("model_version")),
                "run_id": served.get("run_id"),
            }
        )
    return found


def invoke(endpoint: str, files: list[Path]) -> list[dict[str, Any]]:
    results = []
    with httpx.Client(timeout=60) as client:
        for path in files:
            if not path.is_file():
                raise LineageError(f"{path} does not exist", "pass image files")
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            try:
                response = client.post(
                    f"{endpoint.rstrip('/')}/invocations",
                    content=path.read_bytes(),
                    headers={"Content-Type": kind, "Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise LineageError(
                    f"no endpoint answers at {endpoint} ({exc.__class__.__name__})",
                    "start one with `lineage deploy`",
                ) from None
            results.append({"file": str(path), "status": response.status_code, **_answer(response)})
    return results


ERROR_BODY_LIMIT = 500  # characters of a non-JSON answer kept in the error


def _answer(response: httpx.Response) -> dict[str, Any]:
    """The endpoint's answer as fields of a result: its JSON object when it succeeded, its
    `error` and `detail` when it did not. A body that is not a JSON object (a proxy's HTML
    error page, a crashed server's plain text) becomes the error, its text truncated, instead
    of a traceback from decoding it."""
    try:
        body = response.json()
    except ValueError:  # not JSON, or not UTF-8 text
        body = None
    if isinstance(body, dict):
        return body if response.is_success else {k: body.get(k) for k in ("error", "detail")}
    text = response.content.decode("utf-8", "replace").strip()
    if len(text) > ERROR_BODY_LIMIT:
        text = text[:ERROR_BODY_LIMIT] + "..."
    return {
        "error": text or f"HTTP {response.status_code} with an empty body",
        "detail": "the endpoint's answer is not a JSON object",
    }
