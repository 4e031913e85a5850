"""Find a dataset on disk: which layout a root has, its splits, and its image/mask pairs.

Five kinds of layout are recognised under a dataset ``ROOT`` (``val`` and ``valid`` both mean
val; a test split is always unlabelled)::

    bdd100k     official  ROOT/bdd100k/images/10k/{train,val,test}/NAME.jpg
                          ROOT/bdd100k/labels/sem_seg/masks/{train,val}/NAME.png
                flat      the same without the top ``bdd100k/`` folder
                seed      ROOT/[bdd100k/]images/{train,valid}, labels/{train,valid}, test/
    cityscapes  ROOT/leftImg8bit/{train,val,test}/CITY/NAME_leftImg8bit.png
                ROOT/gtFine/{train,val}/CITY/NAME_gtFine_labelTrainIds.png if a split has
                them (mmseg's conversion), else NAME_gtFine_labelIds.png
    acdc        ROOT/rgb_anon/CONDITION/{train,val,test}/SEQ/NAME_rgb_anon.png
                ROOT/gt/CONDITION/{train,val}/SEQ/NAME_gt_labelTrainIds.png, else _labelIds
    mapillary   ROOT/{training,validation,testing}/images/NAME.jpg
                ROOT/{training,validation}/labels/NAME.png (Vistas v1.2; also v1.2/labels,
                and v2.0/labels when no v1.2 labels exist: read only with a class file)
    folder      ROOT/images/{train,val,test}/NAME.jpg|png, ROOT/masks/{train,val}/NAME.png
                and ROOT/classes.yaml (a user's own data; labels/ instead of masks/ is seed)

Images and masks pair by stem: the file name without its layout's tail (``_leftImg8bit``,
``_gtFine_labelIds``, ...) and suffix; other files (colour maps, instance ids, polygons) are
ignored. A pair's ``group`` is its Cityscapes city or ACDC condition. Which classes a layout's
masks hold is :func:`dataset_classes`. Nothing here opens an image or a mask (decoding is in
:mod:`bddseg.data`, checking in :mod:`bddseg.check`), and nothing imports torch. Every
problem raises :class:`BddsegError` naming the path.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bddseg.classes import (
    BDD100K,
    CITYSCAPES_LABEL_IDS,
    CLASSES_FILE,
    MAPILLARY_VISTAS,
    Classes,
    load_classes,
)
from bddseg.config import DatasetKind
from bddseg.errors import BddsegError

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
KINDS: tuple[str, ...] = tuple(k for k in typing.get_args(DatasetKind) if k != "auto")
VISTAS_SPLITS = {"train": "training", "val": "validation", "test": "testing"}

EXPECTED_LAYOUTS = (
    "expected ROOT/bdd100k/images/10k/{train,val,test} with ROOT/bdd100k/labels/sem_seg/masks/"
    "{train,val} (official zips), the same without bdd100k/, or ROOT/images/{train,valid} with "
    "ROOT/labels/{train,valid} (original project layout)"
)
# what each kind expects, for the error of a root that is none of them (one line)
EXPECTED = {
    "bdd100k": EXPECTED_LAYOUTS.removeprefix("expected "),
    "cityscapes": "ROOT/leftImg8bit/{train,val,test}/CITY with ROOT/gtFine/{train,val}/CITY",
    "acdc": "ROOT/rgb_anon/CONDITION/{train,val,test}/SEQ with ROOT/gt/CONDITION/{train,val}/SEQ",
    "mapillary": "ROOT/{training,validation,testing}/images with ROOT/{training,validation}/"
    "labels (Vistas v1.2)",
    "folder": f"ROOT/images/{{train,val,test}} with ROOT/masks/{{train,val}} and ROOT/{CLASSES_FILE}",
}


@dataclass(frozen=True)
class Pair:
    """An image and its mask, matched by stem; either may be missing. ``group``: the
    Cityscapes city or the ACDC condition, else ``None``."""

    stem: str
    image: Path | None
    mask: Path | None
    group: str | None = None


@dataclass(frozen=True)
class Source:
    """One folder of a split's images and the folder of their masks (``None``: unlabelled).
    ``group``: the group of every file here (ACDC's condition); ``None`` under a nested layout
    means each file's subfolder names its group (Cityscapes' city)."""

    images: Path
    masks: Path | None
    group: str | None = None


@dataclass(frozen=True)
class Layout:
    """Where each split's images and masks live (folders may not exist).

    ``images``/``masks``: one folder per split (for ACDC, whose splits span condition folders,
    the top ``rgb_anon``/``gt`` folders); ``sources``: the folders to list, per split.
    ``nested``: the files sit one subfolder below each source folder (city, sequence).
    ``image_tail``/``mask_tail``: what follows the stem in a file name, before the suffix.
    ``mask_format``: what the mask values are: ``train_ids`` (0..18/255, or a class file's
    values for ``folder``), ``cityscapes_label_ids``, ``vistas_v1.2`` or ``vistas_v2.0``.
    """

    name: str  # "official", "flat" or "seed" for bdd100k; else the kind
    base: Path
    images: dict[str, Path]
    masks: dict[str, Path]
    kind: str = "bdd100k"
    root: Path | None = None  # the folder the user named (None: base)
    sources: dict[str, tuple[Source, ...]] = field(default_factory=dict)
    nested: bool = False
    image_tail: str = ""
    mask_tail: str = ""
    mask_format: str = "train_ids"

    def split_sources(self, split: str) -> tuple[Source, ...]:
        if self.sources:
            return self.sources.get(split, ())
        return (Source(self.images[split], self.masks.get(split)),)

    def expected_mask(self, split: str, image: Path) -> Path | None:
        """Where the mask of ``image`` (a file of ``split``) would be; ``None`` if unlabelled."""
        stem = image.name[: len(image.name) - len(image.suffix) - len(self.image_tail)]
        for src in self.split_sources(split):
            folder = image.parent.parent if self.nested else image.parent
            if folder == src.images and src.masks is not None:
                sub = src.masks / image.parent.name if self.nested else src.masks
                return sub / f"{stem}{self.mask_tail}.png"
        return None


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


def _has_split_dirs(images: Path) -> bool:
    return any((images / s).is_dir() for s in ("train", "valid", "val"))


def _looks_like_folder(base: Path) -> bool:
    """A user's layout: masks/ beside images/ (the seed layout has labels/)."""
    return (base / "masks").is_dir() and not (base / "labels").is_dir()


