"""Find BDD100K on disk: which layout a dataset root has, its splits, and its image/mask pairs.

Three layouts are recognised under a dataset ``ROOT`` (``val`` and ``valid`` both mean val)::

    official   ROOT/bdd100k/images/10k/{train,val,test}/*.jpg
               ROOT/bdd100k/labels/sem_seg/masks/{train,val}/*.png
    flat       the same without the top ``bdd100k/`` folder
    seed       ROOT/[bdd100k/]images/{train,valid}, labels/{train,valid}, test/ (the original project)

Images and masks pair by file stem. Nothing here opens a file (decoding is in
:mod:`bddseg.data`, checking in :mod:`bddseg.check`), and nothing imports torch.
Every problem raises :class:`BddsegError` naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bddseg.errors import BddsegError

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

EXPECTED_LAYOUTS = (
    "expected ROOT/bdd100k/images/10k/{train,val,test} with ROOT/bdd100k/labels/sem_seg/masks/"
    "{train,val} (official zips), the same without bdd100k/, or ROOT/images/{train,valid} with "
    "ROOT/labels/{train,valid} (original project layout)"
)


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


def layout_splits(layout: Layout) -> list[str]:
    """The splits of ``layout`` (in train, val, test order) that have an image or a mask folder."""
    masks = layout.masks
    return [s for s in SPLITS if layout.images[s].is_dir() or (s in masks and masks[s].is_dir())]


def splits_present(root: str | Path) -> list[str]:
    """The splits (in train, val, test order) that have an image or a mask folder."""
    return layout_splits(find_layout(root))


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


def pairs_and_duplicates(root: str | Path, split: str) -> tuple[list[Pair], list[Path]]:
    """:func:`list_pairs`, and the files left out because another file has their stem.

    Raises:
        BddsegError: a bad root (see :func:`find_layout`), an unknown split, or a split that
            this dataset does not have.
    """
    layout = find_layout(root)
    split = normalize_split(split)
    present = layout_splits(layout)
    if split not in present:
        raise BddsegError(
            f"no {split} split in this dataset (found: {', '.join(present) or 'none'})", root
        )
    images, dupes = _scan(layout.images[split], IMAGE_SUFFIXES)
    masks, mask_dupes = _scan(layout.masks.get(split), (".png",))
    pairs = [Pair(s, images.get(s), masks.get(s)) for s in sorted(images.keys() | masks.keys())]
    return pairs, dupes + mask_dupes


def list_pairs(root: str | Path, split: str) -> list[Pair]:
    """All stems of ``split`` sorted, including images without masks and masks without images.

    The test split has no masks: its pairs all have ``mask=None``.
    """
    return pairs_and_duplicates(root, split)[0]
