"""Tests for bddseg.stats: per-class statistics of a split, their cache, class weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_layout import H, W, make_tree

from bddseg import parallel
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES_20
from bddseg.stats import (
    class_weights,
    compute_stats,
    default_cache_dir,
    image_presence,
    stats_fingerprint,
    weights_from_counts,
)


# ---------------------------------------------------------------- statistics
@pytest.mark.real
def test_stats_match_independent_count(real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))
    stats = compute_stats(real_root, split="train", workers=2)
    files = sorted((real_root / "labels/sem_seg/masks/train").glob("*.png"))
    counts = np.zeros(256, np.int64)
    images = np.zeros(256, np.int64)
    for f in files:
        c = np.bincount(np.asarray(Image.open(f)).ravel(), minlength=256)
        counts += c
        images += c > 0
    ids = [*range(19), 255]
    assert list(stats) == ["pixel_share", "image_count", "weights", "num_images"]
    assert list(stats["pixel_share"]) == list(CLASS_NAMES_20)
    assert stats["num_images"] == len(files) == 16
    share = 100 * counts[ids] / counts[ids].sum()
    np.testing.assert_allclose(list(stats["pixel_share"].values()), share, rtol=1e-9)
    assert list(stats["image_count"].values()) == images[ids].tolist()
    assert set(stats["weights"]) == {"inverse", "median", "effective"}
    present = counts[ids] > 0
    inv = np.array(list(stats["weights"]["inverse"].values()))
    expected = np.where(present, counts[ids].sum() / np.maximum(counts[ids], 1), 0)
    expected = expected * present.sum() / expected.sum()
    np.testing.assert_allclose(inv[present], expected[present], rtol=1e-9)
    assert stats["weights"]["inverse"]["train"] == 0.0  # absent from the split: weight 0


@pytest.mark.real
def test_data_stats_marks_absent_classes(real_root, tmp_path, monkeypatch, capsys):
    """`bddseg data stats` prints 'absent' in the weight columns of a class with no pixels
    (train, in the real pairs' train split) and says what that means, in one line."""
    from bddseg.cli import main

    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))
    assert main(["data", "stats", str(real_root), "--split", "train", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.split()[0] == "train")
    assert row.split()[1:] == ["0.000", "0", "absent", "absent", "absent"]
    assert any(line.startswith("absent: no pixels in this split (train") for line in lines)
    road = next(line for line in lines if line.split()[0] == "road")
    assert "absent" not in road


@pytest.mark.real
@pytest.mark.parametrize("workers", [1, 2])
def test_native_counts_give_the_same_statistics(real_root, tmp_path, monkeypatch, workers):
    """Masks are counted by bddseg.fastpng's kernel (also in worker processes); without it,
    through the general decoder, the numbers are the same."""
    from bddseg import fastpng

    log = tmp_path / "calls"  # appended to by the worker processes too (forked)

    def counted(data: bytes):
        with open(log, "a") as f:
            f.write("x")
        return real(data)

    real = fastpng.value_histogram
    monkeypatch.setattr(fastpng, "value_histogram", counted)
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    fast = compute_stats(real_root, "train", workers=workers, cache=False)
    fast_presence = image_presence(real_root, "train", workers=workers, cache=False)
    assert log.read_text() == "x" * 32  # 16 masks, twice
    monkeypatch.setattr(fastpng, "_fastpng", None)  # as where it could not be built
    assert compute_stats(real_root, "train", workers=workers, cache=False) == fast
    slow_presence = image_presence(real_root, "train", workers=workers, cache=False)
    assert torch.equal(slow_presence, fast_presence)


def test_native_counts_name_a_bad_mask(tmp_path):
    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 3),))
    bad = root / "labels/sem_seg/masks/train/train-01.png"
    Image.fromarray(np.full((H, W), 30, np.uint8), "L").save(bad)
    with pytest.raises(BddsegError, match="invalid values 30") as e:
        compute_stats(root, cache=False)
    assert e.value.path == str(bad)


