"""The joint histogram of two 8-bit PNG masks in one native pass: the hot loop of
``bddseg evaluate --pred --gt`` on large folders (and, for one mask, of the class statistics).

Scoring a folder of masks is decoding two PNGs and counting ``(truth, prediction)`` pairs
per image. Through libspng and numpy that costs 6-7 ms of CPU per 1280x720 pair of real
BDD100K masks, most of it inflating with zlib and undoing the PNG row filters. Here the IDAT
stream is inflated by Intel's ISA-L (``isal``: 3-5x zlib's speed; zlib when it is missing)
and one numba kernel undoes the five row filters (PNG spec, section 9) of both images, row
by row, and counts the runs of equal pairs: about 1.4 ms per pair (benchmarks/RESULTS.md).

Only the common case takes this path: 8-bit grayscale or 8-bit palette (read as indices),
not interlaced, both images the same size, chunk CRCs sound. Everything else (and any
stream that does not inflate to exactly one filter byte plus ``width`` samples per row, or a
filter byte above 4) returns ``None``: the caller then decodes both files through
:mod:`bddseg.masks`, which names the problem. Without numba (or with ``NUMBA_DISABLE_JIT``)
:func:`available` is false and nothing here runs.

The price is a fixed one per process: importing numba and loading the compiled kernel from
numba's on-disk cache take about 0.55 s (compiling it, the first time: about 1.5 s more;
``make`` does that at install, :func:`warm`). :mod:`bddseg.evaluate` therefore loads it once,
before its worker processes fork, and only for folders large enough to pay it back.
"""

from __future__ import annotations

import zlib

import numpy as np

from bddseg.masks import MAX_SIDE, PNG_SIGNATURE, png_problem

try:
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib gives the same bytes
    _zlib = zlib

_DECODE_ERRORS = (zlib.error, getattr(_zlib, "error", zlib.error), ValueError)


try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; masks.py decodes without it
    numba = None


def _native(fn):
    """numba's compilation, cached on disk where numba finds a writable place (beside this
    file, else the user's cache folder; without one it compiles in each process); the plain
    function when numba is missing."""
    if numba is None:
        return fn
    try:
        return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, boundscheck=False)(fn)


def available() -> bool:
    """Whether the native kernel can run (numba importable and its JIT not disabled)."""
    return numba is not None and not numba.config.DISABLE_JIT


# Row loops index views (``src[x]``) rather than ``raw[at + x]``: with an index numba cannot
# prove non-negative, each access keeps a wraparound check and LLVM does not vectorize the
# loop (a row copy took 0.7 ms per image instead of 0.05).
@_native
def _unfilter_row(kind, src, prev, cur):
    """Undo a row's filter (PNG spec 9.2; 1 byte per pixel) from ``src`` into ``cur``, given
    the row above, ``prev``; False for a filter type above 4."""
    w = cur.shape[0]
    if kind == 0:  # None
        for x in range(w):
            cur[x] = src[x]
    elif kind == 1:  # Sub
        a = np.uint8(0)
        for x in range(w):
            a = np.uint8(src[x] + a)
            cur[x] = a
    elif kind == 2:  # Up
        for x in range(w):
            cur[x] = src[x] + prev[x]
    elif kind == 3:  # Average
        a = 0
        for x in range(w):
            v = np.uint8(src[x] + ((a + np.int32(prev[x])) >> 1))
            cur[x] = v
            a = np.int32(v)
    elif kind == 4:  # Paeth
        a = 0
        c = 0
        for x in range(w):
            b = np.int32(prev[x])
            if b == c:  # flat above: Paeth predicts the left neighbour (most pixels)
                v = np.uint8(src[x] + a)
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc:
                    v = np.uint8(src[x] + a)
                elif pb <= pc:
                    v = np.uint8(src[x] + b)
                else:
                    v = np.uint8(src[x] + c)
            cur[x] = v
            a = np.int32(v)
            c = b
    else:
        return False
    return True


@_native
def _add_runs(values, hist):
    """``hist[v] += 1`` for each element ``v`` of the (non-empty) row ``values``, one addition
    per run of equal elements."""
    value, run = values[0], 1
    for x in range(1, values.shape[0]):
        if values[x] == value:
            run += 1
        else:
            hist[value] += run
            value, run = values[x], 1
    hist[value] += run


