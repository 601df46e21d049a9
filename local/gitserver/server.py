"""HTTP front for `git http-backend` (CGI), plus ``/health`` and ``/api/repos``.

Why not a ready-made server: the stdlib's CGI handler is deprecated, and the ones on PyPI
either do not stream (pushes of datasets' pointer files are small, but clones of big repos are
not) or do not handle chunked request bodies, which git sends for pushes over 1 MiB.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit

log = logging.getLogger("lineage.gitserver")

_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_COPY_CHUNK = 64 * 1024


def valid_repo_name(name: str) -> bool:
    """Names a hosted service would accept; no paths, no traversal, no leading dot or dash."""
    return bool(_REPO_NAME.match(name)) and ".." not in name and not name.endswith(".git")


# A dataset tag names the exact data a model was trained on: once pushed it never moves and
# is never deleted. git's receive.denyNonFastForwards / denyDeletes protect only branches,
# so the rule is a pre-receive hook (git runs it inside `git http-backend`, for every push,
# before any ref changes; its stderr reaches the pusher as "remote: ...").
IMMUTABLE_TAGS_HOOK = """#!/bin/sh
# model-lineage: dataset tags are immutable, and no other ref may take a tag's name
# (installed by the embedded git server).
status=0
while read -r old new ref; do
  case "$ref" in
    refs/tags/*)
      case "$old" in
        *[!0]*)
          case "$new" in *[!0]*) what="moved" ;; *) what="deleted" ;; esac
          echo "refused: tag ${ref#refs/tags/} cannot be $what: dataset tags are immutable" \
            "(a tag names the exact data a model was trained on); publish a new version" \
            "with a new tag instead" >&2
          status=1 ;;
      esac ;;
    *)
      short="${ref#refs/*/}"
      case "$new" in *[!0]*) ;; *) continue ;; esac
      if git rev-parse --quiet --verify "refs/tags/$short" >/dev/null 2>&1; then
        echo "refused: $ref would shadow the dataset tag $short (a clone of the name" \
          "would get this ref's commit instead of the tag's)" >&2
        status=1
      else
        case "$short" in
          *-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-*)
            echo "refused: $ref is named like a dataset tag (<version>-<UTC time>-<id>);" \
              "only tags may carry such names" >&2
            status=1 ;;
        esac
      fi ;;
  esac
done
exit $status
"""


_CREATE_LOCK = threading.Lock()  # concurrent creations of one repository wait for each other


def install_hooks(repo: Path) -> None:
    """(Re)write the immutable-tags hook of a bare repository; idempotent, and safe when
    several requests do it at once (each writes its own temp file, then renames)."""
    hook = repo / "hooks" / "pre-receive"
    hook.parent.mkdir(parents=True, exist_ok=True)
    if not hook.is_file() or hook.read_text() != IMMUTABLE_TAGS_HOOK:
        tmp = hook.with_name(f".pre-receive.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(IMMUTABLE_TAGS_HOOK)
        tmp.chmod(0o755)
        tmp.replace(hook)


def init_bare_repo(root: Path, name: str) -> tuple[Path, bool]:
    """Create ``<root>/<name>.git`` if missing. Returns its path and whether it was created."""
    path = root / f"{name}.git"
    if (path / "HEAD").is_file():
        install_hooks(path)
        return path, False
    git = shutil.which("git") or "git"
    subprocess.run(
        [git, "init", "--quiet", "--bare", "--initial-branch=main", str(path)],
        check=True,
        capture_output=True,
    )
    # Pushes over HTTP are allowed for everyone who can reach the loopback server; the
    # embedded stack has no users. Refuse history rewrites, as a protected host would.
    for key, value in (
        ("http.receivepack", "true"),
        ("receive.denyNonFastForwards", "true"),
        ("receive.denyDeletes", "true"),
    ):
        subprocess.run([git, "config", "--file", str(path / "config"), key, value], check=True)
    install_hooks(path)
    return path, True


TOKEN_ENV = "LINEAGE_GIT_TOKEN"  # noqa: S105 - the variable's name, not a token


IDLE_TIMEOUT_S = 30.0  # seconds a connection may stay silent, mid-request or between requests


class GitHTTPServer(ThreadingHTTPServer):
    """Pushes and repository creation need the token (HTTP basic auth, any user name, the
    token as password); reads need it too unless `public_read` (the default on loopback).
    Without a token the server is read-only."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog (socketserver's default is 5)

    def __init__(
        self, root: Path, address: tuple[str, int], token: str | None, public_read: bool
    ) -> None:
        self.root = root
        self.token = token
        self.public_read = public_read
        self.git = shutil.which("git")
        if self.git is None:
            raise SystemExit("git not found on PATH: install git (e.g. apt-get install git)")
        super().__init__(address, GitRequestHandler)

    def authorized(self, header: str | None) -> bool:
        if not self.token or not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(decoded.partition(":")[2], self.token)


