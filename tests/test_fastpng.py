"""bddseg.fastpng: the native joint histogram of two PNG masks equals what the general decoder
(libspng / Pillow) and numpy count, for every PNG row filter; anything else is left to it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bddseg import fastpng, masks, metrics


def test_the_kernel_is_built():
    """``make`` builds ``src/bddseg/_fastpng.c`` at install (any C99 compiler): the rest of this
    file tests it, so it must be there (without it bddseg still works, through pyspng)."""
    assert fastpng.available(), "bddseg._fastpng was not built: is a C compiler installed?"


# ---------------------------------------------------------------- a PNG writer with chosen filters
def _filter_row(kind: int, row: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """PNG filter ``kind`` (spec 9.2) applied to one row of 1-byte pixels."""
    x, b = row.astype(np.int32), prev.astype(np.int32)
    a = np.concatenate([[0], x[:-1]])
    c = np.concatenate([[0], b[:-1]])
    if kind == 0:
        pred = 0
    elif kind == 1:
        pred = a
    elif kind == 2:
        pred = b
    elif kind == 3:
        pred = (a + b) // 2
    else:
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    return ((x - pred) % 256).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode(
    mask: np.ndarray,
    filters: list[int],
    color: int = 0,
    interlace: int = 0,
    raw: bytes | None = None,
    stream: bytes | None = None,
) -> bytes:
    """PNG bytes of a uint8 mask whose row ``y`` uses ``filters[y % len(filters)]``; the IDAT
    stream is split over two chunks. ``raw``/``stream``: the filtered rows / the zlib
    stream to store instead (for broken files with sound CRCs)."""
    h, w = mask.shape
    if raw is None:
        rows, prev = [], np.zeros(w, np.uint8)
        for y in range(h):
            kind = filters[y % len(filters)]
            rows.append(bytes([kind]) + _filter_row(kind, mask[y], prev).tobytes())
            prev = mask[y]
        raw = b"".join(rows)
    z = zlib.compress(raw, 6) if stream is None else stream
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, interlace))]
    if color == 3:
        chunks.append(_chunk(b"PLTE", bytes(range(256)) * 3))
    chunks += [_chunk(b"IDAT", z[: len(z) // 2]), _chunk(b"IDAT", z[len(z) // 2 :])]
    return masks.PNG_SIGNATURE + b"".join(chunks) + _chunk(b"IEND", b"")


def street(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky classes with slanted edges, 255 areas and a band of pure noise (every Paeth
    branch: the row above is anything but flat there)."""
    yy, xx = np.mgrid[:h, :w]
    m = rng.integers(0, 19, (h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    m = np.where(xx + 2 * yy < rng.integers(w // 3, w), m, rng.integers(0, 19))
    m[rng.random((h, w)) < 0.02] = 255
    m[h // 2 : h // 2 + 3] = rng.integers(0, 256, (3, w))
    return m.astype(np.uint8)


def reference(gt: bytes, pred: bytes) -> np.ndarray:
    return metrics.value_histogram(masks.decode_mask(pred), masks.decode_mask(gt))


# ---------------------------------------------------------------- same counts
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]])
@pytest.mark.parametrize("seed", range(4))
def test_every_row_filter_gives_the_decoders_counts(filters, seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(9, 40)), int(rng.integers(1, 70))
    gt, pred = street(rng, h, w), street(rng, h, w)
    mixed = list(rng.permutation(filters))
    gt_png, pred_png = encode(gt, filters), encode(pred, mixed, color=3 if seed % 2 else 0)
    assert (masks.decode_mask(gt_png) == gt).all()  # the writer above is a sound PNG writer
    assert (masks.decode_mask(pred_png) == pred).all()
    hist = fastpng.joint_histogram(gt_png, pred_png)
    assert hist is not None and hist.dtype == np.int64 and hist.shape == (256, 256)
    assert (hist == reference(gt_png, pred_png)).all()
    assert hist.sum() == h * w
    for png, mask in ((gt_png, gt), (pred_png, pred)):  # one mask's counts
        counts = fastpng.value_histogram(png)
        assert counts is not None and counts.shape == (256,)
        assert (counts == np.bincount(mask.ravel(), minlength=256)).all()


def runs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rows of runs of 1 to 30 pixels of a few values; each row repeats the one above, shifts
    it or is new. The kernel's 8-bytes-at-a-time shortcuts (a run, a zero filtered block, a
    flat row above) then start and stop at every offset of a word."""
    m = np.empty((h, w), np.uint8)
    for y in range(h):
        choice = rng.integers(3) if y else 2
        if choice == 0:
            m[y] = m[y - 1]
        elif choice == 1:
            m[y] = np.roll(m[y - 1], int(rng.integers(-3, 4)))
        else:
            lengths = rng.integers(1, 31, w)
            m[y] = np.repeat(rng.choice([0, 1, 7, 18, 255], w), lengths)[:w]
    return m


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 1, 2]])
def test_runs_at_every_offset(filters):
    rng = np.random.default_rng(len(filters) * 10 + filters[0])
    for w in [*range(1, 42), 63, 64, 65, 200]:
        h = int(rng.integers(1, 12))
        gt, pred = runs(rng, h, w), runs(rng, h, w)
        pred[: h // 2] = gt[: h // 2]  # same runs in both (the joint count's long runs)
        gt_png, pred_png = encode(gt, filters), encode(pred, filters[::-1])
        expected = np.zeros((256, 256), np.int64)
        np.add.at(expected, (gt.ravel(), pred.ravel()), 1)
        assert (fastpng.joint_histogram(gt_png, pred_png) == expected).all(), w
        assert (fastpng.value_histogram(gt_png) == np.bincount(gt.ravel(), minlength=256)).all()


def test_pillows_own_pngs(tmp_path):
    """Pillow picks a filter per row itself (as for the official masks); palette PNGs read as
    indices, like the general decoder."""
    rng = np.random.default_rng(7)
    gt, pred = street(rng, 72, 128), street(rng, 72, 128)
    buf_gt, buf_pred = io.BytesIO(), io.BytesIO()
    Image.fromarray(gt).save(buf_gt, format="PNG")
    pal = Image.frombytes("P", (128, 72), pred.tobytes())
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    pal.save(buf_pred, format="PNG")
    gt_png, pred_png = buf_gt.getvalue(), buf_pred.getvalue()
    assert (fastpng.joint_histogram(gt_png, pred_png) == reference(gt_png, pred_png)).all()


def test_real_val_masks(val_masks):
    """The official masks as truth, each against another official mask as the prediction."""
    files = val_masks[:12]
    assert len(files) == 12
    for a, b in zip(files, files[1:] + files[:1], strict=True):
        gt_png, pred_png = a.read_bytes(), b.read_bytes()
        hist = fastpng.joint_histogram(gt_png, pred_png)
        assert hist is not None, a
        assert (hist == reference(gt_png, pred_png)).all(), a


# ---------------------------------------------------------------- left to the general decoder
def _cases() -> dict[str, tuple[bytes, bytes]]:
    rng = np.random.default_rng(3)
    m = street(rng, 16, 24)
    good = encode(m, [4, 2, 1])
    rows = b"".join(bytes([0]) + m[y].tobytes() for y in range(16))
    bad_filter = bytearray(rows)
    bad_filter[5 * 25] = 5
    flipped_crc = bytearray(good)
    flipped_crc[-20] ^= 1  # inside the last IDAT chunk: its CRC no longer holds
    buf16, buf_rgb = io.BytesIO(), io.BytesIO()
    Image.fromarray(m.astype(np.uint16) * 257).save(buf16, format="PNG")
    Image.fromarray(np.dstack([m, m, m])).save(buf_rgb, format="PNG")
    z = zlib.compress(rows)
    return {
        "sizes differ": (good, encode(m[:, :20], [0])),
        "16-bit": (good, buf16.getvalue()),
        "RGB": (buf_rgb.getvalue(), good),
        "interlaced": (good, encode(m, [0], interlace=1)),
        "filter type 5": (good, encode(m, [0], raw=bytes(bad_filter))),
        "stream one row short": (good, encode(m, [0], raw=rows[:-25])),
        "stream one row long": (encode(m, [0], raw=rows + rows[:25]), good),
        "stream cut": (good, encode(m, [0], stream=z[: len(z) // 2])),
        "stream without its checksum": (good, encode(m, [0], stream=z[:-4])),
        "stream corrupt": (good, encode(m, [0], stream=z[:2] + bytes(len(z) - 2))),
        "a chunk's CRC": (bytes(flipped_crc), good),
        "not a PNG": (good, b"\xff\xd8\xff\xe0 a JPEG"),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_anything_else_is_left_to_the_general_decoder(case):
    gt, pred = _cases()[case]
    assert fastpng.joint_histogram(gt, pred) is None
    if case != "sizes differ":  # one of the two files is the odd one
        assert fastpng.value_histogram(gt) is None or fastpng.value_histogram(pred) is None


def test_without_the_kernel_nothing_runs(monkeypatch):
    png = encode(np.zeros((3, 4), np.uint8), [0])
    assert fastpng.joint_histogram(png, png) is not None
    monkeypatch.setattr(fastpng, "_fastpng", None)  # as where it could not be built
    assert not fastpng.available()
    assert fastpng.joint_histogram(png, png) is None and fastpng.value_histogram(png) is None


def test_the_kernel_checks_its_arguments():
    kernel, hist, pairs = fastpng._fastpng, np.zeros(256, np.int64), np.zeros(65536, np.int64)
    with pytest.raises(ValueError, match="must be 12 bytes, got 11"):
        kernel.count_values(bytes(11), 3, 3, hist)
    with pytest.raises(ValueError, match="must be 12 bytes, got 13"):
        kernel.count_pairs(bytes(12), bytes(13), 3, 3, pairs)
    with pytest.raises(ValueError, match="hist must be 256 int64"):
        kernel.count_values(bytes(12), 3, 3, hist[:255])
    with pytest.raises(ValueError, match="hist must be 65536 int64"):
        kernel.count_pairs(bytes(12), bytes(12), 3, 3, hist)
    with pytest.raises(ValueError, match="height and width"):
        kernel.count_values(b"", 0, 3, hist)
    with pytest.raises(TypeError):  # read-only
        kernel.count_values(bytes(12), 3, 3, bytes(256 * 8))
    assert kernel.count_values(bytes(12), 3, 3, hist) and hist[0] == 9


def _misaligned(n: int) -> np.ndarray:
    """``n`` int64 values that start one byte past an 8-byte boundary."""
    base = np.zeros(n * 8 + 16, np.uint8)
    start = (-base.ctypes.data) % 8 + 1
    array = np.ndarray((n,), np.int64, buffer=base, offset=start)
    assert not array.flags.aligned
    return array


@pytest.mark.parametrize(
    "hist, error, match",
    [
        (np.zeros(256, np.float64), TypeError, "int64 array .*format 'd'"),
        (np.zeros(256, np.uint64), TypeError, "int64 array"),
        (np.zeros(512, np.int32), TypeError, "int64 array"),
        (np.zeros(256, ">i8"), TypeError, "int64 array"),  # the other byte order
        (np.zeros(2048, np.uint8), TypeError, "int64 array"),
        (bytearray(2048), TypeError, "int64 array"),
        (None, TypeError, "read-only"),  # a read-only int64 array, made below
        (np.zeros((256, 2), np.int64)[:, 0], ValueError, "C-contiguous"),
        (np.zeros((16, 16), np.int64, order="F"), ValueError, "C-contiguous"),
        (_misaligned(256), ValueError, "8-byte aligned"),
        (np.zeros(257, np.int64), ValueError, "256 int64 values, got 2056 bytes"),
    ],
)
def test_the_kernel_checks_its_hist(hist, error, match):
    """The kernel stores int64 counts straight into ``hist``: anything but a writable,
    C-contiguous, aligned int64 buffer of the right size is refused before a byte is
    written (the old ``w*`` took any writable bytes: a float64 array got int64 bit patterns,
    a misaligned one undefined behaviour)."""
    if hist is None:  # a read-only int64 array
        hist = np.zeros(256, np.int64)
        hist.flags.writeable = False
    before = np.array(hist, copy=True) if isinstance(hist, np.ndarray) else bytes(hist)
    with pytest.raises(error, match=match):
        fastpng._fastpng.count_values(bytes(12), 3, 3, hist)
    after = np.asarray(hist) if isinstance(hist, np.ndarray) else bytes(hist)
    assert (np.asarray(after) == np.asarray(before)).all()


def test_the_kernel_takes_any_native_int64_buffer():
    """A (256, 256) array (what joint_histogram passes), a flat one, and a ``memoryview``
    of format ``q``: all native int64, C-contiguous and aligned."""
    kernel = fastpng._fastpng
    square = np.zeros((256, 256), np.int64)
    assert kernel.count_pairs(bytes(12), bytes(12), 3, 3, square) and square[0, 0] == 9
    raw = bytearray(256 * 8)
    assert kernel.count_values(bytes(12), 3, 3, memoryview(raw).cast("q"))
    assert np.frombuffer(raw, np.int64)[0] == 9
    little = np.zeros(256, "<i8") if np.little_endian else np.zeros(256, ">i8")
    assert kernel.count_values(bytes(12), 3, 3, little) and little[0] == 9
