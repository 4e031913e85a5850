"""Class colors on pixels: the palette lookup table, color maps and overlays (numpy only).

The one place that turns train ids into RGB: ``bddseg predict`` writes its ``color/`` and
``overlay/`` images with it, and the figures of :mod:`bddseg.plots` and the report draw their
overlays with it. Kept apart from :mod:`bddseg.plots` so that predicting never imports
matplotlib.
"""

from __future__ import annotations

import numpy as np

from bddseg.labels import IGNORE_COLOR, IGNORE_VALUE, PALETTE, UNKNOWN_ID


def _palette_lut() -> np.ndarray:
    lut = np.empty((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOR
    lut[: len(PALETTE)] = PALETTE
    lut.flags.writeable = False
    return lut


PALETTE_LUT = _palette_lut()
"""uint8 ``(256, 3)``, read-only: train id -> RGB; 0..18 their official colors, 19 (unknown)
and 255 (unlabelled) black, as the official color maps draw them."""


def colorize(mask: np.ndarray) -> np.ndarray:
    """Palette color map of a mask, uint8 (H, W, 3); 19 and 255 black."""
    return PALETTE_LUT[np.asarray(mask).astype(np.uint8)]


def overlay(
    image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, unknown: str = "transparent"
) -> np.ndarray:
    """Blend the palette colors of ``mask`` over ``image`` (rounded to the nearest level).

    Args:
        image: uint8 (H, W, 3) RGB.
        mask: (H, W) class ids 0..18; 19 (unknown) and 255 (unlabelled) are left as the image
            (``unknown="transparent"``) or drawn black (``unknown="black"``).
        alpha: weight of the class color.

    Returns:
        uint8 (H, W, 3).
    """
    if unknown not in ("transparent", "black"):
        raise ValueError(f"unknown must be 'transparent' or 'black', got {unknown!r}")
    image, mask = np.asarray(image, dtype=np.uint8), np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    labelled = mask < len(PALETTE)
    if unknown == "black":
        labelled |= (mask == UNKNOWN_ID) | (mask == IGNORE_VALUE)
    color = colorize(mask).astype(np.float32)
    out = image.astype(np.float32)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * color[labelled]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


__all__ = ["PALETTE_LUT", "colorize", "overlay"]
