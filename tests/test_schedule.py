"""Tests for bddseg.schedule: one-cycle (as fastai), poly (as mmseg), the dispatch on the
config, and writing the values into an optimizer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bddseg.config import OptimConfig
from bddseg.schedule import (
    lr_at,
    momentum_at,
    onecycle_lr,
    onecycle_momentum,
    poly_lr,
    set_optimizer_hparams,
)


def test_onecycle_matches_fastai():
    lr, total = 1e-2, 1000
    assert onecycle_lr(0, total, lr) == pytest.approx(lr / 25)
    assert onecycle_lr(250, total, lr) == pytest.approx(lr)  # peak at warmup_pct = 0.25
    assert onecycle_lr(125, total, lr) == pytest.approx((lr / 25 + lr) / 2)  # cosine midpoint
    assert onecycle_lr(625, total, lr) == pytest.approx((lr + lr / 1e5) / 2)
    assert onecycle_lr(total, total, lr) == pytest.approx(lr / 1e5)
    values = [onecycle_lr(s, total, lr) for s in range(total)]
    assert max(values) == pytest.approx(lr) and values.index(max(values)) == 250
    assert onecycle_momentum(0, total) == pytest.approx(0.95)
    assert onecycle_momentum(250, total) == pytest.approx(0.85)
    assert onecycle_momentum(total, total) == pytest.approx(0.95)


def test_poly_and_the_dispatch():
    assert poly_lr(0, 100, 0.01) == pytest.approx(0.01)
    assert poly_lr(50, 100, 0.01, power=1.0) == pytest.approx(0.005)
    assert poly_lr(50, 100, 0.01, power=0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(100, 100, 0.01) == 0.0
    assert poly_lr(0, 100, 0.01, warmup_steps=10) == pytest.approx(0.01 * 1e-3)
    assert poly_lr(5, 100, 0.01, power=1.0, warmup_steps=10) == pytest.approx(
        0.0095 * (1e-3 + 0.999 * 0.5)
    )
    cfg = OptimConfig(schedule="poly", lr=0.01, warmup_pct=0.0, poly_power=1.0)
    assert lr_at(50, 100, cfg) == pytest.approx(0.005) and momentum_at(50, 100, cfg) is None
    assert lr_at(7, 100, dataclasses.replace(cfg, schedule="constant")) == 0.01
    assert momentum_at(0, 100, OptimConfig()) == pytest.approx(0.95)


def test_onecycle_dispatch_uses_the_configs_warmup():
    cfg = OptimConfig(schedule="onecycle", lr=0.02, warmup_pct=0.1)
    assert lr_at(10, 100, cfg) == pytest.approx(0.02)  # the peak at 10% of the steps
    assert lr_at(0, 100, cfg) == pytest.approx(0.02 / 25)
    assert momentum_at(10, 100, cfg) == pytest.approx(0.85)
    assert momentum_at(10, 100, dataclasses.replace(cfg, cycle_momentum=False)) is None
    no_warmup = dataclasses.replace(cfg, warmup_pct=0.0)
    assert lr_at(0, 100, no_warmup) == pytest.approx(0.02)  # starts at the peak


def test_schedules_stay_positive_and_finite_past_the_end():
    for schedule in ("onecycle", "poly", "constant"):
        cfg = OptimConfig(schedule=schedule, lr=0.01, warmup_pct=0.05)
        values = [lr_at(s, 10, cfg) for s in range(12)]  # 2 steps past the end (a resume)
        assert all(0.0 <= v <= 0.01 + 1e-12 for v in values), (schedule, values)
    assert onecycle_lr(5, 0, 0.01) > 0  # total 0 does not divide by zero


def test_set_optimizer_hparams_writes_lr_and_momentum():
    params = [torch.nn.Parameter(torch.zeros(1))]
    adamw = torch.optim.AdamW(params, lr=1.0, betas=(0.9, 0.99))
    set_optimizer_hparams(adamw, 0.5, 0.85)
    assert adamw.param_groups[0]["lr"] == 0.5 and adamw.param_groups[0]["betas"] == (0.85, 0.99)
    set_optimizer_hparams(adamw, 0.25, None)  # None keeps beta1
    assert adamw.param_groups[0]["lr"] == 0.25 and adamw.param_groups[0]["betas"][0] == 0.85
    sgd = torch.optim.SGD(params, lr=1.0, momentum=0.9)
    set_optimizer_hparams(sgd, 0.1, 0.95)
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["momentum"] == 0.95
