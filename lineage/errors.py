"""One exception type for everything a user can fix.

The CLI prints a `LineageError` as a single line plus its hint and exits non-zero, never a
traceback: the message says what went wrong, the hint says what to do next.
"""

from __future__ import annotations

from lineage.redact import redact_text


class LineageError(Exception):
    """An error the user can act on; `hint` tells them how."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        details: str | None = None,
        exit_code: int = 1,
    ) -> None:
        # every message is shown somewhere (a terminal, a job's failure file, a log): URLs in
        # it never carry their credentials
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.hint = None if hint is None else redact_text(hint)
        # e.g. the tail of a service log, printed after the error line
        self.details = None if details is None else redact_text(details)
        self.exit_code = exit_code

    def __str__(self) -> str:
        """The one line a user reads: what went wrong; what to do next."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(LineageError):
    """A setting (environment variable or argument) has a value we cannot use."""


class StackError(LineageError):
    """A service of the local stack cannot be started, reached or stopped."""
