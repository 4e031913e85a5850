"""Class colors on pixels (bddseg.colors): the palette table, color maps and overlays."""

from __future__ import annotations

import numpy as np
import pytest

from bddseg import colors
from bddseg.labels import PALETTE


def test_palette_lut_colors_train_ids_and_draws_the_rest_black():
    lut = colors.PALETTE_LUT
    assert lut.shape == (256, 3) and lut.dtype == np.uint8 and not lut.flags.writeable
    assert [tuple(c) for c in lut[:19]] == list(PALETTE)
    assert not lut[19:].any()  # unknown (19) and unlabelled (255) are black
    mask = np.array([[0, 13], [19, 255]], np.uint8)
    np.testing.assert_array_equal(colors.colorize(mask), lut[mask])


def test_overlay_blends_palette_and_leaves_unknown():
    img = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 13, 255], [19, 0, 1]], np.uint8)
    out = colors.overlay(img, mask, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert tuple(out[0, 0]) == tuple(round((100 + c) / 2) for c in PALETTE[0])
    assert tuple(out[0, 2]) == (100, 100, 100) and tuple(out[1, 0]) == (100, 100, 100)
    black = colors.overlay(img, mask, alpha=1.0, unknown="black")
    assert tuple(black[0, 2]) == (0, 0, 0) and tuple(black[0, 1]) == PALETTE[13]
    with pytest.raises(ValueError):
        colors.overlay(img, mask[:1])
    with pytest.raises(ValueError):
        colors.overlay(img, mask, unknown="white")
