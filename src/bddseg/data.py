"""Find BDD100K on disk, decode and check image/mask pairs, and feed them to training.

Three layouts are recognised under a dataset ``ROOT`` (``val`` and ``valid`` both mean val)::

    official   ROOT/bdd100k/images/10k/{train,val,test}/*.jpg
               ROOT/bdd100k/labels/sem_seg/masks/{train,val}/*.png
    flat       the same without the top ``bdd100k/`` folder
    seed       ROOT/[bdd100k/]images/{train,valid}, labels/{train,valid}, test/ (the original project)

Images and masks pair by file stem. Masks are single-channel 8-bit PNGs holding train ids
0..18 and 255 (unlabelled); palette PNGs are read by index, like the official color maps.
Every problem with a user file raises :class:`BddsegError` naming the file.
Class statistics and weights are in :mod:`bddseg.stats` (which builds on this module).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from bddseg import masks
from bddseg.config import DataConfig
from bddseg.errors import BddsegError
from bddseg.labels import IGNORE_VALUE, UNKNOWN_ID
from bddseg.transforms import eval_transform, train_transform

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_PARALLEL = 48  # fewer items than this are done inline: starting processes costs more

EXPECTED_LAYOUTS = (
    "expected ROOT/bdd100k/images/10k/{train,val,test} with ROOT/bdd100k/labels/sem_seg/masks/"
    "{train,val} (official zips), the same without bdd100k/, or ROOT/images/{train,valid} with "
    "ROOT/labels/{train,valid} (original project layout)"
)


# ---------------------------------------------------------------- finding the data
@dataclass(frozen=True)
class Pair:
    """An image and its mask, matched by file stem; either may be missing."""

    stem: str
    image: Path | None
    mask: Path | None


@dataclass(frozen=True)
class Layout:
    """Where each split's images and masks live (folders may not exist)."""

    name: str  # "official", "flat" or "seed"
    base: Path
    images: dict[str, Path]
    masks: dict[str, Path]


def normalize_split(split: str) -> str:
    """``valid`` -> ``val``; anything else not in :data:`SPLITS` is an error."""
    s = "val" if split == "valid" else split
    if s not in SPLITS:
        raise BddsegError(f"unknown split {split!r} (valid: train, val, test)")
    return s


def _val_dir(parent: Path, where: Path) -> Path:
    val, valid = parent / "val", parent / "valid"
    if val.is_dir() and valid.is_dir():
        raise BddsegError(f"both {val.name}/ and {valid.name}/ exist in {parent}; keep one", where)
    return valid if valid.is_dir() else val


def _layout_at(base: Path) -> Layout | None:
    if (base / "images" / "10k").is_dir():
        images = base / "images" / "10k"
        masks = base / "labels" / "sem_seg" / "masks"
        name = "official" if base.name == "bdd100k" else "flat"
        return Layout(
            name,
            base,
            {"train": images / "train", "val": _val_dir(images, base), "test": images / "test"},
            {"train": masks / "train", "val": _val_dir(masks, base)},
        )
    images = base / "images"
    if (images / "train").is_dir() or (images / "valid").is_dir() or (images / "val").is_dir():
        test = base / "test" if (base / "test").is_dir() else images / "test"
        labels = base / "labels"
        return Layout(
            "seed",
            base,
            {"train": images / "train", "val": _val_dir(images, base), "test": test},
            {"train": labels / "train", "val": _val_dir(labels, base)},
        )
    return None


def find_layout(root: str | Path) -> Layout:
    """Recognise the layout under ``root`` (see the module docstring).

    Raises:
        BddsegError: the root is missing, not a folder, or none of the layouts (the message
            says what was expected, and names a parent folder that would work if there is one).
    """
    root = Path(root)
    if not root.exists():
        raise BddsegError("dataset root not found", root)
    if not root.is_dir():
        raise BddsegError("dataset root is not a folder", root)
    for base in (root / "bdd100k", root):
        layout = _layout_at(base)
        if layout is not None:
            return layout
    hint = ""
    for parent in list(root.resolve().parents)[:4]:
        if _layout_at(parent) or _layout_at(parent / "bdd100k"):
            hint = f"; did you mean {parent}?"
            break
    raise BddsegError(f"not a BDD100K dataset root: {EXPECTED_LAYOUTS}{hint}", root)


def _splits(layout: Layout) -> list[str]:
    masks = layout.masks
    return [s for s in SPLITS if layout.images[s].is_dir() or (s in masks and masks[s].is_dir())]


def splits_present(root: str | Path) -> list[str]:
    """The splits (in train, val, test order) that have an image or a mask folder."""
    return _splits(find_layout(root))


def _scan(folder: Path | None, suffixes: tuple[str, ...]) -> tuple[dict[str, Path], list[Path]]:
    """Files by stem, and the extra files whose stem was already taken."""
    found: dict[str, Path] = {}
    dupes: list[Path] = []
    if folder is None or not folder.is_dir():
        return found, dupes
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in suffixes or not p.is_file():
            continue
        if p.stem in found:
            dupes.append(p)
        else:
            found[p.stem] = p
    return found, dupes


