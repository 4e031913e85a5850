"""The one progress bar: ``bddseg evaluate --checkpoint``, ``bddseg predict`` and training
show the same rich bar, on stderr, built here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def progress_bar(
    label: str,
    *,
    enabled: bool = True,
    eta: bool = False,
    info: bool = False,
    console: Console | None = None,
) -> Progress:
    """``LABEL ━━━━━━━━ n/N 0:00:12`` on stderr: a :class:`rich.progress.Progress` to use as
    a context manager (or ``start`` / ``stop``); rich only animates it on a terminal.

    Args:
        enabled: False gives a bar that draws nothing (rich's ``disable``).
        eta: show the time remaining instead of the time elapsed.
        info: add a last column with the task's ``info`` field (``add_task(..., info="")``).
        console: where to draw (default: a console on stderr); tests pass one that writes to
            a buffer as a terminal would.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn() if eta else TimeElapsedColumn(),
    ]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return RichProgress(*columns, console=console or Console(stderr=True), disable=not enabled)


__all__ = ["progress_bar"]
