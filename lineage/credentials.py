"""The embedded stack's own secrets: generated once per LINEAGE_HOME, kept in one 0600 file.

The stack never borrows the user's credentials: an AWS key pair exported for SageMaker must
not become the local S3 store's admin (SeaweedFS reads ``AWS_*`` from its environment), and
the local store's keys must not be anyone else's. So each home gets its own:

- the S3 key pair (SeaweedFS identities; every job, DVC call and MLflow client gets it),
- the JWT keys that make SeaweedFS's filer and volume servers refuse unsigned reads and
  writes (only the S3 gateway, which holds them, can use those ports),
- the git token that pushes and repository creation need,
- the MLflow admin password (basic auth, when the stack is bound beyond loopback).

`lineage stack env` prints what a plain git/DVC/MLflow user needs from this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import string
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lineage.errors import StackError

CREDENTIALS_FILE = "credentials.json"
_ALPHABET = string.ascii_uppercase + string.digits


def _access_key() -> str:
    return "LINEAGE" + "".join(secrets.choice(_ALPHABET) for _ in range(13))


@dataclass(frozen=True)
class StackCredentials:
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    git_token: str = field(repr=False)
    mlflow_password: str = field(repr=False)
    volume_jwt_key: str = field(repr=False)
    volume_read_jwt_key: str = field(repr=False)
    filer_jwt_key: str = field(repr=False)
    filer_read_jwt_key: str = field(repr=False)
    mlflow_flask_secret: str = field(repr=False)  # CSRF key of MLflow's basic-auth app

    @classmethod
    def generate(cls) -> StackCredentials:
        return cls(
            s3_access_key=_access_key(),
            **{
                spec.name: secrets.token_urlsafe(32)
                for spec in fields(cls)
                if spec.name != "s3_access_key"
            },
        )

    @classmethod
    def load_or_create(cls, home: Path) -> StackCredentials:
        """The home's credentials, created the first time (atomically: concurrent first
        uses agree on one set)."""
        path = home / CREDENTIALS_FILE
        if not path.exists():
            private_dir(home)
            write_private_once(path, json.dumps(asdict(cls.generate()), indent=1) + "\n")
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> StackCredentials:
        """The credentials in `path`; secrets a newer version added are generated and kept
        (the ones already there never change: running services use them)."""
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        try:
            data = json.loads(path.read_text())
            fresh = asdict(cls.generate())
            missing = [spec.name for spec in fields(cls) if spec.name not in data]
            if missing:
                data.update({name: fresh[name] for name in missing})
                write_private(path, json.dumps(data, indent=1) + "\n")
            return cls(**{spec.name: str(data[spec.name]) for spec in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(
                f"the stack's credentials file {path} is unreadable ({exc.__class__.__name__})",
                "stop the stack, move the file away and run `lineage stack up` again (new "
                "credentials are generated; the data stays)",
            ) from None


def write_private_once(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 unless it exists: a private temp file linked
    into place, so no reader ever sees a partial file and only the first writer wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (created if missing)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    tmp.replace(path)
