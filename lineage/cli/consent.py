"""`lineage consent import | grant | withdraw | status | export | verify`."""

from __future__ import annotations

import csv
import getpass
import io
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lineage.cli.options import Json
from lineage.cli.output import console, emit_json, err_console
from lineage.config import Settings
from lineage.consent import registry_csv
from lineage.consent.events import ConsentEvent, parse_time
from lineage.consent.store import ConsentStore
from lineage.credentials import write_private
from lineage.erasure.log import ErasureLog

app = typer.Typer(
    help="The consent registry: an append-only, hash-chained event log.", no_args_is_help=True
)

PatientId = Annotated[str, typer.Argument(help="Patient id, e.g. PAT-00023.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept forever in the log).")]
Actor = Annotated[
    str | None, typer.Option(help="Who records it (default $LINEAGE_ACTOR or the OS user).")
]


def _store() -> ConsentStore:
    return ConsentStore.from_settings(Settings.from_env())


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("LINEAGE_ACTOR") or getpass.getuser()


def _print_event(event: ConsentEvent) -> None:
    console.print(
        f"event {event.seq}: {event.patient_id} {event.action} at {event.at} by {event.actor} "
        f"({event.reason}); hash {event.hash[:16]}"
    )


@app.command(name="import")
def import_command(
    path: Annotated[Path, typer.Argument(help="patient_id,scan_id,file_path,label,consent_status")],
    actor: Actor = None,
    json_output: Json = False,
) -> None:
    """Import the registry CSV: new patients and scans, consent changes. Idempotent."""
    rows = registry_csv.read(path)
    report = _store().import_rows(rows, source=path.name, actor=_actor(actor))
    if json_output:
        emit_json(report.to_json())
        return
    console.print(
        f"{report.rows} rows: {len(report.patients_added)} new patients, {report.scans_added} "
        f"new scans, {len(report.granted)} grants, {len(report.withdrawn)} withdrawals, "
        f"{report.unchanged} patients unchanged" + ("" if report.changed else " (nothing changed)")
    )
    if report.not_regranted:
        err_console.print(
            f"[yellow]not re-granted[/yellow] ({len(report.not_regranted)}): "
            f"{', '.join(report.not_regranted[:10])}: they withdrew here; the file cannot undo "
            "that. Use `lineage consent grant ID --reason ...` if they consented again."
        )


def _record(
    action: str, patient_id: str, reason: str, actor: str | None, json_output: bool
) -> None:
    settings = Settings.from_env()
    event = ConsentStore.from_settings(settings).record(
        patient_id, action, actor=_actor(actor), reason=reason
    )
    affected = None
    if action == "withdraw":
        from lineage.audit.queries import impact
        from lineage.ops.deploy import running_endpoints

        try:
            affected = impact(settings, patient_id, endpoints=running_endpoints)
        except Exception as exc:  # noqa: BLE001 - withdrawal recorded; impact can be re-asked
            err_console.print(
                f"[yellow]withdrawal recorded, but its impact could not be computed:[/yellow] "
                f"{exc}\nrun `lineage impact {patient_id}` when it is fixed"
            )
    if json_output:
        emit_json(
            {"event": event.to_json(), "impact": None if affected is None else affected.to_json()}
        )
        return
    _print_event(event)
    if affected is not None:
        from lineage.cli.audit import print_impact

        print_impact(affected, ask=f"`lineage impact {patient_id} --sagemaker` lists them")


@app.command()
def withdraw(
    patient_id: PatientId, reason: Reason, actor: Actor = None, json_output: Json = False
) -> None:
    """Record a withdrawal and print which models, aliases and endpoints it affects."""
    _record("withdraw", patient_id, reason, actor, json_output)


@app.command()
def grant(
    patient_id: PatientId, reason: Reason, actor: Actor = None, json_output: Json = False
) -> None:
    """Record that a patient (again) consents."""
    _record("grant", patient_id, reason, actor, json_output)


@app.command()
def status(patient_id: PatientId, json_output: Json = False) -> None:
    """A patient's current consent, scans and full event history."""
    result = _store().status(patient_id)
    if json_output:
        emit_json(result.to_json())
        return
    console.print(
        f"[bold]{result.patient_id}[/bold]: {result.status} since {result.since}; "
        f"{len(result.scans)} scans"
    )
    table = Table()
    for column in ("seq", "at", "action", "actor", "reason", "hash"):
        table.add_column(column)
    for e in result.events:
        table.add_row(str(e.seq), e.at, e.action, e.actor, e.reason, e.hash[:16])
    console.print(table)


