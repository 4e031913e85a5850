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


def test_custom_palette_colours_its_classes_and_leaves_k_and_255():
    palette = [(10, 20, 30), (200, 0, 0), (0, 200, 0)]  # K = 3: 3 is unknown
    lut = colors.palette_lut(palette)
    assert [tuple(c) for c in lut[:3]] == palette and not lut[3:].any()
    assert not lut.flags.writeable
    assert colors.palette_lut() is colors.PALETTE_LUT
    mask = np.array([[0, 2], [3, 255]], np.uint8)
    np.testing.assert_array_equal(colors.colorize(mask, palette), lut[mask])
    img = np.full((2, 2, 3), 100, np.uint8)
    out = colors.overlay(img, mask, alpha=1.0, palette=palette)
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[0, 1]) == (0, 200, 0)
    assert tuple(out[1, 0]) == (100, 100, 100) and tuple(out[1, 1]) == (100, 100, 100)
    black = colors.overlay(img, mask, alpha=1.0, unknown="black", palette=palette)
    assert tuple(black[1, 0]) == (0, 0, 0) and tuple(black[1, 1]) == (0, 0, 0)
    # id 3 is a class of BDD100K's palette, unknown of this one
    assert tuple(colors.overlay(img, mask, alpha=1.0)[1, 0]) == PALETTE[3]
