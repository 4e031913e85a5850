"""Segmentation losses: pure tensor functions, and :func:`build_loss` choosing one by name.

Every loss takes logits ``(N, C, H, W)`` (any float dtype; computed in float32) and targets
``(N, H, W)`` int64 with values in ``0..C-1`` or ``ignore_index``, and returns a scalar.

Conventions shared by all of them:

- Pixels equal to ``ignore_index`` never contribute: not to the sum and not to the
  normaliser, so they get exactly zero gradient. A batch with no valid pixel gives a loss of
  0 (with a graph attached), never NaN.
- Class weights ``w`` (length C) make a *weighted mean*, as :func:`torch.nn.functional.cross_entropy`
  does: ``sum_i w[y_i] * l_i / sum_i w[y_i]`` over valid pixels. So scaling all weights by a
  constant changes nothing, and the loss of a uniform prediction stays ``log C`` whatever the
  weights are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bddseg.config import LossConfig
from bddseg.errors import BddsegError
from bddseg.labels import IGNORE_VALUE


def _nll(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """Per-pixel ``-log p_y`` ``(N, H, W)`` float32 (0 on ignored pixels) and the valid mask."""
    nll = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=ignore_index)
    return nll, target != ignore_index


def _weighted_mean(
    values: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    weight: torch.Tensor | None,
) -> torch.Tensor:
    """``sum w[y] * values / sum w[y]`` over valid pixels; 0 (still attached to the graph) if none."""
    w = valid.to(values.dtype)
    if weight is not None:
        w = w * weight.to(values.dtype)[torch.where(valid, target, 0)]
    # the where() keeps ignored pixels out even when their value is inf or NaN
    total = torch.where(valid, values * w, 0.0).sum()
    return total / w.sum().clamp_min(torch.finfo(values.dtype).tiny)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_VALUE,
) -> torch.Tensor:
    """Cross-entropy ``-log p_y``, weighted mean over valid pixels (equals ``F.cross_entropy``)."""
    nll, valid = _nll(logits, target, ignore_index)
    return _weighted_mean(nll, target, valid, weight)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_VALUE,
) -> torch.Tensor:
    """Softmax focal loss ``FL = -alpha_y (1 - p_y)^gamma log p_y`` (Lin et al., 2017).

    This is the *softmax* (multiclass) focal loss of the original project's fastai
    ``FocalLossFlat``: ``p_y`` is the softmax probability of the true class, so the classes
    compete and ``gamma = 0`` gives back cross-entropy exactly. It is deliberately not
    segmentation_models_pytorch's ``FocalLoss(mode="multiclass")``, which is a one-vs-rest
    *sigmoid* focal loss: it treats the C outputs as independent binary problems, needs
    different logit scales (every pixel is negative for C-1 classes) and would not reproduce
    the original experiment.

    Two details differ from fastai, on purpose: ``p_y`` comes from the unweighted softmax
    (fastai computes ``exp(-weighted CE)``, which mixes the class weight into the focusing
    term), and the class weights ``alpha`` make a weighted mean like cross-entropy (fastai
    averages over all pixels, ignored ones included).
    """
    nll, valid = _nll(logits, target, ignore_index)
    focus = (1.0 - torch.exp(-nll)).clamp_min(0.0) ** gamma
    return _weighted_mean(focus * nll, target, valid, weight)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_VALUE,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Soft multiclass Dice: ``1 - mean_c 2 |P_c . G_c| / (|P_c| + |G_c|)``.

    ``P_c`` are the softmax probabilities of class c and ``G_c`` its one-hot truth, summed over
    the valid pixels of the whole batch; the mean runs over the classes present in the batch's
    truth (an absent class has an undefined Dice and would only push its probability to 0,
    which cross-entropy already does). Class weights are not used.
    """
    valid = target != ignore_index
    p = torch.softmax(logits.float(), dim=1) * valid[:, None]
    onehot = torch.zeros_like(p).scatter_(1, torch.where(valid, target, 0)[:, None], 1.0)
    onehot = onehot * valid[:, None]
    inter = (p * onehot).sum((0, 2, 3))
    truth = onehot.sum((0, 2, 3))
    dice = 2.0 * inter / (p.sum((0, 2, 3)) + truth).clamp_min(eps)
    present = truth > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


