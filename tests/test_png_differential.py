"""The evaluator's two readings of a PNG mask agree: the native fast path
(:mod:`bddseg.fastpng`) gives the general decoder's counts (:func:`bddseg.masks.decode_mask`)
or hands the file over, so a score never depends on whether the kernel was built.

A seeded fuzz run mutates sound mask PNGs (chunks duplicated, moved, dropped; IHDR lengths and
sizes; chunks between IDATs; zlib header bytes; animation chunks; bit flips with the CRC fixed
up or not; truncations) and feeds each file to both; ``benchmarks/fuzz_png.py`` runs the same
engine for longer. Then each malformed structure the fuzzing found is refused by
``bddseg evaluate`` with one line naming the file, with the kernel and without it.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image
from test_fastpng import encode, runs, street

from bddseg import cli, evaluate, fastpng, masks
from bddseg.errors import BddsegError

Chunk = tuple[bytes, bytes]


# ---------------------------------------------------------------- PNG chunks as a list
def split_chunks(png: bytes) -> list[Chunk]:
    """``(kind, body)`` of each chunk of a sound PNG (CRCs dropped: :func:`join_chunks` makes
    them anew, so a mutation never fails on a CRC unless it means to)."""
    out, i = [], 8
    while i + 12 <= len(png):
        n = int.from_bytes(png[i : i + 4], "big")
        out.append((png[i + 4 : i + 8], png[i + 8 : i + 8 + n]))
        i += 12 + n
    return out


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def join_chunks(chunks: list[Chunk]) -> bytes:
    return masks.PNG_SIGNATURE + b"".join(chunk(k, b) for k, b in chunks)


def ihdr(width: int, height: int, color: int = 0) -> bytes:
    return struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)


def with_zlib_header(chunks: list[Chunk], cmf: int, flg: int | None = None) -> list[Chunk]:
    """The zlib stream's two header bytes (the start of the IDAT bodies) replaced, the chunk
    lengths kept; ``flg=None``: its check bits fixed up for ``cmf`` (so only the field under
    test is wrong)."""
    stream = b"".join(b for k, b in chunks if k == b"IDAT")
    if len(stream) < 2:
        return chunks
    if flg is None:
        flg = stream[1] & 0xE0
        flg |= (31 - (cmf * 256 + flg) % 31) % 31
    stream, out = bytes([cmf, flg]) + stream[2:], []
    for kind, body in chunks:
        if kind == b"IDAT":
            body, stream = stream[: len(body)], stream[len(body) :]
        out.append((kind, body))
    return out


def between_idats(chunks: list[Chunk], extra: Chunk) -> list[Chunk]:
    """``extra`` inserted between two IDATs (the stream split in two first if it is one)."""
    i = next(i for i, (k, _) in enumerate(chunks) if k == b"IDAT")
    if i + 1 >= len(chunks) or chunks[i + 1][0] != b"IDAT":
        body = chunks[i][1]
        chunks = [*chunks[:i], (b"IDAT", body[:3]), (b"IDAT", body[3:]), *chunks[i + 1 :]]
    return [*chunks[: i + 1], extra, *chunks[i + 1 :]]


def actl_fctl(width: int, height: int) -> list[Chunk]:
    """An APNG's animation control and first frame control (a frame a quarter of the image,
    at an offset) as they come before the IDAT."""
    fctl = struct.pack(
        ">IIIIIHHBB", 0, width // 2, height // 2, width // 4, height // 4, 1, 1, 0, 0
    )
    return [(b"acTL", struct.pack(">II", 2, 0)), (b"fcTL", fctl)]


# ---------------------------------------------------------------- sound masks to start from
def sound_masks(rng: np.random.Generator) -> list[bytes]:
    """A few small sound mask PNGs: our writer with each filter, Pillow's own (gray and
    palette), one in many IDATs, and the same with ancillary chunks around them (which the
    kernel leaves to the general decoder)."""
    out = []
    for filters in ([0], [1], [2], [3], [4], [0, 1, 2, 3, 4]):
        h, w = int(rng.integers(2, 24)), int(rng.integers(1, 40))
        m = street(rng, h, w) if h >= 8 else runs(rng, h, w)
        out.append(encode(m, filters, color=3 if rng.random() < 0.3 else 0))
    m = street(rng, 20, 33)
    for mode in ("L", "P"):
        buf = io.BytesIO()
        Image.frombytes(mode, (33, 20), m.tobytes()).save(buf, format="PNG")
        out.append(buf.getvalue())
    chunks = split_chunks(encode(m, [4, 1]))
    stream = b"".join(b for k, b in chunks if k == b"IDAT")
    pieces = [(b"IDAT", stream[j : j + 7]) for j in range(0, len(stream), 7)]
    out.append(join_chunks([chunks[0], *pieces, (b"IEND", b"")]))
    head = [chunks[0], (b"gAMA", struct.pack(">I", 45455)), (b"tEXt", b"Software\0bddseg")]
    out.append(join_chunks([*head, *pieces, (b"tIME", bytes(7)), (b"IEND", b"")]))
    return out


# ---------------------------------------------------------------- mutations
def _pick(rng, chunks):
    return int(rng.integers(len(chunks)))


def _duplicate(rng, chunks):
    i, j = _pick(rng, chunks), _pick(rng, chunks)
    return [*chunks[:j], chunks[i], *chunks[j:]]


def _move(rng, chunks):
    chunks = list(chunks)
    c = chunks.pop(_pick(rng, chunks))
    chunks.insert(_pick(rng, chunks) if chunks else 0, c)
    return chunks


def _drop(rng, chunks):
    i = _pick(rng, chunks)
    return chunks[:i] + chunks[i + 1 :]


def _ihdr_at(chunks: list[Chunk]) -> int | None:
    return next((i for i, (k, b) in enumerate(chunks) if k == b"IHDR" and len(b) >= 8), None)


def _ihdr_length(rng, chunks):
    i = _ihdr_at(chunks)
    if i is None:
        return chunks
    body = chunks[i][1]
    body = body[: int(rng.integers(0, 13))] if rng.random() < 0.5 else body + bytes([7]) * 2
    return [*chunks[:i], (b"IHDR", body), *chunks[i + 1 :]]


def _ihdr_field(rng, chunks):
    """A second IHDR one row (or one column) smaller, or one IHDR byte changed."""
    i = _ihdr_at(chunks)
    if i is None:
        return chunks
    body = chunks[i][1]
    w, h = struct.unpack(">II", body[:8])
    if rng.random() < 0.4:
        size = (w, max(h - 1, 0)) if rng.random() < 0.7 else (max(w - 1, 0), h)
        return [*chunks[: i + 1], (b"IHDR", struct.pack(">II", *size) + body[8:]), *chunks[i + 1 :]]
    body = bytearray(body)
    k = int(rng.integers(len(body)))
    body[k] = int(rng.choice([0, 1, 2, 3, 4, 6, 8, 16, body[k] ^ 1, int(rng.integers(256))]))
    return [*chunks[:i], (b"IHDR", bytes(body)), *chunks[i + 1 :]]


def _between_idats(rng, chunks):
    if not any(k == b"IDAT" for k, _ in chunks):
        return chunks
    kind = [b"tEXt", b"IHDR", b"PLTE", b"fdAT", b"zzZz", b"IEND"][int(rng.integers(6))]
    return between_idats(chunks, (kind, bytes(int(rng.integers(0, 14)))))


def _zlib_header(rng, chunks):
    if rng.random() < 0.6:  # a field changed, the check bits fixed up
        cmf = int(rng.integers(16)) << 4 | (8 if rng.random() < 0.8 else int(rng.integers(16)))
        return with_zlib_header(chunks, cmf)
    return with_zlib_header(chunks, int(rng.integers(256)), int(rng.integers(256)))


def _animation(rng, chunks):
    i = _ihdr_at(chunks)
    w, h = (4, 4) if i is None else struct.unpack(">II", chunks[i][1][:8])
    extra = actl_fctl(w, h)
    if rng.random() < 0.3:
        extra.append((b"fdAT", struct.pack(">I", 1) + zlib.compress(bytes(4))))
    i = int(rng.integers(1, len(chunks) + 1))
    return [*chunks[:i], *extra[: int(rng.integers(1, len(extra) + 1))], *chunks[i:]]


def _chunk_bits(rng, chunks):
    """A bit flipped in a chunk's kind or body, its CRC made to match."""
    i = _pick(rng, chunks)
    kind, body = chunks[i]
    if rng.random() < 0.25 or not body:
        kind = bytearray(kind)
        kind[int(rng.integers(4))] ^= 1 << int(rng.integers(8))
        return [*chunks[:i], (bytes(kind), body), *chunks[i + 1 :]]
    body = bytearray(body)
    body[int(rng.integers(len(body)))] ^= 1 << int(rng.integers(8))
    return [*chunks[:i], (kind, bytes(body)), *chunks[i + 1 :]]


