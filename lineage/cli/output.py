"""Printing for commands: JSON on stdout for scripts, rich text for people, errors on stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console


def _width(stream: object) -> int | None:
    """Terminals report their width; logs and pipes get 120 columns instead of rich's 80, so
    hashes and tables stay readable (COLUMNS still wins when set)."""
    if os.environ.get("COLUMNS") or getattr(stream, "isatty", lambda: False)():
        return None
    return 120


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def emit_json(payload: Any) -> None:
    """Exactly one JSON document on stdout, nothing else, so `| jq` always works."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """A progress line on stderr (stdout stays clean for --json)."""
    err_console.print(f"[dim]•[/dim] {message}")
