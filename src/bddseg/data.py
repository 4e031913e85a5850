"""Decode image/mask pairs and feed them to training: the torch wrappers of the decoders,
the ImageNet normalisation, the dataset and its collate function (the training order and
its loader are :mod:`bddseg.sampling`; evaluation's loader is
:func:`bddseg.evaluate.score_split`'s).

Masks are single-channel 8-bit PNGs holding train ids 0..18 and 255 (unlabelled); palette
PNGs are read by index, like the official color maps (the decoding itself is in
:mod:`bddseg.masks`). A dataset of another class set (:class:`bddseg.classes.Classes`: K
classes, or raw ids such as Cityscapes' labelIds) is read through it: its masks come out in
train ids 0..K-1 and 255 (:func:`dataset_classes_of`, :func:`split_pairs`). Every problem with a user file raises :class:`BddsegError` naming the
file. Finding the pairs on disk is :mod:`bddseg.layout`; checking a whole dataset,
:mod:`bddseg.check`; class statistics and weights, :mod:`bddseg.stats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from bddseg import masks
from bddseg.classes import BDD100K, Classes
from bddseg.config import DataConfig
from bddseg.errors import BddsegError, warn
from bddseg.labels import IGNORE_VALUE
from bddseg.layout import (
    LABELLED_SPLITS,
    Pair,
    dataset_classes,
    find_layout,
    list_pairs,
    normalize_split,
)
from bddseg.transforms import eval_transform, train_transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- decoding
def read_image(path: str | Path) -> torch.Tensor:
    """Decode a JPEG or PNG to ``uint8 (3, H, W)`` RGB.

    Raises:
        BddsegError: missing, empty, truncated or not an image; names the file.
    """
    data = masks.read_bytes(path, "image")
    if data[:8] == masks.PNG_SIGNATURE:
        # Pillow, after the CRC check: torchvision's PNG decoder (0.29) crashes the whole
        # process (SIGSEGV) on any libpng error, e.g. one flipped bit
        im = masks.open_png(data, path, "image")
        if im.mode.startswith("I"):  # 16-bit grayscale: keep the high byte
            gray = (np.asarray(im, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
            return torch.from_numpy(gray)[None].repeat(3, 1, 1)
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).contiguous()
    try:
        return decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
        )
    except (RuntimeError, ValueError) as e:
        raise BddsegError(f"cannot decode image: {_decode_reason(e)}", path) from None


def _decode_reason(e: Exception) -> str:
    msg = str(e)
    if "truncated" in msg or "Out of bound" in msg or "incomplete" in msg:
        return "the file is truncated or corrupt"
    if "Unsupported image file" in msg:
        return "not a JPEG or PNG file"
    return msg.splitlines()[0].rsplit(", ", 1)[-1][:120] if msg else e.__class__.__name__


def decode_mask(path: str | Path, classes: Classes = BDD100K) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`read_mask`, also returning the train-id histogram ``int64 (256,)``."""
    mask, counts = masks.read_mask_counts(path, "mask", classes)
    return torch.from_numpy(mask.copy() if not mask.flags.writeable else mask), torch.from_numpy(
        counts
    )


def read_mask(path: str | Path, classes: Classes = BDD100K) -> torch.Tensor:
    """Decode and validate a mask to ``uint8 (H, W)`` train ids (0..K-1 and 255; BDD100K:
    0..18), the raw values checked against and mapped through ``classes``
    (:func:`bddseg.masks.read_mask`, as a tensor).

    Raises:
        BddsegError: missing, empty, truncated, not a PNG, not single-channel 8-bit (RGB,
            16-bit, ...), or values ``classes`` does not allow (the message lists them).
    """
    return decode_mask(path, classes)[0]


def size_problem(mask_hw: Sequence[int], image_hw: Sequence[int]) -> str:
    """The reason given when a mask's ``(H, W)`` differs from its image's."""
    return f"mask is {mask_hw[1]}x{mask_hw[0]} but its image is {image_hw[1]}x{image_hw[0]}"


