"""`lineage process`."""

from __future__ import annotations

from typing import Annotated

import typer

from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.ops.process import DEFAULT_REPO, ProcessOptions, process


def command(
    version: Annotated[str, typer.Option("--version", help="Data version, e.g. v1.0.")],
    fraction: Annotated[float, typer.Option("--fraction", help="Share of the source, (0, 1].")],
    source: Annotated[
        str, typer.Option(help="digits | cifar10[:PATH] | imagefolder:PATH (PATH local or s3://)")
    ] = "digits",
    val_split: Annotated[
        float, typer.Option(help="Share of the sample used for validation.")
    ] = 0.1,
    test_split: Annotated[
        float, typer.Option(help="Held-out test share, same in every version.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Sampling seed; versions nest for the same seed.")] = 42,
    repo: Annotated[str, typer.Option(help="Dataset repository on the git server.")] = DEFAULT_REPO,
    pipeline_run_id: Annotated[
        str | None, typer.Option(help="Use this as the tag instead of <version>-<time>-<id>.")
    ] = None,
    runtime: Annotated[str, typer.Option(help="process | docker")] = "process",
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Sample, split and version a dataset with DVC (the SageMaker Processing job)."""
    result = process(
        Settings.from_env(),
        ProcessOptions(
            version=version,
            fraction=fraction,
            source=source,
            val_split=val_split,
            test_split=test_split,
            seed=seed,
            repo=repo,
            pipeline_run_id=pipeline_run_id,
            runtime=runtime,
        ),
        stream=not json_output,
    )
    if json_output:
        emit_json(result)
        return
    counts = result["counts"]
    console.print(f"[bold]tag[/bold]         {result['tag']}")
    console.print(
        f"[bold]commit[/bold]      {result['commit']}"
        + ("  (reused: data unchanged)" if result["reused_commit"] else "")
    )
    console.print(f"[bold]dataset md5[/bold] {result['dataset_md5']}")
    console.print(
        f"[bold]records[/bold]     train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']}  ({result['nfiles']} files, {result['size_bytes']} bytes)"
    )
    console.print(f"[bold]repository[/bold]  {result['dvc_repo_url']}")