@app.command()
def export(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="The registry as it stood then (ISO 8601).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the CSV here (default stdout).")] = None,
    json_output: Json = False,
) -> None:
    """The registry (reference CSV columns) as it stood at any time, with its snapshot hash."""
    snapshot, rows = _store().export(parse_time(as_of) if as_of else None)
    if json_output:
        emit_json(
            {
                "snapshot": snapshot.to_json(),
                "rows": [
                    {
                        "patient_id": r.patient_id,
                        "scan_id": r.scan_id,
                        "file_path": r.file_path,
                        "label": r.label,
                        "consent_status": r.status,
                    }
                    for r in rows
                ],
            }
        )
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(registry_csv.COLUMNS)
    for r in rows:
        writer.writerow((r.patient_id, r.scan_id, r.file_path, r.label, r.status))
    if out is not None:
        write_private(out, buffer.getvalue())  # who consents and who does not: 0600
    else:
        sys.stdout.write(buffer.getvalue())
    err_console.print(
        f"as of {snapshot.as_of}: {len(snapshot.consenting)} patients consent, "
        f"{len(snapshot.withdrawn)} do not; snapshot sha256 {snapshot.sha256}"
    )


@app.command()
def verify(
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Check the database against its key and head file only, not against the "
            "consent heads that runs recorded in MLflow.",
        ),
    ] = False,
    json_output: Json = False,
) -> None:
    """Check the whole log: the hash chain, every event's MAC, the anchored heads (head file
    and, unless --offline, every run's recorded consent head). Any edit, deletion,
    reordering or truncation of the stored history is found and named."""
    settings = Settings.from_env()
    store = ConsentStore.from_settings(settings)
    anchors = []
    tree_heads = []
    if not offline:
        from lineage.consent.recorded import (
            heads_recorded_in_mlflow,
            tree_heads_recorded_in_mlflow,
        )
        from lineage.registry import mlflow_client

        client = mlflow_client(settings.mlflow_uri)
        anchors = heads_recorded_in_mlflow(client, store.anchor.log_id)
        tree_heads = tree_heads_recorded_in_mlflow(client)
    result = store.verify(anchors, tree_heads)
    result["mlflow_checked"] = not offline
    erasures = ErasureLog.from_settings(settings).events()  # same database, same guarantees
    result["erasures"] = len(erasures)
    if json_output:
        emit_json(result)
        return
    console.print(
        f"[green]intact[/green]: {result['events']} events, {result['patients']} patients, "
        f"head {result['head_seq']} {result['head_hash']}; every MAC valid under "
        f"{result['key']}; {result['anchored_heads']} anchored heads"
        + (f", {result['external_anchors']} heads recorded in MLflow" if not offline else "")
        + f"; transparency log of {result['transparency_log']['leaves']} leaves consistent with "
        f"{result['transparency_log']['recorded_heads_checked']} signed heads runs recorded"
        + f"; erasure log intact ({len(erasures)} erasures)"
    )


@app.command()
def reanchor(reason: Reason, actor: Actor = None, json_output: Json = False) -> None:
    """Anchor a consent log that has no anchor (a database restored or moved on purpose):
    its hash chain verified, events without a MAC sealed under the key, every event put in
    the transparency log, and the act recorded as a signed decision. Refused when the log is
    anchored already."""
    from lineage.attest.host import Evidence

    settings = Settings.from_env()
    store = ConsentStore.from_settings(settings, anchored=False)
    events, sealed, head = store.reanchor()
    decision = Evidence(settings).decide(
        "reanchor",
        [{"name": f"consent-log:{store.shown_url}", "digest": {"sha256": head.root}}],
        {"reason": reason, "actor": _actor(actor), "events": events, "sealed": sealed,
         "tree_size": head.size},
    )  # fmt: skip
    result = {
        "events": events,
        "sealed": sealed,
        "tree_head": head.to_json(),
        "decision_sha256": decision.digest,
    }
    if json_output:
        emit_json(result)
        return
    console.print(
        f"consent log anchored: {events} events ({sealed} sealed under {store.anchor.key_source})"
        f" in the transparency log, head {head.size}; decision {decision.digest[:16]}"
    )