def test_weight_formulas_by_hand():
    from bddseg.stats import weights_from_counts

    pixels = torch.tensor([100.0, 300.0, 0.0, 600.0], dtype=torch.float64)
    image_pixels = torch.tensor([1000.0, 1000.0, 0.0, 2000.0], dtype=torch.float64)
    w = weights_from_counts(pixels, image_pixels, beta=0.99)
    inv = np.array([10, 10 / 3, 0, 10 / 6])
    inv = inv * 3 / inv.sum()
    np.testing.assert_allclose(w["inverse"].numpy(), inv)  # class 2 is absent: 0
    freq = np.array([0.1, 0.3, 0.3])  # classes 0, 1, 3; median 0.3
    med = 0.3 / freq
    med = med * 3 / med.sum()
    np.testing.assert_allclose(w["median"].numpy(), [med[0], med[1], 0, med[2]])
    eff = np.array([(1 - 0.99) / (1 - 0.99**n) for n in (100, 300, 600)])
    eff = eff * 3 / eff.sum()
    np.testing.assert_allclose(w["effective"].numpy(), [eff[0], eff[1], 0, eff[2]])
    for m in w.values():
        assert m[[0, 1, 3]].mean().item() == pytest.approx(1.0)
        assert m[2].item() == 0.0


def test_an_absent_class_weighs_zero_and_adds_nothing_to_the_loss():
    """The class with no pixels gets weight 0, not the largest (its count is 0, not small);
    in the loss its pixels then count as if they were ignored."""
    from bddseg.config import LossConfig
    from bddseg.losses import build_loss

    pixels = torch.tensor([500.0, 50.0, 0.0], dtype=torch.float64)
    w = weights_from_counts(pixels, pixels.clamp(min=1) * 2)
    for method, m in w.items():
        assert m[2] == 0 and m[1] == m.max(), method  # the rarest present class is the largest
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 6)
    target = torch.randint(0, 2, (1, 4, 6))
    target[0, 0] = 2  # the "absent" class does occur here
    loss = build_loss(LossConfig(name="ce"), 3, w["inverse"].float())
    ignored = torch.where(target == 2, 255, target)
    assert loss(logits, target).item() == pytest.approx(loss(logits, ignored).item())


def test_stats_cache_hit_and_invalidation(tmp_path, monkeypatch):
    from bddseg import stats as stats_mod

    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))
    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 3),))
    first = compute_stats(root)
    assert len(list((tmp_path / "cache").glob("stats-train-*.json"))) == 1

    def boom(*_):
        raise AssertionError("recounted despite a cache hit")

    monkeypatch.setattr(stats_mod, "_count_chunk", boom)
    assert compute_stats(root) == first
    monkeypatch.undo()
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))
    mask = root / "labels/sem_seg/masks/train/train-01.png"
    Image.fromarray(np.zeros((H, W), np.uint8), "L").save(mask)
    os.utime(mask, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    second = compute_stats(root)
    assert second != first and second["image_count"]["road"] == 3
    assert compute_stats(root, cache=False) == second


def test_stats_cache_dir_argument(tmp_path, monkeypatch):
    """An explicit ``cache_dir`` is where the cache goes; None is the documented default."""
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "default"))
    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 2),))
    first = compute_stats(root, cache_dir=tmp_path / "mine")
    assert len(list((tmp_path / "mine").glob("stats-train-*.json"))) == 1
    assert not (tmp_path / "default").exists()
    assert compute_stats(root, cache_dir=str(tmp_path / "mine")) == first
    compute_stats(root)  # None: default_cache_dir()
    assert len(list((tmp_path / "default").glob("stats-train-*.json"))) == 1


