"""The optimizer's parameter groups (weight decay, layer-wise lr decay, the head's lr
multiplier) and the poly schedule's warm-up and floor, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from bddseg.config import ModelConfig, OptimConfig, from_dict
from bddseg.errors import BddsegError
from bddseg.model import build_model
from bddseg.optim import build_optimizer, encoder_levels, param_groups
from bddseg.schedule import lr_at, poly_lr, set_optimizer_hparams


@pytest.fixture(scope="module")
def unet():
    return build_model(ModelConfig(encoder="resnet18", pretrained=False), 19)


def test_levels_follow_the_stride_each_layer_reads(unet):
    levels = encoder_levels(unet)
    assert levels["encoder.conv1.weight"] == 0  # reads the image
    assert levels["encoder.bn1.weight"] == 1  # stride 2
    assert levels["encoder.layer1.0.conv1.weight"] == 2  # stride 4
    assert levels["encoder.layer2.0.conv1.weight"] == 2  # the downsampling conv reads stride 4
    assert levels["encoder.layer2.1.conv1.weight"] == 3
    assert levels["encoder.layer4.1.conv2.weight"] == 5
    assert set(levels) == {n for n, _ in unet.named_parameters() if n.startswith("encoder.")}


def test_convnext_stages_get_the_zoo_stage_wise_rates():
    """mmseg's stage_wise decay for ConvNeXt at 0.9: head 1, stage 4 0.9, ... stem 0.9 ** 5."""
    model = build_model(
        ModelConfig(arch="upernet", encoder="tu-convnext_atto", pretrained=False), 19
    )
    groups = param_groups(model, OptimConfig(layer_decay=0.9))
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    enc = "encoder.model."
    assert scale[id(named[enc + "stem_0.weight"])] == pytest.approx(0.9**5)
    assert scale[id(named[enc + "stages_0.blocks.0.conv_dw.weight"])] == pytest.approx(0.9**4)
    assert scale[id(named[enc + "stages_1.blocks.0.conv_dw.weight"])] == pytest.approx(0.9**3)
    assert scale[id(named[enc + "stages_3.blocks.1.conv_dw.weight"])] == pytest.approx(0.9)
    assert scale[id(named["segmentation_head.0.weight"])] == 1.0
    assert all(g["weight_decay"] == 0 for g in groups for p in g["params"] if p.ndim < 2)


@pytest.mark.parametrize(
    ("encoder", "stage"),
    [
        ("tu-swin_tiny_patch4_window7_224", "encoder.model.layers_{}.blocks.0.attn.qkv.weight"),
        ("tu-efficientnet_b0", "encoder.model.blocks.{}.0.conv_pw.weight"),
    ],
)
def test_levels_of_channels_last_and_squeeze_excitation_encoders(encoder, stage):
    """Swin's NHWC maps and EfficientNet's pooled 1x1 squeeze-and-excitation maps do not
    collapse the stages into one or two levels."""
    model = build_model(ModelConfig(arch="upernet", encoder=encoder, pretrained=False), 19)
    levels = encoder_levels(model)
    if "swin" in encoder:
        assert [levels[stage.format(i)] for i in range(4)] == [1, 2, 3, 4]
    else:  # the first conv of blocks 1, 2, 3, 4, 6 reads strides 2, 4, 8, 16, 32
        assert [levels[stage.format(i)] for i in (1, 2, 3, 4, 6)] == [1, 2, 3, 4, 5]


def test_without_decays_two_groups_in_the_old_order(unet):
    """No layer decay: the decayed and the not-decayed group, in that order (what earlier
    versions built, so their last.pt checkpoints resume)."""
    groups = param_groups(unet, OptimConfig(weight_decay=0.05))
    assert [(g["weight_decay"], g["lr_scale"]) for g in groups] == [(0.05, 1.0), (0.0, 1.0)]
    assert sum(len(g["params"]) for g in groups) == len(list(unet.parameters()))


def test_head_lr_multiplier_and_scaled_lrs(unet):
    cfg = OptimConfig(name="sgd", lr=0.01, head_lr_mult=10.0, layer_decay=0.5)
    opt = build_optimizer(unet, cfg)
    set_optimizer_hparams(opt, 0.01, None)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(unet.named_parameters())
    assert lr_of[id(named["decoder.blocks.0.conv1.0.weight"])] == pytest.approx(0.1)
    assert lr_of[id(named["encoder.layer4.1.conv2.weight"])] == pytest.approx(0.005)  # 1 level
    assert lr_of[id(named["encoder.conv1.weight"])] == pytest.approx(0.01 * 0.5**6)


def test_adamw_takes_betas_and_eps(unet):
    opt = build_optimizer(unet, OptimConfig(betas=(0.9, 0.999), eps=1e-8))
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    with pytest.raises(BddsegError, match=r"optim.betas: \[0.9, 1.0\] must be below 1"):
        from_dict({"optim": {"betas": [0.9, 1.0]}})
    with pytest.raises(BddsegError, match="optim.layer_decay: 1.5 must be at most 1"):
        from_dict({"optim": {"layer_decay": 1.5}})


def test_poly_warmup_steps_ratio_and_floor():
    """mmseg's poly: (lr - min_lr) * (1 - t/T) ** p + min_lr, times a linear warm-up factor
    from warmup_ratio to 1 over warmup_steps."""
    cfg = OptimConfig(
        schedule="poly", lr=1e-4, poly_power=1.0, warmup_steps=10, warmup_ratio=1e-6, min_lr=0.0
    )
    assert lr_at(0, 100, cfg) == pytest.approx(1e-4 * 1e-6)
    assert lr_at(5, 100, cfg) == pytest.approx(1e-4 * 0.95 * (1e-6 + (1 - 1e-6) * 0.5))
    assert lr_at(10, 100, cfg) == pytest.approx(1e-4 * 0.9)
    sgd = OptimConfig(schedule="poly", lr=0.01, poly_power=0.9, warmup_pct=0.0, min_lr=1e-4)
    assert lr_at(0, 80, sgd) == pytest.approx(0.01)
    assert lr_at(40, 80, sgd) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert lr_at(80, 80, sgd) == pytest.approx(1e-4)
    assert poly_lr(3, 10, 1.0, 1.0) == pytest.approx(0.7)  # the defaults of earlier versions
    assert math.isclose(poly_lr(0, 10, 1.0, 1.0, warmup_steps=2), 1e-3)


def test_layer_decay_trains():
    """A step with layer decay moves the stem less than the head (SGD, same gradients)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="resnet18", pretrained=False), 19)
    opt = build_optimizer(
        model, OptimConfig(name="sgd", lr=0.1, layer_decay=0.5, momentum=0.0, weight_decay=0.0)
    )
    set_optimizer_hparams(opt, 0.1, None)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.1 * g["lr_scale"])
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    stem = model.encoder.conv1.weight
    before, grad = stem.detach().clone(), stem.grad.clone()
    opt.step()
    assert torch.allclose(before - stem.detach(), 0.1 * 0.5**6 * grad, rtol=1e-3, atol=1e-8)
