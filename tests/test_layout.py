"""Tests for bddseg.layout: finding the dataset layout, its splits and its image/mask pairs.

The dataset builders here (:func:`make_tree`, :func:`write_pair`) serve the tests of the
modules that read datasets too (data, check, stats).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bddseg.errors import BddsegError
from bddseg.layout import find_layout, list_pairs, normalize_split, splits_present

H, W = 24, 40


# ---------------------------------------------------------------- dataset builders
def mask_array(seed: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.array([*range(19), 255], dtype=np.uint8)
    return values[rng.integers(0, len(values), size=(h // 4, w // 4))].repeat(4, 0).repeat(4, 1)


def write_pair(img_dir: Path | None, mask_dir: Path | None, stem: str, seed: int = 0) -> None:
    mask = mask_array(seed)
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
            write_pair(img, msk, f"{split}-{i:02d}", seed=i)
    return root


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
    write_pair(base / "images/val", base / "labels/val", "a")
    assert find_layout(tmp_path).name == "seed"
    assert splits_present(tmp_path) == ["val"]
    assert [p.stem for p in list_pairs(tmp_path, "valid")] == ["a"]


def test_unpaired_files_are_listed(tmp_path):
    root = make_tree(tmp_path, "flat", counts=(("train", 2),))
    write_pair(root / "images/10k/train", None, "only-image")
    write_pair(None, root / "labels/sem_seg/masks/train", "only-mask")
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
    write_pair(tmp_path / "images/val", tmp_path / "labels/val", "a")
    write_pair(tmp_path / "images/valid", tmp_path / "labels/valid", "b")
    with pytest.raises(BddsegError, match="both val/ and valid/"):
        find_layout(tmp_path)


def test_normalize_split():
    assert normalize_split("valid") == normalize_split("val") == "val"
    assert normalize_split("test") == "test"
    with pytest.raises(BddsegError, match="unknown split 'training'"):
        normalize_split("training")


def test_layout_is_torch_free():
    code = "import sys, bddseg.layout; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
