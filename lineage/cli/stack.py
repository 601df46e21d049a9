"""`lineage stack up|status|down|repo`."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer
from rich.table import Table

from lineage.cli.output import console, emit_json, progress
from lineage.config import AMBIENT_AWS, STACK_FILE, Settings
from lineage.errors import StackError
from lineage.gitops import git_auth_env
from local.stack import ComposeStack, Stack, StackStatus, stack_for

app = typer.Typer(help="Start, inspect and stop the embedded local stack.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


RuntimeOption = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        help="process: the services as local processes (default); docker: as compose services "
        "from the stack image (local/compose.yaml), published where job containers reach them. "
        "Later commands use the runtime this home was last started in.",
    ),
]


def _stack(runtime: str | None = None) -> Stack:
    settings = Settings.from_env()
    if runtime == "process" and settings.stack_runtime == "docker":
        _leave_docker(settings)
        settings = Settings.from_env()
    return stack_for(settings, runtime)


def _leave_docker(settings: Settings) -> None:
    """Switch a home from the docker stack back to processes (the volumes keep their data)."""
    compose = ComposeStack(settings)
    if compose.running_services():
        raise StackError(
            f"the docker stack of {settings.home} is running (project {compose.project})",
            "stop it first: `lineage stack down`",
        )
    (settings.home / STACK_FILE).unlink(missing_ok=True)
    progress(
        f"switching {settings.home} to the process stack: the docker stack's data stays in "
        f"the volumes {compose.project}_git, _s3 and _mlflow"
    )


def _print_status(status: StackStatus) -> None:
    table = Table(title=f"lineage stack ({status.home})", title_justify="left")
    for column in ("service", "url", "pid / container", "healthy"):
        table.add_column(column)
    for name, svc in status.services.items():
        healthy = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "not checked"}[
            svc.healthy
        ]
        pid = str(svc.pid) if svc.pid else ("external" if not svc.embedded else "-")
        pid = svc.container or pid
        table.add_row(name, svc.url, pid, healthy)
    console.print(table)


@app.command()
def up(runtime: RuntimeOption = None, json_output: JsonFlag = False) -> None:
    """Start the git server, S3 store and MLflow server (idempotent); print their URLs."""
    status = _stack(runtime).up(report=progress)
    if json_output:
        emit_json(status.to_json())
    else:
        _print_status(status)
        console.print(f"MLflow UI: {status.services['mlflow'].url}")


@app.command()
def status(json_output: JsonFlag = False) -> None:
    """Each service's URL, pid and health, plus the resolved configuration."""
    result = _stack().status()
    if json_output:
        emit_json(result.to_json())
    else:
        _print_status(result)
    if not result.healthy:
        raise typer.Exit(code=3)


@app.command()
def down() -> None:
    """Stop the services cleanly. Data (repos, objects, runs) stays: under LINEAGE_HOME for
    the process stack, in the compose project's volumes for the docker stack."""
    stopped = _stack().down(report=progress)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command(name="env")
def env_command(json_output: JsonFlag = False) -> None:
    """Print `export` lines that point plain git, DVC, boto3 and MLflow at this stack, with
    its own credentials: `eval "$(lineage stack env)"`, then `git clone`, `dvc pull`,
    `git push` and `mlflow` work as they would against any remote."""
    settings = Settings.from_env()
    exported, unset = plain_client_env(settings)
    if json_output:
        emit_json({"export": exported, "unset": unset})
        return
    for key, value in exported.items():
        print(f"export {key}={shlex.quote(value)}")
    if unset:
        print(f"unset {' '.join(unset)}")


@app.command()
def repo(
    name: Annotated[str, typer.Argument(help="Repository name, e.g. dvc-datasets.")],
    json_output: JsonFlag = False,
) -> None:
    """Create (or show) a bare git repository on the git server; print its clone URL."""
    url, created = _stack().create_repo(name)
    if json_output:
        emit_json({"name": name.removesuffix(".git"), "url": url, "created": created})
    else:
        console.print(url)


def plain_client_env(settings: Settings) -> tuple[dict[str, str], list[str]]:
    """(variables to export, variables to unset) for stock git/DVC/boto3/MLflow clients."""
    env = settings.client_env()
    exported = {k: v for k, v in env.items() if not k.startswith("LINEAGE_GIT_")}
    exported |= git_auth_env([(settings.git_url, ("lineage", settings.credentials.git_token))])
    unset = sorted(AMBIENT_AWS) if settings.embedded_s3 else []
    return exported, unset