# ---------------------------------------------------------------- one finder per kind
def _bdd100k(root: Path, auto: bool = True) -> Layout | None:
    for base in (root / "bdd100k", root):
        if (base / "images" / "10k").is_dir():
            images = base / "images" / "10k"
            masks = base / "labels" / "sem_seg" / "masks"
            name = "official" if base.name == "bdd100k" else "flat"
            return Layout(
                name,
                base,
                {"train": images / "train", "val": _val_dir(images, base), "test": images / "test"},
                {"train": masks / "train", "val": _val_dir(masks, base)},
                root=root,
            )
        images = base / "images"
        if _has_split_dirs(images) and not (auto and _looks_like_folder(base)):
            test = base / "test" if (base / "test").is_dir() else images / "test"
            labels = base / "labels"
            return Layout(
                "seed",
                base,
                {"train": images / "train", "val": _val_dir(images, base), "test": test},
                {"train": labels / "train", "val": _val_dir(labels, base)},
                root=root,
            )
    return None


def _prefer_train_ids(folders: dict[str, list[Path]], pattern: str, root: Path) -> bool:
    """Whether the labelled splits' mask folders hold ``*_labelTrainIds.png`` files (searched
    with ``pattern``); every split must agree, since one class set reads them all."""
    has = {
        s: any(next(f.glob(pattern), None) is not None for f in fs if f.is_dir())
        for s, fs in folders.items()
        if any(f.is_dir() for f in fs)
    }
    if len(set(has.values())) > 1:
        yes = ", ".join(s for s, v in has.items() if v)
        no = ", ".join(s for s, v in has.items() if not v)
        raise BddsegError(
            f"*_labelTrainIds.png masks in the {yes} split but not in {no}: convert every "
            "split, or remove them to read the *_labelIds.png masks",
            root,
        )
    return any(has.values())


