"""Tests for bddseg.data (the statistics are tested in tests/test_stats.py)."""

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

from bddseg import data
from bddseg.config import DataConfig
from bddseg.data import (
    Pair,
    SegDataset,
    build_dataset,
    build_loader,
    check_dataset,
    find_layout,
    list_pairs,
    read_image,
    read_mask,
    splits_present,
)
from bddseg.errors import BddsegError

H, W = 24, 40


# ---------------------------------------------------------------- helpers
def _mask_array(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.array([*range(19), 255], dtype=np.uint8)
    return values[rng.integers(0, len(values), size=(h // 4, w // 4))].repeat(4, 0).repeat(4, 1)


def _write_pair(img_dir: Path | None, mask_dir: Path | None, stem: str, seed: int = 0) -> None:
    mask = _mask_array(seed)
    if img_dir is not None:
        img_dir.mkdir(parents=True, exist_ok=True)
        rgb = np.stack([mask, 255 - mask, np.full_like(mask, 128)], axis=-1)
        Image.fromarray(rgb).save(img_dir / f"{stem}.jpg", quality=90)
    if mask_dir is not None:
        mask_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, "L").save(mask_dir / f"{stem}.png")


def make_tree(root: Path, layout: str, counts=(("train", 3), ("val", 2), ("test", 1))) -> Path:
    """A small dataset in ``layout`` ("official", "flat", "seed"); returns ``root``."""
    for split, n in counts:
        if layout == "seed":
            name = {"val": "valid"}.get(split, split)
            img = root / ("test" if split == "test" else f"images/{name}")
            msk = None if split == "test" else root / f"labels/{name}"
        else:
            base = root / "bdd100k" if layout == "official" else root
            img = base / f"images/10k/{split}"
            msk = None if split == "test" else base / f"labels/sem_seg/masks/{split}"
        for i in range(n):
            _write_pair(img, msk, f"{split}-{i:02d}", seed=i)
    return root


def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- finding the data
@pytest.mark.parametrize("layout", ["official", "flat", "seed"])
def test_layouts_found_and_paired_by_stem(tmp_path, layout):
    root = make_tree(tmp_path, layout)
    assert find_layout(root).name == layout
    assert splits_present(root) == ["train", "val", "test"]
    train = list_pairs(root, "train")
    assert [p.stem for p in train] == ["train-00", "train-01", "train-02"]
    assert all(p.image.stem == p.mask.stem == p.stem for p in train)
    assert list_pairs(root, "valid") == list_pairs(root, "val")
    assert len(list_pairs(root, "val")) == 2
    test = list_pairs(root, "test")
    assert len(test) == 1 and test[0].mask is None and test[0].image.is_file()


def test_seed_layout_with_val_and_top_folder(tmp_path):
    base = tmp_path / "bdd100k"
    _write_pair(base / "images/val", base / "labels/val", "a")
    assert find_layout(tmp_path).name == "seed"
    assert splits_present(tmp_path) == ["val"]
    assert [p.stem for p in list_pairs(tmp_path, "valid")] == ["a"]


def test_unpaired_files_are_listed(tmp_path):
    root = make_tree(tmp_path, "flat", counts=(("train", 2),))
    _write_pair(root / "images/10k/train", None, "only-image")
    _write_pair(None, root / "labels/sem_seg/masks/train", "only-mask")
    (root / "images/10k/train/notes.txt").write_text("ignored")
    pairs = {p.stem: p for p in list_pairs(root, "train")}
    assert pairs["only-image"].mask is None and pairs["only-mask"].image is None
    assert len(pairs) == 4


def test_bad_roots(tmp_path):
    with pytest.raises(BddsegError, match="not found"):
        find_layout(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BddsegError, match="not a folder"):
        find_layout(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BddsegError, match="expected ROOT/bdd100k/images/10k") as e:
        find_layout(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    root = make_tree(tmp_path / "ds", "official", counts=(("train", 1),))
    with pytest.raises(BddsegError, match=f"did you mean {root / 'bdd100k'}"):
        find_layout(root / "bdd100k/images/10k")
    with pytest.raises(BddsegError, match="no val split"):
        list_pairs(root, "val")
    with pytest.raises(BddsegError, match="unknown split"):
        list_pairs(root, "training")


def test_val_and_valid_together_is_an_error(tmp_path):
    _write_pair(tmp_path / "images/val", tmp_path / "labels/val", "a")
    _write_pair(tmp_path / "images/valid", tmp_path / "labels/valid", "b")
    with pytest.raises(BddsegError, match="both val/ and valid/"):
        find_layout(tmp_path)


# ---------------------------------------------------------------- decoding and checking
def test_read_image_and_mask(tmp_path):
    make_tree(tmp_path, "flat", counts=(("train", 1),))
    image = read_image(tmp_path / "images/10k/train/train-00.jpg")
    mask = read_mask(tmp_path / "labels/sem_seg/masks/train/train-00.png")
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert mask.dtype == torch.uint8 and mask.shape == (H, W)
    np.testing.assert_array_equal(mask.numpy(), _mask_array(0))


def test_palette_mask_reads_indices(tmp_path):
    arr = _mask_array(3)
    im = Image.fromarray(arr, "L").convert("P")
    im.putpalette([255 - i % 256 for i in range(768)])
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png").numpy(), np.asarray(im))


@pytest.mark.real
def test_check_real_pairs_is_clean(real_root):
    report = check_dataset(real_root, workers=2)
    assert report.problems == []
    assert report.summary["train"]["images"] == report.summary["train"]["masks"] == 16
    assert report.summary["val"]["images"] == 8 and report.summary["val"]["bad"] == 0
    assert report.summary["train"]["pairs_per_s"] > 0


def _bad_tree(root: Path) -> dict[str, str]:
    """A tree with one broken file per problem; returns {file name: expected reason part}."""
    img, msk = root / "images/10k/train", root / "labels/sem_seg/masks/train"
    for i in range(10):
        _write_pair(img, msk, f"bad{i}", seed=i)
    good = (img / "bad0.jpg").read_bytes()
    (img / "bad0.jpg").write_bytes(good[: len(good) // 2])
    (img / "bad1.jpg").write_bytes(b"")
    (img / "bad2.jpg").write_text("this is not a JPEG\n")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(msk / "bad3.png")
    Image.fromarray(np.zeros((H, W), np.uint16)).save(msk / "bad4.png")
    Image.fromarray(np.zeros((H // 2, W), np.uint8), "L").save(msk / "bad5.png")
    values = np.zeros((H, W), np.uint8)
    values[0, :3] = [19, 100, 254]
    Image.fromarray(values, "L").save(msk / "bad6.png")
    (msk / "bad7.png").unlink()
    (img / "bad8.jpg").unlink()
    (msk / "bad9.png").write_bytes(good)  # a JPEG named .png
    _write_pair(root / "images/10k/val", root / "labels/sem_seg/masks/val", "fine")
    return {
        "bad0.jpg": "truncated",
        "bad1.jpg": "empty",
        "bad2.jpg": "not a JPEG or PNG",
        "bad3.png": "RGB",
        "bad4.png": "16-bit",
        "bad5.png": f"mask is {W}x{H // 2} but its image is {W}x{H}",
        "bad6.png": "invalid values 19, 100, 254",
        "bad7.jpg": "image without a mask",
        "bad8.png": "mask without an image",
        "bad9.png": "not a PNG",
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_check_lists_every_problem(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(data, "MIN_PARALLEL", 1)  # use the process pool even for 10 pairs
    expected = _bad_tree(tmp_path)
    report = check_dataset(tmp_path, workers=workers)
    assert len(report.problems) == len(expected), report.problems
    by_name = {Path(path).name: reason for path, reason in report.problems}
    for name, reason in expected.items():
        assert reason in by_name[name], (name, by_name.get(name))
    assert all("\n" not in reason for _, reason in report.problems)
    assert report.summary["train"] == pytest.approx(
        {
            "images": 9,
            "masks": 9,
            "bad": 10,
            "seconds": report.summary["train"]["seconds"],
            "pairs_per_s": report.summary["train"]["pairs_per_s"],
        }
    )
    assert report.summary["val"]["bad"] == 0 and not report.ok


def test_check_on_synthetic(synth_root):
    report = check_dataset(synth_root, workers=1)
    assert report.problems == [] and set(report.summary) == {"train", "val", "test"}


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
    raw = torch.from_numpy(_mask_array(0)).long()
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
    _write_pair(root / "images/10k/train", None, "lonely")
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
    batches = list(build_loader(ds, batch_size=2, shuffle=False, workers=0, seed=0))
    assert [b.skipped for b in batches] == [0, 1]
    assert batches[1].images.shape == (1, 3, 16, 24) and batches[1].masks.dtype == torch.int64
    images, masks, skipped = batches[0]
    assert images.shape == (2, 3, 16, 24) and skipped == 0


def _epoch(ds, seed, workers=0):
    loader = build_loader(ds, batch_size=2, shuffle=True, workers=workers, seed=seed)
    return [(b.images, b.masks) for b in loader]


def _same(a, b) -> bool:
    return all(
        torch.equal(x, y) for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True)
    )


def test_loader_is_deterministic_for_a_seed(tmp_path):
    root = make_tree(tmp_path, "flat", counts=(("train", 4),))
    ds = build_dataset(_cfg(root), "train", train=True)
    first, again, other = _epoch(ds, 3), _epoch(ds, 3), _epoch(ds, 4)
    assert _same(first, again) and not _same(first, other)
    with_workers = _epoch(ds, 3, workers=2)
    assert _same(with_workers, _epoch(ds, 3, workers=2))


def test_segdataset_rejects_unpaired():
    with pytest.raises(BddsegError, match="image without a mask"):
        SegDataset([Pair("a", Path("a.jpg"), None)])
    assert data.normalize_split("valid") == "val"