class GitRequestHandler(BaseHTTPRequestHandler):
    server: GitHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "lineage-git/1"
    # A connection that sends nothing (or half a request) for this long is closed: each one
    # holds a thread, so idle or half-sent connections must not pile up.
    timeout = IDLE_TIMEOUT_S

    # -- routing -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._send_json(HTTPStatus.OK, {"status": "ok"})
        elif not self._allowed(write=False):
            return
        elif path == "/api/repos":
            repos = sorted(p.name[: -len(".git")] for p in self.server.root.glob("*.git"))
            self._send_json(HTTPStatus.OK, {"repos": repos})
        else:
            self._run_backend()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/api/repos/"):
            if self._allowed(write=True):
                self._create_repo(path[len("/api/repos/") :])
        elif self._allowed(write=False):
            self._run_backend()

    def do_HEAD(self) -> None:
        if self._allowed(write=False):
            self._run_backend()

    def _allowed(self, *, write: bool) -> bool:
        """A push (receive-pack, either of its two requests) or a repository creation needs
        the token; so does any request when reads are not public. Refused: 401 (git then
        says "Authentication failed") and nothing is run."""
        parts = urlsplit(self.path)
        write = write or "git-receive-pack" in parts.path or "git-receive-pack" in parts.query
        if not write and self.server.public_read:
            return True
        if self.server.authorized(self.headers.get("Authorization")):
            return True
        self._drain_body()
        what = "pushes and repository creation need" if write else "this server needs"
        body = json.dumps(
            {
                "error": f"authentication required: {what} the stack's git token",
                "hint": '`eval "$(lineage stack env)"` configures git with it',
            }
        ).encode()
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Basic realm="model-lineage git"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    # -- admin API -----------------------------------------------------------------------------
    def _create_repo(self, name: str) -> None:
        self._drain_body()
        name = name.strip("/").removesuffix(".git")
        if not valid_repo_name(name):
            self._send_json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"invalid repository name {name!r}: use letters, digits, . _ -"},
            )
            return
        with _CREATE_LOCK:
            _, created = init_bare_repo(self.server.root, name)
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        self._send_json(status, {"name": name, "path": f"/{name}.git", "created": created})

    # -- git http-backend as CGI ---------------------------------------------------------------
    def _run_backend(self) -> None:
        parts = urlsplit(self.path)
        repo = parts.path.lstrip("/").split("/", 1)[0]
        if not repo.endswith(".git") or not valid_repo_name(repo.removesuffix(".git")):
            self._drain_body()
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no repository at {parts.path}"})
            return
        if not (self.server.root / repo / "HEAD").is_file():
            self._drain_body()
            self._send_json(
                HTTPStatus.NOT_FOUND,
                {
                    "error": f"repository {repo} does not exist: create it with "
                    f"`lineage stack repo {repo.removesuffix('.git')}`"
                },
            )
            return
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_HTTP_MAX_REQUEST_BUFFER": "100M",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "lineage",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if length is not None and not chunked:
            env["CONTENT_LENGTH"] = length
        if encoding := self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        if protocol := self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = protocol
        assert self.server.git is not None
        proc = subprocess.Popen(
            [self.server.git, "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = threading.Thread(
            target=self._feed_body, args=(proc.stdin, chunked, int(length or 0)), daemon=True
        )
        feeder.start()
        stderr_lines: list[bytes] = []
        drain = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        drain.start()
        try:
            self._relay_cgi_response(proc.stdout)
        finally:
            feeder.join(timeout=60)
            proc.wait(timeout=600)
            drain.join(timeout=5)
            for line in stderr_lines:
                log.warning("http-backend: %s", line.decode(errors="replace").rstrip())

    def _feed_body(self, sink: IO[bytes], chunked: bool, length: int) -> None:
        try:
            chunks = self._chunked_body() if chunked else self._fixed_body(length)
            for chunk in chunks:
                sink.write(chunk)
        except (BrokenPipeError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                sink.close()

    def _fixed_body(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _chunked_body(self) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                return
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # trailers, up to the blank line
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield from self._fixed_body(size)
            self.rfile.readline(8)  # CRLF after each chunk

    def _drain_body(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            for _ in self._chunked_body():
                pass
        else:
            for _ in self._fixed_body(int(self.headers.get("Content-Length") or 0)):
                pass

    def _relay_cgi_response(self, out: IO[bytes]) -> None:
        status = HTTPStatus.OK.value
        reason = "OK"
        headers: list[tuple[str, str]] = []
        while True:
            line = out.readline()
            if not line or line in (b"\r\n", b"\n"):
                break
            key, _, value = line.decode("latin-1").partition(":")
            key, value = key.strip(), value.strip()
            if key.lower() == "status":
                code, _, reason = value.partition(" ")
                status = int(code)
            else:
                headers.append((key, value))
        self.send_response(status, reason or None)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        while chunk := out.read1(_COPY_CHUNK) if hasattr(out, "read1") else out.read(_COPY_CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- helpers -------------------------------------------------------------------------------
    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def serve(
    root: Path,
    host: str,
    port: int,
    *,
    public_read: bool = True,
    idle_timeout: float | None = None,
) -> None:
    """Serve the repos under `root` until SIGTERM/SIGINT; the token comes from the
    environment (`LINEAGE_GIT_TOKEN`), never from the command line."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    root.mkdir(parents=True, exist_ok=True)
    for repo in sorted(root.glob("*.git")):  # repos made by an older server get the hook too
        if (repo / "HEAD").is_file():
            install_hooks(repo)
    token = os.environ.get(TOKEN_ENV) or None
    if token is None:
        log.warning("%s is not set: the server is read-only (every push is refused)", TOKEN_ENV)
    if idle_timeout is not None:
        GitRequestHandler.timeout = idle_timeout
    server = GitHTTPServer(root, (host, port), token, public_read)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving %s on http://%s:%d", root, host, port)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    log.info("stopped")