def ce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_VALUE,
) -> torch.Tensor:
    """``cross_entropy + dice_loss`` with equal weights (class weights apply to the CE term)."""
    return cross_entropy(logits, target, weight, ignore_index) + dice_loss(
        logits, target, ignore_index
    )


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_VALUE,
) -> torch.Tensor:
    """Online hard example mining cross-entropy (Shrivastava et al.; as in PSPNet/mmseg).

    Keeps the valid pixels whose true-class probability is below ``thresh``; if fewer than
    ``min_kept`` are, keeps the ``min_kept`` pixels with the lowest true-class probability
    instead (all valid pixels if there are fewer). The kept pixels' cross-entropy is averaged
    (weighted mean with class weights). The selection itself carries no gradient.
    """
    nll, valid = _nll(logits, target, ignore_index)
    with torch.no_grad():
        hardness = torch.where(valid, nll, -1.0).flatten()  # high nll = low p_y; ignored last
        n_valid = int(valid.sum())
        hard = int((valid & (nll > -math.log(thresh))).sum()) if thresh > 0 else 0
        k = max(hard, min(min_kept, n_valid))
        keep = torch.zeros_like(valid).flatten()
        keep[torch.topk(hardness, k, sorted=False).indices] = True
        keep = keep.view_as(valid)
    return _weighted_mean(nll, target, keep, weight)


class SegLoss(nn.Module):
    """A loss function with its settings; class weights live in a buffer (moved with ``.to``)."""

    def __init__(self, name: str, fn, weight: torch.Tensor | None, **kwargs):
        super().__init__()
        self.name = name
        self.fn = fn
        self.kwargs = kwargs
        self.register_buffer("weight", None if weight is None else weight.float().clone())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.fn is dice_loss:
            return self.fn(logits, target, **self.kwargs)
        return self.fn(logits, target, weight=self.weight, **self.kwargs)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}: {args}, weighted={self.weight is not None}"


LOSSES = {
    "ce": lambda cfg, w, ig: SegLoss("ce", cross_entropy, w, ignore_index=ig),
    "focal": lambda cfg, w, ig: SegLoss("focal", focal_loss, w, gamma=cfg.gamma, ignore_index=ig),
    "dice": lambda cfg, w, ig: SegLoss("dice", dice_loss, None, ignore_index=ig),
    "ce+dice": lambda cfg, w, ig: SegLoss("ce+dice", ce_dice_loss, w, ignore_index=ig),
    "ohem": lambda cfg, w, ig: SegLoss(
        "ohem",
        ohem_cross_entropy,
        w,
        thresh=cfg.ohem_thresh,
        min_kept=cfg.ohem_min_kept,
        ignore_index=ig,
    ),
}


def build_loss(
    cfg: LossConfig,
    num_classes: int,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_VALUE,
) -> nn.Module:
    """The loss named by ``cfg.name``: a module ``(logits (N,C,H,W), target (N,H,W)) -> scalar``.

    Args:
        cfg: the loss section (name, gamma, OHEM settings).
        num_classes: C, the number of logit channels.
        class_weights: optional float tensor ``(C,)``; used by ``ce``, ``focal`` (as alpha),
            ``ce+dice`` (CE term) and ``ohem``; ``dice`` ignores them.
        ignore_index: target value that never contributes.

    Raises:
        BddsegError: unknown loss name (lists the valid ones), or weights of the wrong length
            or with negative / non-finite values.
    """
    if cfg.name not in LOSSES:
        raise BddsegError(f"unknown loss {cfg.name!r} (valid: {', '.join(LOSSES)})")
    if class_weights is not None:
        w = torch.as_tensor(class_weights, dtype=torch.float32)
        if w.shape != (num_classes,):
            raise BddsegError(
                f"class weights have shape {tuple(w.shape)}, expected ({num_classes},)"
            )
        if not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
            raise BddsegError(f"class weights must be finite, >= 0 and not all 0: {w.tolist()}")
        class_weights = w
    if cfg.name == "focal" and not (cfg.gamma >= 0 and math.isfinite(cfg.gamma)):
        raise BddsegError(f"focal gamma must be >= 0, got {cfg.gamma}")
    return LOSSES[cfg.name](cfg, class_weights, ignore_index)


__all__ = [
    "LOSSES",
    "SegLoss",
    "build_loss",
    "ce_dice_loss",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "ohem_cross_entropy",
]