def _resize(rng, chunks):
    """A chunk's body cut short or made longer (PLTE, gAMA, tRNS, IHDR, IDAT, ...)."""
    i = _pick(rng, chunks)
    kind, body = chunks[i]
    n = int(rng.integers(0, len(body) + 1)) if rng.random() < 0.5 else len(body) + 3
    return [*chunks[:i], (kind, (body + bytes(3))[:n]), *chunks[i + 1 :]]


def _split_idat(rng, chunks):
    """Harmless: one IDAT split in two at any point (an empty half included)."""
    idat = [i for i, (k, _) in enumerate(chunks) if k == b"IDAT"]
    if not idat:
        return chunks
    i = idat[int(rng.integers(len(idat)))]
    body = chunks[i][1]
    j = int(rng.integers(len(body) + 1))
    return [*chunks[:i], (b"IDAT", body[:j]), (b"IDAT", body[j:]), *chunks[i + 1 :]]


def _ancillary(rng, chunks):
    """Harmless unless it lands between IDATs or first: an ancillary chunk anywhere."""
    kind = [b"tEXt", b"gAMA", b"bKGD", b"zzZz", b"tRNS"][int(rng.integers(5))]
    i = int(rng.integers(len(chunks) + 1))
    return [*chunks[:i], (kind, bytes(int(rng.integers(0, 9)))), *chunks[i:]]


