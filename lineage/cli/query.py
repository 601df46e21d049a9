"""`lineage trace | reproduce | verify | compare`: the dataset-level lineage questions.

Each command is one call into a plain function that returns a typed result; this module only
prints it (rich on a terminal, JSON with ``--json``) and turns a failed check into a non-zero
exit, so scripts and CI gates can rely on the exit code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lineage.cli.options import Json, Repo
from lineage.cli.output import console, emit_json, err_console
from lineage.config import Settings
from lineage.erasure import summarize_erased
from lineage.ops.reproduce import reproduce
from lineage.query.chain import Check
from lineage.query.compare import Comparison, compare
from lineage.query.reproduce import Reproduction
from lineage.query.trace import Trace, trace
from lineage.query.verify import Verification, verify

ModelOption = Annotated[str | None, typer.Option("--model", help="NAME@ALIAS or NAME/VERSION.")]
RepoUrl = Annotated[
    str | None,
    typer.Option(help="Dataset repository URL, when the recorded one had its credentials removed."),
]


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def print_checks(checks: list[Check]) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("check", "", "detail"):
        table.add_column(column)
    for check in checks:
        mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
        table.add_row(check.name, mark, check.detail)
    console.print(table)


def _fail_if(not_ok: bool, what: str) -> None:
    if not_ok:
        err_console.print(f"[bold red]{what}[/bold red]")
        raise typer.Exit(code=1)


def print_trace(result: Trace) -> None:
    data, run = result.data, result.run
    started = datetime.fromtimestamp(run.started_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    steps = []
    if result.endpoint:
        steps.append(f"endpoint {result.endpoint}")
    if result.model is not None:
        aliases = f" (alias {', '.join(result.model.aliases)})" if result.model.aliases else ""
        steps.append(f"model {result.model.name} v{result.model.version}{aliases}")
    steps.append(f"run {run.run_id} ({started})")
    steps.append(f"tag {data.tag}")
    steps.append(f"commit {data.commit}")
    console.print("\n  -> ".join(steps), soft_wrap=True)
    console.print(
        f"  -> dataset md5 {data.dataset_md5} ({data.nfiles} files, "
        f"{_megabytes(data.size_bytes)} in {data.listing_url})",
        soft_wrap=True,
    )
    counts = ", ".join(f"{split} {n}" for split, n in data.records.items())
    console.print(
        f"  -> manifest sha256 {data.manifest_sha256}\n     {counts} records, "
        f"{data.labels} labels, data version {data.data_version}, repository {data.repo_url}",
        soft_wrap=True,
    )
    if run.metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in run.metrics.items() if k != "best_epoch")
        console.print(f"  metrics: {shown}")
    print_checks(result.checks)


def trace_command(
    model: ModelOption = None,
    run: Annotated[str | None, typer.Option("--run", help="MLflow training run id.")] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="URL of a running endpoint, e.g. http://127.0.0.1:8080")
    ] = None,
    repo_url: RepoUrl = None,
    json_output: Json = False,
) -> None:
    """Which data trained this model? endpoint -> version -> run -> tag -> commit -> data."""
    result = trace(
        Settings.from_env(), model=model, run_id=run, endpoint=endpoint, repo_url=repo_url
    )
    if json_output:
        emit_json(result.to_json())
    else:
        print_trace(result)
    names = ", ".join(c.name for c in result.failed)
    _fail_if(not result.ok, f"chain NOT verified: {names} disagree")


def print_reproduction(result: Reproduction) -> None:
    console.print(
        f"[bold]{result.model or result.run_id}[/bold]: tag {result.tag} -> commit "
        f"{result.commit}, {result.files_verified} files"
        + (f", checked out in {result.directory}" if result.directory else "")
    )
    print_checks(result.checks)
    if result.retraining is not None:
        table = Table(
            title=f"retrained as run {result.retraining.run_id} ({result.retraining.device})",
            title_justify="left",
        )
        for column in ("metric", "original", "reproduced", "tolerance", ""):
            table.add_column(column)
        for m in result.retraining.metrics:
            table.add_row(
                m.name,
                ", ".join(f"{v:.4f}" for v in m.original),
                ", ".join(f"{v:.4f}" for v in m.reproduced),
                f"{m.tolerance:g}",
                "[green]equal[/green]"
                if m.ok
                else ("differs" if result.retraining.erased_records else "[red]DIFFERS[/red]"),
            )
        console.print(table)
        if result.retraining.erased_records:
            console.print(
                f"trained on the remainder: {result.retraining.erased_records} records were "
                "erased, so the metrics are compared, not required to be equal"
            )
    if result.ok and result.erased:
        console.print(
            f"[green]reproduced[/green], except {summarize_erased(result.erased)}: every other "
            "file is byte for byte the recorded data"
        )
    elif result.ok:
        console.print("[green]reproduced[/green]: the data is byte for byte the recorded data")


def reproduce_command(
    model: ModelOption = None,
    run: Annotated[str | None, typer.Option("--run", help="MLflow training run id.")] = None,
    retrain: Annotated[
        bool, typer.Option(help="Train again with the recorded hyperparameters and compare.")
    ] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Keep the checkout here (new or empty).")
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="Weights file, when the original run was pretrained.")
    ] = None,
    repo_url: RepoUrl = None,
    json_output: Json = False,
) -> None:
    """Restore the exact data of a model and re-hash every file (and optionally retrain)."""
    result = reproduce(
        Settings.from_env(),
        model=model,
        run_id=run,
        directory=directory,
        retrain=retrain,
        repo_url=repo_url,
        pretrained=pretrained,
        stream=not json_output,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        print_reproduction(result)
    _fail_if(not result.ok, "NOT reproduced: see the failed checks")


def verify_command(
    tag: Annotated[str | None, typer.Option("--tag", help="Dataset tag.")] = None,
    model: ModelOption = None,
    repo: Repo = "datasets",
    repo_url: RepoUrl = None,
    json_output: Json = False,
) -> None:
    """Are all objects of a dataset still in the remote, intact? (downloads and re-hashes)"""
    result: Verification = verify(
        Settings.from_env(), tag=tag, model=model, repo=repo, repo_url=repo_url
    )
    if json_output:
        emit_json(result.to_json())
    else:
        console.print(
            f"[bold]{result.tag}[/bold] -> {result.commit[:12]}: dataset {result.dataset_md5}, "
            f"{result.checked} of {result.nfiles} objects read from {result.remote_url}"
        )
        if result.checks:
            print_checks(result.checks)
        for problem in result.problems:
            console.print(f"[red]{problem}[/red]")
        if result.ok and result.erased:
            console.print(
                f"[green]intact except {summarize_erased(result.erased)}[/green]: every other "
                "object is present and hashes to its name"
            )
        elif result.ok:
            console.print("[green]intact[/green]: every object is present and hashes to its name")
    _fail_if(not result.ok, f"NOT intact: {len(result.problems)} objects missing or changed")


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def print_comparison(result: Comparison) -> None:
    sides = Table(title="models", title_justify="left")
    sides.add_column("")
    sides.add_column(result.a.ref)
    sides.add_column(result.b.ref)
    for name in ("version", "aliases", "run_id", "data_version", "tag", "commit", "dataset_md5"):
        a, b = getattr(result.a, name), getattr(result.b, name)
        sides.add_row(
            name,
            ", ".join(a) if isinstance(a, list) else str(a),
            ", ".join(b) if isinstance(b, list) else str(b),
        )
    for split in ("train", "val", "test"):
        sides.add_row(
            f"records {split}",
            str(result.a.counts.get(split, "-")),
            str(result.b.counts.get(split, "-")),
        )
    console.print(sides)
    for title, rows in (("metrics", result.metrics), ("hyperparameters", result.params)):
        table = Table(title=title, title_justify="left")
        for column in ("name", "a", "b", ""):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row.name,
                _value(row.a),
                _value(row.b),
                "" if row.same else "[yellow]differs[/yellow]",
            )
        console.print(table)
    records = result.records
    console.print(
        f"[bold]records[/bold]: {len(records.added)} added, {len(records.removed)} removed, "
        f"{len(records.changed)} changed, {records.common} in both"
    )
    for label, rows_ in (("added", records.added), ("removed", records.removed)):
        if rows_:
            shown = ", ".join(r["record_id"] for r in rows_[:10])
            more = f" (+{len(rows_) - 10} more; --json lists all)" if len(rows_) > 10 else ""
            console.print(f"  {label}: {shown}{more}")
    console.print(f"[bold]summary[/bold]: {result.summary}")


def compare_command(
    models: Annotated[
        list[str], typer.Option("--model", help="Two models: --model NAME/1 --model NAME/2")
    ],
    json_output: Json = False,
) -> None:
    """Why did performance change? Params, data, counts, metrics and the record difference."""
    if len(models) != 2:
        raise typer.BadParameter("give exactly two --model options", param_hint="--model")
    result = compare(Settings.from_env(), models[0], models[1])
    if json_output:
        emit_json(result.to_json())
    else:
        print_comparison(result)
        for disagreement in result.disagreements:
            err_console.print(f"[red]metrics changed after signing[/red]: {disagreement}")
    if not result.ok:  # the runs' metrics are not the ones that justified the models
        raise typer.Exit(1)
