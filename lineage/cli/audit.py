"""`lineage audit record | model | excluded | report`, `lineage impact`, `lineage index`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lineage.audit.queries import (
    ASK_SAGEMAKER,
    Exclusion,
    Impact,
    ModelHit,
    RecordAudit,
    SageMakerLister,
    audit_excluded,
    audit_model,
    audit_record,
    impact,
)
from lineage.cli.options import Json
from lineage.cli.output import console, emit_json, err_console
from lineage.config import Settings
from lineage.ops.deploy import running_endpoints  # the local runtime's endpoints

app = typer.Typer(help="Record-level audits of what trained which model.", no_args_is_help=True)
index_app = typer.Typer(help="The lineage index (a cache of MLflow).", no_args_is_help=True)

PatientId = Annotated[str, typer.Argument(help="Patient id, e.g. PAT-00023.")]
Scan = Annotated[
    bool,
    typer.Option("--scan", help="Read every manifest from MLflow instead of the index (slow)."),
]
SageMaker = Annotated[
    bool,
    typer.Option(
        "--sagemaker",
        help="Also list the SageMaker endpoints serving these versions (ListEndpoints, then "
        "their lineage tags; AWS credentials and region from the AWS configuration). "
        "Without it the answer says SageMaker was not asked.",
    ),
]


def sagemaker_lister(asked: bool) -> SageMakerLister | None:
    """The SageMaker runtime's endpoint lister for the audits when `--sagemaker` was given;
    None (the answer says "not asked") otherwise."""
    if not asked:
        return None
    from lineage.sagemaker.endpoints import find_endpoints

    return find_endpoints


def _hits_table(hits: list[ModelHit], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("model", no_wrap=True, min_width=max((len(h.model) for h in hits), default=5))
    table.add_column("aliases / endpoints", overflow="fold")
    table.add_column("trained (UTC)", no_wrap=True)
    table.add_column("splits")
    table.add_column("scans", overflow="fold")
    table.add_column("consent then", no_wrap=True)
    for h in hits:
        scans = [s["scan_id"] for s in h.scans]
        table.add_row(
            h.model,
            ", ".join([*(f"@{a}" for a in h.aliases), *h.endpoints]) or "-",
            h.trained_at[:16].replace("T", " "),
            ", ".join(h.splits),
            f"{len(scans)}: {', '.join(scans)}" if len(scans) <= 2 else f"{len(scans)}",
            h.consent_at_training or "-",
        )
    return table


def print_impact(result: Impact, ask: str = ASK_SAGEMAKER) -> None:
    """`ask`: how to look at SageMaker too, shown when it was not asked."""
    console.print(
        f"[bold]{result.patient_id}[/bold] ({result.status or 'not in the registry'}): in the "
        f"training data of {len(result.models)} of {result.models_checked} registered model "
        f"versions (from the {result.source})"
    )
    if result.models:
        console.print(_hits_table(result.models, "affected model versions"))
        console.print(
            f"aliases: {', '.join(result.aliases) or 'none'}; running endpoints: "
            f"{', '.join(e['url'] for e in result.endpoints) or 'none'}"
        )
        console.print(result.sagemaker.line(ask))
        console.print(f"dataset versions holding the patient: {', '.join(result.datasets)}")
        console.print(
            "next: publish a new version (`lineage process --pattern record ...`), "
            "retrain, promote, then `lineage audit excluded "
            f"{result.patient_id}`"
        )


def impact_command(
    patient_id: PatientId,
    scan: Scan = False,
    sagemaker: SageMaker = False,
    json_output: Json = False,
) -> None:
    """Every registered version, alias and running endpoint whose data includes the patient."""
    result = impact(
        Settings.from_env(),
        patient_id,
        endpoints=running_endpoints,
        sagemaker=sagemaker_lister(sagemaker),
        scan=scan,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        print_impact(result)


def _print_record(result: RecordAudit) -> None:
    consent = result.consent
    state = f"{consent['status']} since {consent['since']}" if consent else "not in the registry"
    console.print(
        f"[bold]{result.patient_id}[/bold] ({state}): in {len(result.models)} of "
        f"{result.models_checked} registered model versions (from the {result.source})"
    )
    if result.models:
        console.print(_hits_table(result.models, "training data holding the patient"))
        console.print(result.sagemaker.line())
    for erasure in result.erasures:  # the tombstones: what no longer exists, and since when
        versions = ", ".join(erasure["dataset_versions"]) or "none"
        models = ", ".join(erasure["models_trained_on_them"]) or "none"
        console.print(
            f"erased under {erasure['request']} at {erasure['at']} by {erasure['actor']}: "
            f"{erasure['records']} record(s) from {versions}; models trained on them: {models}"
        )


@app.command()
def record(
    patient_id: PatientId,
    scan: Scan = False,
    sagemaker: SageMaker = False,
    json_output: Json = False,
) -> None:
    """Which models' data held the patient: splits, scans, consent snapshot."""
    result = audit_record(
        Settings.from_env(),
        patient_id,
        endpoints=running_endpoints,
        sagemaker=sagemaker_lister(sagemaker),
        scan=scan,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        _print_record(result)


@app.command()
def model(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS")],
    scan: Scan = False,
    sagemaker: SageMaker = False,
    json_output: Json = False,
) -> None:
    """Every patient and record of a model, and whether each had consent at training time."""
    result = audit_model(
        Settings.from_env(),
        ref,
        endpoints=running_endpoints,
        sagemaker=sagemaker_lister(sagemaker),
        scan=scan,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        m = result.model
        console.print(
            f"[bold]{m.ref}[/bold] trained on {m.tag} ({m.commit[:12]}), pattern {m.pattern}"
        )
        for split, labels in result.records.items():
            shown = ", ".join(f"{label} {n}" for label, n in labels.items())
            console.print(
                f"  {split}: {sum(labels.values())} records ({shown}), "
                f"{result.patients_by_split.get(split, 0)} patients"
            )
        console.print(
            f"  aliases: {', '.join(result.aliases) or 'none'}; running endpoints: "
            f"{', '.join(result.endpoints) or 'none'}"
        )
        console.print(f"  {result.sagemaker.line()}")
        if m.pattern == "record":
            mark = "[green]matches[/green]" if result.snapshot_ok else "[red]DIFFERS[/red]"
            console.print(
                f"  consent snapshot {m.consent_snapshot_sha256} as of "
                f"{m.consent_as_of}: registry re-derived {mark}"
            )
            console.print(
                f"  patients without consent at training: "
                f"{len(result.without_consent)}; withdrawn since: "
                f"{len(result.withdrawn_since)} "
                f"{', '.join(p.patient_id for p in result.withdrawn_since)}"
            )
    if not result.ok:
        err_console.print("[bold red]FAILED[/bold red]: consent at training time not proven")
        raise typer.Exit(code=1)


def print_exclusion(result: Exclusion) -> None:
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"{verdict}: {result.patient_id} since {result.since} ({result.models_checked} model "
        f"versions checked, from the {result.source})"
    )
    if result.violations:
        console.print(_hits_table(result.violations, "trained after the date, holding the patient"))
    if result.in_use:
        console.print(
            _hits_table(
                result.in_use,
                "trained before, holding the patient, still registered: retire or replace",
            )
        )
    if result.violations or result.in_use:
        console.print(result.sagemaker.line())
    if result.clean:
        console.print(f"trained after the date without the patient: {', '.join(result.clean)}")


@app.command()
def excluded(
    patient_id: PatientId,
    since: Annotated[
        str | None,
        typer.Option(help="ISO date or time (default: the patient's last withdrawal)."),
    ] = None,
    model_ref: Annotated[
        str | None, typer.Option("--model", help="Check only this model version.")
    ] = None,
    scan: Scan = False,
    sagemaker: SageMaker = False,
    json_output: Json = False,
) -> None:
    """PASSED if no model since DATE holds the patient and no older one is still registered."""
    result = audit_excluded(
        Settings.from_env(),
        patient_id,
        since,
        model=model_ref,
        endpoints=running_endpoints,
        sagemaker=sagemaker_lister(sagemaker),
        scan=scan,
    )
    if json_output:
        emit_json(result.to_json())
    else:
        print_exclusion(result)
    if not result.passed:
        raise typer.Exit(code=1)


@app.command()
def report(
    model_ref: Annotated[str, typer.Option("--model", help="NAME@ALIAS or NAME/VERSION")],
    out: Annotated[Path, typer.Option(help="report.html (report.json is written beside it)")],
    scan: Scan = False,
    sagemaker: SageMaker = False,
) -> None:
    """The evidence a regulator asks for, as one self-contained HTML page and JSON."""
    from lineage.audit.report import write_report

    html_path, json_path, verdict = write_report(
        Settings.from_env(),
        model_ref,
        out,
        endpoints=running_endpoints,
        sagemaker=sagemaker_lister(sagemaker),
        scan=scan,
    )
    console.print(f"wrote {html_path} and {json_path}: {verdict}")


@index_app.command()
def rebuild(json_output: Json = False) -> None:
    """Rebuild the index from MLflow (every registered version, its run and manifest)."""
    from lineage.index.store import LineageIndex
    from lineage.registry import mlflow_client

    settings = Settings.from_env()
    summary = LineageIndex.from_settings(settings).rebuild(mlflow_client(settings.mlflow_uri))
    if json_output:
        emit_json(summary.to_json())
    else:
        console.print(
            f"indexed {summary.models} model versions, {summary.runs} runs, {summary.datasets} "
            f"datasets, {summary.records} records in {summary.seconds:.1f}s ({summary.index})"
        )


@index_app.command(name="verify")
def index_verify(json_output: Json = False) -> None:
    """Compare every indexed dataset's rows with its manifest in MLflow (whose sha256 the
    training run recorded): a row deleted, added or edited in the index is named (exit 1)."""
    from lineage.index.store import LineageIndex
    from lineage.registry import mlflow_client

    settings = Settings.from_env()
    result = LineageIndex.from_settings(settings).verify(mlflow_client(settings.mlflow_uri))
    if json_output:
        emit_json(result.to_json())
    elif result.ok:
        console.print(
            f"index verified: {result.records} rows of {result.datasets} datasets are their "
            f"manifests' ({result.seconds:.1f}s)"
        )
    else:
        for mismatch in result.mismatches:
            err_console.print(f"[red]disagrees[/red] {mismatch}")
        err_console.print("rebuild the index: `lineage index rebuild`")
    if not result.ok:
        raise typer.Exit(1)


@index_app.command(name="status")
def index_status(json_output: Json = False) -> None:
    """What the index holds, and whether it is in step with MLflow."""
    from lineage.index.source import AuditError
    from lineage.index.store import LineageIndex
    from lineage.registry import mlflow_client

    settings = Settings.from_env()
    index = LineageIndex.from_settings(settings)
    summary = index.summary().to_json()
    try:
        index.check_fresh(mlflow_client(settings.mlflow_uri))
        summary["fresh"], summary["problem"] = True, None
    except AuditError as exc:
        summary["fresh"], summary["problem"] = False, str(exc)
    if json_output:
        emit_json(summary)
    else:
        console.print(summary)
    if not summary["fresh"]:
        raise typer.Exit(code=1)
