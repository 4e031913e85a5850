"""Per-class statistics of a split and class weights for the loss, cached by a fingerprint.

Counts cover the K train ids of the dataset's class set and ``unknown`` (255), in
``classes.model_names("class")`` order (BDD100K: the 19 and ``unknown``,
:data:`~bddseg.labels.CLASS_NAMES_20`): K + 1 columns. Masks are read through the class set
(:func:`bddseg.masks.remap_histogram`: raw ids such as Cityscapes' labelIds counted as train
ids). Weight formulas are in :func:`compute_stats`. One pass over the masks gives both the
statistics and the per-image class presence (:func:`image_presence`); both are cached in one
file, in the folder given as ``cache_dir`` (by default :func:`default_cache_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bddseg import fastpng
from bddseg.classes import BDD100K, Classes
from bddseg.config import DataConfig, choices
from bddseg.data import init_decode_worker, root_classes, split_pairs
from bddseg.errors import BddsegError
from bddseg.files import atomic_write_text
from bddseg.labels import IGNORE_VALUE
from bddseg.layout import list_pairs, normalize_split
from bddseg.masks import decode_mask, histogram, read_bytes, remap_histogram
from bddseg.parallel import parallel_map

# the weighting methods: the config's choices for loss.class_weights, less "none"
METHODS = tuple(m for m in choices("loss.class_weights") if m != "none")
CACHE_VERSION = 2  # 2: absent classes weigh 0; the per-image presence is cached too


def _values(k: int) -> list[int]:
    """The train ids counted, in ``model_names("class")`` order: 0..K-1, then 255 (unknown)."""
    return [*range(k), IGNORE_VALUE]


def default_cache_dir() -> Path:
    """Where :func:`compute_stats` caches by default: ``$BDDSEG_CACHE``, else
    ``~/.cache/bddseg`` (not the dataset root: it may be read-only)."""
    env = os.environ.get("BDDSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bddseg"


def stats_fingerprint(
    masks: list[Path],
    beta: float | None,
    class_sets: Sequence[Classes] = (BDD100K,),
    mask_sets: Sequence[int] | None = None,
) -> str:
    """sha256 over each mask's name, size and mtime (ns), plus the settings that change the
    result: ``beta`` and the class sets the masks are read through (names, ignore value,
    mapping; ``mask_sets[i]``: the index in ``class_sets`` of mask ``i``'s set, all 0 when
    None). Renaming, adding, removing or rewriting a mask changes it, and so does another
    class set or mapping; reading does not. BDD100K's alone keeps the key of before."""
    head = f"bddseg-stats-v{CACHE_VERSION}|beta={beta}"
    if tuple(class_sets) != (BDD100K,):
        sets = [(c.names, c.ignore, c.mapping) for c in class_sets]
        head += f"|classes={sets!r}"
    h = hashlib.sha256(head.encode())
    for i, m in enumerate(masks):
        st = m.stat()
        h.update(f"|{m.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        if mask_sets is not None and len(class_sets) > 1:
            h.update(f"|set{mask_sets[i]}".encode())
    return h.hexdigest()


def _mask_counts(path: Path, classes: Classes = BDD100K) -> torch.Tensor:
    """A validated mask's train-id histogram, ``int64 (256,)``: the raw values through the
    native kernel of :mod:`bddseg.fastpng` where it applies (about 0.6 ms per real mask
    instead of 4 ms), checked against and mapped through ``classes``."""
    data = read_bytes(path, "mask")
    hist = fastpng.value_histogram(data)
    if hist is None:  # another kind of PNG or a bad file: the general decoder (names it)
        hist = histogram(decode_mask(data, path))
    return torch.from_numpy(remap_histogram(hist, classes, 0, path))


def _count_chunk(
    items: list[tuple[Path, int]], class_sets: Sequence[Classes] = (BDD100K,)
) -> torch.Tensor:
    """``int64 (len(items), K + 1)``: each mask's pixels per class (``model_names("class")``
    order), mask ``path`` read through ``class_sets[index]`` for each ``(path, index)``. A
    valid mask holds no other values, so a row's sum is the mask's size."""
    columns = _values(class_sets[0].num)
    return torch.stack([_mask_counts(path, class_sets[i])[columns] for path, i in items])


def image_presence(
    root: str | Path,
    split: str = "train",
    workers: int = 1,
    max_images: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    classes: Classes | None = None,
    dataset: str = "auto",
    classes_file: str | Path | None = None,
) -> torch.Tensor:
    """``bool (N, K + 1)`` (BDD100K: ``(N, 20)``): class presence per image of the split's
    complete pairs, in the order of :func:`bddseg.data.build_dataset` (stem order, the first
    ``max_images``), columns in ``classes.model_names("class")`` order. ``classes``,
    ``dataset``, ``classes_file``: as :func:`compute_stats`.

    Counted in the same pass as :func:`compute_stats` and cached in the same file (same
    arguments, same meaning), so calling both reads each mask once.
    """
    sources = _root_sources(root, split, dataset, max_images)
    sets = (classes or root_classes(root, dataset, classes_file),)
    return _split_counts(sources, sets, split, root, workers, cache, None, cache_dir)[1]


def _normalise(w: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean 1 over the present classes, 0 for the absent ones."""
    w = torch.where(present, w, 0.0)
    return w * present.sum() / w.sum()


def weights_from_counts(
    pixels: torch.Tensor, image_pixels: torch.Tensor, beta: float | None = None
) -> dict[str, torch.Tensor]:
    """Class weights from ``pixels[c]`` and ``image_pixels[c]`` (float64, any length K).

    See :func:`compute_stats` for the formulas. Each method is normalised here, once: mean 1
    over the present classes (``pixels > 0``), 0 for the absent ones. Needs at least one
    present class.
    """
    present = pixels > 0
    n = pixels.clamp(min=1)
    inverse = n.sum() / n
    freq = n / image_pixels.clamp(min=1)
    median = freq[present].median() / freq  # torch's median takes the lower middle: fine here
    one_minus_beta = int(present.sum()) / float(pixels.sum()) if beta is None else 1.0 - beta
    if not 0.0 < one_minus_beta < 1.0:
        raise BddsegError(f"beta must be in (0, 1), got {beta}")
    # 1 - beta^n computed as -expm1(n log beta): beta^n underflows nothing and keeps precision
    effective = one_minus_beta / -torch.expm1(n * math.log1p(-one_minus_beta))
    return {
        "inverse": _normalise(inverse, present),
        "median": _normalise(median, present),
        "effective": _normalise(effective, present),
    }


def compute_stats(
    root: str | Path,
    split: str = "train",
    workers: int = 1,
    cache: bool = True,
    beta: float | None = None,
    max_images: int | None = None,
    cache_dir: str | Path | None = None,
    classes: Classes | None = None,
    dataset: str = "auto",
    classes_file: str | Path | None = None,
) -> dict[str, Any]:
    """Per-class pixel share, image counts and three kinds of class weights for a split.

    Counts cover the masks of complete pairs of ``root`` (the first ``max_images`` in stem
    order when set; ``dataset``: its layout, ``auto`` detected), read through ``classes``;
    ``None`` (the default): the root's own class set, ``classes_file`` if given
    (:func:`bddseg.data.root_classes`; BDD100K for a BDD100K root). For a run's data
    (``data.extra_roots`` too) see :func:`dataset_stats`. With ``n_c`` the pixels
    of class ``c`` (the K train ids and ``unknown`` = 255),
    ``N = sum_c n_c``, ``T_c`` the total pixels of the images containing ``c``, and ``P`` the
    ``C`` classes with ``n_c > 0``:

    - ``pixel_share[c] = 100 * n_c / N``; ``image_count[c]`` = images with a pixel of ``c``.
    - ``inverse``: ``w_c = N / n_c``.
    - ``median`` (median-frequency balancing, Eigen & Fergus 2015): ``freq_c = n_c / T_c``,
      ``w_c = median_{p in P}(freq_p) / freq_c``.
    - ``effective`` (effective number of samples, Cui et al. 2019) over pixel counts:
      ``E_c = (1 - beta^n_c) / (1 - beta)``, ``w_c = 1 / E_c``. ``E_c`` grows like ``n_c`` for
      small classes and saturates at ``1 / (1 - beta)``. Over pixels a fixed ``beta`` such as
      0.9999 saturates at 10^4 pixels, so every BDD100K class would get the same weight; the
      default ``beta = 1 - C / N`` puts the saturation at a balanced class's share (``N / C``
      pixels): classes at or above their fair share get about equal weights, rarer classes
      about inverse-frequency ones. Pass ``beta`` to choose another.

    Each method is normalised to mean 1 over ``P``. A class absent from the split (``n_c = 0``)
    gets weight 0: its count says nothing about how rare it is, so no formula applies (the
    inverse would be the largest of all). In the loss a weight-0 class adds nothing to the
    sum or the normaliser (:mod:`bddseg.losses`), so if it does occur in data these counts did
    not cover (a ``max_images`` subset, another split), its pixels do not train the model:
    count the data you train on.

    With ``cache`` (the default) the result and the per-image presence
    (:func:`image_presence`) are kept in ``cache_dir`` (None: :func:`default_cache_dir`, i.e.
    ``$BDDSEG_CACHE`` or ``~/.cache/bddseg``) as ``stats-SPLIT-FINGERPRINT.json`` (see
    :func:`stats_fingerprint`), and read back from there while the masks and settings are
    unchanged. An unwritable cache folder only costs a recount next time. The key includes
    the class set (names and mapping): another mapping of the same masks is counted anew.

    Returns:
        ``{"pixel_share": {name: percent}, "image_count": {name: int}, "weights": {"inverse":
        {name: w}, "median": {...}, "effective": {...}}, "num_images": int}``, names in
        ``classes.model_names("class")`` order (BDD100K: :data:`~bddseg.labels.CLASS_NAMES_20`).

    Raises:
        BddsegError: bad root or split, no masks, or an invalid mask (naming it).
    """
    sources = _root_sources(root, split, dataset, max_images)
    sets = (classes or root_classes(root, dataset, classes_file),)
    return _split_counts(sources, sets, split, root, workers, cache, beta, cache_dir)[0]


def dataset_stats(
    cfg: DataConfig,
    split: str = "train",
    workers: int = 1,
    cache: bool = True,
    beta: float | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """``(compute_stats's dict, image_presence's bool (N, K + 1))`` for a run's data: the
    complete pairs of ``split`` over ``cfg.root`` and ``cfg.extra_roots``, each mask read
    through its root's class set, the first ``cfg.max_train_images`` / ``max_val_images``:
    exactly the masks and the order of :func:`bddseg.data.build_dataset`. Cached as
    :func:`compute_stats` is (the key covers every root's class set)."""
    split = normalize_split(split)
    pairs, pair_classes = split_pairs(cfg, split)
    kept = [i for i, p in enumerate(pairs) if p.image is not None and p.mask is not None]
    limits = {
        normalize_split(cfg.train_split): cfg.max_train_images,
        normalize_split(cfg.val_split): cfg.max_val_images,
    }
    if limits.get(split) is not None:
        kept = kept[: limits[split]]
    sets: list[Classes] = []
    for c in pair_classes:
        if c not in sets:
            sets.append(c)
    sources = [(pairs[i].mask, sets.index(pair_classes[i])) for i in kept]
    if not sets:
        sets = [BDD100K]  # no pairs at all: the error below names the root
    return _split_counts(sources, sets, split, cfg.root, workers, cache, beta, cache_dir)


def _root_sources(
    root: str | Path, split: str, dataset: str, max_images: int | None
) -> list[tuple[Path, int]]:
    """``(mask, 0)`` for the complete pairs of one root's split, the first ``max_images``."""
    pairs = [p for p in list_pairs(root, normalize_split(split), dataset) if p.image and p.mask]
    return [(p.mask, 0) for p in pairs[:max_images]]


def _split_counts(
    sources: list[tuple[Path, int]],
    class_sets: Sequence[Classes],
    split: str,
    root: str | Path,
    workers: int,
    cache: bool,
    beta: float | None,
    cache_dir: str | Path | None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """``(compute_stats's dict, image_presence's bool (N, K + 1))``: from the cache, or from
    one pass over the masks ``(path, index of its class set)`` (then cached)."""
    split = normalize_split(split)
    if not sources:
        raise BddsegError(f"no image/mask pairs in the {split} split", root)
    masks = [m for m, _ in sources]
    columns = len(_values(class_sets[0].num))
    cache_file = None
    if cache:
        fingerprint = stats_fingerprint(masks, beta, class_sets, [i for _, i in sources])
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_file = folder / f"stats-{split}-{fingerprint[:24]}.json"
        cached = _read_cache(cache_file, fingerprint, len(masks), columns)
        if cached is not None:
            return cached
    per_image = torch.cat(
        parallel_map(
            _count_chunk, sources, workers, tuple(class_sets), initializer=init_decode_worker
        )
    )
    presence = per_image > 0
    pixels = per_image.sum(0).to(torch.float64)
    images = presence.sum(0)
    image_pixels = (presence * per_image.sum(1, keepdim=True)).sum(0).to(torch.float64)
    weights = weights_from_counts(pixels, image_pixels, beta)
    names = class_sets[0].model_names("class")
    stats = {
        "pixel_share": {
            k: float(v) for k, v in zip(names, 100 * pixels / pixels.sum(), strict=True)
        },
        "image_count": {k: int(v) for k, v in zip(names, images, strict=True)},
        "weights": {
            m: {k: float(v) for k, v in zip(names, weights[m], strict=True)} for m in METHODS
        },
        "num_images": len(masks),
    }
    if cache_file is not None:
        bits = _pack(presence)
        data = {"fingerprint": fingerprint, "stats": stats, "presence": bits}
        # an unwritable cache costs a recount next time, nothing more
        with contextlib.suppress(BddsegError):
            atomic_write_text(cache_file, json.dumps(data))
    return stats, presence


def _read_cache(
    path: Path, fingerprint: str, num_images: int, columns: int
) -> tuple[dict[str, Any], torch.Tensor] | None:
    """The cached ``(stats, presence)``, or None when absent, stale or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    stats, bits = data.get("stats"), data.get("presence")
    if not isinstance(stats, dict) or not isinstance(bits, list) or len(bits) != num_images:
        return None
    if not all(isinstance(b, int) and 0 <= b < 1 << columns for b in bits):
        return None
    return stats, _unpack(bits, columns).reshape(num_images, columns)


def _pack(presence: torch.Tensor) -> list[int]:
    """``bool (N, C)`` -> one C-bit integer per image, bit c set when class c is present (JSON
    holds integers of any size; torch's int64 only 63 bits)."""
    if presence.shape[1] < 63:
        weights = torch.arange(presence.shape[1])
        return (presence.to(torch.int64) << weights).sum(1).tolist()
    return [sum(1 << c for c in row.nonzero().flatten().tolist()) for row in presence]


def _unpack(bits: list[int], columns: int) -> torch.Tensor:
    """:func:`_pack`'s inverse: ``bool (N, columns)``."""
    if columns < 63:
        packed = torch.tensor(bits, dtype=torch.int64).reshape(-1, 1)
        return ((packed >> torch.arange(columns)) & 1) == 1
    return torch.tensor([[(b >> c) & 1 for c in range(columns)] for b in bits]) == 1


def class_weights(
    stats: dict[str, Any], method: str, unknown: str = "class", classes: Classes = BDD100K
) -> torch.Tensor:
    """Loss weights from :func:`compute_stats` output: ``float32 (K + 1,)`` or ``(K,)``
    (BDD100K: 20 or 19), for the classes of ``classes`` (those the statistics were counted
    for).

    ``method`` is ``"none"`` (all ones), ``"inverse"``, ``"median"`` or ``"effective"``.
    ``unknown="class"`` hands over the 20 weights as :func:`compute_stats` normalised them
    (mean 1 over the classes present in the split, 0 for absent ones). ``unknown="ignore"``
    drops ``unknown`` and scales the K others to mean 1 over the present ones; the ratios
    between them are those computed with ``unknown`` counted, which is exact for ``inverse``
    and close for the others. A class with no pixels (``pixel_share`` 0) always weighs 0.
    """
    if unknown not in ("class", "ignore"):
        raise BddsegError(f"unknown must be 'class' or 'ignore', got {unknown!r}")
    names = classes.model_names(unknown)
    k = len(names)
    if method == "none":
        return torch.ones(k)
    if method not in METHODS:
        raise BddsegError(
            f"unknown class-weight method {method!r} (valid: none, {', '.join(METHODS)})"
        )
    try:
        w = torch.tensor([float(stats["weights"][method][n]) for n in names])
        present = torch.tensor([float(stats["pixel_share"][n]) > 0 for n in names])
    except (KeyError, TypeError, ValueError) as e:
        raise BddsegError(f"class statistics lack {e}; recompute them") from None
    if not present.any():
        return torch.ones(k)
    if unknown == "ignore":  # unknown's share of the mean goes: back to mean 1
        return _normalise(w.double(), present).float()
    return torch.where(present, w, 0.0)
