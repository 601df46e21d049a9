"""git and DVC through their real command lines, with errors a user can act on.

Why the CLIs and not dulwich/DVC's Python API: the CLIs are what users run to check our work
(`git clone`, `dvc pull`), their behaviour is the documented contract, and a job that shells
out to them behaves the same on a laptop, in a container and on SageMaker.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from lineage.config import GIT_AUTH_URL_ENV, GIT_TOKEN_ENV, merge_env
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


class ServiceDownError(LineageError):
    """A service a job depends on stopped answering while the job waited on it."""


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, redact_url(secret))
    return text


TOKEN_SECRET_ENV = "LINEAGE_GIT_TOKEN_SECRET"  # noqa: S105 - a variable name, not a secret
URL_CREDENTIALS_ENV = "LINEAGE_GIT_URL_CREDENTIALS"  # scope + user:password taken off a URL
GIT_TIMEOUT_S = 120  # for small requests (ls-remote); transfers are bounded by low-speed limits


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for git/dvc: no prompts, no analytics, a job identity unless one is set,
    and HTTPS credentials as git configuration in the environment: the embedded git
    server's token (sent to that server only), the token from Secrets Manager when the job
    was given one, and the credentials of a repository URL that carried them."""
    env = merge_env(os.environ, extra or {})
    for key, value in GIT_IDENTITY.items():
        env.setdefault(key, value)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["DVC_NO_ANALYTICS"] = "1"
    # a server that stops answering mid-transfer fails the command within a minute instead
    # of hanging the job (git's own stall detector: under 1 KB/s for 60 s)
    env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
    env.setdefault("GIT_HTTP_LOW_SPEED_TIME", "60")
    env.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    headers: list[tuple[str, tuple[str, str]]] = []
    if env.get(GIT_TOKEN_ENV) and env.get(GIT_AUTH_URL_ENV):
        headers.append((env[GIT_AUTH_URL_ENV], ("lineage", env[GIT_TOKEN_ENV])))
    secret = env.get(TOKEN_SECRET_ENV)
    if secret:
        headers.append(("", secret_credentials(secret)))
    url_credentials = env.get(URL_CREDENTIALS_ENV)
    if url_credentials:
        scope, _, userinfo = url_credentials.partition(" ")
        user, _, password = userinfo.partition(":")
        headers.append((scope, (unquote(user), unquote(password))))
    if headers:
        env.update(git_auth_env(headers))
    return env


def git_auth_env(headers: list[tuple[str, tuple[str, str]]]) -> dict[str, str]:
    """git configuration, passed through the environment (never a URL, argument or file),
    that sends HTTPS basic credentials: GitHub tokens, CodeCommit git credentials and the
    embedded server's token alike. Each is scoped to its URL prefix (`http.<url>.extraHeader`)
    so no credential is ever sent to another server; an empty scope means every server."""
    env = {"GIT_CONFIG_COUNT": str(len(headers))}
    for index, (scope, (user, token)) in enumerate(headers):
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        key = f"http.{scope.rstrip('/')}/.extraHeader" if scope else "http.extraHeader"
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = f"Authorization: Basic {basic}"
    return env


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """A repository URL without the credentials it carries, and the environment that gives
    them to git instead (so they are never in argv, a `.git/config` or a job config file)."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("http") or "@" not in parts.netloc:
        return url, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if ":" not in userinfo:  # https://<token>@host: the token is the user
        userinfo = f"x-access-token:{userinfo}"
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    scope = urlunsplit((parts.scheme, hostport, "", "", ""))
    return clean, {URL_CREDENTIALS_ENV: f"{scope} {userinfo}"}


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


class ServiceWatch:
    """A service a long command depends on, and how to ask whether it still answers."""

    def __init__(self, name: str, where: str, alive: Callable[[], bool], hint: str) -> None:
        self.name = name  # e.g. "S3 store"
        self.where = where  # its endpoint, shown in the error
        self.alive = alive  # a quick probe with its own short timeout
        self.hint = hint


DEAD_AFTER_S = 60.0  # a service that has not answered for this long is gone
PROBE_EVERY_S = 5.0


def dvc(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    watch: ServiceWatch | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the dvc CLI. With `watch`, the service it transfers to is probed while it runs:
    DVC's own retries ride out a dead S3 store for over ten minutes, so once the store has
    not answered for `DEAD_AFTER_S` the command is stopped and the error names the store."""
    argv = [sys.executable, "-m", "dvc", *args]
    if watch is None:
        result = subprocess.run(argv, cwd=cwd, env=tool_env(env), capture_output=True, text=True)
    else:
        result = _run_watched(argv, cwd, tool_env(env), watch, " ".join(("dvc", *args)))
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise DvcError(f"dvc {' '.join(args)} failed: {detail[-1500:]}")
    return result


def _run_watched(
    argv: list[str], cwd: Path, env: dict[str, str], watch: ServiceWatch, what: str
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True, start_new_session=True
        )
        silent_since: float | None = None
        next_probe = time.monotonic() + PROBE_EVERY_S
        while proc.poll() is None:
            time.sleep(0.2)
            if time.monotonic() < next_probe:
                continue
            next_probe = time.monotonic() + PROBE_EVERY_S
            if watch.alive():
                silent_since = None
                continue
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since >= DEAD_AFTER_S:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise ServiceDownError(
                    f"the {watch.name} at {watch.where} stopped answering during `{what}` "
                    f"(no answer for {DEAD_AFTER_S:.0f}s); it was stopped",
                    watch.hint,
                )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())


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


def repository_name(url: str) -> str:
    """A repository's own name, from its URL (`.../repos/datasets.git` -> `datasets`)."""
    from pathlib import PurePosixPath
    from urllib.parse import urlsplit

    return PurePosixPath(urlsplit(url).path).name.removesuffix(".git") or "datasets"