STRUCTURAL = (
    _duplicate, _move, _drop, _ihdr_length, _ihdr_field, _between_idats, _zlib_header,
    _animation, _chunk_bits, _resize, _split_idat, _ancillary,
)  # fmt: skip


def mutate(rng: np.random.Generator, png: bytes) -> bytes:
    """One to three structural mutations (CRCs made anew), then sometimes a raw bit flip
    (the CRC left wrong) or a truncation."""
    chunks = split_chunks(png)
    for _ in range(int(rng.integers(1, 4))):
        if not chunks:
            break
        chunks = STRUCTURAL[int(rng.integers(len(STRUCTURAL)))](rng, chunks)
    out = bytearray(join_chunks(chunks))
    r = rng.random()
    if r < 0.1 and len(out) > 8:
        out[int(rng.integers(8, len(out)))] ^= 1 << int(rng.integers(8))
    elif r < 0.2:
        out = out[: int(rng.integers(0, len(out) + 1))]
    elif r < 0.25:  # bytes after IEND: every reader ignores them
        out += bytes(rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8))
    return bytes(out)


# ---------------------------------------------------------------- the two readings
def general_reading(gt: bytes, pred: bytes) -> np.ndarray:
    """What the evaluator scores without the kernel: the ``(256, 256)`` histogram through the
    general decoder, or the BddsegError naming the file."""
    return evaluate._decoded_histogram("gt.png", gt, "pred.png", pred)


def one_case(gt: bytes, pred: bytes) -> tuple[str, str | None]:
    """How the pair was read (``"kernel"``: ``joint_histogram`` counted it; ``"decoded"`` or
    ``"refused"``: it handed the pair to the general decoder, as ``evaluate._score_chunk``
    does, which counted or refused it) and what differs between the two readings (``None``:
    nothing). Only a file the kernel takes can differ; each mask's own counts
    (``value_histogram``, for ``bddseg.stats``) are compared too."""
    try:
        general, refused = general_reading(gt, pred), None
    except BddsegError as e:
        general, refused = None, e
    except Exception as e:  # noqa: BLE001 - the general decoder must name every bad file
        return "crashed", f"the general decoder raised {e!r}, not a BddsegError"
    fast = fastpng.joint_histogram(gt, pred)
    how = "kernel" if fast is not None else "refused" if refused else "decoded"
    if fast is not None and refused is not None:
        return how, f"the kernel counts it; the general decoder refuses it ({refused})"
    if fast is not None and not (fast == general).all():
        return how, "the kernel's counts differ from the general decoder's"
    for data in (gt, pred):
        single = fastpng.value_histogram(data)
        if single is None:
            continue
        try:
            decoded = masks.histogram(masks.decode_mask(data))
        except BddsegError as e:
            return how, f"value_histogram counts it; the general decoder refuses it ({e})"
        if not (single == decoded).all():
            return how, "value_histogram's counts differ from the general decoder's"
    return how, None