def init_decode_worker() -> None:
    """Initializer of a process that decodes (see :func:`bddseg.parallel.parallel_map`)."""
    torch.set_num_threads(1)  # one decoder per process; more threads only oversubscribe


# ---------------------------------------------------------------- dataset and loader
def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """``uint8 (..., 3, H, W)`` (or float in 0..1) -> ImageNet-normalised ``float32``, same
    shape and device: ``(x / 255 - mean) / std`` as one multiply and one subtract."""
    peak = 255.0 if image.dtype == torch.uint8 else 1.0
    scale = torch.tensor([1 / (peak * s) for s in IMAGENET_STD], device=image.device)
    shift = torch.tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    x = image.to(torch.float32, copy=True)
    return x.mul_(scale.view(3, 1, 1)).sub_(shift.to(image.device).view(3, 1, 1))


class SegDataset(Dataset):
    """Image/mask pairs -> ``(float32 (3, H, W) ImageNet-normalised, int64 (H, W))``, or with
    ``normalize=False`` ``(uint8 (3, H, W), uint8 (H, W))``: a fifth of the bytes through the
    loader's shared memory and the host-to-GPU copy; the training loop then normalises on the
    device with :func:`normalize_image` (same arithmetic, same result).

    ``classes``: the dataset's class set (K classes; BDD100K's 19 by default), through which
    every mask is read (checked, and mapped to train ids when it has a ``mapping``);
    ``mask_classes``, when the pairs come from roots with different mappings of the same
    classes: one set per pair (:func:`split_pairs`).
    ``unknown="class"``: 255 becomes class K (BDD100K: 19, 20 classes); ``"ignore"``: 255
    stays 255.
    Either way, pixels added by padding are 255, so the loss uses ``ignore_index=255`` in
    both modes. ``transform(image, mask, generator=...)`` gets ``tv_tensors.Image`` /
    ``tv_tensors.Mask`` (uint8) and the dataset's ``generator``, reseeded per sample in
    training (:class:`bddseg.sampling.SeededSamples`);
    any joint v2 transform works too (``takes_generator`` unset: called as ``transform(image,
    mask)``, using the global RNG). ``on_bad_sample="skip"`` returns ``None`` for a sample
    that fails to load (see :func:`collate_skip`) instead of raising.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        unknown: str = "class",
        transform: Callable | None = None,
        on_bad_sample: str = "error",
        normalize: bool = True,
        classes: Classes = BDD100K,
        mask_classes: Sequence[Classes] | None = None,
    ):
        if unknown not in ("class", "ignore"):
            raise BddsegError(f"unknown must be 'class' or 'ignore', got {unknown!r}")
        if on_bad_sample not in ("error", "skip"):
            raise BddsegError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        for p in pairs:
            if p.image is None or p.mask is None:
                what = "mask without an image" if p.image is None else "image without a mask"
                raise BddsegError(what, p.mask if p.image is None else p.image)
        self.pairs = list(pairs)
        self.unknown, self.transform, self.on_bad_sample = unknown, transform, on_bad_sample
        self.normalize, self.classes = normalize, classes
        if mask_classes is not None and len(mask_classes) != len(self.pairs):
            raise BddsegError(f"{len(self.pairs)} pairs but {len(mask_classes)} class sets")
        self.mask_classes = None if mask_classes is None else list(mask_classes)
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded, untransformed ``uint8 (3, H, W)`` image and ``uint8 (H, W)`` mask in train
        ids (255 already remapped to K under ``unknown="class"``)."""
        pair = self.pairs[index]
        classes = self.classes if self.mask_classes is None else self.mask_classes[index]
        image, mask = read_image(pair.image), read_mask(pair.mask, classes)
        if image.shape[1:] != mask.shape:
            raise BddsegError(size_problem(mask.shape, image.shape[1:]), pair.mask)
        if self.unknown == "class":
            raw = mask.numpy()  # numpy: single-threaded, see decode_mask
            raw[raw == IGNORE_VALUE] = self.classes.num
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            image, mask = self.load(index)
        except BddsegError as e:
            if self.on_bad_sample == "error":
                raise
            warn(f"skipping a bad sample: {e}")
            return None
        if self.transform is not None:
            image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
            if getattr(self.transform, "takes_generator", False):
                image, mask = self.transform(image, mask, generator=self.generator)
            else:
                image, mask = self.transform(image, mask)
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        if not self.normalize:
            return image, mask
        return normalize_image(image), mask.to(torch.int64)


