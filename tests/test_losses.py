"""Losses against hand-computed values.

The fixture is three pixels and two classes (a third channel where a test needs an absent
class). Softmax probabilities are chosen to be simple fractions:

- pixel A: logits (0, 0)      -> p = (1/2, 1/2), truth 0, so p_y = 1/2
- pixel B: logits (ln 3, 0)   -> p = (3/4, 1/4), truth 1, so p_y = 1/4
- pixel C: logits (50, -50), truth 255 (ignored): it would dominate every loss if it counted.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bddseg.config import LossConfig
from bddseg.errors import BddsegError
from bddseg.losses import (
    LOSSES,
    build_loss,
    ce_dice_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    ohem_cross_entropy,
)

LN2 = math.log(2)


def pixels(channels: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(1, C, 1, 3)`` and target ``(1, 1, 3)`` for pixels A, B, C."""
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [50.0, -50.0]])  # (3 pixels, 2)
    if channels == 3:  # a class with zero probability everywhere and absent from the truth
        logits = torch.cat([logits, torch.full((3, 1), -1e4)], 1)
    logits = logits.T.reshape(1, channels, 1, 3).contiguous().requires_grad_(True)
    target = torch.tensor([[[0, 1, 255]]])
    return logits, target


def close(value: torch.Tensor, expected: float | torch.Tensor) -> None:
    assert float(value.detach()) == pytest.approx(
        float(torch.as_tensor(expected).detach()), rel=1e-5, abs=1e-6
    )


# ---------------------------------------------------------------- hand-computed values
def test_cross_entropy_by_hand():
    logits, target = pixels()
    # mean of -ln(1/2) and -ln(1/4) = (ln 2 + 2 ln 2) / 2
    close(cross_entropy(logits, target), 1.5 * LN2)


def test_weighted_cross_entropy_is_a_weighted_mean():
    logits, target = pixels()
    w = torch.tensor([1.0, 3.0])
    # (1 * ln 2 + 3 * 2 ln 2) / (1 + 3)
    close(cross_entropy(logits, target, w), 7 * LN2 / 4)
    close(cross_entropy(logits, target, w * 10), 7 * LN2 / 4)  # scale-free
    close(
        cross_entropy(logits, target, w),
        F.cross_entropy(logits, target, weight=w, ignore_index=255),
    )


def test_focal_by_hand():
    logits, target = pixels()
    # A: (1 - 1/2)^2 ln 2 = ln2 / 4; B: (1 - 1/4)^2 * 2 ln 2 = 9/8 ln 2; mean = 11/16 ln 2
    close(focal_loss(logits, target, gamma=2.0), 11 / 16 * LN2)
    # gamma 1: A: ln2 / 2; B: 3/4 * 2 ln 2 = 3/2 ln 2; mean = ln 2
    close(focal_loss(logits, target, gamma=1.0), LN2)
    # weights (1, 3): (1 * ln2/4 + 3 * 9/8 ln2) / 4 = 29/32 ln 2
    close(focal_loss(logits, target, gamma=2.0, weight=torch.tensor([1.0, 3.0])), 29 / 32 * LN2)


def test_focal_with_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=g)
    target = torch.randint(0, 5, (2, 4, 6), generator=g)
    target[0, 0] = 255
    w = torch.rand(5, generator=g) + 0.1
    close(
        focal_loss(logits, target, gamma=0.0, weight=w),
        F.cross_entropy(logits, target, weight=w, ignore_index=255),
    )


def test_focal_down_weights_easy_pixels():
    # a confident correct pixel (p_y = 0.99) loses far more than a hard one relative to CE
    logits = torch.tensor([[math.log(99), 0.0]]).T.reshape(1, 2, 1, 1)
    target = torch.tensor([[[0]]])
    ratio = focal_loss(logits, target, gamma=2.0) / cross_entropy(logits, target)
    close(ratio, 0.01**2)


def test_dice_by_hand():
    logits, target = pixels()
    # class 0: P = (1/2, 3/4), G = (1, 0): 2 * (1/2) / (5/4 + 1) = 4/9
    # class 1: P = (1/2, 1/4), G = (0, 1): 2 * (1/4) / (3/4 + 1) = 2/7
    # loss = 1 - (4/9 + 2/7) / 2 = 40/63
    close(dice_loss(logits, target), 40 / 63)


def test_dice_averages_only_present_classes():
    logits, target = pixels(channels=3)  # class 2 absent from the truth, probability 0
    close(dice_loss(logits, target), 40 / 63)


