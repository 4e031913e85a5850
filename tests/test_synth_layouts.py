"""Tests for bddseg.synth_layouts and the Vistas v1.2 table: each layout written from the
synthetic data is found by bddseg.layout, and its raw mask values read back, through the
layout's class set, to the synthetic train ids."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bddseg.classes import MAPILLARY_VISTAS, VISTAS_V12_LABELS
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, IGNORE_VALUE
from bddseg.layout import dataset_classes, find_layout, list_pairs, splits_present
from bddseg.masks import decode_mask, read_bytes
from bddseg.synth import make_dataset
from bddseg.synth_layouts import (
    CITIES,
    CONDITIONS,
    FOLDER_MERGE,
    FOLDER_NAMES,
    new_stem,
    write_layout,
)

COUNTS = {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return make_dataset(out, **COUNTS, height=48, width=64, seed=0)


def _originals(src, split):
    """The synthetic pairs of ``split`` in the writer's order."""
    return [p for p in list_pairs(src, split) if p.image is not None]


def _raw(path):
    return decode_mask(read_bytes(path, "mask"), path)


@pytest.mark.parametrize(
    ("kind", "options", "mask_format", "groups"),
    [
        ("cityscapes", {}, "cityscapes_label_ids", set(CITIES)),
        ("cityscapes", {"train_ids": True}, "train_ids", set(CITIES)),
        ("acdc", {}, "cityscapes_label_ids", set(CONDITIONS)),
        ("acdc", {"train_ids": True}, "train_ids", set(CONDITIONS)),
        ("mapillary", {}, "vistas_v1.2", {None}),
        ("folder", {}, "train_ids", {None}),
        ("folder", {"raw": True}, "train_ids", {None}),
    ],
)
def test_written_layout_reads_back_to_the_train_ids(
    src, tmp_path, kind, options, mask_format, groups
):
    root = write_layout(src, tmp_path / "out", kind, **options)
    layout = find_layout(root)
    assert (layout.kind, layout.mask_format) == (kind, mask_format)
    assert find_layout(root, dataset=kind).kind == kind
    assert splits_present(root) == ["train", "val", "test"]
    lut = dataset_classes(layout).lut()
    merge = np.array([FOLDER_MERGE.get(t, IGNORE_VALUE) for t in range(256)], np.uint8)
    for split, n in COUNTS.items():
        pairs = {p.stem: p for p in list_pairs(root, split)}
        assert len(pairs) == n and {p.group for p in pairs.values()} == groups
        for i, orig in enumerate(_originals(src, split)):
            pair = pairs[new_stem(kind, split, i, orig.stem)]
            if split == "test":
                assert pair.mask is None
                continue
            truth = _raw(orig.mask)
            if kind == "mapillary":  # every other image cropped: mixed sizes
                truth = truth[:, : truth.shape[1] * 3 // 4] if i % 2 else truth
            if kind == "folder":
                truth = merge[truth]
            raw = _raw(pair.mask)
            assert raw.shape == Image.open(pair.image).size[::-1]
            assert (lut[raw] == truth).all(), pair.mask


def test_raw_values_are_the_datasets_own(src, tmp_path):
    city = write_layout(src, tmp_path / "cs", "cityscapes")
    values = set(np.unique(_raw(list_pairs(city, "train")[0].mask)).tolist())
    assert values <= set(range(34)) and max(values) > 18  # label ids, not train ids
    vistas = write_layout(src, tmp_path / "mv", "mapillary")
    mask = list_pairs(vistas, "train")[0].mask
    assert Image.open(mask).mode == "P" and _raw(mask).max() <= 65
    folder = write_layout(src, tmp_path / "f", "folder")
    assert dataset_classes(find_layout(folder)).names == FOLDER_NAMES
    assert set(np.unique(_raw(list_pairs(folder, "val")[0].mask)).tolist()) <= {0, 1, 2, 3, 255}


def test_cityscapes_dummy_test_labels_and_extra_files_are_ignored(src, tmp_path):
    root = write_layout(src, tmp_path / "cs", "cityscapes")
    assert len(list(root.glob("gtFine/test/*/*_gtFine_labelIds.png"))) == COUNTS["test"]
    assert list(root.glob("gtFine/train/*/*_gtFine_color.png"))
    assert all(p.mask is None for p in list_pairs(root, "test"))


def test_write_layout_refuses(src, tmp_path):
    with pytest.raises(BddsegError, match="unknown layout 'kitti'"):
        write_layout(src, tmp_path / "k", "kitti")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BddsegError, match="not an empty folder"):
        write_layout(src, tmp_path / "full", "folder")


# ---------------------------------------------------------------- the Vistas v1.2 mapping
def test_vistas_table_is_consistent():
    assert [vid for _, vid, _ in VISTAS_V12_LABELS] == list(range(66))
    names = [name for name, _, _ in VISTAS_V12_LABELS]
    assert len(set(names)) == 66 and names[-1] == "void--unlabeled"
    targets = [tid for _, _, tid in VISTAS_V12_LABELS]
    assert all(0 <= t < 19 or t == IGNORE_VALUE for t in targets)
    assert set(targets) - {IGNORE_VALUE} == set(range(19))  # every class has a Vistas id
    assert MAPILLARY_VISTAS.names == CLASS_NAMES
    lut = MAPILLARY_VISTAS.lut()
    by_name = {name: lut[vid] for name, vid, _ in VISTAS_V12_LABELS}
    for name, cls in [
        ("construction--flat--road", "road"),
        ("construction--flat--sidewalk", "sidewalk"),
        ("nature--sky", "sky"),
        ("human--rider--motorcyclist", "rider"),
        ("object--vehicle--on-rails", "train"),
        ("object--traffic-sign--front", "traffic sign"),
    ]:
        assert CLASS_NAMES[by_name[name]] == cls
    assert by_name["void--unlabeled"] == by_name["object--vehicle--caravan"] == IGNORE_VALUE
    assert lut[66] < 0  # a value Vistas v1.2 does not have is invalid


def test_synth_layouts_is_torch_free():
    code = "import sys, bddseg.synth_layouts; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
