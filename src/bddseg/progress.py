"""The one progress bar: ``bddseg evaluate --checkpoint``, ``bddseg predict`` and training
show the same rich bar, on stderr, built here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task


def progress_bar(
    label: str,
    *,
    enabled: bool = True,
    eta: bool = False,
    info: bool = False,
    rate: str | None = None,
    console: Console | None = None,
) -> Progress:
    """``LABEL ━━━━━━━━ n/N 0:00:12`` on stderr: a :class:`rich.progress.Progress` to use as
    a context manager (or ``start`` / ``stop``); rich only animates it on a terminal
    (elsewhere it prints its last state once, when it stops).

    Args:
        enabled: False gives a bar that draws nothing (rich's ``disable``).
        eta: show the time remaining instead of the time elapsed.
        info: add a last column with the task's ``info`` field (``add_task(..., info="")``).
        rate: the unit counted (``"img"``): add a column with the rate after the time,
            ``2.41 img/s`` (:func:`rate_text`).
        console: where to draw (default: a console on stderr); tests pass one that writes to
            a buffer as a terminal would.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(rate_text(task, rate), style="progress.data.speed")

    columns = [
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn() if eta else TimeElapsedColumn(),
    ]
    if rate:
        columns.append(RateColumn())
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return RichProgress(*columns, console=console or Console(stderr=True), disable=not enabled)


def rate_text(task: Task, unit: str) -> str:
    """``2.41 img/s``: while the task runs, rich's estimate over its last 30 s; once it is
    stopped (``Progress.stop_task``), the whole task's (completed / elapsed); ``- img/s``
    before there is one."""
    if task.stop_time is not None:
        speed = task.completed / task.elapsed if task.elapsed else None
    else:
        speed = task.finished_speed or task.speed
    if speed is None:
        return f"- {unit}/s"
    return f"{speed:.3g} {unit}/s" if speed < 1000 else f"{speed:.0f} {unit}/s"


__all__ = ["progress_bar", "rate_text"]
