"""Tests for bddseg.data: decoding, the dataset and collating (finding the pairs is tested in
tests/test_layout.py, checking in tests/test_check.py, the statistics in tests/test_stats.py,
the training order and its loader in tests/test_sampling.py)."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_layout import H, W, make_tree, mask_array, write_pair

from bddseg import data
from bddseg.config import DataConfig
from bddseg.data import SegDataset, build_dataset, read_image, read_mask
from bddseg.errors import BddsegError
from bddseg.layout import Pair, list_pairs
from bddseg.sampling import train_loader


# ---------------------------------------------------------------- helpers
def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- decoding
def test_read_image_and_mask(tmp_path):
    make_tree(tmp_path, "flat", counts=(("train", 1),))
    image = read_image(tmp_path / "images/10k/train/train-00.jpg")
    mask = read_mask(tmp_path / "labels/sem_seg/masks/train/train-00.png")
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert mask.dtype == torch.uint8 and mask.shape == (H, W)
    np.testing.assert_array_equal(mask.numpy(), mask_array(0))


def test_palette_mask_reads_indices(tmp_path):
    arr = mask_array(3)
    im = Image.fromarray(arr, "L").convert("P")
    im.putpalette([255 - i % 256 for i in range(768)])
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png").numpy(), np.asarray(im))


def _png_head(width: int, height: int, depth: int, color: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.binary(max_size=300),
    head=st.one_of(
        st.sampled_from([b"", b"\x89PNG\r\n\x1a\n"]),
        st.builds(
            _png_head,
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.sampled_from([1, 8, 16]),
            st.sampled_from([0, 2, 3, 7]),
        ),
        st.builds(_png_head, st.integers(1, 64), st.integers(1, 64), st.just(8), st.just(0)),
    ),
)
def test_read_mask_random_bytes_only_raise_bddseg_error(tmp_path, payload, head):
    path = tmp_path / "m.png"
    path.write_bytes(head + payload)
    try:
        mask = read_mask(path)
    except BddsegError as e:
        assert e.path == str(path) and "\n" not in e.problem
    else:
        assert mask.dtype == torch.uint8 and mask.ndim == 2


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arr=st.integers(1, 12).flatmap(
        lambda h: st.integers(1, 12).flatmap(
            lambda w: st.lists(st.integers(0, 255), min_size=h * w, max_size=h * w).map(
                lambda v: np.array(v, np.uint8).reshape(h, w)
            )
        )
    ),
    cut=st.integers(0, 40),
)
def test_read_mask_round_trips_valid_arrays(tmp_path, arr, cut):
    path = tmp_path / "m.png"
    png = _png_bytes(arr, "L")
    path.write_bytes(png)
    bad = sorted({int(v) for v in arr.flat if 19 <= v <= 254})
    if bad:
        with pytest.raises(BddsegError, match=f"invalid values {bad[0]}"):
            read_mask(path)
    else:
        np.testing.assert_array_equal(read_mask(path).numpy(), arr)
    path.write_bytes(png[: len(png) - cut - 13])  # truncated inside the data or the header
    with contextlib.suppress(BddsegError):  # decodes or fails cleanly, nothing else
        read_mask(path)


# ---------------------------------------------------------------- dataset and transforms
@pytest.mark.parametrize(("unknown", "expected"), [("class", 19), ("ignore", 255)])
def test_dataset_unknown_modes(tmp_path, unknown, expected):
    root = make_tree(tmp_path, "flat", counts=(("train", 1),))
    ds = SegDataset(list_pairs(root, "train"), unknown=unknown)
    image, mask = ds[0]
    raw = torch.from_numpy(mask_array(0)).long()
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert mask.dtype == torch.int64 and mask.shape == (H, W)
    assert torch.equal(mask, torch.where(raw == 255, expected, raw))
    assert -3 < image.min() < image.max() < 3  # ImageNet-normalised


def test_normalize_image_matches_torchvision():
    image = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ref = TF.normalize_image(
        TF.to_dtype_image(image, torch.float32, scale=True), data.IMAGENET_MEAN, data.IMAGENET_STD
    )
    torch.testing.assert_close(data.normalize_image(image), ref)
    torch.testing.assert_close(data.normalize_image(image.float() / 255), ref)
    assert image.dtype == torch.uint8  # the input is left alone


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(root=str(root), crop=(16, 24), scale=(0.5, 1.5), jitter=0.2, **kw)


def test_build_dataset_limits_and_unpaired(tmp_path):
    root = make_tree(tmp_path, "flat", counts=(("train", 4), ("val", 3)))
    ds = build_dataset(_cfg(root, max_train_images=2, max_val_images=1), "train", train=True)
    assert [p.stem for p in ds.pairs] == ["train-00", "train-01"]
    assert ds[0][0].shape == (3, 16, 24)
    val = build_dataset(_cfg(root, max_val_images=1, unknown="ignore"), "valid", train=False)
    assert len(val) == 1 and val[0][0].shape == (3, H, W) and val.unknown == "ignore"
    write_pair(root / "images/10k/train", None, "lonely")
    with pytest.raises(BddsegError, match="image without a mask.*on_bad_sample"):
        build_dataset(_cfg(root), "train", train=True)
    assert len(build_dataset(_cfg(root, on_bad_sample="skip"), "train", train=True)) == 4
    with pytest.raises(BddsegError, match="no masks"):
        build_dataset(_cfg(root), "test", train=False)


def test_uint8_samples_normalise_to_the_float_ones(tmp_path):
    """``normalize=False`` (what training loads) defers the same arithmetic to the device."""
    root = make_tree(tmp_path, "flat", counts=(("train", 2),))
    floats = build_dataset(_cfg(root), "train", train=False)
    raw = build_dataset(_cfg(root), "train", train=False, normalize=False)
    for i in range(2):
        (fi, fm), (ri, rm) = floats[i], raw[i]
        assert ri.dtype == rm.dtype == torch.uint8
        assert torch.equal(data.normalize_image(ri), fi) and torch.equal(rm.long(), fm)
    batch = data.collate_skip([raw[0], None, raw[1]])
    assert batch.images.dtype == torch.uint8 and batch.skipped == 1
    assert torch.equal(
        data.normalize_image(batch.images), torch.stack([floats[0][0], floats[1][0]])
    )


def test_collate_pads_mixed_sizes():
    small = (torch.full((3, 2, 3), 9, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.uint8))
    big = (torch.full((3, 4, 5), 9, dtype=torch.uint8), torch.ones(4, 5, dtype=torch.uint8))
    images, masks, _ = data.collate_skip([small, big])
    assert images.shape == (2, 3, 4, 5) and masks.shape == (2, 4, 5)
    assert images[0, :, 2:, :].flatten().tolist()[:1] == [124]  # the mean red, ~0 normalised
    assert (masks[0, 2:] == 255).all() and (masks[0, :, 3:] == 255).all()
    assert (masks[0, :2, :3] == 0).all() and (images[1] == 9).all()
    floats = data.collate_skip(
        [(small[0].float(), small[1].long()), (big[0].float(), big[1].long())]
    )
    assert floats.images.dtype == torch.float32 and floats.images[0, :, 2:, :].abs().sum() == 0


def test_skip_bad_samples_and_count_them(tmp_path):
    root = make_tree(tmp_path, "flat", counts=(("train", 4),))
    (root / "images/10k/train/train-02.jpg").write_bytes(b"garbage")
    strict = build_dataset(_cfg(root), "train", train=True)
    with pytest.raises(BddsegError, match="train-02.jpg"):
        strict[2]
    ds = build_dataset(_cfg(root, on_bad_sample="skip"), "train", train=True)
    # training's loader: one epoch of 2 batches of 2, in a seeded order
    batches = list(train_loader(ds, 2, 1, 0, 2, seed=0, epoch=0))
    assert sorted(b.skipped for b in batches) == [0, 1]
    short = next(b for b in batches if b.skipped)
    assert short.images.shape == (1, 3, 16, 24) and short.masks.dtype == torch.int64
    images, masks, skipped = next(b for b in batches if not b.skipped)
    assert images.shape == (2, 3, 16, 24) and skipped == 0


def test_segdataset_rejects_unpaired():
    with pytest.raises(BddsegError, match="image without a mask"):
        SegDataset([Pair("a", Path("a.jpg"), None)])
