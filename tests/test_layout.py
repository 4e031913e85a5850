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

from bddseg.classes import (
    CITYSCAPES_LABEL_IDS,
    CLASSES_FILE,
    MAPILLARY_VISTAS,
)
from bddseg.errors import BddsegError
from bddseg.layout import (
    KINDS,
    dataset_classes,
    find_layout,
    list_pairs,
    normalize_split,
    pairs_and_duplicates,
    splits_present,
)

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
    with pytest.raises(BddsegError, match="expected bdd100k: ROOT/bdd100k/images/10k") as e:
        find_layout(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    with pytest.raises(BddsegError, match="not a BDD100K dataset root: expected ROOT/bdd100k/"):
        find_layout(tmp_path / "empty", dataset="bdd100k")
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


# ---------------------------------------------------------------- the other datasets' layouts
def touch_png(path: Path, value: int = 0) -> Path:
    """A tiny grayscale PNG (an image or a mask: nothing here decodes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 6), value, np.uint8), "L").save(path)
    return path


def make_cityscapes(root: Path, train_ids: bool = False) -> Path:
    """Two cities in train, one in val and test, with every file of the real gtFine zip."""
    for split, cities in (
        ("train", ("aachen", "bonn")),
        ("val", ("lindau",)),
        ("test", ("berlin",)),
    ):
        for city in cities:
            for i in range(2):
                name = f"{city}_{i:06d}_000019"
                touch_png(root / f"leftImg8bit/{split}/{city}/{name}_leftImg8bit.png")
                gt = root / f"gtFine/{split}/{city}"
                for tail in ("labelIds", "color", "instanceIds"):
                    touch_png(gt / f"{name}_gtFine_{tail}.png")
                if train_ids:
                    touch_png(gt / f"{name}_gtFine_labelTrainIds.png")
                (gt / f"{name}_gtFine_polygons.json").write_text("{}")
    return root


def make_acdc(root: Path) -> Path:
    for condition, seq in (("fog", "GOPR0475"), ("night", "GOPR0351")):
        for split in ("train", "val", "test", "train_ref"):
            name = f"{seq}_frame_{split[:2]}0001"
            touch_png(root / f"rgb_anon/{condition}/{split}/{seq}/{name}_rgb_anon.png")
            if split in ("train", "val"):
                gt = root / f"gt/{condition}/{split}/{seq}"
                for tail in ("labelIds", "labelTrainIds", "labelColor", "invIds"):
                    touch_png(gt / f"{name}_gt_{tail}.png")
    return root


def make_mapillary(root: Path, labels: str = "labels") -> Path:
    for split in ("training", "validation", "testing"):
        write_pair(root / split / "images", None, f"{split}-a")
        if split != "testing":
            touch_png(root / split / labels / f"{split}-a.png")
    return root


def make_folder(root: Path, classes: bool = True) -> Path:
    for split in ("train", "val", "test"):
        mask = None if split == "test" else root / "masks" / split
        write_pair(root / "images" / split, mask, f"{split}-a")
    if classes:
        (root / CLASSES_FILE).write_text("names: [background, road, vehicle, person]\n")
    return root


def test_cityscapes_layout_groups_and_unlabelled_test(tmp_path):
    root = make_cityscapes(tmp_path)
    layout = find_layout(root)
    assert (layout.kind, layout.name, layout.mask_format) == (
        "cityscapes",
        "cityscapes",
        "cityscapes_label_ids",
    )
    assert splits_present(root) == ["train", "val", "test"]
    train = list_pairs(root, "train")
    assert [(p.stem, p.group) for p in train] == [
        ("aachen_000000_000019", "aachen"),
        ("aachen_000001_000019", "aachen"),
        ("bonn_000000_000019", "bonn"),
        ("bonn_000001_000019", "bonn"),
    ]
    assert all(p.mask.name == f"{p.stem}_gtFine_labelIds.png" for p in train)
    assert all(p.image.name == f"{p.stem}_leftImg8bit.png" for p in train)
    assert layout.expected_mask("train", train[0].image) == train[0].mask
    test = list_pairs(root, "test")  # gtFine/test holds dummy labels: not read
    assert len(test) == 2 and all(p.mask is None and p.group == "berlin" for p in test)
    assert dataset_classes(layout) == CITYSCAPES_LABEL_IDS


def test_cityscapes_label_train_ids_preferred(tmp_path):
    root = make_cityscapes(tmp_path, train_ids=True)
    layout = find_layout(root)
    assert layout.mask_format == "train_ids"
    pairs = list_pairs(layout, "val")
    assert [p.mask.name for p in pairs] == [
        "lindau_000000_000019_gtFine_labelTrainIds.png",
        "lindau_000001_000019_gtFine_labelTrainIds.png",
    ]
    assert dataset_classes(layout) == CITYSCAPES_LABEL_IDS.labels_only()
    for p in root.glob("gtFine/val/*/*_labelTrainIds.png"):
        p.unlink()  # converted for train only: one class set cannot read both
    with pytest.raises(BddsegError, match="labelTrainIds.png masks in the train split but not"):
        find_layout(root)


def test_acdc_layout_conditions_and_ref_splits_ignored(tmp_path):
    root = make_acdc(tmp_path)
    layout = find_layout(root)
    assert layout.kind == "acdc" and layout.mask_format == "train_ids"  # labelTrainIds exist
    assert splits_present(root) == ["train", "val", "test"]
    train = list_pairs(root, "train")
    assert [(p.stem, p.group) for p in train] == [
        ("GOPR0351_frame_tr0001", "night"),
        ("GOPR0475_frame_tr0001", "fog"),
    ]
    assert all(p.mask.name == f"{p.stem}_gt_labelTrainIds.png" for p in train)
    assert all(p.mask is None for p in list_pairs(root, "test"))
    assert layout.expected_mask("val", list_pairs(root, "val")[0].image).is_file()


def test_mapillary_layout(tmp_path):
    root = make_mapillary(tmp_path)
    layout = find_layout(root)
    assert (layout.kind, layout.mask_format) == ("mapillary", "vistas_v1.2")
    assert splits_present(root) == ["train", "val", "test"]
    assert [(p.stem, p.mask.name) for p in list_pairs(root, "val")] == [
        ("validation-a", "validation-a.png")
    ]
    assert list_pairs(root, "test")[0].mask is None
    assert dataset_classes(layout) == MAPILLARY_VISTAS


def test_mapillary_v2_only_needs_a_class_file(tmp_path):
    root = make_mapillary(tmp_path, labels="v2.0/labels")
    layout = find_layout(root)
    assert layout.mask_format == "vistas_v2.0"
    assert list_pairs(root, "train")[0].mask.parent == root / "training/v2.0/labels"
    with pytest.raises(BddsegError, match="v2.0 labels found .* give --classes FILE"):
        dataset_classes(layout)
    (root / CLASSES_FILE).write_text("names: [road, car]\nmapping: {0: road, 1: car}\n")
    assert dataset_classes(layout).names == ("road", "car")
    # the v2.0 zip holds both versions: v1.2's labels are read, by the built-in mapping
    make_mapillary(root, labels="v1.2/labels")
    assert find_layout(root).mask_format == "vistas_v1.2"
    assert list_pairs(root, "val")[0].mask.parent == root / "validation/v1.2/labels"


def test_folder_layout_and_its_class_file(tmp_path):
    root = make_folder(tmp_path / "mine")
    layout = find_layout(root)
    assert (layout.kind, layout.name) == ("folder", "folder")
    assert [p.stem for p in list_pairs(root, "train")] == ["train-a"]
    assert list_pairs(root, "test")[0].mask is None
    assert dataset_classes(layout).names == ("background", "road", "vehicle", "person")
    other = tmp_path / "other.yaml"
    other.write_text("names: [a, b]\n")
    assert dataset_classes(layout, other).names == ("a", "b")  # an explicit file wins
    (root / CLASSES_FILE).unlink()
    with pytest.raises(BddsegError, match=f"no {CLASSES_FILE} here: a folder dataset needs"):
        dataset_classes(layout)


def test_classes_file_at_a_bdd100k_root_is_found(tmp_path):
    root = make_tree(tmp_path, "official", counts=(("train", 1),))
    layout = find_layout(root)
    assert dataset_classes(layout).name == "bdd100k"
    (root / CLASSES_FILE).write_text("names: [road, rest]\nmapping: {0: road, 1: rest}\n")
    assert dataset_classes(layout).names == ("road", "rest")


def test_seed_and_folder_told_apart_by_labels_or_masks(tmp_path):
    seed = make_tree(tmp_path / "seed", "seed")
    assert find_layout(seed).kind == "bdd100k"
    folder = make_folder(tmp_path / "folder")
    assert find_layout(folder).kind == "folder"
    assert find_layout(folder, dataset="bdd100k").name == "seed"  # forced: as asked
    assert find_layout(seed, dataset="folder").kind == "folder"


@pytest.mark.parametrize("kind", KINDS)
def test_dataset_forces_one_kind(tmp_path, kind):
    makers = {
        "bdd100k": lambda r: make_tree(r, "flat"),
        "cityscapes": make_cityscapes,
        "acdc": make_acdc,
        "mapillary": make_mapillary,
        "folder": make_folder,
    }
    root = makers[kind](tmp_path / kind)
    assert find_layout(root).kind == find_layout(root, dataset=kind).kind == kind
    other = next(k for k in KINDS if k not in (kind, "folder", "bdd100k"))
    with pytest.raises(BddsegError, match=f"not a {other} dataset root: expected "):
        find_layout(root, dataset=other)
    assert list_pairs(root, "train", dataset=kind)


def test_unknown_root_lists_every_layout_and_hints_a_parent(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BddsegError) as e:
        find_layout(tmp_path / "empty")
    message = str(e.value)
    assert "\n" not in message
    for kind in KINDS:
        assert f"{kind}: ROOT/" in message
    assert "ROOT/leftImg8bit/{train,val,test}/CITY with ROOT/gtFine/{train,val}/CITY" in message
    root = make_cityscapes(tmp_path / "cs")
    with pytest.raises(BddsegError, match=f"did you mean {root}\\?"):
        find_layout(root / "leftImg8bit")
    with pytest.raises(BddsegError, match="unknown dataset kind 'kitti'"):
        find_layout(root, dataset="kitti")


def test_duplicate_stems_across_groups_are_reported(tmp_path):
    root = make_acdc(tmp_path)
    twin = root / "rgb_anon/night/train/GOPR0351/GOPR0475_frame_tr0001_rgb_anon.png"
    touch_png(twin)  # the fog frame's name again, under night
    pairs, dupes = pairs_and_duplicates(root, "train")
    assert dupes == [twin]
    assert [p.stem for p in pairs] == ["GOPR0351_frame_tr0001", "GOPR0475_frame_tr0001"]
