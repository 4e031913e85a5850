"""Class colors on pixels: the palette lookup table, color maps and overlays (numpy only).

The one place that turns train ids into RGB: ``bddseg predict`` writes its ``color/`` and
``overlay/`` images with it, and the figures of :mod:`bddseg.plots` and the report draw their
overlays with it. Kept apart from :mod:`bddseg.plots` so that predicting never imports
matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from bddseg.labels import IGNORE_COLOR, IGNORE_VALUE, PALETTE

Palette = Sequence[Sequence[int]]


def palette_lut(palette: Palette | None = None) -> np.ndarray:
    """uint8 ``(256, 3)``, read-only: train id -> RGB for the K colours of ``palette``
    (default BDD100K's 19); K (unknown), 255 (unlabelled) and any other id black, as the
    official color maps draw them."""
    if palette is None:
        return PALETTE_LUT
    return _lut(tuple(tuple(int(v) for v in c) for c in palette))


@lru_cache(maxsize=16)
def _lut(palette: tuple[tuple[int, ...], ...]) -> np.ndarray:
    if not 1 <= len(palette) < IGNORE_VALUE - 1 or any(len(c) != 3 for c in palette):
        raise ValueError(f"a palette is 1 to {IGNORE_VALUE - 2} [r, g, b] colours")
    lut = np.empty((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOR
    lut[: len(palette)] = palette
    lut.flags.writeable = False
    return lut


PALETTE_LUT = _lut(PALETTE)
"""uint8 ``(256, 3)``, read-only: train id -> RGB; 0..18 their official colors, 19 (unknown)
and 255 (unlabelled) black, as the official color maps draw them."""


def colorize(mask: np.ndarray, palette: Palette | None = None) -> np.ndarray:
    """Palette color map of a mask, uint8 (H, W, 3); K (unknown, K = ``len(palette)``, 19 by
    default) and 255 black."""
    return palette_lut(palette)[np.asarray(mask).astype(np.uint8)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    unknown: str = "transparent",
    palette: Palette | None = None,
    color: np.ndarray | None = None,
) -> np.ndarray:
    """Blend the palette colors of ``mask`` over ``image`` (rounded to the nearest level).

    Args:
        image: uint8 (H, W, 3) RGB.
        mask: (H, W) class ids 0..K-1 (K = ``len(palette)``); K (unknown) and 255
            (unlabelled) are left as the image (``unknown="transparent"``) or drawn black
            (``unknown="black"``).
        alpha: weight of the class color.
        palette: the K classes' RGB colours (default BDD100K's 19).
        color: ``colorize(mask, palette)`` when the caller has it already.

    Returns:
        uint8 (H, W, 3).
    """
    if unknown not in ("transparent", "black"):
        raise ValueError(f"unknown must be 'transparent' or 'black', got {unknown!r}")
    image, mask = np.asarray(image, dtype=np.uint8), np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    k = len(PALETTE if palette is None else palette)
    labelled = mask < k
    if unknown == "black":
        labelled |= (mask == k) | (mask == IGNORE_VALUE)
    color = colorize(mask, palette) if color is None else color
    if alpha == 0.5:  # predict's overlays: the same bytes in integers, 6x faster on 720p
        # round(0.5 * a + 0.5 * b) for integers a, b is (a + b + 1) >> 1 exactly
        blend = (image.astype(np.uint16) + color + 1) >> 1
        return np.where(labelled[..., None], blend, image).astype(np.uint8)
    out = image.astype(np.float32)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * color[labelled].astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


__all__ = ["PALETTE_LUT", "colorize", "overlay", "palette_lut"]
