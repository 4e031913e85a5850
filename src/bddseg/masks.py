"""Reading PNG masks (and PNG bytes in general): the one decoder, torch-free; and the one
writer of mask PNGs (:func:`write_mask`).

Training, ``data check``, evaluation and the report all read masks through
:func:`read_mask`: the chunk CRCs are checked first (neither Pillow's decoder, nor libspng as
pyspng drives it, nor the official evaluator checks them: one flipped byte in 13-19% of our
corruption trials decoded into wrong labels without an error, benchmarks/RESULTS.md), and the
chunk structure (:func:`png_chunks`: one 13-byte IHDR, consecutive IDATs, no animation, a zlib
header zlib accepts: readers differ on files that break these, a second IHDR resizes Pillow's
image, so bddseg refuses them and :mod:`bddseg.fastpng` never sees them), then libspng
(``pyspng``) decodes the common case, an 8-bit grayscale PNG, about twice as fast as Pillow;
Pillow decodes the rest (palette PNGs, read as their indices like the official masks) or names
the problem. A dataset's class set (:class:`bddseg.classes.Classes`, BDD100K by default)
says which raw values a ground-truth mask may hold and maps them to train ids right after
decoding (:func:`read_mask_counts`, :func:`remap_histogram`). Importing this module does not
import torch (1.4 s of start-up, more
than scoring 1,000 pairs).
"""

from __future__ import annotations

import functools
import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from bddseg.classes import BDD100K, INVALID, Classes
from bddseg.errors import BddsegError
from bddseg.files import atomic_path
from bddseg.labels import IGNORE_VALUE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 16384  # refuse to allocate for absurd PNG headers (a corrupt or hostile file)
_PNG_COLOR = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