@dataclass
class FuzzResult:
    cases: int = 0
    kernel_counted: int = 0  # pairs the kernel counted (the rest went to the general decoder)
    refused: int = 0  # pairs handed to the general decoder that it refused
    disagreements: list[tuple[int, str, bytes, bytes]] = field(default_factory=list)


def fuzz(seed: int, cases: int | None = None, seconds: float | None = None) -> FuzzResult:
    """Mutated pairs (a sound truth and a mutated prediction, or the other way round) until
    ``cases`` are done or ``seconds`` have passed."""
    rng = np.random.default_rng(seed)
    sound = sound_masks(rng)
    result, stop = FuzzResult(), time.perf_counter() + (seconds or float("inf"))
    while (cases is None or result.cases < cases) and time.perf_counter() < stop:
        base = sound[int(rng.integers(len(sound)))]
        bad = mutate(rng, base)
        gt, pred = (base, bad) if rng.random() < 0.8 else (bad, base)
        how, problem = one_case(gt, pred)
        result.cases += 1
        result.kernel_counted += how == "kernel"
        result.refused += how == "refused"
        if problem:
            result.disagreements.append((result.cases, problem, gt, pred))
    return result


def test_fuzzed_masks_read_the_same_through_both_paths():
    """16,000 mutated pairs (10-15 s on 2 shared cores): the same counts or the same
    refusal. On the code before this test, 1,870 of them disagreed (a second IHDR, IDATs
    split by another chunk, a zlib window of 2^23, ...)."""
    assert fastpng.available()
    result = fuzz(seed=0, cases=16000)
    shown = "\n".join(f"case {n}: {p}" for n, p, _, _ in result.disagreements[:10])
    assert not result.disagreements, f"{len(result.disagreements)} disagreements:\n{shown}"
    # the run exercised both: pairs the kernel counted and pairs both refuse
    assert result.kernel_counted > 600 and result.refused > 8000, result


# ---------------------------------------------------------------- each structure, named
def malformed(color: int = 0) -> dict[str, tuple[bytes, str]]:
    """A sound 16x24 mask (:func:`sound_mask`) made malformed in one way each (CRCs sound),
    and what the error says: the structures a fuzzing run found the kernel reading more
    leniently than the general decoder, and the rest of :func:`bddseg.masks.png_chunks`."""
    chunks = split_chunks(sound_mask(color))
    head, idat, iend = chunks[:-2], chunks[-2:-1], chunks[-1:]  # IHDR[, PLTE], IDAT, IEND
    one_row_less = (b"IHDR", ihdr(24, 15, color))
    text = (b"tEXt", b"Comment\0between")
    fdat = (b"fdAT", struct.pack(">I", 1) + zlib.compress(bytes(24)))
    return {
        "a second IHDR one row shorter": (
            join_chunks([*head, one_row_less, *idat, *iend]),
            "it has 2 IHDR chunks, not one",
        ),
        "IDATs split by a tEXt": (
            join_chunks(between_idats(chunks, text)),
            "its IDAT chunks are split by a tEXt chunk",
        ),
        "a zlib window of 2^23 bytes (CINFO 15)": (
            join_chunks(with_zlib_header(chunks, 0xF8)),
            "asks for a 2^23-byte window",
        ),
        "a 12-byte IHDR": (
            join_chunks([(b"IHDR", chunks[0][1][:12]), *chunks[1:]]),
            "its IHDR chunk is 12 bytes, not 13",
        ),
        "APNG acTL and fcTL before the IDAT": (
            join_chunks([*head, *actl_fctl(24, 16), *idat, *iend]),
            "it is an animated PNG (acTL chunk)",
        ),
        "APNG fdAT after the IDAT": (
            join_chunks([*head, *idat, fdat, *iend]),
            "it is an animated PNG (fdAT chunk)",
        ),
        "zlib method 7": (join_chunks(with_zlib_header(chunks, 0x77)), "names method 7"),
        "zlib check bits": (
            join_chunks(with_zlib_header(chunks, 0x78, 0x9D)),
            "fails its check bits",
        ),
        "a zlib preset dictionary": (
            join_chunks(with_zlib_header(chunks, 0x78, 0xBB)),
            "asks for a preset dictionary",
        ),
        "an unknown critical chunk": (
            join_chunks([*head, (b"ABCD", b"x"), *idat, *iend]),
            "unknown critical chunk ABCD",
        ),
        "no IDAT": (join_chunks([*head, *iend]), "it has no IDAT chunk"),
        "IHDR compression method 1": (
            join_chunks([(b"IHDR", chunks[0][1][:10] + b"\x01\0\0"), *chunks[1:]]),
            "names compression method 1",
        ),
    }


