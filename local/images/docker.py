"""The docker CLI, as the image verbs and the docker runtime use it: one place for "is there
an engine", "which image is that" and "run this container"."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

from lineage.errors import LineageError


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        raise LineageError("the docker CLI is not installed", "install Docker (docker.io)")
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def engine_error() -> str | None:
    """Why no Docker engine can be used (None when one answers)."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 20 s"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"no Docker engine answers ({reason})"
    return None


def require_engine() -> None:
    problem = engine_error()
    if problem:
        raise LineageError(problem, "start dockerd (or Docker Desktop), or use --runtime process")


def buildx_available() -> bool:
    try:
        return _docker("buildx", "version", timeout=20).returncode == 0
    except LineageError:
        return False


@dataclass(frozen=True)
class ImageInfo:
    reference: str
    id: str  # sha256:... of the image config: names the exact image, local or pushed
    repo_digests: list[str]
    labels: dict[str, str]
    user: str
    entrypoint: list[str]

    @property
    def digest(self) -> str:
        """The registry digest when the image was pushed or pulled, else the image id."""
        for repo_digest in self.repo_digests:
            return repo_digest.rsplit("@", 1)[1]
        return self.id


def inspect_image(reference: str) -> ImageInfo:
    result = _docker("image", "inspect", reference)
    if result.returncode != 0:
        raise LineageError(
            f"image {reference} is not on this machine",
            "build it with `make images` (or pull it)",
        )
    data = json.loads(result.stdout)[0]
    config = data.get("Config") or {}
    return ImageInfo(
        reference=reference,
        id=str(data["Id"]),
        repo_digests=list(data.get("RepoDigests") or []),
        labels=dict(config.get("Labels") or {}),
        user=str(config.get("User") or "root"),
        entrypoint=list(config.get("Entrypoint") or []),
    )


def gpus_available() -> bool:
    """Whether `docker run --gpus all` can work here (an NVIDIA GPU and its runtime)."""
    if shutil.which("nvidia-smi") is None:
        return False
    probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    if probe.returncode != 0 or "GPU" not in probe.stdout:
        return False
    runtimes = _docker("info", "--format", "{{json .Runtimes}}", timeout=20)
    return runtimes.returncode == 0 and "nvidia" in runtimes.stdout


def run_detached(argv: list[str], env: dict[str, str]) -> str:
    """`docker run -d ...`; the container id."""
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise LineageError(
            f"docker run failed: {result.stderr.strip()[-400:]}",
            "check the image (`make images`) and that the port is free",
        )
    return result.stdout.strip()


def container_running(name: str) -> bool:
    result = _docker("container", "inspect", "--format", "{{.State.Running}}", name)
    return result.returncode == 0 and result.stdout.strip() == "true"


def container_logs(name: str, lines: int = 40) -> str:
    result = _docker("logs", "--tail", str(lines), name)
    return (result.stdout + result.stderr).strip()


def remove_container(name: str, grace_s: int = 30) -> bool:
    """Stop (SIGTERM, SIGKILL after `grace_s`) and remove; True if it existed."""
    stopped = _docker("stop", "--time", str(grace_s), name, timeout=grace_s + 30)
    _docker("rm", "--force", name)
    return stopped.returncode == 0