def test_ce_plus_dice_by_hand():
    logits, target = pixels()
    close(ce_dice_loss(logits, target), 1.5 * LN2 + 40 / 63)


def test_ohem_by_hand():
    logits, target = pixels()
    # p_y: A 1/2, B 1/4. Threshold 0.3 keeps B only: -ln(1/4) = 2 ln 2
    close(ohem_cross_entropy(logits, target, thresh=0.3, min_kept=0), 2 * LN2)
    close(ohem_cross_entropy(logits, target, thresh=0.3, min_kept=1), 2 * LN2)
    # min_kept 2 tops the selection up with the next hardest pixel: plain CE of A and B
    close(ohem_cross_entropy(logits, target, thresh=0.3, min_kept=2), 1.5 * LN2)
    # nothing below 0.1: the single hardest pixel (B) is kept
    close(ohem_cross_entropy(logits, target, thresh=0.1, min_kept=1), 2 * LN2)
    # min_kept beyond the number of valid pixels: all valid ones, the ignored one never
    close(ohem_cross_entropy(logits, target, thresh=0.1, min_kept=100), 1.5 * LN2)
    # weights (1, 3) with both kept: the weighted mean of CE
    close(ohem_cross_entropy(logits, target, 0.9, 0, torch.tensor([1.0, 3.0])), 7 * LN2 / 4)


# ---------------------------------------------------------------- gradients and ignored pixels
ALL = {
    "ce": lambda x, t: cross_entropy(x, t, torch.tensor([1.0, 2.0])),
    "focal": lambda x, t: focal_loss(x, t, 2.0, torch.tensor([1.0, 2.0])),
    "dice": dice_loss,
    "ce+dice": ce_dice_loss,
    "ohem": lambda x, t: ohem_cross_entropy(x, t, 0.9, 1),
}


@pytest.mark.parametrize("name", list(ALL))
def test_gradient_flows_and_ignored_pixels_get_none(name):
    logits, target = pixels()
    loss = ALL[name](logits, target)
    loss.backward()
    grad = logits.grad[0, :, 0]  # (C, 3 pixels)
    assert torch.isfinite(grad).all()
    assert grad[:, :2].abs().sum() > 0
    assert torch.equal(grad[:, 2], torch.zeros(2))


@pytest.mark.parametrize("name", list(ALL))
def test_all_ignored_gives_zero_not_nan(name):
    logits, _ = pixels()
    target = torch.full((1, 1, 3), 255)
    loss = ALL[name](logits, target)
    assert float(loss.detach()) == 0.0
    loss.backward()  # still attached to the graph
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", list(LOSSES))
def test_build_loss_by_name(name):
    w = torch.tensor([1.0, 3.0])
    loss_fn = build_loss(LossConfig(name=name, gamma=2.0, ohem_thresh=0.9, ohem_min_kept=1), 2, w)
    logits, target = pixels()
    expected = {
        "ce": 7 * LN2 / 4,
        "focal": 29 / 32 * LN2,
        "dice": 40 / 63,  # dice takes no class weights
        "ce+dice": 7 * LN2 / 4 + 40 / 63,
        "ohem": 7 * LN2 / 4,
    }[name]
    close(loss_fn(logits, target), expected)
    assert loss_fn.to(torch.float64) is loss_fn  # an nn.Module (weights move with it)


def test_build_loss_rejects_bad_input():
    with pytest.raises(
        BddsegError, match="unknown loss 'lovasz'.*ce, focal, dice, ce\\+dice, ohem"
    ):
        build_loss(_cfg("lovasz"), 2)
    with pytest.raises(BddsegError, match="shape"):
        build_loss(LossConfig(), 20, torch.ones(19))
    with pytest.raises(BddsegError, match="finite"):
        build_loss(LossConfig(), 2, torch.tensor([1.0, float("nan")]))
    with pytest.raises(BddsegError, match="gamma"):
        build_loss(LossConfig(name="focal", gamma=-1.0), 2)


def _cfg(name: str) -> LossConfig:
    cfg = LossConfig()
    object.__setattr__(cfg, "name", name)  # bypass the Literal check that config loading does
    return cfg


def test_losses_accept_bf16_logits():
    logits, target = pixels()
    loss = cross_entropy(logits.detach().bfloat16(), target)
    assert loss.dtype == torch.float32  # computed in float32
    assert float(loss) == pytest.approx(1.5 * LN2, rel=1e-2)  # ln 3 is not exact in bf16