def _cityscapes(root: Path) -> Layout | None:
    images, gt = root / "leftImg8bit", root / "gtFine"
    if not images.is_dir():
        return None
    masks = {s: gt / s for s in LABELLED_SPLITS}
    train_ids = _prefer_train_ids({s: [m] for s, m in masks.items()}, "*/*_labelTrainIds.png", root)
    return Layout(
        "cityscapes",
        root,
        {s: images / s for s in SPLITS},
        masks,
        kind="cityscapes",
        root=root,
        sources={s: (Source(images / s, masks.get(s)),) for s in SPLITS},
        nested=True,
        image_tail="_leftImg8bit",
        mask_tail="_gtFine_labelTrainIds" if train_ids else "_gtFine_labelIds",
        mask_format="train_ids" if train_ids else "cityscapes_label_ids",
    )


def _acdc(root: Path) -> Layout | None:
    images, gt = root / "rgb_anon", root / "gt"
    if not images.is_dir():
        return None
    conditions = sorted(p.name for p in images.iterdir() if p.is_dir() and p.name[0] != ".")
    sources = {
        s: tuple(
            Source(images / c / s, gt / c / s if s in LABELLED_SPLITS else None, c)
            for c in conditions
        )
        for s in SPLITS
    }
    folders = {s: [gt / c / s for c in conditions] for s in LABELLED_SPLITS}
    train_ids = _prefer_train_ids(folders, "*/*_gt_labelTrainIds.png", root)
    return Layout(
        "acdc",
        root,
        {s: images for s in SPLITS},
        {s: gt for s in LABELLED_SPLITS},
        kind="acdc",
        root=root,
        sources=sources,
        nested=True,
        image_tail="_rgb_anon",
        mask_tail="_gt_labelTrainIds" if train_ids else "_gt_labelIds",
        mask_format="train_ids" if train_ids else "cityscapes_label_ids",
    )


def _mapillary(root: Path) -> Layout | None:
    tops = {s: root / d for s, d in VISTAS_SPLITS.items()}
    if not any((t / "images").is_dir() for t in tops.values()):
        return None
    # the v1.2 zip has SPLIT/labels; the v2.0 zip holds both SPLIT/v1.2/labels and v2.0/labels
    version, masks = "1.2", {}
    for s in LABELLED_SPLITS:
        t = tops[s]
        masks[s] = next((m for m in (t / "labels", t / "v1.2/labels") if m.is_dir()), t / "labels")
    if not any(m.is_dir() for m in masks.values()):
        v2 = {s: tops[s] / "v2.0" / "labels" for s in LABELLED_SPLITS}
        if any(m.is_dir() for m in v2.values()):
            version, masks = "2.0", v2
    images = {s: t / "images" for s, t in tops.items()}
    return Layout(
        "mapillary",
        root,
        images,
        masks,
        kind="mapillary",
        root=root,
        mask_format=f"vistas_v{version}",
    )


def _folder(root: Path, auto: bool = True) -> Layout | None:
    images = root / "images"
    if not _has_split_dirs(images) and not (images / "test").is_dir():
        return None
    if auto and not _looks_like_folder(root):
        return None
    masks = root / "masks"
    return Layout(
        "folder",
        root,
        {"train": images / "train", "val": _val_dir(images, root), "test": images / "test"},
        {"train": masks / "train", "val": _val_dir(masks, root)},
        kind="folder",
        root=root,
    )


FINDERS: dict[str, Callable[..., Layout | None]] = {
    "bdd100k": _bdd100k,
    "cityscapes": _cityscapes,
    "acdc": _acdc,
    "mapillary": _mapillary,
    "folder": _folder,
}


