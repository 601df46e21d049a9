"""git and DVC through their real command lines, with errors a user can act on.

Why the CLIs and not dulwich/DVC's Python API: the CLIs are what users run to check our work
(`git clone`, `dvc pull`), their behaviour is the documented contract, and a job that shells
out to them behaves the same on a laptop, in a container and on SageMaker.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from lineage.errors import LineageError
from lineage.redact import redact_url

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "model-lineage",
    "GIT_AUTHOR_EMAIL": "jobs@model-lineage.invalid",
    "GIT_COMMITTER_NAME": "model-lineage",
    "GIT_COMMITTER_EMAIL": "jobs@model-lineage.invalid",
}


class GitError(LineageError):
    """A git command failed."""


class DvcError(LineageError):
    """A DVC command failed."""


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, redact_url(secret))
    return text


TOKEN_SECRET_ENV = "LINEAGE_GIT_TOKEN_SECRET"  # noqa: S105 - a variable name, not a secret


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for git/dvc: no prompts, no analytics, a job identity unless one is set,
    and the HTTPS credential from Secrets Manager when the job was given one."""
    env = {**os.environ, **(extra or {})}
    for key, value in GIT_IDENTITY.items():
        env.setdefault(key, value)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    secret = env.get(TOKEN_SECRET_ENV)
    if secret:
        env.update(git_auth_env(secret_credentials(secret)))
    return env


def git_auth_env(credentials: tuple[str, str]) -> dict[str, str]:
    """git configuration, passed through the environment (never a URL, argument or file),
    that sends HTTPS basic credentials: GitHub tokens and CodeCommit git credentials alike."""
    user, token = credentials
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


@functools.cache
def secret_credentials(secret_id: str) -> tuple[str, str]:
    """(user, token) from a Secrets Manager secret, read at run time by the job itself.

    The secret is a plain token (GitHub: user ``x-access-token``) or JSON with ``token`` or
    ``password`` and optionally ``username``.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as exc:
        raise GitError(
            f"cannot read the git token secret {secret_id}: {exc.__class__.__name__}",
            "give the job's role secretsmanager:GetSecretValue on it, and check its name",
        ) from None
    text = str(value.get("SecretString") or "")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        token = str(data.get("token") or data.get("password") or "")
        user = str(data.get("username") or "x-access-token")
    else:
        token, user = text.strip(), "x-access-token"
    if not token:
        raise GitError(f"the git token secret {secret_id} holds no token")
    return user, token


def git(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    secrets: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("git")
    if binary is None:
        raise GitError("`git` not found on PATH", "install git (e.g. `apt-get install git`)")
    result = subprocess.run(
        [binary, *args], cwd=cwd, env=tool_env(env), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        shown = _scrub(" ".join(args), secrets)
        detail = _scrub((result.stderr or result.stdout).strip(), secrets)
        raise GitError(
            f"git {shown} failed: {detail.splitlines()[-1] if detail else result.returncode}"
        )
    return result


def dvc(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=tool_env(env),
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise DvcError(f"dvc {' '.join(args)} failed: {detail[-1500:]}")
    return result


def dvc_out_md5(dvc_file: Path) -> tuple[str, int, int]:
    """(md5, nfiles, size) of the single output recorded in a ``.dvc`` file."""
    data = yaml.safe_load(dvc_file.read_text())
    out = data["outs"][0]
    return str(out["md5"]), int(out.get("nfiles", 0)), int(out.get("size", 0))


def dvc_out_md5_from_text(text: str) -> str | None:
    try:
        data = yaml.safe_load(text)
        return str(data["outs"][0]["md5"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
