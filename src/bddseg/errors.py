"""The one error type for bad user input.

Everything that reads user files raises :class:`BddsegError`; the CLI prints it as a
single line ``error: PATH: PROBLEM`` and exits with code 2. Kept in its own tiny module
so that every stage can import it without import cycles. :func:`warn` is the one channel for
user-facing warnings (problems a command goes on after): ``warning: ...`` on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path


class BddsegError(Exception):
    """Bad input: names the file (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem

    def __reduce__(self):  # picklable across worker processes
        return (BddsegError, (self.problem, self.path))


def first_line(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters of it), to quote a
    third-party exception inside a one-line :class:`BddsegError`."""
    lines = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {lines[0][:limit]}" if lines else e.__class__.__name__


def warn(message: str) -> None:
    """Print ``warning: MESSAGE`` as one line on stderr: the one channel for user-facing
    warnings (a problem the run goes on after: a skipped input, a missing prediction, a plot
    that could not be drawn). ``sys.stderr`` is looked up at each call, so a live rich
    progress bar, which redirects it, keeps the line above the bar."""
    text = " ".join(message.split("\n"))
    print(f"warning: {text}", file=sys.stderr, flush=True)
