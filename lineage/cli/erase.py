"""`lineage erase PATIENT_ID --request REF --actor WHO [--dry-run]`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lineage.audit.queries import impact
from lineage.cli.options import Json
from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.erasure.erase import Erasure, erase
from lineage.ops.deploy import running_endpoints  # the local runtime's endpoints


def erase_command(
    patient_id: Annotated[str, typer.Argument(help="A patient whose consent is withdrawn.")],
    request: Annotated[
        str, typer.Option("--request", help="The erasure request's reference (kept forever).")
    ],
    actor: Annotated[str, typer.Option("--actor", help="Who carries it out.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for the evidence (default $LINEAGE_HOME/erasures)."),
    ] = None,
    json_output: Json = False,
) -> None:
    """Delete a withdrawn patient's images from every dataset version's DVC remote and local
    copy, leaving tombstones that keep every version verifiable; list the models to retrain."""
    settings = Settings.from_env()
    result = erase(
        settings,
        patient_id,
        request=request,
        actor=actor,
        impact_of=partial(impact, settings, endpoints=running_endpoints),
        dry_run=dry_run,
        out_dir=out,
    )
    if json_output:
        emit_json(result.to_json())
        return
    print_erasure(result)


def print_erasure(result: Erasure) -> None:
    plan = result.plan
    verb = "would delete" if result.dry_run else "deleted"
    console.print(
        f"[bold]{plan.patient_id}[/bold] (withdrawn {plan.withdrawn_at}): "
        f"{len(plan.datasets)} dataset versions hold the patient"
    )
    table = Table(title=f"objects: {verb} {len(plan.objects)}, kept {len(plan.kept)}")
    for column in ("scan", "file", "md5", "dataset versions", ""):
        table.add_column(column)
    for item in plan.objects:
        tags = ", ".join(sorted({d.tag for d in item.datasets}))
        table.add_row(item.scan_id, item.file_path, item.md5, tags, verb)
    for item in plan.kept:
        tags = ", ".join(sorted({d.tag for d in item.datasets}))
        reason = f"kept: same bytes as {item.shared_with} other record(s)"
        table.add_row(item.scan_id, item.file_path, item.md5, tags, reason)
    console.print(table)
    if plan.follow_up_of:
        console.print(f"follow-up of {', '.join(plan.follow_up_of)}: every copy checked again")
    if plan.already_erased:
        console.print(f"already erased earlier: {len(plan.already_erased)} objects")
    for item in plan.returned:
        console.print(
            f"[red]back in the remote[/red] after its erasure: {item.scan_id} ({item.md5}): "
            + ("would be deleted again" if result.dry_run else "deleted again")
        )
    console.print(f"local copies {verb}: {len(plan.local_files)}")
    models = [h.model for h in plan.impact.models]
    console.print(
        "models trained on the patient's data (retrain or retire them; nothing is unlearned): "
        + (", ".join(models) or "none")
    )
    for carrying in plan.carrying:
        console.print(
            f"[red]{carrying.model} carries the patient's pixels[/red] in "
            f"{', '.join(carrying.files)} ({len(carrying.scans)} image(s)): re-register or "
            "retire it (its files, digest and signature include them)"
        )
    if plan.impact.aliases or plan.impact.endpoints:
        console.print(
            f"aliases: {', '.join(plan.impact.aliases) or 'none'}; running endpoints: "
            f"{', '.join(e['url'] for e in plan.impact.endpoints) or 'none'}"
        )
    if result.dry_run:
        console.print("[yellow]dry run[/yellow]: nothing was changed")
        return
    assert result.event is not None
    console.print(
        f"[green]erased[/green] under request {result.request} by {result.actor}: erasure event "
        f"{result.event.seq} ({len(result.event.tombstones)} tombstones), "
        f"{result.elapsed_since_withdrawal_s:.0f} s after the withdrawal"
    )
    console.print(f"evidence: {result.evidence['html']} (+ {result.evidence['json']})")
