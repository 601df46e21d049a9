"""Read `docker-bake.hcl` the way `docker buildx bake` does, for machines without buildx.

The bake file is the one source of truth for image names, tags and build args. Where buildx
exists, `make images` runs bake itself; where it does not (Debian's docker.io, this CI), the
same targets are built with plain `docker build` from the plan computed here. Only the subset
of bake our file uses is supported: variables (defaults, overridden by environment variables
of the same name, defaults may refer to other variables), ``inherits``, ``args``, ``tags``,
``target``, ``context``, ``dockerfile``, ``platforms``, ``group "default"``, string templates
with ``${...}``, ``a ? b : c``, ``==``, ``!=``, ``equal()`` and ``notequal()``. Anything else
is an error, never a silent difference.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage.errors import ConfigError

BAKE_FILE = "docker-bake.hcl"


@dataclass(frozen=True)
class BuildTarget:
    name: str
    context: str
    dockerfile: str
    target: str
    tags: list[str]
    args: dict[str, str]
    platforms: list[str] = field(default_factory=list)

    def docker_build(self) -> list[str]:
        """The equivalent plain `docker build` command."""
        argv = ["docker", "build", "--file", self.dockerfile, "--target", self.target]
        for tag in self.tags:
            argv += ["--tag", tag]
        for key, value in sorted(self.args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        if self.platforms:
            argv += ["--platform", ",".join(self.platforms)]
        return [*argv, self.context]


_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\$]|\\.|\$(?!\{)|\$\{(?:[^{}]|\{[^{}]*\})*\})*")'
    r"|(?P<op>==|!=|\?|:|\(|\)|,)|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)


class _Expression:
    """A tiny recursive-descent evaluator for the expressions listed in the module doc."""

    def __init__(self, text: str, scope: _Scope) -> None:
        self.tokens: list[tuple[str, str]] = []
        position, text = 0, text.strip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise ConfigError(f"{BAKE_FILE}: cannot read the expression {text!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.scope = scope
        self.index = 0

    def _peek(self) -> str | None:
        return self.tokens[self.index][1] if self.index < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.index >= len(self.tokens):
            raise ConfigError(f"{BAKE_FILE}: expression ends early")
        token = self.tokens[self.index]
        if expected is not None and token[1] != expected:
            raise ConfigError(f"{BAKE_FILE}: expected {expected!r}, found {token[1]!r}")
        self.index += 1
        return token

    def evaluate(self) -> Any:
        value = self._conditional()
        if self.index != len(self.tokens):
            raise ConfigError(f"{BAKE_FILE}: unexpected {self._peek()!r}")
        return value

    def _conditional(self) -> Any:
        condition = self._comparison()
        if self._peek() != "?":
            return condition
        self._take("?")
        when_true = self._conditional()
        self._take(":")
        when_false = self._conditional()
        return when_true if condition else when_false

    def _comparison(self) -> Any:
        left = self._primary()
        if self._peek() in ("==", "!="):
            op = self._take()[1]
            right = self._primary()
            return (left == right) if op == "==" else (left != right)
        return left

    def _primary(self) -> Any:
        kind, text = self._take()
        if kind == "str":
            return self.scope.template(text)
        if kind == "name" and self._peek() == "(":
            self._take("(")
            arguments = [self._conditional()]
            while self._peek() == ",":
                self._take(",")
                arguments.append(self._conditional())
            self._take(")")
            functions = {"equal": lambda a, b: a == b, "notequal": lambda a, b: a != b}
            if text not in functions or len(arguments) != 2:
                raise ConfigError(f"{BAKE_FILE}: unsupported function {text}()")
            return functions[text](*arguments)
        if kind == "name":
            return self.scope.variable(text)
        if text == "(":
            value = self._conditional()
            self._take(")")
            return value
        raise ConfigError(f"{BAKE_FILE}: unexpected {text!r}")


class _Scope:
    def __init__(self, defaults: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.defaults = defaults
        self.env = env
        self.values: dict[str, str] = {}
        self.resolving: set[str] = set()

    def variable(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        if name not in self.defaults:
            raise ConfigError(f"{BAKE_FILE}: unknown variable {name}")
        if name in self.resolving:
            raise ConfigError(f"{BAKE_FILE}: variable {name} refers to itself")
        self.resolving.add(name)
        value = self.env[name] if name in self.env else str(self.value(self.defaults[name]))
        self.resolving.discard(name)
        self.values[name] = value
        return value

    def template(self, quoted: str) -> str:
        body = quoted[1:-1]
        out, position = [], 0
        while position < len(body):
            start = body.find("${", position)
            if start < 0:
                out.append(body[position:])
                break
            out.append(body[position:start])
            depth, end = 0, start + 2
            while end < len(body):
                if body[end] == "{":
                    depth += 1
                elif body[end] == "}":
                    if depth == 0:
                        break
                    depth -= 1
                end += 1
            out.append(str(_Expression(body[start + 2 : end], self).evaluate()))
            position = end + 1
        return "".join(out).replace('\\"', '"')

    def value(self, raw: Any) -> Any:
        if isinstance(raw, list):
            return [self.value(item) for item in raw]
        if isinstance(raw, dict):
            return {k: self.value(v) for k, v in raw.items() if k != "__is_block__"}
        if isinstance(raw, bool | int | float):
            return raw
        text = str(raw)
        if text.startswith("${") and text.endswith("}"):
            text = text[2:-1]
        return _Expression(text, self).evaluate()


def _blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in parsed.get(kind, []):
        for name, body in block.items():
            out[name.strip('"')] = body
    return out


def plan(
    root: Path, env: Mapping[str, str] | None = None, group_name: str = "default"
) -> list[BuildTarget]:
    """The targets of a group (the job images: "default"; the local stack's: "stack"),
    resolved as bake resolves them."""
    import hcl2

    path = root / BAKE_FILE
    try:
        with path.open() as handle:
            parsed = hcl2.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing", "run from the repository root") from None
    variables = {
        name: body.get("default", '""') for name, body in _blocks(parsed, "variable").items()
    }
    scope = _Scope(variables, os.environ if env is None else env)
    targets = _blocks(parsed, "target")
    group = _blocks(parsed, "group").get(group_name)
    if group is None:
        raise ConfigError(f'{BAKE_FILE} has no group "{group_name}"')

    def resolved(name: str) -> dict[str, Any]:
        body = targets.get(name)
        if body is None:
            raise ConfigError(f"{BAKE_FILE}: unknown target {name}")
        merged: dict[str, Any] = {}
        for parent in scope.value(body.get("inherits", [])):
            merged.update(resolved(parent))
        for key, raw in body.items():
            if key in ("inherits", "__is_block__"):
                continue
            value = scope.value(raw)
            merged[key] = {**merged.get(key, {}), **value} if key == "args" else value
        return merged

    out = []
    for name in scope.value(group["targets"]):
        spec = resolved(name)
        out.append(
            BuildTarget(
                name=name,
                context=str(spec.get("context", ".")),
                dockerfile=str(spec.get("dockerfile", "Dockerfile")),
                target=str(spec.get("target", name)),
                tags=[str(t) for t in spec.get("tags", [])],
                args={k: str(v) for k, v in spec.get("args", {}).items()},
                platforms=[str(p) for p in spec.get("platforms", [])],
            )
        )
    return out
