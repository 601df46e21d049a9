"""`lineage export`: a verified chain as OpenLineage events or a W3C PROV document, and the
replay of the events past jobs kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lineage.cli.options import Json
from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.credentials import write_private
from lineage.errors import LineageError


def export_command(
    model: Annotated[
        str | None, typer.Option("--model", help="NAME@ALIAS or NAME/VERSION to export.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Export what this endpoint serves.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="openlineage | prov-json | prov-n")
    ] = "openlineage",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output.")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option("--replay", help="Send the OpenLineage events kept under this directory."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Catalogue URL for --replay (e.g. Marquez's).")
    ] = None,
    json_output: Json = False,
) -> None:
    """Export a model's verified chain (OpenLineage, PROV), or replay kept events."""
    if replay is not None:
        _replay(replay, to, json_output)
        return
    if (model is None) == (endpoint is None):
        raise LineageError("export takes --model or --endpoint (or --replay DIR --to URL)")
    from lineage.query.export import export

    result = export(Settings.from_env(), model or "", fmt, endpoint=endpoint)
    if out is None:
        typer.echo(result.content)
        return
    write_private(out, result.content + "\n")
    if json_output:
        emit_json({"model": result.model, "format": fmt, "out": str(out), "checks": result.checks})
    else:
        console.print(
            f"{result.model}: chain verified ({result.checks} checks), {fmt} written to {out}"
        )


def _replay(directory: Path, to: str | None, json_output: bool) -> None:
    from lineage.openlineage.emit import replay

    url = to or os.environ.get("OPENLINEAGE_URL")
    if not url:
        raise LineageError("--replay needs --to URL (or OPENLINEAGE_URL)")
    result = replay(directory, url, api_key=os.environ.get("OPENLINEAGE_API_KEY"))
    if json_output:
        emit_json(result.to_json())
    else:
        console.print(f"sent {len(result.sent)} event(s) to {result.url}")
        for path, reason in result.failed.items():
            console.print(f"[red]not sent[/red] {path}: {reason}")
    if not result.ok:
        raise typer.Exit(1)
