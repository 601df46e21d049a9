"""A progress bar on a terminal, a few plain log lines otherwise (CloudWatch, CI, pipes)."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

log = logging.getLogger("lineage.progress")


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self._next_log = 0.1
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        if sys.stdout.isatty():
            self._bar = RichProgress(
                TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)
        elif self.done / self.total >= self._next_log:
            log.info("%s: %d/%d", self.label, self.done, self.total)
            self._next_log += 0.1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