@pytest.mark.real
def test_class_weights(real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path))
    stats = compute_stats(real_root)
    for method in ("inverse", "median", "effective"):
        w20 = class_weights(stats, method)
        w19 = class_weights(stats, method, unknown="ignore")
        assert w20.shape == (20,) and w19.shape == (19,) and w20.dtype == torch.float32
        present = torch.tensor([stats["pixel_share"][n] > 0 for n in CLASS_NAMES_20])
        assert w20[present].mean().item() == pytest.approx(1.0, rel=1e-5)
        assert w19[present[:19]].mean().item() == pytest.approx(1.0, rel=1e-5)
        assert torch.allclose(w19 / w19[0], w20[:19] / w20[0], rtol=1e-4)
        assert w20[16] == 0 and w19[16] == 0  # "train" never occurs in the real pairs
    assert torch.equal(class_weights(stats, "none"), torch.ones(20))
    with pytest.raises(BddsegError, match="valid: none, inverse"):
        class_weights(stats, "sqrt")


@pytest.mark.parametrize("workers", [1, 2])
def test_stats_bad_mask_names_it(tmp_path, monkeypatch, workers):
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 4),))
    good = compute_stats(root, workers=1, cache=False)
    assert compute_stats(root, workers=workers, cache=False) == good
    bad = root / "labels/sem_seg/masks/train/train-01.png"
    Image.fromarray(np.full((H, W), 42, np.uint8), "L").save(bad)
    with pytest.raises(BddsegError, match="invalid values 42") as e:
        compute_stats(root, workers=workers)
    assert e.value.path == str(bad)


# ---------------------------------------------------------------- more statistics
def _stats(shares: list[float], weights: list[float]) -> dict:
    """A :func:`compute_stats`-shaped dict with these pixel shares and (every method's)
    weights, in CLASS_NAMES_20 order."""
    w = dict(zip(CLASS_NAMES_20, weights, strict=True))
    return {
        "pixel_share": dict(zip(CLASS_NAMES_20, shares, strict=True)),
        "weights": {m: w for m in ("inverse", "median", "effective")},
    }


def test_class_weights_ignore_drops_unknown_and_renormalises():
    shares = [5.0] * 20
    shares[3] = 0.0  # absent from the split
    raw = [float(i + 1) for i in range(20)]
    stats = _stats(shares, raw)
    w20 = class_weights(stats, "median")
    w19 = class_weights(stats, "median", unknown="ignore")
    present19 = torch.tensor([s > 0 for s in shares[:19]])
    assert w19.shape == (19,) and w19.dtype == torch.float32
    assert w19[present19].mean().item() == pytest.approx(1.0)
    assert w19[3] == 0  # absent from the split: weight 0
    assert w19[10] / w19[0] == pytest.approx(raw[10] / raw[0])  # ratios kept
    assert w20.shape == (20,) and w20[19] == w20.max()  # unknown: the largest raw weight
    assert w20[3] == 0
    assert torch.equal(w20[[0, 1, 2, 4]], torch.tensor([1.0, 2.0, 3.0, 5.0]))  # handed over
    assert torch.equal(class_weights(stats, "none", unknown="ignore"), torch.ones(19))
    with pytest.raises(BddsegError, match="unknown must be 'class' or 'ignore'"):
        class_weights(stats, "median", unknown="drop")
    with pytest.raises(BddsegError, match="recompute"):
        class_weights({"pixel_share": stats["pixel_share"], "weights": {}}, "median")


def test_weights_need_a_beta_inside_zero_one():
    pixels = torch.tensor([10.0, 20.0], dtype=torch.float64)
    for beta in (0.0, 1.0, 1.5):
        with pytest.raises(BddsegError, match="beta must be in"):
            weights_from_counts(pixels, pixels, beta=beta)


def test_cache_dir_and_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BDDSEG_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "bddseg"
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"22")
    first = stats_fingerprint([a, b], None)
    a.read_bytes()
    assert stats_fingerprint([a, b], None) == first  # reading changes nothing
    assert stats_fingerprint([a, b], 0.99) != first  # the settings count
    assert stats_fingerprint([b, a], None) != first  # and the order of the masks
    os.utime(a, ns=(1, 1))
    assert stats_fingerprint([a, b], None) != first