def read_bytes(path: str | Path, what: str) -> bytes:
    """The file's bytes; a missing, unreadable or empty file is a :class:`BddsegError`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BddsegError(f"{what} not found", path) from None
    except OSError as e:
        raise BddsegError(f"cannot read {what} ({e.strerror or e})", path) from None
    if not data:
        raise BddsegError(f"cannot decode {what}: the file is empty (0 bytes)", path)
    return data


def png_chunks(data: bytes) -> tuple[list[tuple[bytes, memoryview]], str | None]:
    """The chunks ``(kind, body)`` of a PNG's bytes, up to ``IEND``, and what is wrong with
    them (:func:`png_problem`): ``None`` for a sound file, whose first chunk is then its one
    13-byte ``IHDR`` and whose ``IDAT`` chunks are consecutive and hold a zlib stream with a
    sound header. ``([], None)`` for a non-PNG."""
    if data[:8] != PNG_SIGNATURE:
        return [], None
    chunks, view, i = [], memoryview(data), 8
    while i + 12 <= len(data):
        end = i + 12 + int.from_bytes(view[i : i + 4], "big")
        if end > len(data):
            break
        kind = bytes(view[i + 4 : i + 8])
        if zlib.crc32(view[i + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return chunks, f"its {_name(kind)} chunk fails its CRC check (the file is corrupt)"
        if not kind.isalpha():  # ASCII letters (bytes.isalpha)
            return chunks, f"it has a chunk named {kind!r}, not 4 letters (the file is corrupt)"
        chunks.append((kind, view[i + 8 : end - 4]))
        if kind == b"IEND":
            return chunks, _structure_problem(chunks)
        i = end
    return chunks, "the file is truncated (it ends before the IEND chunk)"


def _name(kind: bytes) -> str:
    return kind.decode("ascii") if kind.isalpha() else repr(kind)


_IHDR_METHODS = ("compression", "filter", "interlace")
_CRITICAL = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
_ANIMATION = (b"acTL", b"fcTL", b"fdAT")  # APNG: Pillow and libspng differ on which frame


def _structure_problem(chunks: list[tuple[bytes, memoryview]]) -> str | None:
    """What breaks the PNG spec's chunk rules (section 5.6) that decoders read differently,
    for chunks whose CRCs hold: one reading of every file, whichever decoder gets it. Pillow,
    libspng and zlib each tolerate some of these (a second IHDR resizes Pillow's image; ISA-L
    inflates a zlib stream with a 2^23-byte window)."""
    kinds = [kind for kind, _ in chunks]
    if kinds[0] != b"IHDR":
        return f"its first chunk is {_name(kinds[0])}, not IHDR (the file is corrupt)"
    if len(chunks[0][1]) != 13:
        return f"its IHDR chunk is {len(chunks[0][1])} bytes, not 13 (the file is corrupt)"
    if kinds.count(b"IHDR") > 1:
        return f"it has {kinds.count(b'IHDR')} IHDR chunks, not one (the file is corrupt)"
    for field, value, most in zip(_IHDR_METHODS, chunks[0][1][10:13], (0, 0, 1), strict=True):
        if value > most:
            return f"its IHDR chunk names {field} method {value}, which PNG does not define"
    for kind in kinds:
        if kind in _ANIMATION:
            return f"it is an animated PNG ({_name(kind)} chunk); only single images are read"
        if kind[0] & 0x20 == 0 and kind not in _CRITICAL:  # an uppercase first letter
            return f"it has an unknown critical chunk {_name(kind)} (not a standard PNG)"
    for kind, body in chunks:
        if kind == b"PLTE" and not (len(body) % 3 == 0 and 3 <= len(body) <= 768):
            return f"its PLTE chunk is {len(body)} bytes, not 1 to 256 RGB entries of 3 bytes"
    idat = [i for i, kind in enumerate(kinds) if kind == b"IDAT"]
    if not idat:
        return "it has no IDAT chunk (no image data; the file is corrupt)"
    other = next((kinds[i] for i in range(idat[0], idat[-1]) if kinds[i] != b"IDAT"), None)
    if other is not None:
        return f"its IDAT chunks are split by a {_name(other)} chunk (they must be consecutive)"
    return _zlib_problem(b"".join(bytes(chunks[i][1][:2]) for i in idat)[:2])


def _zlib_problem(header: bytes) -> str | None:
    """What is wrong with the two header bytes of a PNG's zlib stream (RFC 1950, 2.2)."""
    if len(header) < 2:
        return "its image data is cut short (the IDAT chunks hold no zlib header)"
    cmf, flg = header
    if cmf & 0x0F != 8:
        return f"its image data's zlib header names method {cmf & 0x0F}, not deflate (8)"
    if cmf >> 4 > 7:
        return (
            f"its image data's zlib header asks for a 2^{(cmf >> 4) + 8}-byte window (2^15 at most)"
        )
    if (cmf << 8 | flg) % 31:
        return "its image data's zlib header fails its check bits (the file is corrupt)"
    if flg & 0x20:
        return "its image data's zlib stream asks for a preset dictionary (PNG has none)"
    return None


def png_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure (a chunk whose CRC does not match, a file
    cut short before ``IEND``, and the rules of :func:`png_chunks`); ``None`` for a sound file
    or a non-PNG. A few microseconds per mask."""
    return png_chunks(data)[1]


def open_png(data: bytes, path: str | Path | None, what: str) -> Image.Image:
    """PNG bytes, CRC-checked, decoded by Pillow (loaded). Any PNG colour type."""
    problem = png_problem(data)
    if problem:
        raise BddsegError(f"cannot decode {what}: {problem}", path)
    return _pillow(data, path, what)


def _pillow(data: bytes, path: str | Path | None, what: str) -> Image.Image:
    """Pillow's decoding of PNG bytes whose CRCs were checked."""
    try:
        im = Image.open(io.BytesIO(data), formats=["PNG"])
        im.load()
        return im
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        detail = str(e).splitlines()[0][:100] if str(e) else e.__class__.__name__
        raise BddsegError(
            f"cannot decode {what}: the file is truncated or corrupt ({detail})", path
        ) from None


def _check_header(data: bytes, path: str | Path | None, what: str) -> tuple[int, int, int]:
    """``(width, height, colour type)`` of a soundly built single-channel 8-bit PNG; else the
    problem."""
    if data[:8] != PNG_SIGNATURE:
        raise BddsegError(f"{what} is not a PNG file (masks must be lossless PNGs)", path)
    problem = png_problem(data)
    if problem:
        raise BddsegError(f"cannot decode {what}: {problem}", path)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, color = data[24], data[25]  # the first chunk is a 13-byte IHDR (png_problem)
    if color not in (0, 3):
        kind = _PNG_COLOR.get(color, f"color type {color}")
        raise BddsegError(f"{what} is {kind}; masks must be single-channel 8-bit train ids", path)
    if depth != 8 and not (color == 3 and depth < 8):  # a small palette packs its indices
        raise BddsegError(f"{what} is {depth}-bit; masks must be single-channel 8-bit", path)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise BddsegError(f"{what} size {width}x{height} is outside 1..{MAX_SIDE}", path)
    return width, height, color