# ---------------------------------------------------------------- the run's data
def root_classes(
    root: str | Path, dataset: str = "auto", classes_file: str | None = None
) -> Classes:
    """The class set of one dataset root: ``classes_file`` when given, else the root's own
    ``classes.yaml``, else its layout's classes (:func:`bddseg.layout.dataset_classes`).

    Raises:
        BddsegError: an unrecognised folder (the layout's error) or a bad class file.
    """
    return dataset_classes(find_layout(root, dataset), classes_file or None)


def _roots(cfg: DataConfig) -> tuple[str, ...]:
    if not cfg.root:
        raise BddsegError("no dataset root given (data.root)")
    return (cfg.root, *cfg.extra_roots)


def _roots_classes(cfg: DataConfig) -> list[Classes]:
    """Each root's class set; one error naming the first root whose class names differ."""
    roots = _roots(cfg)
    sets = [root_classes(r, cfg.dataset, cfg.classes or None) for r in roots]
    for root, classes in zip(roots[1:], sets[1:], strict=True):
        if not classes.same_labels(sets[0]):
            raise BddsegError(
                f"its classes ({', '.join(classes.names)}) differ from those of {roots[0]} "
                f"({', '.join(sets[0].names)}); data.extra_roots must share the classes of "
                "data.root",
                root,
            )
    return sets


def dataset_classes_of(cfg: DataConfig) -> Classes:
    """The run's class set: that of ``cfg.root`` (``cfg.classes``, else ROOT/classes.yaml,
    else its layout's; BDD100K for a BDD100K root), after checking that every root of
    ``cfg.extra_roots`` has the same class names. It keeps ``cfg.root``'s ``mapping``
    (how its masks are read); a model needs only its names (:meth:`Classes.labels_only`).

    Raises:
        BddsegError: no root, an unrecognised folder, a bad class file, or an extra root whose
            class names differ (naming it).
    """
    return _roots_classes(cfg)[0]


def split_pairs(cfg: DataConfig, split: str) -> tuple[list[Pair], list[Classes]]:
    """The pairs of ``split`` over ``cfg.root`` and then each of ``cfg.extra_roots`` (each
    root's in stem order, unpaired files included), and the class set each pair's mask is
    read through (its root's). The stems of extra root ``i`` (1, 2, ...) get the prefix
    ``extra{i}-`` (so ``abc`` of the second root is ``extra1-abc``): stems name the files
    bddseg writes (predicted masks, TensorBoard images), and two roots may share one.

    Raises:
        BddsegError: as :func:`dataset_classes_of`, a split a root lacks, or a stem that is
            still taken twice.
    """
    sets = _roots_classes(cfg)
    pairs: list[Pair] = []
    pair_classes: list[Classes] = []
    for i, (root, classes) in enumerate(zip(_roots(cfg), sets, strict=True)):
        found = list_pairs(root, split, cfg.dataset)
        if i:
            found = [dataclasses.replace(p, stem=f"extra{i}-{p.stem}") for p in found]
        pairs += found
        pair_classes += [classes] * len(found)
    seen: set[str] = set()
    for p in pairs:
        if p.stem in seen:
            raise BddsegError(f"stem {p.stem!r} appears twice across the dataset roots", p.image)
        seen.add(p.stem)
    return pairs, pair_classes