def _detect(root: Path, dataset: str) -> Layout | None:
    if dataset == "auto":
        return next((lay for f in FINDERS.values() if (lay := f(root)) is not None), None)
    if dataset in ("bdd100k", "folder"):
        return FINDERS[dataset](root, auto=False)
    return FINDERS[dataset](root)


def find_layout(root: str | Path, dataset: str = "auto") -> Layout:
    """Recognise the layout under ``root`` (see the module docstring). ``dataset``: one of
    :data:`KINDS` to accept only that kind, or ``"auto"`` to try each in turn.

    Raises:
        BddsegError: the root is missing, not a folder, or none of the layouts looked for (the
            message says what each expects, and names a parent folder that would work if
            there is one); an unknown ``dataset``.
    """
    if dataset != "auto" and dataset not in KINDS:
        raise BddsegError(f"unknown dataset kind {dataset!r} (valid: auto, {', '.join(KINDS)})")
    root = Path(root)
    if not root.exists():
        raise BddsegError("dataset root not found", root)
    if not root.is_dir():
        raise BddsegError("dataset root is not a folder", root)
    layout = _detect(root, dataset)
    if layout is not None:
        return layout
    hint = ""
    for parent in list(root.resolve().parents)[:4]:
        try:
            found = _detect(parent, dataset) is not None
        except BddsegError:
            found = True  # a dataset root, if a broken one
        if found:
            hint = f"; did you mean {parent}?"
            break
    if dataset == "bdd100k":
        raise BddsegError(f"not a BDD100K dataset root: {EXPECTED_LAYOUTS}{hint}", root)
    if dataset != "auto":
        raise BddsegError(f"not a {dataset} dataset root: expected {EXPECTED[dataset]}{hint}", root)
    kinds = "; ".join(f"{kind}: {EXPECTED[kind]}" for kind in KINDS)
    raise BddsegError(f"not a dataset root of a known layout: expected {kinds}{hint}", root)


def _layout(root: str | Path | Layout, dataset: str) -> Layout:
    return root if isinstance(root, Layout) else find_layout(root, dataset)


def layout_splits(layout: Layout) -> list[str]:
    """The splits of ``layout`` (in train, val, test order) that have an image or a mask folder."""
    return [
        s
        for s in SPLITS
        if any(
            src.images.is_dir() or (src.masks is not None and src.masks.is_dir())
            for src in layout.split_sources(s)
        )
    ]


def splits_present(root: str | Path | Layout, dataset: str = "auto") -> list[str]:
    """The splits (in train, val, test order) that have an image or a mask folder."""
    return layout_splits(_layout(root, dataset))


Found = dict[str, tuple[Path, str | None]]  # stem -> (file, group)


def _scan(
    folder: Path | None, suffixes: tuple[str, ...], tail: str, nested: bool, group: str | None
) -> tuple[Found, list[Path]]:
    """Files by stem (with their group), and the extra files whose stem was already taken.
    Only files whose name ends with ``tail`` + a suffix count; their stem drops both."""
    found: Found = {}
    dupes: list[Path] = []
    if folder is None or not folder.is_dir():
        return found, dupes
    subs = sorted(p for p in folder.iterdir() if p.is_dir()) if nested else [folder]
    for sub in subs:
        if sub.name.startswith("."):
            continue
        where = (group or sub.name) if nested else group
        for p in sorted(sub.iterdir()):
            if p.name.startswith(".") or p.suffix.lower() not in suffixes:
                continue
            if not p.stem.endswith(tail) or not p.is_file():
                continue
            stem = p.stem[: len(p.stem) - len(tail)]
            if stem in found:
                dupes.append(p)
            else:
                found[stem] = (p, where)
    return found, dupes