def sound_array() -> np.ndarray:
    """A 16x24 street mask of valid train ids (0..18, 255)."""
    m = street(np.random.default_rng(5), 16, 24)
    return np.where(m > 18, 255, m).astype(np.uint8)


def sound_mask(color: int = 0) -> bytes:
    """:func:`sound_array` in one IDAT (our writer splits it in two, Pillow's does not)."""
    chunks = split_chunks(encode(sound_array(), [4, 2, 1], color=color))
    stream = b"".join(b for k, b in chunks if k == b"IDAT")
    plain = [c for c in chunks if c[0] != b"IDAT"]
    return join_chunks([*plain[:-1], (b"IDAT", stream), plain[-1]])


def test_the_malformed_files_are_malformed_only_where_they_say():
    """Each case breaks one rule: without it (the sound mask) both readings give the pixels,
    and the kernel took the sound mask (so a refusal below is about the one change)."""
    for color in (0, 3):
        good = sound_mask(color)
        assert (masks.decode_mask(good) == sound_array()).all()
        assert fastpng.value_histogram(good) is not None
        assert (fastpng.joint_histogram(good, good) == general_reading(good, good)).all()


def _evaluate(tmp_path, gt: bytes, pred: bytes, capsys) -> tuple[int, list[str], str]:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "a.png").write_bytes(gt)
    (tmp_path / "pred" / "a.png").write_bytes(pred)
    capsys.readouterr()
    code = cli.main(
        ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
         "--out", str(tmp_path / "out"), "--workers", "1", "--no-plots"]
    )  # fmt: skip
    return code, capsys.readouterr().err.strip().splitlines(), str(tmp_path / "pred" / "a.png")


@pytest.mark.parametrize("kernel", ["kernel", "no kernel"])
@pytest.mark.parametrize("color", [0, 3], ids=["gray", "palette"])
@pytest.mark.parametrize("case", list(malformed()))
def test_evaluate_refuses_each_malformed_prediction(
    tmp_path, capsys, monkeypatch, case, color, kernel
):
    """``bddseg evaluate --pred P --gt G``: exit 2 and one stderr line naming the file and the
    problem, whether the kernel was built or not (before, the kernel scored a prediction with
    a second IHDR mIoU 1.0 that the general decoder refused as the wrong size)."""
    if kernel == "no kernel":
        monkeypatch.setattr(fastpng, "_fastpng", None)  # as where it could not be built
    assert fastpng.available() == (kernel == "kernel")
    bad, problem = malformed(color)[case]
    code, lines, path = _evaluate(tmp_path, sound_mask(color), bad, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}: cannot decode prediction: ") and problem in lines[0]


@pytest.mark.parametrize("kernel", ["kernel", "no kernel"])
def test_evaluate_refuses_a_malformed_truth(tmp_path, capsys, monkeypatch, kernel):
    if kernel == "no kernel":
        monkeypatch.setattr(fastpng, "_fastpng", None)
    bad, problem = malformed()["a second IHDR one row shorter"]
    code, lines, _ = _evaluate(tmp_path, bad, sound_mask(), capsys)
    gt = tmp_path / "gt" / "a.png"
    assert code == 2 and lines == [
        f"error: {gt}: cannot decode ground-truth mask: {problem} (the file is corrupt)"
    ]


def test_evaluate_scores_the_sound_pair_the_same_either_way(tmp_path, capsys, monkeypatch):
    """The control: the sound mask against itself scores mIoU 1.0 with and without the kernel."""
    code, lines, _ = _evaluate(tmp_path, sound_mask(), sound_mask(), capsys)
    assert code == 0
    with_kernel = json.loads((tmp_path / "out" / "metrics.json").read_text())
    monkeypatch.setattr(fastpng, "_fastpng", None)
    for name in ("gt", "pred", "out"):
        shutil.rmtree(tmp_path / name)
    assert _evaluate(tmp_path, sound_mask(), sound_mask(), capsys)[0] == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == with_kernel
    assert with_kernel["official"]["miou"] == 1.0
