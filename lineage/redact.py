"""Strip credentials from URLs before they are printed, logged or recorded in MLflow.

A DVC repo URL such as ``https://user:token@git.example.com/repo.git`` must never reach an
MLflow param, where anyone with read access to the tracking server would see the token.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

REDACTED = "***"
_SECRET_QUERY_KEYS = frozenset(
    {
        "token",
        "access_token",
        "password",
        "secret",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "sig",
        "signature",
    }
)


def redact_url(url: str) -> str:
    """Return `url` with any password/token in its userinfo or query replaced by ``***``.

    The user name is kept (it is useful in an audit and is not a secret by itself), unless it
    is the only credential, as with ``https://<token>@github.com/...``, where it is masked.
    Strings that are not URLs come back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if sep else f"{REDACTED}@{hostport}"
    query = _redact_query(parts.query)
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_query(query: str) -> str:
    if not query:
        return query
    pairs = []
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and key.lower() in _SECRET_QUERY_KEYS:
            value = REDACTED
        pairs.append(f"{key}{sep}{value}")
    return "&".join(pairs)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{},;]+")


def redact_text(text: str) -> str:
    """Free text (an error from DVC or git, a log line, a failure reason) with every URL in
    it redacted: a tool's message can quote an endpoint or remote URL with its credentials."""
    if "://" not in text:
        return text
    return _URL.sub(lambda match: redact_url(match.group(0)), text)
