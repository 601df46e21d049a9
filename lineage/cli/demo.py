"""`lineage demo`: the whole reference scenario, told step by step."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.rule import Rule
from rich.table import Table

from lineage.audit.queries import Exclusion, Impact
from lineage.cli.audit import print_exclusion, print_impact
from lineage.cli.options import Json, Pattern, Source
from lineage.cli.output import console, emit_json
from lineage.cli.query import print_comparison, print_reproduction, print_trace
from lineage.config import Settings
from lineage.errors import ConfigError
from lineage.ops.demo import (
    Champion,
    DemoOptions,
    DemoResult,
    Prediction,
    Reporter,
    model_ref,
    run_demo,
)
from lineage.ops.demo_record import RecordDemoOptions, RecordDemoResult, run_record_demo
from lineage.ops.deploy import DeployResult
from lineage.ops.process import DEFAULT_REPO
from lineage.query.compare import Comparison
from lineage.query.reproduce import Reproduction
from lineage.query.trace import Trace


class _Printer(Reporter):
    def step(self, name: str) -> None:
        console.print(Rule(f"[bold]{name}[/bold]", align="left"))

    def done(self, name: str, result: Any) -> None:
        if isinstance(result, Comparison):
            print_comparison(result)
        elif isinstance(result, Trace):
            print_trace(result)
        elif isinstance(result, Reproduction):
            print_reproduction(result)
        elif isinstance(result, Impact):
            print_impact(result)
        elif isinstance(result, Exclusion):
            print_exclusion(result)
        elif isinstance(result, list) and result and isinstance(result[0], Prediction):
            _print_predictions(result)
        elif isinstance(result, Champion):
            promotion = result.promotion
            console.print(
                f"{promotion.model_name}/{promotion.version} -> @{promotion.alias}: {result.reason}"
            )
        elif isinstance(result, DeployResult):
            model = result.model
            console.print(f"serving {model.model_name} v{model.model_version} at {result.endpoint}")


def _print_predictions(predictions: list[Prediction]) -> None:
    table = Table()
    for column in ("image", "true label", "predicted", "p", "model"):
        table.add_column(column)
    for p in predictions:
        mark = "" if p.correct else " [red]x[/red]"
        table.add_row(p.file, p.label, f"{p.predicted}{mark}", f"{p.probability:.3f}", p.model)
    console.print(table)


def _parse_fractions(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        first, second = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--fractions {text!r}", "pass two numbers, e.g. 0.5,1.0") from None
    if not (0 < first <= 1 and 0 < second <= 1):
        raise ConfigError(f"--fractions {text!r}: each must be in (0, 1]")
    return first, second


def _print_summary(result: DemoResult) -> None:
    _print_steps(result.steps)
    v1, v2 = result.fractions
    console.print(f"fractions used: v1.0 {v1:.0%}, v2.0 {v2:.0%} of the source")
    assert result.champion is not None and result.endpoint is not None  # a finished demo
    name, endpoint = result.champion.promotion.model_name, result.endpoint.endpoint
    v1_ref, v2_ref = (model_ref(result.versions[v].training.output) for v in ("v1.0", "v2.0"))
    if result.evidence is not None:
        evidence = result.evidence
        console.print(
            f"\nevidence bundle: {evidence.bundle} (signer's public key: {evidence.public_key})"
            f"\nverified offline ({evidence.offline}): "
            + ("[green]evidence verified[/green]" if evidence.ok else "[red]NOT verified[/red]")
        )
        for check in evidence.checks:
            console.print(
                f"  {'ok' if check['ok'] else 'FAILED'}  {check['name']}: {check['detail']}"
            )
        console.print(f"  an auditor runs: {evidence.command}")
    console.print(f"\nMLflow UI: {result.mlflow_ui}\nexplore further:")
    for command in (
        f"lineage trace --model {name}@champion",
        f"lineage trace --endpoint {endpoint}",
        f"lineage compare --model {v1_ref} --model {v2_ref}",
        f"lineage reproduce --model {v1_ref} --retrain",
        f"lineage verify --model {v2_ref}",
        f"lineage invoke --endpoint {endpoint} IMAGE.png",
        "lineage deploy --stop; lineage stack down",
    ):
        console.print(f"  {command}")


def _print_steps(steps: list[Any]) -> None:
    console.print(Rule("[bold]summary[/bold]", align="left"))
    table = Table()
    for column in ("step", "seconds", "result"):
        table.add_column(column)
    for step in steps:
        table.add_row(step.name, f"{step.seconds:.1f}", step.detail)
    table.add_row("[bold]total[/bold]", f"{sum(s.seconds for s in steps):.1f}", "")
    console.print(table)


def _print_record_summary(result: RecordDemoResult, repo: str) -> None:
    _print_steps(result.steps)
    v1, v2 = (model_ref(result.versions[v].training.output) for v in ("v1.0", "v2.0"))
    patient = result.withdrawn[0]
    as_of = result.consent_check.as_of if result.consent_check else None
    console.print(f"audit report: {result.report['html']}\n{result.report['verdict']}")
    evidence = result.erasure.get("evidence", {})
    console.print(f"erasure evidence ({patient}): {evidence.get('html')}")
    tag = result.versions["v1.0"].processing.output.tag
    console.print(f"\nMLflow UI: {result.mlflow_ui}\nexplore further:")
    for command in (
        f"lineage consent status {patient}",
        f"lineage verify --tag {tag} --repo {repo}     # intact except the erased records",
        f"lineage impact {patient}",
        f"lineage audit record {patient}",
        f"lineage audit excluded {patient}            # v1 {v1} is still registered",
        f"lineage audit excluded {patient} --model {v2}",
        f"lineage audit model {v2}",
        f"lineage compare --model {v1} --model {v2}",
        f"lineage consent export --as-of {as_of}",
        "lineage deploy --stop; lineage stack down",
    ):
        console.print(f"  {command}")


def demo_command(
    pattern: Pattern = "dataset",
    source: Source = "digits",
    fractions: Annotated[
        str | None,
        typer.Option(help="v1,v2 shares of the source (digits: 0.5,1.0; cifar10: 0.05,0.10)."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per version.")] = 5,
    port: Annotated[int, typer.Option(help="Port of the local endpoint.")] = 8080,
    repo: Annotated[
        str | None, typer.Option(help="Dataset repository (default datasets; record: patients).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Registered model name (default <source>-mobilenetv3).")
    ] = None,
    json_output: Json = False,
) -> None:
    """The reference scenario end to end: two versions, compare, promote, deploy, trace.

    --pattern record: the healthcare scenario (synthetic-cxr patients, consent registry,
    three withdrawals, a new version without them, audits and the evidence report).
    """
    settings = Settings.from_env()
    printer = None if json_output else _Printer()
    if pattern == "record":
        chosen = _parse_fractions(fractions)
        record = run_record_demo(
            settings,
            RecordDemoOptions(
                fraction=chosen[0] if chosen else 1.0,
                epochs=epochs,
                port=port,
                repo=repo or "patients",
                model_name=model_name,
            ),
            printer,
            stream=not json_output,
        )
        if json_output:
            emit_json(record.to_json())
        else:
            _print_record_summary(record, repo or "patients")
        if record.consent_check is None or not record.consent_check.matches:
            raise typer.Exit(code=1)
        return
    if pattern != "dataset":
        raise ConfigError(f"unknown pattern {pattern!r}", "use dataset or record")
    options = DemoOptions(
        source=source,
        fractions=_parse_fractions(fractions),
        epochs=epochs,
        port=port,
        repo=repo or DEFAULT_REPO,
        model_name=model_name,
    )
    result = run_demo(settings, options, printer, stream=not json_output)
    if json_output:
        emit_json(result.to_json())
    else:
        _print_summary(result)
    ok = (result.trace is None or result.trace.ok) and (
        result.reproduction is None or result.reproduction.ok
    )
    if not ok:
        raise typer.Exit(code=1)
