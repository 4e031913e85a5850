"""Masks read through a dataset's class set (issue 23): masks, data, check and stats with K
classes and raw ids (a Cityscapes-style labelIds set, a 4-class set), BDD100K unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bddseg import masks
from bddseg.check import check_dataset
from bddseg.classes import BDD100K, CITYSCAPES_LABEL_IDS, Classes, default_palette
from bddseg.config import DataConfig
from bddseg.data import SegDataset, build_dataset, dataset_classes_of, split_pairs
from bddseg.errors import BddsegError
from bddseg.layout import Pair
from bddseg.stats import class_weights, compute_stats, dataset_stats, image_presence

H, W = 6, 8
FOUR = Classes(("background", "road", "car", "person"), default_palette(4), "four")


def _png(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _mask(values) -> np.ndarray:
    """An (H, W) mask whose rows cycle through ``values``."""
    return np.resize(np.asarray(values, np.uint8), (H, 1)).repeat(W, 1)


def _root(tmp, masks_by_stem: dict[str, np.ndarray], classes: dict | None = None, split="train"):
    """A flat BDD100K-layout root with one image per mask, and ``classes.yaml`` if given."""
    for stem, m in masks_by_stem.items():
        _png(tmp / f"images/10k/{split}/{stem}.png", np.zeros((H, W, 3), np.uint8))
        _png(tmp / f"labels/sem_seg/masks/{split}/{stem}.png", m)
    if classes is not None:
        (tmp / "classes.yaml").write_text(yaml.safe_dump(classes))
    return tmp


FOUR_YAML = {"names": list(FOUR.names)}


# ---------------------------------------------------------------- masks
def test_cityscapes_label_ids_read_as_train_ids(tmp_path):
    """labelIds 7 (road), 26 (car), 0 (unlabeled), 255 -> train ids 0, 13, 255, 255."""
    _png(tmp_path / "m.png", _mask([7, 26, 0, 255]))
    mask, counts = masks.read_mask_counts(tmp_path / "m.png", classes=CITYSCAPES_LABEL_IDS)
    assert (mask == _mask([0, 13, 255, 255])).all()
    assert counts[0] == counts[13] == counts[255] == 2 * W  # rows 7, 26, 0, 255, 7, 26
    assert counts.sum() == H * W and counts[7] == counts[26] == 0
    assert (masks.read_mask(tmp_path / "m.png", classes=CITYSCAPES_LABEL_IDS) == mask).all()
    # a prediction is not mapped (train ids already)
    raw = masks.read_mask(tmp_path / "m.png", check_values=False, classes=CITYSCAPES_LABEL_IDS)
    assert (raw == _mask([7, 26, 0, 255])).all()
    # read as BDD100K, 26 is not a train id
    with pytest.raises(BddsegError, match=r"invalid values 26 \(valid: 0\.\.18 and 255\)"):
        masks.read_mask(tmp_path / "m.png")


def test_invalid_raw_value_names_the_valid_ones(tmp_path):
    _png(tmp_path / "m.png", _mask([7, 40, 41]))
    with pytest.raises(BddsegError) as e:
        masks.read_mask(tmp_path / "m.png", "ground-truth mask", classes=CITYSCAPES_LABEL_IDS)
    assert str(e.value) == (
        f"{tmp_path / 'm.png'}: ground-truth mask has invalid values 40, 41 (valid: 0..33 and 255)"
    )


def test_four_class_identity_set(tmp_path):
    _png(tmp_path / "ok.png", _mask([0, 1, 2, 3, 255]))
    mask, counts = masks.read_mask_counts(tmp_path / "ok.png", classes=FOUR)
    assert (mask == _mask([0, 1, 2, 3, 255])).all() and counts.sum() == H * W
    _png(tmp_path / "bad.png", _mask([0, 4, 255]))
    with pytest.raises(BddsegError, match=r"invalid values 4 \(valid: 0\.\.3 and 255\)"):
        masks.read_mask(tmp_path / "bad.png", classes=FOUR)
    assert masks.bad_values(counts, FOUR) == []


def test_bdd100k_path_unchanged(tmp_path):
    """The default reads the decoded array itself and its histogram, as before."""
    _png(tmp_path / "m.png", _mask([0, 18, 255]))
    mask, counts = masks.read_mask_counts(tmp_path / "m.png")
    assert (mask == _mask([0, 18, 255])).all()
    assert masks.remap_histogram(counts) is counts
    counts[19] = 1
    with pytest.raises(BddsegError, match=r"mask has invalid values 19 \(valid: 0\.\.18 and 255\)"):
        masks.check_counts(counts, tmp_path / "m.png")


def test_remap_histogram_of_a_joint_histogram():
    joint = np.zeros((256, 256), np.int64)
    joint[7, 0] = 5  # road predicted as road
    joint[26, 0] = 2  # car predicted as road
    joint[0, 3] = 4  # unlabelled
    out = masks.remap_histogram(joint, CITYSCAPES_LABEL_IDS, axis=0)
    assert out.shape == (256, 256) and out.dtype == np.int64
    assert out[0, 0] == 5 and out[13, 0] == 2 and out[255, 3] == 4 and out.sum() == 11
    assert (masks.remap_histogram(joint.T, CITYSCAPES_LABEL_IDS, axis=1) == out.T).all()
    joint[40, 1] = 1
    with pytest.raises(BddsegError, match=r"gt\.png: truth has invalid values 40"):
        masks.remap_histogram(joint, CITYSCAPES_LABEL_IDS, path="gt.png", what="truth")


# ---------------------------------------------------------------- data
def test_dataset_unknown_class_is_k(tmp_path):
    root = _root(tmp_path / "ds", {"a": _mask([0, 3, 255])}, FOUR_YAML)
    pair = Pair("a", root / "images/10k/train/a.png", root / "labels/sem_seg/masks/train/a.png")
    _, mask = SegDataset([pair], "class", classes=FOUR).load(0)
    assert (mask.numpy() == _mask([0, 3, 4])).all()
    _, mask = SegDataset([pair], "ignore", classes=FOUR).load(0)
    assert (mask.numpy() == _mask([0, 3, 255])).all()
    # build_dataset finds classes.yaml at the root
    cfg = DataConfig(root=str(root))
    assert dataset_classes_of(cfg).names == FOUR.names
    ds = build_dataset(cfg, "train", train=False, normalize=False)
    assert ds.classes.num == 4 and (ds.load(0)[1].numpy() == _mask([0, 3, 4])).all()


def test_extra_roots_union_with_their_own_mappings(tmp_path):
    a = _root(tmp_path / "a", {"x": _mask([0, 1]), "y": _mask([2])}, FOUR_YAML)
    mapped = {**FOUR_YAML, "mapping": {10: 0, 11: 1, 12: 2, 13: 3}, "ignore": 0}
    b = _root(tmp_path / "b", {"x": _mask([13, 0])}, mapped)
    cfg = DataConfig(root=str(a), extra_roots=(str(b),), unknown="ignore")
    pairs, sets = split_pairs(cfg, "train")
    assert [p.stem for p in pairs] == ["x", "y", "extra1-x"]
    assert pairs[2].mask == b / "labels/sem_seg/masks/train/x.png"
    assert sets[0] == sets[1] != sets[2]
    ds = build_dataset(cfg, "train", train=False, normalize=False)
    assert len(ds) == 3 and (ds.load(2)[1].numpy() == _mask([3, 255])).all()
    assert len(build_dataset(dataclasses.replace(cfg, max_train_images=2), "train", False)) == 2
    stats, presence = dataset_stats(cfg, "train", cache=False)
    assert presence.shape == (3, 5) and presence[2].tolist() == [False, False, False, True, True]
    assert stats["num_images"] == 3
    # a root with other class names is refused, by name
    c = _root(tmp_path / "c", {"z": _mask([0])}, {"names": ["road", "sky"]})
    with pytest.raises(BddsegError, match=r"differ from those of") as e:
        dataset_classes_of(dataclasses.replace(cfg, extra_roots=(str(b), str(c))))
    assert str(c) in str(e.value)


# ---------------------------------------------------------------- check
def test_check_dataset_with_classes(tmp_path):
    root = _root(tmp_path / "ds", {"a": _mask([0, 3, 255]), "b": _mask([0, 4])}, FOUR_YAML)
    report = check_dataset(root)
    assert report.problems == [
        (
            str(root / "labels/sem_seg/masks/train/b.png"),
            "mask has invalid values 4 (valid: 0..3 and 255)",
        )
    ]
    assert report.summary["train"]["bad"] == 1
    # a class file given explicitly wins over classes.yaml; and in worker processes
    wide = tmp_path / "wide.yaml"
    wide.write_text(yaml.safe_dump({"names": [f"c{i}" for i in range(5)]}))
    assert check_dataset(root, workers=2, classes_file=str(wide)).ok
    # no class file: BDD100K's 19 train ids accept both masks
    (root / "classes.yaml").unlink()
    assert check_dataset(root).ok


# ---------------------------------------------------------------- stats
def test_stats_for_four_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))
    root = _root(tmp_path / "ds", {"a": _mask([0, 1, 255]), "b": _mask([0, 3])}, FOUR_YAML)
    stats = compute_stats(root)
    names = [*FOUR.names, "unknown"]
    assert list(stats["pixel_share"]) == names and list(stats["weights"]["inverse"]) == names
    assert stats["image_count"] == {"background": 2, "road": 1, "car": 0, "person": 1, "unknown": 1}
    presence = image_presence(root)
    assert presence.shape == (2, 5) and presence.dtype == torch.bool
    assert presence.tolist() == [
        [True, True, False, False, True],
        [True, False, False, True, False],
    ]
    assert class_weights(stats, "inverse", "class", FOUR).shape == (5,)
    w = class_weights(stats, "median", "ignore", FOUR)
    assert w.shape == (4,) and w[2] == 0
    # another mapping of the same masks is not the cached count
    remapped = Classes(FOUR.names, FOUR.palette, mapping=((0, 1), (1, 0), (3, 3)))
    again = compute_stats(root, classes=remapped)
    assert again["image_count"]["road"] == 2 and again["image_count"]["background"] == 1
    assert len(list((tmp_path / "cache").glob("stats-train-*.json"))) == 2
    assert compute_stats(root) == stats


def test_stats_default_is_bdd100k(tmp_path):
    root = _root(tmp_path / "ds", {"a": _mask([0, 18, 255])})
    stats = compute_stats(root, cache=False)
    assert list(stats["pixel_share"]) == [*BDD100K.names, "unknown"]
    assert image_presence(root, cache=False).shape == (1, 20)
