"""Printing for commands: JSON on stdout for scripts, rich text for people, errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def emit_json(payload: Any) -> None:
    """Exactly one JSON document on stdout, nothing else, so `| jq` always works."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """A progress line on stderr (stdout stays clean for --json)."""
    err_console.print(f"[dim]•[/dim] {message}")
