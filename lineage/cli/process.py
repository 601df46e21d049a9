"""`lineage process`."""

from __future__ import annotations

from typing import Annotated

import typer

from lineage.cli.options import (
    Fraction,
    Json,
    Pattern,
    Repo,
    Runtime,
    Source,
    TestSplit,
    ValSplit,
    Version,
)
from lineage.cli.output import console, emit_json
from lineage.config import Settings
from lineage.ops.process import DEFAULT_REPO, ProcessOptions, process


def command(
    version: Version,
    fraction: Fraction,
    source: Source = "digits",
    val_split: ValSplit = 0.1,
    test_split: TestSplit = 0.1,
    seed: Annotated[int, typer.Option(help="Sampling seed; versions nest for the same seed.")] = 42,
    repo: Repo = DEFAULT_REPO,
    pipeline_run_id: Annotated[
        str | None, typer.Option(help="Use this as the tag instead of <version>-<time>-<id>.")
    ] = None,
    runtime: Runtime = "process",
    pattern: Pattern = "dataset",
    json_output: Json = False,
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
            pattern=pattern,
        ),
        stream=not json_output,
    )
    if json_output:
        emit_json(result.to_json())
        return
    out = result.output
    counts = out.counts
    console.print(f"[bold]tag[/bold]         {out.tag}")
    console.print(
        f"[bold]commit[/bold]      {out.commit}"
        + ("  (reused: data unchanged)" if out.reused_commit else "")
    )
    console.print(f"[bold]dataset md5[/bold] {out.dataset_md5}")
    console.print(
        f"[bold]records[/bold]     train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']}  ({out.nfiles} files, {out.size_bytes} bytes)"
    )
    console.print(f"[bold]repository[/bold]  {out.dvc_repo_url}")
    if out.consent:
        consent, patients = out.consent, out.patients or {}
        console.print(
            f"[bold]patients[/bold]    train {patients['train']}, val {patients['val']}, test "
            f"{patients['test']}; {consent['excluded_patients']} excluded without consent"
        )
        console.print(
            f"[bold]consent[/bold]     snapshot {consent['consent_snapshot_sha256']} as of "
            f"{consent['consent_as_of']}"
        )
