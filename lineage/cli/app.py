"""The root `lineage` command; subcommands live in one module each."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from lineage.cli import (
    audit,
    consent,
    demo,
    deploy,
    erase,
    evidence,
    export,
    process,
    query,
    sagemaker,
    stack,
    train,
)
from lineage.cli.output import err_console
from lineage.config import Settings, export_stack_auth
from lineage.errors import LineageError
from lineage.tracking import bound_client_waits, quiet_arn_plugin
from lineage.version import __version__

app = typer.Typer(
    name="lineage",
    help="Trace every model to the exact data (and records) that trained it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.command(name="process")(process.command)
app.command(name="train")(train.train_command)
app.command(name="pipeline")(train.pipeline_command)
app.command(name="promote")(train.promote_command)
app.command(name="deploy")(deploy.deploy_command)
app.command(name="invoke")(deploy.invoke_command)
app.command(name="trace")(query.trace_command)
app.command(name="reproduce")(query.reproduce_command)
app.command(name="verify")(query.verify_command)
app.command(name="compare")(query.compare_command)
app.command(name="export")(export.export_command)
app.command(name="demo")(demo.demo_command)
app.add_typer(consent.app, name="consent")
app.command(name="impact")(audit.impact_command)
app.command(name="erase")(erase.erase_command)
app.add_typer(audit.app, name="audit")
app.add_typer(audit.index_app, name="index")
app.add_typer(sagemaker.app, name="sagemaker")
app.add_typer(evidence.keys_app, name="keys")
app.add_typer(evidence.log_app, name="log")
app.add_typer(evidence.evidence_app, name="evidence")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lineage {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """model-lineage command line."""


def main() -> None:
    """Console-script entry point: user errors become one clear line, not a traceback."""
    try:
        bound_client_waits()
        settings = Settings.from_env()
        quiet_arn_plugin(settings.mlflow_uri)
        export_stack_auth(settings)
        app()
    except LineageError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        if exc.details:
            err_console.print(exc.details, soft_wrap=True, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