def build_dataset(
    cfg: DataConfig, split: str, train: bool, normalize: bool = True, full_masks: bool = False
) -> SegDataset:
    """The dataset for ``split`` of ``cfg.root`` (and ``cfg.extra_roots``: the union, see
    :func:`split_pairs`), read through its class set (:func:`dataset_classes_of`), with the
    train or the eval transform (``normalize``: see :class:`SegDataset`; ``full_masks``: eval
    masks stay at their own size when ``cfg.base_size`` resizes the images).

    Uses the first ``cfg.max_train_images`` (for ``cfg.train_split``) or ``max_val_images``
    (for ``cfg.val_split``) pairs in the order of :func:`split_pairs`. Unpaired files raise
    under ``on_bad_sample="error"`` and are left out (with a warning) under ``"skip"``.
    """
    split = normalize_split(split)
    if split not in LABELLED_SPLITS:
        raise BddsegError(f"the {split} split has no masks; use train or val")
    pairs, pair_classes = split_pairs(cfg, split)
    unpaired = [p for p in pairs if p.image is None or p.mask is None]
    if unpaired and cfg.on_bad_sample == "error":
        p = unpaired[0]
        what = "mask without an image" if p.image is None else "image without a mask"
        more = f" (and {len(unpaired) - 1} more unpaired files)" if len(unpaired) > 1 else ""
        hint = "; run `bddseg data check`, or set data.on_bad_sample: skip"
        raise BddsegError(what + more + hint, p.mask if p.image is None else p.image)
    if unpaired:
        warn(f"leaving out {len(unpaired)} unpaired file(s) in the {split} split")
    kept = [i for i, p in enumerate(pairs) if p.image is not None and p.mask is not None]
    limits = {
        normalize_split(cfg.train_split): cfg.max_train_images,
        normalize_split(cfg.val_split): cfg.max_val_images,
    }
    limit = limits.get(split)
    if limit is not None:
        kept = kept[:limit]
    pairs, pair_classes = [pairs[i] for i in kept], [pair_classes[i] for i in kept]
    classes = pair_classes[0] if pair_classes else dataset_classes_of(cfg)
    mixed = any(c != classes for c in pair_classes)  # extra roots with other mappings
    transform = train_transform(cfg) if train else eval_transform(cfg, not full_masks)
    return SegDataset(
        pairs,
        cfg.unknown,
        transform,
        cfg.on_bad_sample,
        normalize,
        classes,
        pair_classes if mixed else None,
    )


class Batch(NamedTuple):
    """``images (N, 3, H, W)``, ``masks (N, H, W)`` (float32 / int64, or both uint8 from a
    ``normalize=False`` dataset), ``skipped``: samples dropped because they failed to load
    (N may be 0 when all were)."""

    images: torch.Tensor
    masks: torch.Tensor
    skipped: int


def collate_skip(samples: list[tuple[torch.Tensor, torch.Tensor] | None]) -> Batch:
    """Stack the samples, dropping ``None`` (skipped) ones and counting them. Samples of
    different sizes are padded at the right and bottom: masks with 255, normalised images
    with 0 and uint8 images with the ImageNet mean colour (about 0 once normalised)."""
    good = [s for s in samples if s is not None]
    skipped = len(samples) - len(good)
    if not good:
        return Batch(torch.empty(0, 3, 0, 0), torch.empty(0, 0, 0, dtype=torch.int64), skipped)
    h = max(s[0].shape[-2] for s in good)
    w = max(s[0].shape[-1] for s in good)
    image_type, mask_type = good[0][0].dtype, good[0][1].dtype
    if all(s[0].shape[-2:] == (h, w) for s in good):  # the usual case: one size
        images = torch.stack([s[0] for s in good])
        return Batch(images, torch.stack([s[1] for s in good]), skipped)
    images = torch.zeros(len(good), 3, h, w, dtype=image_type)
    if image_type == torch.uint8:
        images[:] = torch.tensor([round(m * 255) for m in IMAGENET_MEAN]).view(3, 1, 1)
    masks = torch.full((len(good), h, w), IGNORE_VALUE, dtype=mask_type)
    for i, (image, mask) in enumerate(good):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return Batch(images, masks, skipped)
