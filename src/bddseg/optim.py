"""The optimizer: parameter groups (weight decay, layer-wise lr decay, the head's lr
multiplier) and AdamW or SGD.

Each group carries an ``lr_scale``; :func:`bddseg.schedule.set_optimizer_hparams` sets every
group's lr to the schedule's lr times its scale, so the schedule stays one function of the
step and resuming stays exact.

Layer-wise lr decay (``optim.layer_decay``, the ConvNeXt / BEiT / Swin fine-tuning recipes)
gives the encoder's early layers smaller steps than its late ones and the decoder. A layer's
depth is read from where it runs, not from its name, so it works for every encoder: one
small forward in eval mode records the stride of the feature map each module reads, and a
parameter's level is the rank of the largest stride reached when its module first runs (a
ResNet's first conv reads stride 1: level 0; ``layer1`` reads stride 4: level 2; ...
``layer4`` level 5, each stage's downsampling conv one level below the rest of its stage; a
ConvNeXt's stem conv level 0, its four stages levels 1 to 4). The decoder and heads sit one
level above the deepest, at the full lr (times ``optim.head_lr_mult``), and a parameter
``k`` levels below them gets ``lr * layer_decay ** k``. For the zoo's UPerNet + ConvNeXt
this is mmseg's ``stage_wise`` decay (rate 0.9: 0.9 ** 5 for the stem, ** 4 .. ** 1 for the
stages) but for the stem's norm and the downsampling layers, one level lower here. Levels
are strides, so a dilated encoder's stages at one stride share one rate, and so do a ViT's
blocks. Swin's channels-last maps count as maps; squeeze-and-excitation's pooled 1x1 maps do
not. The test image is 256x256 (or the timm model's own size where it takes only that, as
Swin does).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bddseg.config import OptimConfig
from bddseg.errors import BddsegError, first_line
from bddseg.model import input_multiple


def encoder_levels(model: nn.Module) -> dict[str, int]:
    """``{parameter name: level}`` for the encoder's parameters of an smp ``model`` (names as
    in ``model.named_parameters()``), by the stride of the feature map each reads (see the
    module docstring). Parameters that never run get the deepest level.

    Raises:
        BddsegError: the encoder cannot run on a square test image of any size tried.
    """
    encoder = model.encoder
    timm_model = getattr(encoder, "model", None)
    native = (getattr(timm_model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    sides = dict.fromkeys((max(256, 2 * input_multiple(model)), native[-1]))  # Swin: its own
    problem = None
    for side in sides:
        try:
            log2_stride = _log2_strides(encoder, side)
            break
        except Exception as e:  # an input size this encoder refuses: try the next
            problem = first_line(e)
    else:
        raise BddsegError(f"optim.layer_decay: cannot find the encoder's levels ({problem})")
    # consecutive levels: strides 1, 4, 8, 16, 32 (a ConvNeXt) are levels 0, 1, 2, 3, 4
    rank = {v: i for i, v in enumerate(sorted(set(log2_stride.values())))}
    deepest = len(rank) - 1
    levels = {}
    for name, module in encoder.named_modules():
        for pname, _ in module.named_parameters(prefix=name, recurse=False):
            level = log2_stride.get(module)
            levels[f"encoder.{pname}"] = deepest if level is None else rank[level]
    return levels


def _log2_strides(encoder: nn.Module, side: int) -> dict[nn.Module, int]:
    """log2 of the largest stride reached when each parameter-owning module of ``encoder``
    first runs, in one eval-mode forward of a ``side`` x ``side`` image."""
    reached = [1]  # the largest stride so far
    found: dict[nn.Module, int] = {}

    def hook(module, inputs, output):
        # the map the module reads (a downsampling conv belongs to the level it reads; a
        # MiT attention's spatial-reduction conv must not count), else the one it writes;
        # globally pooled 1x1 maps (squeeze-and-excitation) have no stride. The image is
        # square, so a map's two equal dims are its sides: NCHW, or NHWC as in Swin
        for x in (inputs, output):
            x = x[0] if isinstance(x, tuple | list) and x else x
            if not isinstance(x, torch.Tensor) or x.ndim != 4:
                continue
            if x.shape[-1] == x.shape[-2]:
                width = x.shape[-1]  # NCHW
            elif x.shape[1] == x.shape[2]:
                width = x.shape[2]  # NHWC
            else:
                continue
            if width > 1:
                reached[0] = max(reached[0], round(side / width))
                break
        if module not in found:
            found[module] = round(math.log2(reached[0]))

    owners = [m for m in encoder.modules() if any(True for _ in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in owners]
    was_training = encoder.training
    device = next(encoder.parameters()).device
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(torch.zeros(1, 3, side, side, device=device))
    finally:
        encoder.train(was_training)
        for h in handles:
            h.remove()
    return found


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The optimizer's parameter groups of ``model``: no weight decay on biases and norm
    weights (ndim < 2, as nanoGPT and timm do); with ``cfg.layer_decay`` < 1 or
    ``cfg.head_lr_mult`` != 1, one group per (level, decay) with its ``lr_scale``."""
    decays = cfg.layer_decay != 1.0 or cfg.head_lr_mult != 1.0
    levels = encoder_levels(model) if decays else {}
    top = max(levels.values(), default=0) + 1  # the decoder's and heads' level
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in levels:
            scale = cfg.layer_decay ** (top - levels[name])
        else:
            scale = cfg.head_lr_mult if decays else 1.0
        decay = p.ndim >= 2
        group = groups.setdefault(
            (scale, decay),
            {"params": [], "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale},
        )
        group["params"].append(p)
    # decayed before not decayed at each scale: without layer decay, the two groups of
    # earlier versions in their order, so their last.pt checkpoints resume
    return sorted(groups.values(), key=lambda g: (g["lr_scale"], g["weight_decay"] == 0))


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (``cfg.betas``, ``cfg.eps``) or SGD (``cfg.momentum``) over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise BddsegError(f"unknown optimizer {cfg.name!r} (valid: adamw, sgd)")


__all__ = ["build_optimizer", "encoder_levels", "param_groups"]
