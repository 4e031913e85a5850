"""Tests for the built-in synthetic dataset: layout and formats, determinism, class balance."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, IGNORE_VALUE, NUM_CLASSES, PALETTE
from bddseg.synth import make_dataset, render_scene

VALID = set(range(NUM_CLASSES)) | {IGNORE_VALUE}
NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}$")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _masks(files: dict[str, bytes]) -> list[bytes]:
    return [v for k, v in files.items() if "/masks/" in k]


def test_layout_and_formats(synth_root: Path):
    # conftest: train=12, val=6, test=4 at 96x160
    assert synth_root.name == "bdd100k"
    images = {
        s: sorted((synth_root / "images" / "10k" / s).glob("*.jpg"))
        for s in ("train", "val", "test")
    }
    assert [len(v) for v in images.values()] == [12, 6, 4]
    stems = [p.stem for v in images.values() for p in v]
    assert len(set(stems)) == len(stems), "names must be unique across splits"
    assert all(NAME.match(s) for s in stems), stems
    labels = synth_root / "labels" / "sem_seg"
    assert not (labels / "masks" / "test").exists(), "no public test labels, as in the release"
    palette = [c for rgb in PALETTE for c in rgb]
    for split in ("train", "val"):
        assert sorted(p.stem for p in (labels / "masks" / split).glob("*.png")) == [
            p.stem for p in images[split]
        ]
        for img_path in images[split]:
            with Image.open(img_path) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (160, 96))
            with Image.open(labels / "masks" / split / f"{img_path.stem}.png") as m:
                assert (m.format, m.mode, m.size) == ("PNG", "L", (160, 96))
                mask = np.array(m)
            assert set(np.unique(mask).tolist()) <= VALID
            with Image.open(labels / "colormaps" / split / f"{img_path.stem}.png") as cm:
                assert cm.mode == "P" and cm.size == (160, 96)
                assert np.array_equal(np.array(cm), mask), "colormap indices are the train ids"
                pal = cm.getpalette()
                assert pal[: len(palette)] == palette
                assert pal[3 * IGNORE_VALUE : 3 * IGNORE_VALUE + 3] == [0, 0, 0]
    leftovers = [p for p in synth_root.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers, "temporary files must be renamed or removed"


def test_same_seed_same_bytes_other_seed_differs_and_workers_do_not_matter(tmp_path: Path):
    kw = dict(train=3, val=2, test=1, height=64, width=112)
    a = _files(make_dataset(tmp_path / "a", seed=5, workers=1, **kw))
    b = _files(make_dataset(tmp_path / "b", seed=5, workers=1, **kw))
    par = _files(make_dataset(tmp_path / "par", seed=5, workers=2, **kw))
    other = _files(make_dataset(tmp_path / "other", seed=6, workers=1, **kw))
    assert len(a) == 6 + 2 * 5  # images of all splits; masks and colormaps of train and val
    assert a == b
    assert a == par, "the output must not depend on the number of worker processes"
    assert _masks(a) != _masks(other)
    assert set(a) != set(other), "names derive from the seed"


def test_render_scene_shapes_and_geometry():
    image, mask = render_scene(np.random.default_rng(0), 120, 200)
    assert image.shape == (120, 200, 3) and image.dtype == np.uint8
    assert mask.shape == (120, 200) and mask.dtype == np.uint8
    again = render_scene(np.random.default_rng(0), 120, 200)
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1])
    # A driving scene, not noise: over many scenes the top rows are never road, and the road
    # (or the ego hood) fills the bottom middle.
    top, bottom = [], []
    for i in range(20):
        _, m = render_scene(np.random.default_rng([1, i]), 60, 100)
        top.append(m[:3])
        bottom.append(m[-15:, 30:70])
    assert not np.isin(np.stack(top), [0, 1, 9]).any(), "no ground in the top rows"
    assert np.isin(np.stack(bottom), [0, IGNORE_VALUE]).mean() > 0.7


def test_all_classes_occur_with_a_bdd_like_imbalance():
    # The same per-image generators as make_dataset(seed=0): 80 train images at 96x160.
    counts = np.zeros(256, np.int64)
    for i in range(80):
        _, m = render_scene(np.random.default_rng([0, 0, i]), 96, 160)
        counts += np.bincount(m.ravel(), minlength=256)
    share = counts / counts.sum()
    missing = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if counts[c] == 0]
    assert not missing, f"classes never drawn: {missing}"
    assert counts[IGNORE_VALUE] > 0
    assert set(np.flatnonzero(counts).tolist()) <= VALID
    road, building, vegetation, sky = (
        share[CLASS_NAMES.index(n)] for n in ("road", "building", "vegetation", "sky")
    )
    assert road + building + vegetation + sky > 0.5
    for name in ("rider", "train", "motorcycle", "bicycle"):
        assert share[CLASS_NAMES.index(name)] < 0.01, name
    assert 0.02 < share[CLASS_NAMES.index("car")] < 0.15


@pytest.mark.parametrize("kw", [dict(train=-1), dict(height=8), dict(width=0)])
def test_bad_arguments_raise_the_project_error(tmp_path: Path, kw):
    with pytest.raises(BddsegError):
        make_dataset(tmp_path, **kw)
    assert not (tmp_path / "bdd100k").exists()


def test_cli_synth_writes_the_dataset(tmp_path: Path, capsys):
    from bddseg.cli import main

    argv = ["synth", str(tmp_path), "--train", "2", "--val", "1", "--test", "0"]
    assert main([*argv, "--height", "64", "--width", "96", "--workers", "1"]) == 0
    assert len(list((tmp_path / "bdd100k" / "images" / "10k" / "train").glob("*.jpg"))) == 2
    assert "bdd100k" in capsys.readouterr().out


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    def broken_save(self, fp, format=None, **params):  # writes half a file, then fails
        Path(fp).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(BddsegError, match="No space left"):
        make_dataset(tmp_path, train=1, val=0, test=0, height=64, width=96)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_rerun_rewrites_but_another_dataset_in_the_same_folder_is_refused(tmp_path: Path):
    kw = dict(val=1, test=1, height=48, width=64)
    root = make_dataset(tmp_path, train=2, **kw)
    before = _files(root)
    assert make_dataset(tmp_path, train=2, **kw) == root  # the same arguments: same files
    assert _files(root) == before
    with pytest.raises(BddsegError, match="empty folder"):
        make_dataset(tmp_path, train=2, seed=1, **kw)
    with pytest.raises(BddsegError, match="empty folder"):
        make_dataset(tmp_path, train=1, **kw)  # fewer images would leave one stale pair
    assert _files(root) == before
    # A split's samples (names and bytes) do not depend on the size of any split.
    bigger = _files(make_dataset(tmp_path / "bigger", train=4, val=3, test=0, height=48, width=64))
    assert all(bigger[k] == v for k, v in before.items() if "/test/" not in k)
