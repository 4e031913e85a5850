"""Learning-rate (and momentum) schedules: pure functions of the optimizer step.

Keeping the schedule a function of ``step`` (not a stateful scheduler object) makes resuming
trivial and exact: the step counter in ``last.pt`` is the whole scheduler state.
Steps run ``0 .. total - 1``; the position in training is ``step / total``, as in fastai.
"""

from __future__ import annotations

import math

from bddseg.config import OptimConfig

ONECYCLE_DIV = 25.0  # fastai fit_one_cycle: start at lr_max / 25 ...
ONECYCLE_DIV_FINAL = 1e5  # ... and end at lr_max / 1e5
ONECYCLE_MOMS = (0.95, 0.85, 0.95)  # fastai: momentum (SGD) or beta1 (Adam) high -> low -> high
POLY_WARMUP_START = 1e-3  # poly warmup starts at lr * 1e-3 (mmseg's linear warmup ratio)


def _cos(start: float, end: float, pos: float) -> float:
    """fastai's ``SchedCos``: from ``start`` (pos 0) to ``end`` (pos 1) along half a cosine."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def onecycle_lr(step: int, total: int, lr_max: float, warmup_pct: float = 0.25) -> float:
    """fastai's ``fit_one_cycle`` learning rate.

    Cosine warm-up from ``lr_max / 25`` to ``lr_max`` over the first ``warmup_pct`` of the
    steps, then cosine annealing down to ``lr_max / 1e5``.
    """
    pos = step / max(total, 1)
    if warmup_pct > 0 and pos < warmup_pct:
        return _cos(lr_max / ONECYCLE_DIV, lr_max, pos / warmup_pct)
    rest = (pos - warmup_pct) / max(1 - warmup_pct, 1e-12)
    return _cos(lr_max, lr_max / ONECYCLE_DIV_FINAL, min(rest, 1.0))


def onecycle_momentum(step: int, total: int, warmup_pct: float = 0.25, moms=ONECYCLE_MOMS) -> float:
    """fastai's momentum cycle: 0.95 -> 0.85 during warm-up, back to 0.95 while annealing."""
    hi, lo, end = moms
    pos = step / max(total, 1)
    if warmup_pct > 0 and pos < warmup_pct:
        return _cos(hi, lo, pos / warmup_pct)
    rest = (pos - warmup_pct) / max(1 - warmup_pct, 1e-12)
    return _cos(lo, end, min(rest, 1.0))


def poly_lr(
    step: int,
    total: int,
    lr: float,
    power: float = 0.9,
    warmup_steps: int = 0,
    warmup_ratio: float = POLY_WARMUP_START,
    min_lr: float = 0.0,
) -> float:
    """Polynomial decay ``(lr - min_lr) * (1 - step / total) ** power + min_lr`` (DeepLab,
    mmseg's ``poly`` policy with its ``min_lr``).

    With ``warmup_steps``, the first steps are scaled by a factor rising linearly from
    ``warmup_ratio`` to 1, as mmseg's linear warm-up does.
    """
    value = (lr - min_lr) * max(1.0 - step / max(total, 1), 0.0) ** power + min_lr
    if step < warmup_steps:
        value *= warmup_ratio + (1 - warmup_ratio) * step / warmup_steps
    return value


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """The learning rate for optimizer step ``step`` of ``total`` under ``cfg.schedule``
    (before each parameter group's ``lr_scale``, see :mod:`bddseg.optim`).

    ``cfg.warmup_pct`` is the warm-up share for both schedules: cosine warm-up for one-cycle
    (fastai's default 0.25), linear warm-up for poly (use something small, e.g. 0.01), where
    ``cfg.warmup_steps`` (the zoo's 1,500 iterations) overrides it.
    """
    if cfg.schedule == "onecycle":
        return onecycle_lr(step, total, cfg.lr, cfg.warmup_pct)
    if cfg.schedule == "poly":
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_pct * total)
        return poly_lr(
            step, total, cfg.lr, cfg.poly_power, warmup, cfg.warmup_ratio, min(cfg.min_lr, cfg.lr)
        )
    return cfg.lr


def momentum_at(step: int, total: int, cfg: OptimConfig) -> float | None:
    """Momentum (SGD) or beta1 (AdamW) for this step; None keeps the optimizer's own value.

    Cycled as fastai does under one-cycle when ``cfg.cycle_momentum``; otherwise constant
    (``cfg.momentum`` for SGD, beta1 = 0.9 for AdamW).
    """
    if cfg.schedule == "onecycle" and cfg.cycle_momentum:
        return onecycle_momentum(step, total, cfg.warmup_pct)
    return None


def set_optimizer_hparams(optimizer, lr: float, momentum: float | None) -> None:
    """Write ``lr`` (times the group's ``lr_scale``, see :mod:`bddseg.optim`) and momentum /
    beta1 into every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if momentum is None:
            continue
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group:
            group["momentum"] = momentum


__all__ = [
    "lr_at",
    "momentum_at",
    "onecycle_lr",
    "onecycle_momentum",
    "poly_lr",
    "set_optimizer_hparams",
]