def _pairs_and_dupes(root: str | Path, split: str) -> tuple[list[Pair], list[Path]]:
    layout = find_layout(root)
    split = normalize_split(split)
    if split not in _splits(layout):
        found = ", ".join(_splits(layout)) or "none"
        raise BddsegError(f"no {split} split in this dataset (found: {found})", root)
    images, dupes = _scan(layout.images[split], IMAGE_SUFFIXES)
    masks, mask_dupes = _scan(layout.masks.get(split), (".png",))
    pairs = [Pair(s, images.get(s), masks.get(s)) for s in sorted(images.keys() | masks.keys())]
    return pairs, dupes + mask_dupes


def list_pairs(root: str | Path, split: str) -> list[Pair]:
    """All stems of ``split`` sorted, including images without masks and masks without images.

    The test split has no masks: its pairs all have ``mask=None``.
    """
    return _pairs_and_dupes(root, split)[0]


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


def decode_mask(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`read_mask`, also returning the value histogram ``int64 (256,)``."""
    mask, counts = masks.read_mask_counts(path)
    return torch.from_numpy(mask.copy() if not mask.flags.writeable else mask), torch.from_numpy(
        counts
    )


def read_mask(path: str | Path) -> torch.Tensor:
    """Decode and validate a mask to ``uint8 (H, W)`` with values in 0..18 and 255
    (:func:`bddseg.masks.read_mask`, as a tensor).

    Raises:
        BddsegError: missing, empty, truncated, not a PNG, not single-channel 8-bit (RGB,
            16-bit, ...), or values outside 0..18 and 255 (the message lists them).
    """
    return decode_mask(path)[0]


# ---------------------------------------------------------------- checking
@dataclass
class CheckReport:
    """``summary[split]``: images, masks, bad (stems with a problem), seconds, pairs_per_s.
    ``problems``: ``(path, reason)``, one per problem, all of them."""

    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _size_problem(mask_hw: Sequence[int], image_hw: Sequence[int]) -> str:
    return f"mask is {mask_hw[1]}x{mask_hw[0]} but its image is {image_hw[1]}x{image_hw[0]}"


def _check_pair(pair: Pair) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    size = None
    if pair.image is not None:
        try:
            size = tuple(read_image(pair.image).shape[1:])
        except BddsegError as e:
            problems.append((str(pair.image), e.problem))
    if pair.mask is not None:
        try:
            msize = tuple(read_mask(pair.mask).shape)
            if size is not None and msize != size:
                problems.append((str(pair.mask), _size_problem(msize, size)))
        except BddsegError as e:
            problems.append((str(pair.mask), e.problem))
    return problems


def _check_chunk(pairs: list[Pair]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(p.stem, _check_pair(p)) for p in pairs]


def _init_worker() -> None:
    torch.set_num_threads(1)  # one decoder per process; more threads only oversubscribe


def _chunks(items: Sequence, workers: int) -> list[list]:
    size = max(1, min(64, math.ceil(len(items) / (4 * max(1, workers)))))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def parallel_map(
    fn: Callable, items: Sequence, workers: int, pool: ProcessPoolExecutor | None = None
) -> list:
    """``[fn(chunk) for chunk in chunks(items)]`` in a process pool (inline for workers <= 1).

    ``fn`` must be a module-level function; pass ``pool`` to reuse one across calls."""
    chunks = _chunks(items, workers)
    if workers <= 1 or len(items) < MIN_PARALLEL:
        return [fn(c) for c in chunks]
    if pool is not None:
        return list(pool.map(fn, chunks))
    with _pool(min(workers, len(chunks))) as pool:
        return list(pool.map(fn, chunks))


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, initializer=_init_worker)


def check_dataset(root: str | Path, workers: int = 1) -> CheckReport:
    """Check every pair of every split present, listing all problems at once.

    For each split: every image decodes, every mask decodes as single-channel 8-bit with values
    in 0..18 and 255 and has its image's height and width, every train/val image has a mask,
    no mask lacks an image, no stem appears twice. Decoding runs in ``workers`` processes.
    """
    report = CheckReport()
    layout = find_layout(root)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(_pool(workers)) if workers > 1 else None
        for split in _splits(layout):
            report.summary[split], problems = _check_split(root, layout, split, workers, pool)
            report.problems += problems
    return report


def _check_split(
    root: str | Path, layout: Layout, split: str, workers: int, pool: ProcessPoolExecutor | None
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    pairs, dupes = _pairs_and_dupes(root, split)
    problems = [(str(p), "duplicate stem: another file has the same name") for p in dupes]
    if not pairs:  # a folder that exists but holds nothing is a mistake, not a clean split
        problems.append((str(layout.images[split]), f"the {split} split is empty (no images)"))
    bad = {p.stem for p in dupes}
    for p in pairs:
        if p.image is None:
            problems.append((str(p.mask), "mask without an image"))
            bad.add(p.stem)
        elif p.mask is None and split in LABELLED_SPLITS:
            missing = layout.masks[split] / f"{p.stem}.png"
            problems.append((str(p.image), f"image without a mask (no {missing})"))
            bad.add(p.stem)
    start = time.perf_counter()
    for chunk in parallel_map(_check_chunk, pairs, workers, pool):
        for stem, found in chunk:
            problems += found
            if found:
                bad.add(stem)
    seconds = time.perf_counter() - start
    summary = {
        "images": sum(p.image is not None for p in pairs),
        "masks": sum(p.mask is not None for p in pairs),
        "bad": len(bad),
        "seconds": seconds,
        "pairs_per_s": len(pairs) / seconds if seconds > 0 else 0.0,
    }
    return summary, sorted(problems)


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

    ``unknown="class"``: raw 255 becomes class 19 (20 classes); ``"ignore"``: 255 stays 255.
    Either way, pixels added by padding are 255, so the loss uses ``ignore_index=255`` in
    both modes. ``transform(image, mask, generator=...)`` gets ``tv_tensors.Image`` /
    ``tv_tensors.Mask`` (uint8) and the dataset's ``generator``, reseeded per loader worker;
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
        self.normalize = normalize
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded, untransformed ``uint8 (3, H, W)`` image and ``uint8 (H, W)`` mask (255
        already remapped to 19 under ``unknown="class"``)."""
        pair = self.pairs[index]
        image, mask = read_image(pair.image), read_mask(pair.mask)
        if image.shape[1:] != mask.shape:
            raise BddsegError(_size_problem(mask.shape, image.shape[1:]), pair.mask)
        if self.unknown == "class":
            raw = mask.numpy()  # numpy: single-threaded, see decode_mask
            raw[raw == IGNORE_VALUE] = UNKNOWN_ID
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            image, mask = self.load(index)
        except BddsegError as e:
            if self.on_bad_sample == "error":
                raise
            log.warning("skipping a bad sample: %s", e)
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


def build_dataset(
    cfg: DataConfig, split: str, train: bool, normalize: bool = True, full_masks: bool = False
) -> SegDataset:
    """The dataset for ``split`` of ``cfg.root``, with the train or the eval transform
    (``normalize``: see :class:`SegDataset`; ``full_masks``: eval masks stay at their own
    size when ``cfg.base_size`` resizes the images).

    Uses the first ``cfg.max_train_images`` (for ``cfg.train_split``) or ``max_val_images``
    (for ``cfg.val_split``) pairs in stem order. Unpaired files raise under
    ``on_bad_sample="error"`` and are left out (with a warning) under ``"skip"``.
    """
    if not cfg.root:
        raise BddsegError("no dataset root given (data.root)")
    split = normalize_split(split)
    if split not in LABELLED_SPLITS:
        raise BddsegError(f"the {split} split has no masks; use train or val")
    pairs = list_pairs(cfg.root, split)
    unpaired = [p for p in pairs if p.image is None or p.mask is None]
    if unpaired and cfg.on_bad_sample == "error":
        p = unpaired[0]
        what = "mask without an image" if p.image is None else "image without a mask"
        more = f" (and {len(unpaired) - 1} more unpaired files)" if len(unpaired) > 1 else ""
        hint = "; run `bddseg data check`, or set data.on_bad_sample: skip"
        raise BddsegError(what + more + hint, p.mask if p.image is None else p.image)
    if unpaired:
        log.warning("leaving out %d unpaired file(s) in the %s split", len(unpaired), split)
    pairs = [p for p in pairs if p.image is not None and p.mask is not None]
    limits = {
        normalize_split(cfg.train_split): cfg.max_train_images,
        normalize_split(cfg.val_split): cfg.max_val_images,
    }
    limit = limits.get(split)
    if limit is not None:
        pairs = pairs[:limit]
    transform = train_transform(cfg) if train else eval_transform(cfg, not full_masks)
    return SegDataset(pairs, cfg.unknown, transform, cfg.on_bad_sample, normalize)


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


def _rank_offset() -> int:
    """Distinct augmentation streams per process under DDP (ranks share the seed)."""
    dist = torch.distributed
    return 1_000_003 * dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _generator_of(dataset: Dataset) -> torch.Generator | None:
    while not hasattr(dataset, "generator") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # through Subset and friends
    g = getattr(dataset, "generator", None)
    return g if isinstance(g, torch.Generator) else None


def _seed_worker(worker_id: int) -> None:
    info = get_worker_info()
    g = _generator_of(info.dataset)
    if g is not None:
        g.manual_seed(info.seed + _rank_offset())  # the loader's per-epoch base seed + worker id
    torch.set_num_threads(1)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader yielding :class:`Batch` ``(images, masks, skipped)``.

    Deterministic for a fixed ``seed`` (and world size): the shuffling uses a generator seeded
    with ``seed``; with ``workers=0`` the dataset's augmentation generator is reseeded with
    ``seed`` here (this mutates ``dataset.generator``), with workers each worker reseeds it
    from the loader's per-epoch base seed. Augmentations differ between epochs either way, and
    between DDP ranks.
    """
    g = torch.Generator().manual_seed(seed)
    augment = _generator_of(dataset)
    if augment is not None:
        augment.manual_seed(seed + _rank_offset())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_skip,
        drop_last=drop_last,
        generator=g,
        worker_init_fn=_seed_worker if workers > 0 else None,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
