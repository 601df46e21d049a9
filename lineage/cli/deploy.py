"""`lineage deploy` and `lineage invoke`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lineage.cli.options import Json, Runtime
from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.errors import LineageError
from lineage.ops.deploy import deploy, invoke, stop


def deploy_command(
    model: Annotated[str | None, typer.Option("--model", help="NAME@ALIAS or NAME/VERSION")] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Local port (default 8080, SageMaker's; with --stop: every endpoint).",
        ),
    ] = None,
    runtime: Runtime = "process",
    stop_: Annotated[
        bool, typer.Option("--stop", help="Stop the endpoint on --port, or every local one.")
    ] = False,
    trusted_keys: Annotated[
        str | None,
        typer.Option(
            help="Public keys the server checks the model's signature against at load (PEM "
            "text or a path; default: the keys this home trusts)."
        ),
    ] = None,
    json_output: Json = False,
) -> None:
    """Serve a registered model version locally, as a SageMaker endpoint would."""
    settings = Settings.from_env()
    if stop_:
        stopped = stop(settings, port)
        if json_output:
            emit_json({"stopped_ports": stopped})
        elif stopped:
            ports = ", ".join(str(p) for p in stopped)
            console.print(f"stopped endpoint{'s' if len(stopped) > 1 else ''} on port {ports}")
        else:
            where = f"on port {port}" if port is not None else "(no local endpoint)"
            console.print(f"nothing was running {where}")
        return
    if model is None:
        raise LineageError("--model is required", "pass --model NAME@ALIAS or NAME/VERSION")
    result = deploy(
        settings,
        model,
        port=8080 if port is None else port,
        runtime=runtime,
        trusted_keys=trusted_keys,
    )
    if json_output:
        emit_json(result.to_json())
        return
    served = result.model
    lineage = served.lineage
    alias = f" (alias {served.alias})" if served.alias else ""
    console.print(f"[bold]endpoint[/bold] {result.endpoint}")
    console.print(
        f"[bold]model[/bold]    {served.model_name} version {served.model_version}"
        f"{alias}, run {lineage.get('run_id')}"
    )
    console.print(
        f"[bold]data[/bold]     tag {lineage.get('dvc_tag')} -> commit "
        f"{lineage.get('data_git_commit_id')}"
    )
    console.print(
        f"[bold]signed[/bold]   by key {served.signer_key_id[:16]}, provenance "
        f"{served.attestation_sha256[:16]} (checked again by the server at load)"
    )
    console.print(f"try: lineage invoke --endpoint {result.endpoint} IMAGE.png")


def invoke_command(
    files: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG).")],
    endpoint: Annotated[str, typer.Option(help="Endpoint URL.")] = "http://127.0.0.1:8080",
    json_output: Json = False,
) -> None:
    """Send images to an endpoint; print each label with the model and data that produced it."""
    results = invoke(endpoint, files)
    if json_output:
        emit_json(results)
    else:
        _print_answers(results)
    if any(r["status"] != 200 for r in results):  # with --json too: scripts read the exit code
        raise typer.Exit(code=1)


def _print_answers(results: list[dict[str, Any]]) -> None:
    table = Table()
    for column in ("file", "label", "p", "model", "data commit"):
        table.add_column(column)
    for r in results:
        if r["status"] != 200 or "error" in r:  # an error, or an answer that is not one
            table.add_row(r["file"], f"[red]{r['status']} {r['error']}[/red]", "", "", "")
            continue
        lineage = r["lineage"]
        table.add_row(
            r["file"],
            r["label"],
            f"{r['probabilities'][r['label']]:.3f}",
            f"{lineage['model_name']}/{lineage['model_version']}",
            str(lineage["data_git_commit_id"])[:12],
        )
    console.print(table)
