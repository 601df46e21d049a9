"""Options shared by several commands, declared once so their names and help agree."""

from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Runtime = Annotated[str, typer.Option(help="process | docker")]
Repo = Annotated[str, typer.Option(help="Dataset repository on the git server.")]
Version = Annotated[str, typer.Option("--version", help="Data version, e.g. v1.0.")]
Fraction = Annotated[float, typer.Option("--fraction", help="Share of the source, (0, 1].")]
Source = Annotated[
    str,
    typer.Option(
        help="digits | cifar10[:PATH] | imagefolder:PATH | synthetic-cxr | cxr:PATH "
        "(PATH local or s3://)"
    ),
]
Pattern = Annotated[
    str,
    typer.Option(
        help="dataset | record (record: patient manifest, consent-filtered, split by patient)"
    ),
]
ValSplit = Annotated[float, typer.Option(help="Share of the sample used for validation.")]
TestSplit = Annotated[float, typer.Option(help="Held-out test share, same in every version.")]