def pairs_and_duplicates(
    root: str | Path | Layout, split: str, dataset: str = "auto"
) -> tuple[list[Pair], list[Path]]:
    """:func:`list_pairs`, and the files left out because another file has their stem.

    Raises:
        BddsegError: a bad root (see :func:`find_layout`), an unknown split, or a split that
            this dataset does not have.
    """
    layout = _layout(root, dataset)
    split = normalize_split(split)
    present = layout_splits(layout)
    if split not in present:
        raise BddsegError(
            f"no {split} split in this dataset (found: {', '.join(present) or 'none'})",
            layout.root or layout.base,
        )
    images: Found = {}
    masks: Found = {}
    dupes: list[Path] = []
    mask_dupes: list[Path] = []
    for src in layout.split_sources(split):
        for scanned, kept, suffixes, folder, tail in (
            (images, dupes, IMAGE_SUFFIXES, src.images, layout.image_tail),
            (masks, mask_dupes, (".png",), src.masks, layout.mask_tail),
        ):
            found, extra = _scan(folder, suffixes, tail, layout.nested, src.group)
            kept += extra
            for stem, hit in found.items():
                if stem in scanned:
                    kept.append(hit[0])
                else:
                    scanned[stem] = hit
    pairs = []
    for s in sorted(images.keys() | masks.keys()):
        image, image_group = images.get(s, (None, None))
        mask, mask_group = masks.get(s, (None, None))
        pairs.append(Pair(s, image, mask, image_group if image else mask_group))
    return pairs, dupes + mask_dupes


def list_pairs(root: str | Path | Layout, split: str, dataset: str = "auto") -> list[Pair]:
    """All stems of ``split`` sorted, including images without masks and masks without images.

    The test split has no masks: its pairs all have ``mask=None``. ``root`` may be a
    :class:`Layout` already found.
    """
    return pairs_and_duplicates(root, split, dataset)[0]


def dataset_classes(layout: Layout, classes_file: str | Path | None = None) -> Classes:
    """The class set that reads ``layout``'s masks: ``classes_file`` if given, else
    ``ROOT/classes.yaml`` if it exists, else the layout's own (BDD100K's 19 train ids; the
    Cityscapes label-id table for Cityscapes and ACDC ``labelIds``, their train ids as they
    are for ``labelTrainIds``; the Vistas v1.2 mapping for Mapillary).

    Raises:
        BddsegError: a bad class file; Vistas v2.0 labels or a ``folder`` layout without one.
    """
    if classes_file:
        return load_classes(classes_file)
    root = layout.root or layout.base
    for folder in dict.fromkeys((root, layout.base)):
        if (folder / CLASSES_FILE).is_file():
            return load_classes(folder / CLASSES_FILE)
    if layout.kind == "folder":
        raise BddsegError(
            f"no {CLASSES_FILE} here: a folder dataset needs one naming its classes in train-id "
            "order ('names: [background, road, ...]'), with 'mapping' if the masks hold other "
            "values (or give --classes FILE)",
            root / CLASSES_FILE,
        )
    if layout.mask_format == "vistas_v2.0":
        raise BddsegError(
            "only Mapillary Vistas v2.0 labels found (124 classes): bddseg maps v1.2's 66 onto "
            f"its 19; give --classes FILE (or {CLASSES_FILE} here) with a 'mapping' for v2.0",
            root,
        )
    if layout.mask_format == "vistas_v1.2":
        return MAPILLARY_VISTAS
    if layout.mask_format == "cityscapes_label_ids":
        return CITYSCAPES_LABEL_IDS
    if layout.kind in ("cityscapes", "acdc"):
        return CITYSCAPES_LABEL_IDS.labels_only()
    return BDD100K


__all__ = [
    "EXPECTED",
    "EXPECTED_LAYOUTS",
    "IMAGE_SUFFIXES",
    "KINDS",
    "LABELLED_SPLITS",
    "SPLITS",
    "Layout",
    "Pair",
    "Source",
    "dataset_classes",
    "find_layout",
    "layout_splits",
    "list_pairs",
    "normalize_split",
    "pairs_and_duplicates",
    "splits_present",
]
