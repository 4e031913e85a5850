"""Atomic writes: every output goes to a temporary name in the same folder and is renamed;
and :func:`read_json`, the one JSON file reader.

A crash, a full disk or a write error leaves either the old file or none under the final
name, never a half-written one. Write errors become :class:`BddsegError` with the path.
The file gets the permissions a plain ``open(path, "w")`` would give it (0644 under umask
022), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bddseg.errors import BddsegError, first_line


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync and rename it into place.

    Example::

        with atomic_path("out/metrics.json") as tmp:
            tmp.write_text(...)
    """
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
    except OSError as e:
        raise BddsegError(f"cannot write ({e.strerror or e})", final) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BddsegError(f"cannot write ({e.strerror or e})", final) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` can
    only be read by setting it, which would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path, what: str = "JSON file"):
    """The parsed content of the JSON file ``path``; a missing, unreadable or invalid file
    raises :class:`BddsegError` naming ``what`` (e.g. ``"metrics"``) and the path."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BddsegError(f"cannot read {what} ({e.strerror or e})", p) from None
    except UnicodeDecodeError as e:
        raise BddsegError(f"cannot read {what} ({first_line(e)})", p) from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise BddsegError(f"cannot read {what}: not valid JSON ({first_line(e)})", p) from None
