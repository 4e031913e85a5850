"""bddseg.masks: the one PNG mask decoder (CRC check, libspng fast path, Pillow fallback)."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image
from test_png_differential import ihdr, join_chunks, sound_array, sound_mask, split_chunks

from bddseg import masks
from bddseg.errors import BddsegError


def _save(path, array):
    Image.fromarray(array).save(path)


def test_fast_png_path_decodes_as_pillow_does(tmp_path, monkeypatch):
    """8-bit gray PNGs go through libspng (pyspng), the rest through Pillow: same arrays."""
    pytest.importorskip("pyspng")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 20, (37, 53)).astype(np.uint8)
    gray[5:9] = 255
    _save(tmp_path / "gray.png", gray)
    data = (tmp_path / "gray.png").read_bytes()
    assert (masks._spng_gray8(data, 53, 37) == gray).all()
    assert (masks.read_mask(tmp_path / "gray.png", "mask", check_values=False) == gray).all()
    # a palette PNG is not for the fast path; Pillow reads its indices
    pal = Image.frombytes("P", gray.shape[::-1], gray.tobytes())
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    pal.save(tmp_path / "pal.png")
    assert masks.decode_mask((tmp_path / "pal.png").read_bytes()).shape == gray.shape
    assert (masks.read_mask(tmp_path / "pal.png", "mask", check_values=False) == gray).all()
    # without pyspng, Pillow alone
    monkeypatch.setitem(sys.modules, "pyspng", None)
    assert masks._spng_gray8(data, 53, 37) is None
    assert (masks.read_mask(tmp_path / "gray.png", "mask", check_values=False) == gray).all()


@pytest.mark.parametrize("offset", [0, 5, 9])
def test_corrupt_png_is_refused_not_misread(tmp_path, offset):
    """A changed byte in the pixel data fails its chunk's CRC: an error naming the file,
    never a silently different mask. Pillow alone (what the official evaluator uses) decodes
    many such files without complaint."""
    gray = np.tile(np.arange(19, dtype=np.uint8), (40, 4))
    _save(tmp_path / "m.png", gray)
    data = bytearray((tmp_path / "m.png").read_bytes())
    data[data.index(b"IDAT") + 4 + offset] ^= 0x10
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(BddsegError, match="IDAT chunk fails its CRC") as e:
        masks.read_mask(tmp_path / "bad.png", "mask", check_values=False)
    assert e.value.path == str(tmp_path / "bad.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "m.png").read_bytes()[:-5])
    with pytest.raises(BddsegError, match="truncated"):
        masks.read_mask(tmp_path / "cut.png", "mask", check_values=False)


def test_values_are_checked_for_truth_not_for_predictions(tmp_path):
    arr = np.zeros((4, 6), np.uint8)
    arr[0, 0], arr[1, 1] = 19, 200
    _save(tmp_path / "m.png", arr)
    with pytest.raises(BddsegError, match="invalid values 19, 200"):
        masks.read_mask(tmp_path / "m.png")
    assert (masks.read_mask(tmp_path / "m.png", "prediction", check_values=False) == arr).all()
    arr[0, 0], arr[1, 1] = 18, 255
    _save(tmp_path / "ok.png", arr)
    mask, counts = masks.read_mask_counts(tmp_path / "ok.png")
    assert (mask == arr).all() and counts[18] == 1 and counts[255] == 1 and counts[0] == 22


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.zeros((4, 6, 3), np.uint8), "RGB; masks must be single-channel"),
        (np.zeros((4, 6), np.uint16), "16-bit"),
    ],
)
def test_non_mask_pngs_are_named(tmp_path, array, problem):
    Image.fromarray(array).save(tmp_path / "m.png")
    with pytest.raises(BddsegError, match=problem) as e:
        masks.read_mask(tmp_path / "m.png", "ground-truth mask")
    assert e.value.path == str(tmp_path / "m.png") and "ground-truth mask" in e.value.problem


def test_missing_empty_and_jpeg_files(tmp_path):
    with pytest.raises(BddsegError, match="mask not found"):
        masks.read_mask(tmp_path / "none.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BddsegError, match="empty"):
        masks.read_mask(tmp_path / "empty.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "j.png", format="JPEG")
    with pytest.raises(BddsegError, match="not a PNG"):
        masks.read_mask(tmp_path / "j.png")


def test_importing_masks_does_not_import_torch():
    import subprocess

    code = "import sys, bddseg.masks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_second_ihdr_is_refused_not_read_as_a_smaller_mask(tmp_path):
    """Pillow applies every IHDR it meets: a second one a row shorter decoded, without an
    error, as a mask one row shorter (the kernel read the first). Now the structure check
    (masks.png_chunks) names the file, for masks and for images alike."""
    chunks = split_chunks(sound_mask())
    bad = join_chunks([chunks[0], (b"IHDR", ihdr(24, 15)), *chunks[1:]])
    assert np.asarray(Image.open(io.BytesIO(bad))).shape == (15, 24)  # Pillow alone
    (tmp_path / "m.png").write_bytes(bad)
    with pytest.raises(BddsegError, match="it has 2 IHDR chunks, not one") as e:
        masks.read_mask(tmp_path / "m.png", check_values=False)
    assert e.value.path == str(tmp_path / "m.png")
    with pytest.raises(BddsegError, match="2 IHDR chunks"):
        masks.open_png(bad, tmp_path / "m.png", "image")
    assert (masks.decode_mask(sound_mask()) == sound_array()).all()


def test_ancillary_chunks_and_split_idats_still_decode():
    """The structure check refuses what readers disagree on, nothing more: text, gamma and
    unknown ancillary chunks around the image data, and the data split over many IDATs."""
    chunks = split_chunks(sound_mask())
    stream = chunks[1][1]
    pieces = [(b"IDAT", stream[i : i + 5]) for i in range(0, len(stream), 5)]
    extra = [(b"gAMA", (45455).to_bytes(4, "big")), (b"tEXt", b"k\0v"), (b"zzZz", b"")]
    png = join_chunks([chunks[0], *extra, *pieces, (b"tIME", bytes(7)), chunks[-1]])
    assert masks.png_problem(png) is None
    assert (masks.decode_mask(png) == sound_array()).all()


def test_write_mask_writes_an_8_bit_grayscale_png_that_reads_back(tmp_path):
    """The one mask writer (predict's masks/ and evaluate's pred/): Pillow's plain PNG of a
    mode-L image, byte for byte, into a folder it creates."""
    mask = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7) % 20
    mask[0, 0] = 255
    masks.write_mask(tmp_path / "new" / "m.png", mask)
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    assert (tmp_path / "new" / "m.png").read_bytes() == buf.getvalue()
    assert Image.open(tmp_path / "new" / "m.png").mode == "L"
    assert (masks.read_mask(tmp_path / "new" / "m.png", check_values=False) == mask).all()
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["m.png"]  # no temporary left
