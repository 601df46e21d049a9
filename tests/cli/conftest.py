"""The in-process command-line tier: `lineage` run by its own entry point in this process
(tests.helpers.run_lineage), the operations behind each command replaced by fakes where the
command module looks them up, so what is tested is the command line itself: options parsed
and passed on, validation, exit codes, JSON on stdout, errors as one line on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lineage.cli.output import console, err_console
from tests.helpers import CliRun, run_lineage

# what the user's environment may hold that would change an answer: never read here
FOREIGN = ("LINEAGE_", "AWS_", "MLFLOW_", "OPENLINEAGE_", "COLUMNS")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """LINEAGE_HOME of the commands: private, empty, nothing started."""
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., CliRun]]:
    """`cli("trace", "--model", "m/1")`: run `lineage` in this process under `home`."""
    for key in list(os.environ):
        if key.startswith(FOREIGN):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LINEAGE_HOME", str(home))
    monkeypatch.setenv("LINEAGE_ACTOR", "tester")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer installs its own
    for each in (console, err_console):  # wide and fixed, whatever the terminal
        monkeypatch.setattr(each, "_width", 200)
    before = set(os.environ)
    yield run_lineage
    for key in set(os.environ) - before:  # main() sets client limits and stack auth
        os.environ.pop(key, None)