def test_weights_are_normalised_once(tmp_path, monkeypatch):
    """compute_stats normalises each method once; class_weights hands the 20 weights over as
    they are and normalises only the 19 it keeps when unknown is ignored."""
    from bddseg import stats as stats_mod

    calls = []
    real = stats_mod._normalise

    def counted(w, present):
        calls.append(len(w))
        return real(w, present)

    monkeypatch.setattr(stats_mod, "_normalise", counted)
    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 3),))
    stats = compute_stats(root, cache=False)
    assert calls == [20, 20, 20]  # inverse, median, effective
    for method in ("inverse", "median", "effective"):
        w20 = class_weights(stats, method)
        assert w20.tolist() == pytest.approx(list(stats["weights"][method].values()), rel=1e-6)
    assert calls == [20, 20, 20]
    class_weights(stats, "median", unknown="ignore")
    assert calls == [20, 20, 20, 19]


def _count_reads(monkeypatch) -> list:
    """Record each mask that stats decodes (inline: workers=1)."""
    from bddseg import stats as stats_mod

    reads, real = [], stats_mod._mask_counts

    def counted(path, *args):
        reads.append(path)
        return real(path, *args)

    monkeypatch.setattr(stats_mod, "_mask_counts", counted)
    return reads


@pytest.mark.parametrize("first", ["stats", "presence"])
def test_presence_and_stats_read_each_mask_once(tmp_path, monkeypatch, first):
    """Statistics and presence come from one pass, cached in one file: whichever is asked
    first, the other is read from the cache."""
    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 4),))
    fresh = image_presence(root, "train", cache=False), compute_stats(root, cache=False)
    reads = _count_reads(monkeypatch)
    cache = tmp_path / "cache"
    if first == "stats":
        stats = compute_stats(root, cache_dir=cache)
        presence = image_presence(root, "train", cache_dir=cache)
    else:
        presence = image_presence(root, "train", cache_dir=cache)
        stats = compute_stats(root, cache_dir=cache)
    assert len(reads) == 4 and len(set(reads)) == 4
    assert len(list(cache.glob("stats-train-*.json"))) == 1
    assert torch.equal(presence, fresh[0]) and presence.dtype == torch.bool
    assert stats == fresh[1]
    assert torch.equal(image_presence(root, "train", max_images=2, cache_dir=cache), fresh[0][:2])
    assert len(reads) == 6  # another subset: another fingerprint, counted once


def test_a_cache_without_presence_is_recounted(tmp_path, monkeypatch):
    import json

    root = make_tree(tmp_path / "ds", "flat", counts=(("train", 3),))
    cache = tmp_path / "cache"
    presence = image_presence(root, "train", cache_dir=cache)
    (file,) = cache.glob("stats-train-*.json")
    data = json.loads(file.read_text())
    for broken in ({k: v for k, v in data.items() if k != "presence"}, {**data, "presence": [1]}):
        file.write_text(json.dumps(broken))
        reads = _count_reads(monkeypatch)
        assert torch.equal(image_presence(root, "train", cache_dir=cache), presence)
        assert len(reads) == 3
        monkeypatch.undo()


def test_image_presence_lists_the_classes_of_each_mask(tmp_path):
    root = make_tree(tmp_path, "flat", counts=(("train", 3),))
    presence = image_presence(root, "train", max_images=2, cache_dir=tmp_path / "cache")
    assert presence.shape == (2, 20) and presence.dtype == torch.bool
    for row, i in zip(presence, range(2), strict=True):
        mask = np.asarray(Image.open(root / f"labels/sem_seg/masks/train/train-{i:02d}.png"))
        values = [*range(19), 255]
        assert row.tolist() == [bool((mask == v).any()) for v in values]
    with pytest.raises(BddsegError, match="no image/mask pairs in the test split"):
        image_presence(
            make_tree(tmp_path / "t", "flat", counts=(("test", 1),)), "test", cache=False
        )
