"""Tests for bddseg.check: checking every pair of a dataset, with and without a process pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_layout import H, W, write_pair

from bddseg import parallel
from bddseg.check import check_dataset


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
        write_pair(img, msk, f"bad{i}", seed=i)
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
    write_pair(root / "images/10k/val", root / "labels/sem_seg/masks/val", "fine")
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
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)  # use the process pool even for 10 pairs
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
