"""The joint histogram of two 8-bit PNG masks in one native pass: the hot loop of
``bddseg evaluate --pred --gt`` (and, for one mask, of the class statistics).

Scoring a folder of masks is decoding two PNGs and counting ``(truth, prediction)`` pairs
per image. Through libspng and numpy that costs 6-7 ms of CPU per 1280x720 pair of real
BDD100K masks, most of it inflating with zlib and undoing the PNG row filters. Here the IDAT
stream is inflated by Intel's ISA-L (``isal``: 3-5x zlib's speed; zlib when it is missing)
and a small C kernel (``_fastpng.c``) undoes the five row filters (PNG spec, section 9) of
both images, row by row, and counts the runs of equal pairs, 8 flat bytes at a time: about
1.1 ms per pair in all (benchmarks/RESULTS.md).

Only the common case takes this path: 8-bit grayscale or 8-bit palette (read as indices),
not interlaced, both images the same size, of the plain layout (``IHDR``, ``PLTE`` for a
palette, ``IDAT``..., ``IEND``: the official masks' layout) and passing the general decoder's
own checks (:func:`bddseg.masks.png_chunks`: CRCs, one 13-byte IHDR, consecutive IDATs, no
animation, a zlib header zlib accepts; ISA-L inflates some that zlib refuses). Everything
else (and any stream that does not inflate to exactly one filter byte plus ``width`` samples
per row, or a filter byte above 4) returns ``None``: the caller then decodes both files
through :mod:`bddseg.masks`, which names the problem. So a score never depends on whether the
kernel was built: the same counts or the same error (tests/test_png_differential.py fuzzes
that). The kernel is built at install (setuptools, any C99 compiler); where it could not be,
:func:`available` is false, both functions return ``None`` and the masks go through the
general decoder: slower, same numbers.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from bddseg.masks import MAX_SIDE, png_chunks

try:
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib gives the same bytes
    _zlib = zlib

_DECODE_ERRORS = (zlib.error, getattr(_zlib, "error", zlib.error), ValueError)


try:
    from bddseg import _fastpng
except ImportError:  # not built (no C compiler at install): masks.py decodes without it
    _fastpng = None


def available() -> bool:
    """Whether the native kernel was built (``src/bddseg/_fastpng.c``, at install)."""
    return _fastpng is not None


def _layout(data: bytes) -> tuple[int, int, bytes] | None:
    """``(width, height, IDAT bytes)`` of a non-interlaced 8-bit grayscale or palette PNG of
    the plain layout (``IHDR``, ``PLTE`` for a palette, ``IDAT``..., ``IEND``) that passes the
    general decoder's structure check (:func:`bddseg.masks.png_chunks`: CRCs, one 13-byte
    IHDR, consecutive IDATs, a sound zlib header, ...); ``None`` for anything else. Ancillary
    chunks hand the file over too: Pillow and libspng check some of them (a 3-byte ``gAMA``
    fails Pillow) and bddseg does not copy their rules. The official masks hold none."""
    chunks, problem = png_chunks(data)
    if problem is not None or not chunks:
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or color not in (0, 3) or interlace:
        return None
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        return None
    head = (b"IHDR", b"PLTE") if color == 3 else (b"IHDR",)
    kinds = [kind for kind, _ in chunks]
    if tuple(kinds[: len(head)]) != head or set(kinds[len(head) : -1]) != {b"IDAT"}:
        return None
    return width, height, b"".join(body for kind, body in chunks if kind == b"IDAT")


def _inflate(stream: bytes, size: int) -> bytes | None:
    """The zlib stream inflated to exactly ``size`` bytes, or ``None`` (short, long, corrupt)."""
    try:
        inflater = _zlib.decompressobj()
        raw = inflater.decompress(stream, size + 1)
    except _DECODE_ERRORS:
        return None
    if len(raw) != size or not inflater.eof:
        return None
    return raw


def joint_histogram(gt: bytes, pred: bytes) -> np.ndarray | None:
    """``int64 (256, 256)`` counts of ``[truth value, predicted value]`` over the pixels of
    two PNG files' bytes (what :func:`bddseg.metrics.value_histogram` gives for the decoded
    masks), or ``None`` when this fast path does not apply (see the module doc)."""
    if _fastpng is None:
        return None
    a, b = _layout(gt), _layout(pred)
    if a is None or b is None or a[:2] != b[:2]:
        return None
    width, height = a[0], a[1]
    size = height * (width + 1)
    gt_raw, pred_raw = _inflate(a[2], size), _inflate(b[2], size)
    if gt_raw is None or pred_raw is None:
        return None
    hist = np.zeros(256 * 256, np.int64)
    if not _fastpng.count_pairs(gt_raw, pred_raw, height, width, hist):
        return None
    return hist.reshape(256, 256)


def value_histogram(data: bytes) -> np.ndarray | None:
    """``int64 (256,)`` counts of each value over the pixels of one PNG file's bytes (what
    :func:`bddseg.masks.histogram` gives for the decoded mask), or ``None`` when this fast
    path does not apply (see the module doc)."""
    if _fastpng is None:
        return None
    layout = _layout(data)
    if layout is None:
        return None
    width, height, stream = layout
    raw = _inflate(stream, height * (width + 1))
    if raw is None:
        return None
    hist = np.zeros(256, np.int64)
    return hist if _fastpng.count_values(raw, height, width, hist) else None


__all__ = ["available", "joint_histogram", "value_histogram"]
