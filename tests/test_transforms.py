"""Joint image + mask transforms: shapes, alignment, equivalences with torchvision."""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2 import InterpolationMode

from bddseg.config import DataConfig
from bddseg.transforms import TrainTransform, eval_transform, jitter_image, train_transform


def _striped(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky mask and an image whose red channel is 10 * mask id (so they can be compared)."""
    ids = (torch.arange(w) * 20 // w).to(torch.uint8)
    mask = ids.expand(h, -1).clone()
    mask[: h // 3] = 255
    red = torch.where(mask == 255, 250, mask * 10).to(torch.uint8)
    image = torch.stack([red, torch.zeros_like(red), torch.full_like(red, 7)])
    return image, mask


def test_train_transform_shapes_values_and_alignment():
    image, mask = _striped(180, 320)
    t = TrainTransform(crop=(64, 128), scale=(0.3, 2.0), hflip=True, jitter=0.0)
    g = torch.Generator().manual_seed(0)
    valid = set(range(20)) | {255}
    for _ in range(20):
        out_img, out_mask = t(image, mask, generator=g)
        assert out_img.shape == (3, 64, 128) and out_img.dtype == torch.uint8
        assert out_mask.shape == (64, 128) and out_mask.dtype == torch.uint8
        assert set(out_mask.unique().tolist()) <= valid  # nearest: no interpolated ids
        labelled = out_img[2] == 7  # not padding
        assert (out_mask[~labelled] == 255).all()  # padding is 255 in the mask
        red = out_img[0][labelled].long()
        m = out_mask[labelled].long()
        expect = torch.where(m == 255, 250, m * 10)
        # bilinear mixes neighbours only at the 16-px stripe borders: most pixels agree
        assert ((red - expect).abs() <= 2).float().mean() > 0.8


def test_crop_then_resize_equals_resize_then_crop():
    """At scale 2 the source window is exact: the mask matches the reference pipeline (resize
    everything, then crop) pixel for pixel, the image everywhere but the window's border."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=g)
    mask = torch.randint(0, 20, (40, 60), dtype=torch.uint8, generator=g)
    ref_img = TF.resize_image(image, [80, 120], InterpolationMode.BILINEAR, antialias=True)
    ref_mask = TF.resize_image(mask[None], [80, 120], InterpolationMode.NEAREST_EXACT)[0]
    t = TrainTransform(crop=(32, 48), scale=(2.0, 2.0), hflip=False, jitter=0.0)
    for _ in range(5):
        out_img, out_mask = t(image, mask, generator=g)
        offsets = [
            (y, x)
            for y in range(0, 80 - 32 + 1, 2)
            for x in range(0, 120 - 48 + 1, 2)
            if torch.equal(ref_mask[y : y + 32, x : x + 48], out_mask)
        ]
        assert len(offsets) == 1
        y, x = offsets[0]
        inner = ref_img[:, y + 1 : y + 31, x + 1 : x + 47]
        assert torch.equal(out_img[:, 1:-1, 1:-1], inner)


def test_flip_moves_image_and_mask_together():
    image, mask = _striped(32, 64)
    t = TrainTransform(crop=(32, 64), scale=(1.0, 1.0), hflip=True, jitter=0.0)
    g = torch.Generator().manual_seed(1)
    flipped = 0
    for _ in range(10):
        out_img, out_mask = t(image, mask, generator=g)
        expect = torch.where(out_mask == 255, 250, out_mask * 10).to(torch.uint8)
        assert torch.equal(out_img[0], expect)
        flipped += torch.equal(out_mask, mask.flip(-1))
    assert 0 < flipped < 10


def test_jitter_changes_image_only():
    image, mask = _striped(32, 64)
    t = TrainTransform(crop=(32, 64), scale=(1.0, 1.0), hflip=False, jitter=0.5)
    out_img, out_mask = t(image, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_mask, mask) and not torch.equal(out_img, image)


def test_fast_jitter_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8, generator=g)
    for b, c, s in [(1.0, 1.0, 1.0), (1.3, 0.7, 1.2), (0.7, 1.3, 0.6)]:
        ref = TF.adjust_brightness_image(image, b)
        ref = TF.adjust_saturation_image(TF.adjust_contrast_image(ref, c), s)
        diff = (jitter_image(image, b, c, s).int() - ref.int()).abs()
        assert diff.float().mean() < 2.0 and diff.max() <= 8  # torchvision truncates 3x


def test_eval_transform_keeps_or_resizes():
    image, mask = _striped(32, 64)
    same = eval_transform(DataConfig())(image, mask)
    assert torch.equal(same[0], image) and torch.equal(same[1], mask)
    img2, mask2 = eval_transform(DataConfig(base_size=(16, 32)))(image, mask)
    assert img2.shape == (3, 16, 32) and mask2.shape == (16, 32)
    assert set(mask2.unique().tolist()) <= set(mask.unique().tolist())


def test_train_transform_from_config():
    t = train_transform(DataConfig(crop=(8, 16), scale=(1.0, 1.5), jitter=0.0, hflip=False))
    assert (t.crop, t.scale, t.jitter, t.hflip) == ((8, 16), (1.0, 1.5), 0.0, False)
    assert "TrainTransform" in repr(t)
