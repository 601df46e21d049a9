"""The local stack (git server, S3 store, MLflow server), as processes or as compose services."""

from __future__ import annotations

from lineage.config import STACK_RUNTIMES, Settings
from lineage.errors import ConfigError
from local.stack.compose import ComposeStack
from local.stack.stack import LocalStack, ServiceStatus, StackStatus

Stack = LocalStack | ComposeStack


def stack_for(settings: Settings, runtime: str | None = None) -> Stack:
    """The stack of this home in `runtime` (default: the one it was last started in,
    LINEAGE_STACK_RUNTIME, else processes)."""
    chosen = runtime or settings.stack_runtime
    if chosen not in STACK_RUNTIMES:
        raise ConfigError(
            f"unknown stack runtime {chosen!r}", f"use one of {', '.join(STACK_RUNTIMES)}"
        )
    return ComposeStack(settings) if chosen == "docker" else LocalStack(settings)


__all__ = ["ComposeStack", "LocalStack", "ServiceStatus", "Stack", "StackStatus", "stack_for"]
