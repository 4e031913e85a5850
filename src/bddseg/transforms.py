"""Joint image + mask transforms for training and evaluation, on ``uint8`` tensors.

``TrainTransform`` is random scale, crop, flip and photometric jitter (the recipe of
torchvision's segmentation references, made cheaper by cropping before resizing);
``EvalTransform`` keeps the image or resizes it to the training scale. Both take an explicit
``torch.Generator``, so an augmentation is a pure function of its seed
(:mod:`bddseg.sampling` seeds one per sample).
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms.v2 import InterpolationMode

from bddseg.config import DataConfig
from bddseg.labels import IGNORE_VALUE


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def _randint(hi: int, g: torch.Generator | None) -> int:
    """Uniform in ``0..hi`` inclusive."""
    return int(torch.randint(hi + 1, (), generator=g).item())


def jitter_image(
    image: torch.Tensor, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    """Brightness, contrast and saturation on ``uint8 (3, H, W)``, in one float pass.

    torchvision's ``adjust_brightness/contrast/saturation`` blends in that order, each clamped
    to 0..255, in float without their uint8 round trips: 3x faster, equal up to rounding.
    """
    x = image.float().mul_(brightness).clamp_(0, 255)
    gray = x[0] * 0.2989 + x[1] * 0.587 + x[2] * 0.114  # torchvision's rgb_to_grayscale
    m = gray.mean()
    x.sub_(m).mul_(contrast).add_(m).clamp_(0, 255)
    gray.sub_(m).mul_(contrast).add_(m).clamp_(0, 255)  # gray of the contrast-adjusted image
    x.sub_(gray).mul_(saturation).add_(gray).clamp_(0, 255)
    return x.to(torch.uint8)


class TrainTransform:
    """Random scale, crop, flip and jitter on ``uint8 (3, H, W)`` image and ``(H, W)`` mask.

    Equivalent to resizing the whole image by ``s ~ U(scale)`` (after an optional resize to
    ``base_size``) and cutting a random ``crop`` window, but the window is chosen first and
    only that part of the source is resized (6x cheaper at scale 2 on 1280x720). The window is
    rounded to whole source pixels, so the effective scale differs from ``s`` by under one
    source pixel per side. Image and mask share the window and the output size; the mask uses
    NEAREST_EXACT (half-pixel centres like the image's bilinear, and no new values). Where
    the scaled image is smaller than the crop, the image is padded with 0 and the mask with
    255 (right and bottom).
    """

    takes_generator = True

    def __init__(
        self,
        crop: tuple[int, int],
        scale: tuple[float, float] = (0.5, 2.0),
        base_size: tuple[int, int] | None = None,
        hflip: bool = True,
        jitter: float = 0.0,
    ):
        self.crop, self.scale, self.base_size = tuple(crop), tuple(scale), base_size
        self.hflip, self.jitter = hflip, jitter

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = generator
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        h, w = image.shape[-2:]
        bh, bw = self.base_size or (h, w)
        s = _uniform(*self.scale, g)
        ry, rx = bh * s / h, bw * s / w  # source -> scaled pixels
        ch, cw = self.crop
        oh, ow = min(ch, max(1, round(h * ry))), min(cw, max(1, round(w * rx)))
        wh, ww = min(h, max(1, round(oh / ry))), min(w, max(1, round(ow / rx)))
        y, x = _randint(h - wh, g), _randint(w - ww, g)
        image, mask = image[:, y : y + wh, x : x + ww], mask[None, y : y + wh, x : x + ww]
        # jitter is per pixel (up to clamping and the contrast mean), so apply it on the
        # smaller of the window and the output: up to 16x fewer pixels at scale 2
        factors = self._jitter_factors(g)
        if factors and wh * ww < oh * ow:
            image = jitter_image(image, *factors)
        image = F.resize_image(image, [oh, ow], InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize_image(mask, [oh, ow], InterpolationMode.NEAREST_EXACT)[0]
        if factors and wh * ww >= oh * ow:
            image = jitter_image(image, *factors)
        if self.hflip and torch.rand((), generator=g).item() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if (oh, ow) != (ch, cw):
            image = F.pad_image(image, [0, 0, cw - ow, ch - oh], fill=0)
            mask = F.pad_image(mask[None], [0, 0, cw - ow, ch - oh], fill=IGNORE_VALUE)[0]
        return image, mask

    def _jitter_factors(self, g: torch.Generator | None) -> tuple[float, float, float] | None:
        if self.jitter <= 0:
            return None
        lo, hi = max(0.0, 1 - self.jitter), 1 + self.jitter
        return _uniform(lo, hi, g), _uniform(lo, hi, g), _uniform(lo, hi, g)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop={self.crop}, scale={self.scale}, base_size={self.base_size}, "
            f"hflip={self.hflip}, jitter={self.jitter})"
        )


class EvalTransform:
    """Full image; resized (image bilinear, mask NEAREST_EXACT) only when ``base_size`` is set,
    so validation sees the scale training saw. Padding to a multiple of 32 happens in
    :func:`bddseg.model.forward_padded`. ``resize_mask=False`` keeps the mask at its own size,
    for scoring predictions upsampled to it (the official metric's resolution)."""

    takes_generator = True

    def __init__(self, base_size: tuple[int, int] | None = None, resize_mask: bool = True):
        self.base_size, self.resize_mask = base_size, resize_mask

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        if self.base_size is None or tuple(image.shape[-2:]) == tuple(self.base_size):
            return image, mask
        size = list(self.base_size)
        image = F.resize_image(image, size, InterpolationMode.BILINEAR, antialias=True)
        if self.resize_mask:
            mask = F.resize_image(mask[None], size, InterpolationMode.NEAREST_EXACT)[0]
        return image, mask

    def __repr__(self) -> str:
        return f"EvalTransform(base_size={self.base_size}, resize_mask={self.resize_mask})"


def train_transform(cfg: DataConfig) -> TrainTransform:
    """The training augmentation described by ``cfg`` (crop, scale, base_size, hflip, jitter)."""
    return TrainTransform(cfg.crop, cfg.scale, cfg.base_size, cfg.hflip, cfg.jitter)


def eval_transform(cfg: DataConfig, resize_mask: bool = True) -> EvalTransform:
    """The evaluation transform: the image as is (or resized to ``cfg.base_size``; the mask too
    unless ``resize_mask`` is False)."""
    return EvalTransform(cfg.base_size, resize_mask)