def _spng_gray8(data: bytes, width: int, height: int) -> np.ndarray | None:
    """libspng's decoding of a (CRC-checked) 8-bit grayscale PNG, or ``None`` when pyspng is
    missing or refuses the file (Pillow then decodes it or names the problem)."""
    try:
        import pyspng
    except ImportError:
        return None
    try:
        array = pyspng.load(data)
    except Exception:  # noqa: BLE001 - any refusal: Pillow decides and names the problem
        return None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8 or array.shape != (height, width):
        return None
    return array


def decode_mask(data: bytes, path: str | Path | None = None, what: str = "mask") -> np.ndarray:
    """PNG bytes -> ``uint8 (H, W)``: an 8-bit grayscale PNG, or a palette PNG read as its
    indices. Checks the chunk structure (:func:`png_chunks`), the CRCs and the header; values
    are not checked (see :func:`bad_values`)."""
    width, height, color = _check_header(data, path, what)
    if color == 0:
        fast = _spng_gray8(data, width, height)
        if fast is not None:
            return fast
    im = _pillow(data, path, what)  # CRCs checked above
    if im.mode not in ("L", "P"):  # the header said 8-bit grayscale or palette
        raise BddsegError(f"{what} decodes to mode {im.mode}, not 8-bit grayscale", path)
    return np.asarray(im)


def histogram(mask: np.ndarray) -> np.ndarray:
    """``int64 (256,)`` counts of each value (numpy's bincount: single-threaded and fast)."""
    return np.bincount(mask.ravel(), minlength=256)


def bad_values(counts: np.ndarray, classes: Classes = BDD100K) -> list[int]:
    """Values with a nonzero count that ``classes`` does not allow: for BDD100K neither a
    train id (0..18) nor 255; for a set with a ``mapping``, raw values it does not name
    (:meth:`~bddseg.classes.Classes.lut` marks them :data:`~bddseg.classes.INVALID`)."""
    if classes.identity:  # train ids 0..K-1 and 255: one slice, as fast as ever
        k = classes.num
        return (np.flatnonzero(counts[k:IGNORE_VALUE]) + k).tolist()
    return np.flatnonzero((counts[:256] != 0) & _luts(classes)[1]).tolist()


