"""The code's shape: no long function without a written reason, every module in a layer.

`make lint` runs the import contracts (`lint-imports`, [tool.importlinter] in pyproject.toml);
these two checks keep those contracts and the functions readable as the code grows.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lineage", "local", "processing", "training", "inference")
MAX_LINES = 80
REASON = "# long:"


def long_functions() -> list[tuple[str, int, str, int, str]]:
    """(file, def line, name, lines, the signature's text) of every function over MAX_LINES
    (the signature: from `def` to the line before the body, as the formatter wraps it)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            lines = source.splitlines()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_LINES:
                        found.append(
                            (
                                str(path.relative_to(ROOT)),
                                node.lineno,
                                node.name,
                                length,
                                "\n".join(lines[node.lineno - 1 : node.body[0].lineno - 1]),
                            )
                        )
    return found


def test_long_functions_say_why() -> None:
    """A function over 80 lines is split into named stages, or its signature says why not
    (`# long: <reason>`, on the def line or where the formatter moved it)."""
    unexplained = [
        f"{file}:{line} {name} ({length} lines)"
        for file, line, name, length, text in long_functions()
        if REASON not in text or not text.split(REASON, 1)[1].strip()
    ]
    assert not unexplained, (
        f"functions over {MAX_LINES} lines: split them into named stages, or put "
        f"'{REASON} <reason>' on the def line:\n" + "\n".join(unexplained)
    )


def _layer_modules() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["id"] == "layers")["layers"]
    return {
        name.strip().strip("()")
        for layer in layers
        for name in layer.replace("|", ":").split(":")
        if name.strip()
    }


def test_every_lineage_module_is_in_a_layer() -> None:
    """A new module or package under lineage/ is placed in the layers contract: otherwise
    nothing would say what it may import, or who may import it."""
    placed = _layer_modules()
    children = {
        f"lineage.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / "lineage").iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").is_file())
    }
    assert sorted(children - placed) == []
