"""Sample order and rare-class sampling (bddseg.sampling)."""

from __future__ import annotations

import pytest
import torch
from test_layout import make_tree

from bddseg.config import DataConfig
from bddseg.data import build_dataset
from bddseg.sampling import EpochSampler, rare_class_weights, train_loader


def test_rare_class_weights_by_hand():
    # 3 images, 3 classes: class 0 everywhere and common, class 1 in image 1, class 2 absent
    presence = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    share = torch.tensor([90.0, 10.0, 0.0])
    t = 0.5
    p0, p1 = torch.softmax(torch.tensor([(1 - 0.9) / t, (1 - 0.1) / t], dtype=torch.float64), 0)
    expected = torch.tensor([p0 / 3, p0 / 3 + p1, p0 / 3], dtype=torch.float64)
    w = rare_class_weights(presence, share, t)
    assert torch.allclose(w, expected / expected.sum())
    assert w.sum().item() == pytest.approx(1.0)
    assert w[1] > w[0] == w[2]  # the image with the rare class is drawn more often
    # a colder temperature favours it more; a very hot one tends to the plain class mix
    assert rare_class_weights(presence, share, 0.05)[1] > w[1]
    assert rare_class_weights(presence, share, 1e6)[1] == pytest.approx(0.5 + 0.5 / 3, rel=1e-4)


def test_images_without_counted_classes_are_never_drawn_unless_none_are():
    presence = torch.tensor([[0, 1], [0, 0]], dtype=torch.bool)
    w = rare_class_weights(presence, torch.tensor([50.0, 50.0]), 0.01)
    assert w.tolist() == [1.0, 0.0]
    none = rare_class_weights(torch.zeros(2, 2, dtype=torch.bool), torch.ones(2), 0.01)
    assert none.tolist() == [0.5, 0.5]


def test_weighted_epochs_are_seeded_resumable_and_follow_the_weights():
    # an epoch is n draws with replacement: 100 images, only images 1, 2 and 3 can be drawn
    weights = torch.zeros(100, dtype=torch.float64)
    weights[1:4] = torch.tensor([0.7, 0.1, 0.2], dtype=torch.float64)
    s = EpochSampler(100, 2, 1, 0, 50, seed=3, weights=weights)
    s.set_epoch(1)
    order = [i for i, _ in s]
    assert len(order) == 100 and set(order) == {1, 2, 3}
    assert order.count(1) > order.count(3) > order.count(2)  # 70 / 20 / 10 expected
    again = EpochSampler(100, 2, 1, 0, 50, seed=3, weights=weights)
    again.set_epoch(1, start=10)
    assert [i for i, _ in again] == order[20:]  # resuming mid-epoch: the same draws
    again.set_epoch(2)
    assert [i for i, _ in again] != order


def _same(a, b) -> bool:
    return all(
        torch.equal(x, y) for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True)
    )


def test_the_loader_is_a_function_of_seed_and_epoch_with_any_number_of_workers(tmp_path):
    """Order and augmentation (crop, scale, jitter) come from the seed and the epoch alone."""
    root = make_tree(tmp_path, "flat", counts=(("train", 4),))
    cfg = DataConfig(root=str(root), crop=(16, 24), scale=(0.5, 1.5), jitter=0.2)
    ds = build_dataset(cfg, "train", train=True)

    def epoch(seed: int, number: int = 0, workers: int = 0) -> list:
        loader = train_loader(ds, 2, 1, 0, 2, seed=seed, epoch=number, workers=workers)
        return [(b.images, b.masks) for b in loader]

    first = epoch(3)
    assert _same(first, epoch(3)) and not _same(first, epoch(4)) and not _same(first, epoch(3, 1))
    assert _same(epoch(3, workers=2), first)