@_native
def _count_pairs(gt_raw, pred_raw, h, w, hist):
    """Unfilter both images row by row and add each run of equal ``(gt, pred)`` pairs to
    ``hist[gt * 256 + pred]``; False at a bad filter byte. ``*_raw``: ``h * (w + 1)`` bytes."""
    gt_rows, pred_rows = gt_raw.reshape(h, w + 1), pred_raw.reshape(h, w + 1)
    g, p = np.zeros((2, w), np.uint8), np.zeros((2, w), np.uint8)  # row above, this row
    pair = np.empty(w, np.uint16)
    for y in range(h):
        cur, prev = y & 1, 1 - (y & 1)
        if not _unfilter_row(gt_rows[y, 0], gt_rows[y, 1:], g[prev], g[cur]):
            return False
        if not _unfilter_row(pred_rows[y, 0], pred_rows[y, 1:], p[prev], p[cur]):
            return False
        g_row, p_row = g[cur], p[cur]
        for x in range(w):
            pair[x] = (np.uint16(g_row[x]) << 8) | p_row[x]
        _add_runs(pair, hist)
    return True


@_native
def _count_values(raw, h, w, hist):
    """Unfilter one image row by row and add each run of equal values to ``hist[value]``;
    False at a bad filter byte."""
    rows = raw.reshape(h, w + 1)
    m = np.zeros((2, w), np.uint8)  # row above, this row
    for y in range(h):
        cur, prev = y & 1, 1 - (y & 1)
        if not _unfilter_row(rows[y, 0], rows[y, 1:], m[prev], m[cur]):
            return False
        _add_runs(m[cur], hist)
    return True


def warm() -> bool:
    """Compile the kernel into numba's on-disk cache now, so that the first evaluation does
    not pay it; ``make`` calls this after installing. False when the kernel is not
    available."""
    if not available():
        return False
    raw = np.frombuffer(bytes(2 * 4), np.uint8)  # read-only, like the inflated streams
    pairs = _count_pairs(raw, raw, 2, 3, np.zeros(256 * 256, np.int64))
    return bool(pairs and _count_values(raw, 2, 3, np.zeros(256, np.int64)))


def _layout(data: bytes) -> tuple[int, int, bytes] | None:
    """``(width, height, IDAT bytes)`` of a non-interlaced 8-bit grayscale or palette PNG
    whose chunk CRCs hold; ``None`` for anything else."""
    if data[:8] != PNG_SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    depth, color, compression, filtering, interlace = data[24:29]
    if depth != 8 or color not in (0, 3) or compression or filtering or interlace:
        return None
    if png_problem(data) is not None:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        return None
    parts, view, i = [], memoryview(data), 8
    while i + 12 <= len(data):
        end = i + 12 + int.from_bytes(view[i : i + 4], "big")
        kind = view[i + 4 : i + 8]
        if kind == b"IDAT":
            parts.append(view[i + 8 : end - 4])
        elif kind == b"IEND":
            break
        i = end
    return width, height, b"".join(parts)


def _inflate(stream: bytes, size: int) -> np.ndarray | None:
    """The zlib stream inflated to exactly ``size`` bytes, or ``None`` (short, long, corrupt)."""
    try:
        inflater = _zlib.decompressobj()
        raw = inflater.decompress(stream, size + 1)
    except _DECODE_ERRORS:
        return None
    if len(raw) != size or not inflater.eof:
        return None
    return np.frombuffer(raw, np.uint8)


def joint_histogram(gt: bytes, pred: bytes) -> np.ndarray | None:
    """``int64 (256, 256)`` counts of ``[truth value, predicted value]`` over the pixels of
    two PNG files' bytes (what :func:`bddseg.metrics.value_histogram` gives for the decoded
    masks), or ``None`` when this fast path does not apply (see the module doc)."""
    if not available():
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
    if not _count_pairs(gt_raw, pred_raw, height, width, hist):
        return None
    return hist.reshape(256, 256)


def value_histogram(data: bytes) -> np.ndarray | None:
    """``int64 (256,)`` counts of each value over the pixels of one PNG file's bytes (what
    :func:`bddseg.masks.histogram` gives for the decoded mask), or ``None`` when this fast
    path does not apply (see the module doc)."""
    if not available():
        return None
    layout = _layout(data)
    if layout is None:
        return None
    width, height, stream = layout
    raw = _inflate(stream, height * (width + 1))
    if raw is None:
        return None
    hist = np.zeros(256, np.int64)
    return hist if _count_values(raw, height, width, hist) else None


__all__ = ["available", "joint_histogram", "value_histogram", "warm"]
