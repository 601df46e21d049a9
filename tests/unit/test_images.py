"""The image build's sources of truth agree: the bake file, the plain-docker plan the
Makefile runs, the compose file's pins and the lock, the ECR push plan."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from lineage.errors import ConfigError
from local.images.bake import plan
from local.images.push import parse_registry, push_plan
from tests.conftest import REPO_ROOT

TARGETS = ["processing", "training", "inference"]


def _bake() -> dict[str, Any]:
    with (REPO_ROOT / "docker-bake.hcl").open() as handle:
        return hcl2.load(handle)


def _names(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name.strip('"'): body for block in blocks for name, body in block.items()}


def test_bake_file_declares_the_targets_variables_and_platform() -> None:
    parsed = _bake()
    variables = _names(parsed["variable"])
    assert {"REGISTRY", "TAG", "BASE_IMAGE"} <= set(variables)
    assert [t.strip('"') for t in _names(parsed["group"])["default"]["targets"]] == TARGETS
    targets = _names(parsed["target"])
    for name in TARGETS:
        assert targets[name]["inherits"] == ['"_common"']
        assert targets[name]["target"] == f'"{name}"'
    common = targets["_common"]
    assert common["platforms"] == ['"linux/amd64"'] and common["context"] == '"."'


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "TAG": "1.2.0",
            "BASE_IMAGE": "model-lineage/base:bookworm",
        },
    ],
)
def test_make_builds_exactly_the_bake_targets(env: dict[str, str]) -> None:
    """`make images-plan` (what `make images` runs without buildx) == the bake file."""
    result = subprocess.run(
        ["make", "-s", "images-plan", *(f"{k}={v}" for k, v in env.items())],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    expected = plan(REPO_ROOT, {**env, "VERSION": "v", "REVISION": "r", "CREATED": "c"})
    assert len(lines) == len(expected) == 3
    prefix = f"{env['REGISTRY']}/" if env.get("REGISTRY") else ""
    tag = env.get("TAG", "latest")
    for line, target in zip(lines, expected, strict=True):
        assert f"--target {target.target} " in line
        assert f"--tag {prefix}model-lineage/{target.name}:{tag} " in line
        assert f"--build-arg BASE_IMAGE={target.args['BASE_IMAGE']} " in line
        assert "--file images/Dockerfile" in line and "--platform linux/amd64" in line
        assert re.search(r"--build-arg REVISION=[0-9a-f]{40}|--build-arg REVISION=unknown", line)


def test_bake_print_agrees_when_buildx_exists() -> None:
    if (
        subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False).returncode
        != 0
    ):
        pytest.skip("docker buildx is not installed: the plain-docker plan was checked instead")
    printed = json.loads(
        subprocess.run(
            ["docker", "buildx", "bake", "--print"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "VERSION": "v", "REVISION": "r", "CREATED": "c"},
        ).stdout
    )
    for target in plan(REPO_ROOT, {"VERSION": "v", "REVISION": "r", "CREATED": "c"}):
        baked = printed["target"][target.name]
        assert baked["tags"] == target.tags and baked["args"] == target.args
        assert baked["target"] == target.target


def test_registry_and_push_plan() -> None:
    assert parse_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == (
        "123456789012",
        "eu-west-1",
    )
    with pytest.raises(ConfigError, match="not an ECR registry"):
        parse_registry("docker.io")
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    items = push_plan(plan(REPO_ROOT, {"REGISTRY": registry, "TAG": "2.0"}), registry)
    assert [i.repository for i in items] == [f"model-lineage/{t}" for t in TARGETS]
    with pytest.raises(ConfigError, match="not in"):
        push_plan(plan(REPO_ROOT, {}), registry)


def test_push_dry_run_touches_nothing() -> None:
    env = {
        **os.environ,
        "REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "PATH": os.environ["PATH"],
    }
    result = subprocess.run(
        ["make", "-s", "push", "DRY_RUN=1", f"REGISTRY={env['REGISTRY']}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "would log in to 123456789012.dkr.ecr.eu-west-1.amazonaws.com" in result.stdout
    assert result.stdout.count("would run: docker push") == 3


def test_dockerignore_keeps_state_credentials_and_tests_out() -> None:
    rules = [
        line
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"  # deny everything, then allow only what the Dockerfile copies
    allowed = [r[1:] for r in rules[1:]]
    assert all(r.startswith("!") for r in rules[1:])
    assert not any(a.startswith((".lineage", "tests", ".aws", ".venv", ".git")) for a in allowed)


def test_both_composes_accept_the_stack_files(tmp_path: Path) -> None:
    """The services run the `stack` image, built from the same wheelhouse and lock as the
    jobs (no versions to keep in step here); v1 and v2 compose both read the files."""
    env = {
        **os.environ,
        "LINEAGE_HOST": "172.17.0.1",
        "LINEAGE_CREDENTIALS_FILE": str(tmp_path / "credentials.json"),
        "LINEAGE_MINIO_SECRETS": str(tmp_path),
    }
    checked = 0
    for command in (["docker-compose"], ["docker", "compose"]):
        if (
            shutil.which(command[0]) is None
            or subprocess.run([*command, "version"], capture_output=True, check=False).returncode
            != 0
        ):
            continue
        files = ["-f", "local/compose.yaml", "-f", "local/compose.minio.yaml"]
        result = subprocess.run(
            [*command, *files, "config", "--quiet"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        checked += 1
    if not checked:
        pytest.skip("neither docker-compose nor docker compose is installed")


def test_dockerfile_is_hermetic_exec_form_and_leaves_opt_ml_alone() -> None:
    lines = [
        line.strip()
        for line in (REPO_ROOT / "images" / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    installs = [line for line in lines if "pip install" in line]
    assert installs and all("--no-index" in line for line in installs)
    entrypoints = [line for line in lines if line.startswith("ENTRYPOINT")]
    assert len(entrypoints) == 4  # processing, training, inference, and the stack's services
    for line in entrypoints:  # exec form, python itself (signals reach it), no tini
        assert json.loads(line.removeprefix("ENTRYPOINT"))[0] == "python"
    assert not any("/opt/ml" in line for line in lines)
