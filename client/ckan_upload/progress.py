"""The progress bar (rich, on stderr), or nothing when quiet or not on a terminal."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Meter(Protocol):
    """What the uploader reports its progress to."""

    def start(self, description: str, total: int, completed: int) -> None: ...

    def advance(self, amount: int) -> None: ...

    def stop(self) -> None: ...


class Silent:
    """No progress output."""

    def start(self, description: str, total: int, completed: int) -> None:
        """Ignore the start."""

    def advance(self, amount: int) -> None:
        """Ignore the bytes."""

    def stop(self) -> None:
        """Nothing to stop."""


class Bar:
    """A rich progress bar with bytes, speed and time left, advanced safely from the part threads."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, description: str, total: int, completed: int) -> None:
        """Show the bar, already at ``completed`` bytes (parts sent before a resume)."""
        self._task = self._progress.add_task(description, total=total, completed=completed)
        self._progress.start()

    def advance(self, amount: int) -> None:
        """Add (or, after a failed attempt, take back) bytes."""
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def stop(self) -> None:
        """Leave the finished bar on screen."""
        self._progress.stop()


def make_meter(*, quiet: bool, is_terminal: bool) -> Meter:
    """A bar on a terminal unless quiet; otherwise silence."""
    return Bar() if is_terminal and not quiet else Silent()
