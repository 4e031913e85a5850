"""Write a synthetic BDD100K dataset (:mod:`bddseg.synth`) again in another layout, for tests.

:func:`write_layout` reads every pair of a BDD100K-layout root (masks of train ids 0..18 and
255) and writes the same images and labels as Cityscapes, ACDC, Mapillary Vistas v1.2 or a
user's folder would hold them (see :mod:`bddseg.layout` for each tree), with the raw values
of that dataset:

- ``cityscapes``: label ids by the inverse of the official table (255 -> 0, unlabeled); PNG
  images split between two made-up cities; the test split gets all-zero dummy labels, like
  the real release; ``_color.png`` and ``_polygons.json`` beside them (to be ignored).
- ``acdc``: conditions ``fog`` and ``night``, one sequence each, label ids; a ``train_ref``
  split (to be ignored).
- ``mapillary``: Vistas v1.2 ids in palette PNGs, each train id drawn as one of the Vistas
  classes that map onto it (255 -> 65, unlabeled); every other image cropped to 3/4 width.
- ``folder``: the 4 classes of :data:`FOLDER_NAMES` (:data:`FOLDER_MERGE` says which train
  ids merge) and ``ROOT/classes.yaml``; with ``raw=True`` the masks keep the 19 train ids
  and the class file's ``mapping`` merges them.

``train_ids=True`` writes Cityscapes' and ACDC's ``labelTrainIds`` files too. Masks are
written by :func:`bddseg.masks.write_mask` (palette PNGs for Vistas by Pillow). No torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from bddseg.classes import CLASSES_FILE, VISTAS_V12_LABELS, default_palette, train_to_label_ids
from bddseg.errors import BddsegError
from bddseg.files import atomic_path
from bddseg.labels import IGNORE_VALUE, PALETTE
from bddseg.layout import VISTAS_SPLITS, find_layout, layout_splits, list_pairs
from bddseg.masks import read_mask, write_mask

WRITERS = ("cityscapes", "acdc", "mapillary", "folder")
CITIES = ("springfield", "shelbyville")
CONDITIONS = {"fog": "GOPR0475", "night": "GOPR0351"}  # condition -> its one sequence
FOLDER_NAMES = ("background", "road", "vehicle", "person")
# train id -> folder class: road stays road; person and rider are person; car, truck, bus,
# train, motorcycle and bicycle are vehicle; sidewalk, building, wall, fence, pole, traffic
# light, traffic sign, vegetation, terrain and sky are background; 255 stays ignored
FOLDER_MERGE = {0: 1, 11: 3, 12: 3, **{t: 2 for t in range(13, 19)}}
FOLDER_MERGE = {t: FOLDER_MERGE.get(t, 0) for t in range(19)}
VISTAS_UNLABELED = 65
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
_TRAIN_PALETTE = [c for rgb in PALETTE for c in rgb]  # a colour map's palette (255: black)


def _lut(table: dict[int, int], default: int) -> np.ndarray:
    lut = np.full(256, default, dtype=np.uint8)
    for raw, value in table.items():
        lut[raw] = value
    return lut


def new_stem(kind: str, split: str, i: int, stem: str) -> str:
    """The stem that the ``i``-th image of ``split`` (BDD100K stem ``stem``) gets in ``kind``:
    Cityscapes ``CITY_SSSSSS_IIIIII`` and ACDC ``SEQ_frame_SIIIII`` (unique across splits, as
    in the real releases); Mapillary and folder keep the stem."""
    number = SPLIT_SEEDS[split] * 100_000 + i
    if kind == "cityscapes":
        return f"{CITIES[i % len(CITIES)]}_{SPLIT_SEEDS[split]:06d}_{i:06d}"
    if kind == "acdc":
        return f"{CONDITIONS[list(CONDITIONS)[i % len(CONDITIONS)]]}_frame_{number:06d}"
    return stem


def _vistas_choices() -> dict[int, list[int]]:
    """train id -> the Vistas v1.2 ids mapped onto it."""
    out: dict[int, list[int]] = {}
    for _, vistas_id, train_id in VISTAS_V12_LABELS:
        if train_id != IGNORE_VALUE:
            out.setdefault(train_id, []).append(vistas_id)
    return out


def _to_vistas(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Train ids -> Vistas v1.2 ids, each train id as one (random) Vistas class mapped onto it."""
    table = {t: int(rng.choice(ids)) for t, ids in _vistas_choices().items()}
    return _lut(table, VISTAS_UNLABELED)[mask]