@functools.lru_cache(maxsize=16)
def _luts(classes: Classes) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 (256,) raw value -> train id or 255, bool (256,) invalid)`` of a class set
    (built once per set: :meth:`Classes.lut` builds a new table on every call)."""
    lut = classes.lut()
    invalid = lut == INVALID
    table = np.where(invalid, IGNORE_VALUE, lut).astype(np.uint8)
    table.flags.writeable = False
    invalid.flags.writeable = False
    return table, invalid


def format_values(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:10])
    return shown + (f" and {len(values) - 10} more" if len(values) > 10 else "")


def check_counts(
    counts: np.ndarray, path: str | Path | None, what: str = "mask", classes: Classes = BDD100K
) -> np.ndarray:
    """``counts`` (a mask's raw value histogram, ``(256,)``) when ``classes`` allows all its
    values; else the error naming the file and the values: ``mask has invalid values 19, 40
    (valid: 0..18 and 255)``. The counts come back unchanged (raw values; see
    :func:`remap_histogram` for train ids)."""
    bad = bad_values(counts, classes)
    if bad:
        raise BddsegError(
            f"{what} has invalid values {format_values(bad)} (valid: {classes.valid_values()})",
            path,
        )
    return counts


def remap_histogram(
    hist: np.ndarray,
    classes: Classes = BDD100K,
    axis: int = 0,
    path: str | Path | None = None,
    what: str = "mask",
) -> np.ndarray:
    """A histogram over raw mask values -> the same over train ids, through ``classes.lut()``.

    ``hist``: ``int64 (256,)`` (a mask's value counts, :func:`histogram`) or ``(256, 256)``
    (a joint ``[truth, prediction]`` histogram, :func:`bddseg.fastpng.joint_histogram`);
    ``axis``: the raw axis (the truth's, 0, for a joint histogram; the other axis is kept as
    it is). Returns an array of the same shape and dtype whose index ``t`` along ``axis``
    holds the counts of every raw value mapped to train id ``t`` (0..K-1, or 255 for the
    ignored ones); other indices hold 0. For an identity set (BDD100K, a class file without
    ``mapping``) the values are only checked and ``hist`` itself comes back (no copy).

    Raises:
        BddsegError: a raw value with a nonzero count that ``classes`` does not allow, listed
            as :func:`check_counts` lists it (naming ``path`` when given).
    """
    marginal = hist if hist.ndim == 1 else hist.sum(axis=1 - axis)
    check_counts(marginal, path, what, classes)
    if classes.identity:
        return hist
    table = _luts(classes)[0]
    moved = np.moveaxis(hist, axis, 0)
    out = np.zeros_like(moved)
    for raw in np.flatnonzero(marginal).tolist():  # a few dozen values at most: row adds
        out[table[raw]] += moved[raw]
    return np.moveaxis(out, 0, axis)


def map_mask(mask: np.ndarray, classes: Classes = BDD100K) -> np.ndarray:
    """``uint8 (H, W)`` raw values -> train ids (0..K-1, 255) through ``classes.lut()``;
    ``mask`` itself for an identity set. Values should be checked first (:func:`check_counts`):
    a value the set does not allow comes out as 255 here."""
    return mask if classes.identity else _luts(classes)[0][mask]


def read_mask_counts(
    path: str | Path, what: str = "mask", classes: Classes = BDD100K
) -> tuple[np.ndarray, np.ndarray]:
    """A validated mask and its value histogram ``int64 (256,)``, both in train ids: the raw
    values checked against ``classes`` (BDD100K: 0..18 and 255), then mapped through its
    lookup table when it has a ``mapping`` (Cityscapes labelIds: 7 -> 0, 26 -> 13, 0 -> 255)."""
    mask = decode_mask(read_bytes(path, what), path, what)
    counts = check_counts(histogram(mask), path, what, classes)
    if classes.identity:
        return mask, counts
    return map_mask(mask, classes), remap_histogram(counts, classes, 0, path, what)


def read_mask(
    path: str | Path,
    what: str = "mask",
    check_values: bool = True,
    classes: Classes = BDD100K,
) -> np.ndarray:
    """Read a mask file to ``uint8 (H, W)``.

    ``check_values``: a ground-truth mask, whose raw values must be those ``classes`` allows
    (BDD100K: 0..18 and 255; a class set with a ``mapping``: the raw values it names) and
    which comes back in train ids (0..K-1, 255; mapped through ``classes.lut()``). Without
    it: a prediction, read as it is (train ids already; it may hold K, ``unknown``, or
    anything else, which the metrics count as misses); ``classes`` is not used.

    Raises:
        BddsegError: missing, empty, truncated or corrupt (a CRC), not a PNG, not single-channel
            8-bit (RGB, 16-bit, ...), or (``check_values``) values ``classes`` does not allow.
    """
    if check_values:
        return read_mask_counts(path, what, classes)[0]
    return decode_mask(read_bytes(path, what), path, what)


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write ``mask`` (uint8 ``(H, W)``, train ids) to ``path`` as an 8-bit grayscale PNG,
    atomically: the masks of ``bddseg predict`` and ``bddseg evaluate --checkpoint``, so the
    two are the same bytes; :func:`read_mask` reads them back."""
    with atomic_path(path) as tmp:
        Image.fromarray(mask).save(tmp, format="PNG")  # uint8 (H, W): mode L


__all__ = [
    "MAX_SIDE",
    "PNG_SIGNATURE",
    "bad_values",
    "check_counts",
    "decode_mask",
    "format_values",
    "histogram",
    "map_mask",
    "open_png",
    "png_chunks",
    "png_problem",
    "read_bytes",
    "read_mask",
    "read_mask_counts",
    "remap_histogram",
    "write_mask",
]