def _save_image(path: Path, image: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mask(path, mask)


def _save_palette(path: Path, mask: np.ndarray, palette: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask)
    im.putpalette(palette)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _cityscapes(out: Path, split: str, i: int, stem: str, image, mask, train_ids: bool) -> None:
    city = CITIES[i % len(CITIES)]
    name = new_stem("cityscapes", split, i, stem)
    _save_image(out / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", image, "PNG")
    gt = out / "gtFine" / split / city
    if mask is None:  # the real test split holds dummy labels: all zero
        mask, train_ids = np.full(image.shape[:2], IGNORE_VALUE, np.uint8), False
    _save_mask(gt / f"{name}_gtFine_labelIds.png", train_to_label_ids()[mask])
    if train_ids:
        _save_mask(gt / f"{name}_gtFine_labelTrainIds.png", mask)
    _save_palette(gt / f"{name}_gtFine_color.png", mask, _TRAIN_PALETTE)
    (gt / f"{name}_gtFine_polygons.json").write_text("{}", encoding="utf-8")


def _acdc(out: Path, split: str, i: int, stem: str, image, mask, train_ids: bool) -> None:
    condition = list(CONDITIONS)[i % len(CONDITIONS)]
    seq = CONDITIONS[condition]
    name = new_stem("acdc", split, i, stem)
    _save_image(out / "rgb_anon" / condition / split / seq / f"{name}_rgb_anon.png", image, "PNG")
    if split == "train":  # the reference frames of the same places: not a split bddseg reads
        ref = out / "rgb_anon" / condition / "train_ref" / seq / f"{name}_ref_rgb_anon.png"
        _save_image(ref, image, "PNG")
    if mask is None:
        return
    gt = out / "gt" / condition / split / seq
    _save_mask(gt / f"{name}_gt_labelIds.png", train_to_label_ids()[mask])
    if train_ids:
        _save_mask(gt / f"{name}_gt_labelTrainIds.png", mask)


def _mapillary(out: Path, split: str, i: int, stem: str, image, mask, train_ids: bool) -> None:
    top = out / VISTAS_SPLITS[split]
    if i % 2:  # mixed sizes, as Vistas' photos are
        w = image.shape[1] * 3 // 4
        image, mask = image[:, :w], None if mask is None else mask[:, :w]
    _save_image(top / "images" / f"{stem}.jpg", np.ascontiguousarray(image), "JPEG")
    if mask is not None:
        rng = np.random.default_rng([SPLIT_SEEDS[split], i])
        palette = [c for rgb in default_palette(len(VISTAS_V12_LABELS)) for c in rgb]
        vistas = np.ascontiguousarray(_to_vistas(mask, rng))
        _save_palette(top / "labels" / f"{stem}.png", vistas, palette)


def _folder(out: Path, split: str, i: int, stem: str, image, mask, raw: bool) -> None:
    _save_image(out / "images" / split / f"{stem}.jpg", image, "JPEG")
    if mask is not None:
        merged = mask if raw else _lut(FOLDER_MERGE, IGNORE_VALUE)[mask]
        _save_mask(out / "masks" / split / f"{stem}.png", merged)


def folder_classes(raw: bool = False) -> dict:
    """The ``classes.yaml`` of the ``folder`` layout (``raw``: masks of the 19 train ids)."""
    d: dict = {"name": "synthetic-4", "names": list(FOLDER_NAMES)}
    if raw:
        d["mapping"] = {t: FOLDER_NAMES[c] for t, c in FOLDER_MERGE.items()}
    return d


def write_layout(
    src_root: str | Path,
    out: str | Path,
    kind: str,
    train_ids: bool = False,
    raw: bool = False,
) -> Path:
    """Write the BDD100K-layout dataset at ``src_root`` in layout ``kind`` (one of
    :data:`WRITERS`) under ``out`` (a new or empty folder) and return ``out``, the new root.

    ``train_ids``: Cityscapes and ACDC get ``*_labelTrainIds.png`` files too (read instead
    of the label ids). ``raw``: the folder layout's masks keep the 19 train ids and
    ``classes.yaml`` maps them onto the 4 classes.

    Raises:
        BddsegError: an unknown kind, a non-empty ``out``, or a bad source dataset.
    """
    writers = {"cityscapes": _cityscapes, "acdc": _acdc, "mapillary": _mapillary}
    if kind not in (*writers, "folder"):
        raise BddsegError(f"unknown layout {kind!r} (valid: {', '.join(WRITERS)})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BddsegError("not an empty folder: write a layout into a new one", out)
    layout = find_layout(src_root, "bdd100k")
    out.mkdir(parents=True, exist_ok=True)
    for split in layout_splits(layout):
        for i, pair in enumerate(p for p in list_pairs(layout, split) if p.image is not None):
            image = np.asarray(Image.open(pair.image).convert("RGB"))
            mask = None if split == "test" or pair.mask is None else read_mask(pair.mask)
            if kind == "folder":
                _folder(out, split, i, pair.stem, image, mask, raw)
            else:
                writers[kind](out, split, i, pair.stem, image, mask, train_ids)
    if kind == "folder":
        text = yaml.safe_dump(folder_classes(raw), sort_keys=False)
        (out / CLASSES_FILE).write_text(text, encoding="utf-8")
    return out


__all__ = [
    "CITIES",
    "CONDITIONS",
    "FOLDER_MERGE",
    "FOLDER_NAMES",
    "WRITERS",
    "folder_classes",
    "new_stem",
    "write_layout",
]
