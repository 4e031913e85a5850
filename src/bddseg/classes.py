"""The classes a run predicts, and how a dataset's mask values map onto them.

A :class:`Classes` is the run's label space: ``K`` evaluated class names and their colours,
in train-id order (train id ``i`` is ``names[i]``). Inside bddseg every mask holds train ids
``0..K-1`` and :data:`~bddseg.labels.IGNORE_VALUE` (255, unlabelled); the 20-class
``unknown`` option of BDD100K (``data.unknown: class``) adds id ``K`` for the ignored pixels,
for any class set.

A dataset's files may hold other values: Cityscapes' ``*_labelIds.png`` hold the full label
ids 0..33, Mapillary Vistas its own 66 ids, a user's masks whatever their tool wrote. The
optional ``mapping`` (raw value -> train id, 255 for "ignore") and ``ignore`` (the raw value
meaning unlabelled) turn those into train ids, once, right after decoding (:meth:`Classes.lut`).
A raw value the mapping does not name is an error, as a value outside 0..18/255 is for
BDD100K.

Built in: :data:`BDD100K` (the 19 Cityscapes train ids, the default everywhere),
:data:`CITYSCAPES_LABEL_IDS` (the same classes read from ``labelIds`` files, by
cityscapesScripts' own table, :data:`CITYSCAPES_LABELS`). A user's classes come from a YAML
file (:func:`load_classes`)::

    names: [background, road, car, person]      # train ids 0..3, in this order
    colors: [[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60]]   # optional
    ignore: 255                                 # optional: the raw value meaning unlabelled
    mapping: {0: 0, 7: 1, 26: 2, 24: 3, 1: ignore}   # optional: raw value -> train id or name

A checkpoint carries its :class:`Classes` (:meth:`Classes.to_dict`): predicting, exporting and
reporting never need the file again. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, IGNORE_VALUE, PALETTE, UNKNOWN_NAME

CLASSES_FILE = "classes.yaml"  # found automatically at a dataset's root
INVALID = -1  # in a lookup table: a raw value the class set does not allow
Color = tuple[int, int, int]


@dataclass(frozen=True)
class Classes:
    """``names``/``palette``: the K classes in train-id order. ``name``: what to call the set
    in reports. ``ignore``: the raw mask value meaning unlabelled. ``mapping``: raw value ->
    train id (or 255, ignored), sorted by raw value; ``None`` means the masks hold train ids
    already (0..K-1, and ``ignore``)."""

    names: tuple[str, ...]
    palette: tuple[Color, ...]
    name: str = "custom"
    ignore: int = IGNORE_VALUE
    mapping: tuple[tuple[int, int], ...] | None = None
    # the classes the official mIoU averages (bddseg.metrics.official_arrays): "truth"
    # (present in the ground truth: the BDD100K toolkit) or "union" (TP + FP + FN > 0:
    # cityscapesScripts, mmseg, and so Cityscapes, ACDC, Vistas and a user's classes)
    mean_over: str = "union"

    def __post_init__(self) -> None:
        k = len(self.names)
        if not 1 <= k < IGNORE_VALUE - 1:
            raise BddsegError(f"a class set needs 1 to {IGNORE_VALUE - 2} classes, got {k}")
        if len(set(self.names)) != k:
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            raise BddsegError(f"class names must be unique (repeated: {', '.join(dupes)})")
        if len(self.palette) != k:
            raise BddsegError(f"{k} classes but {len(self.palette)} colours")
        if self.mean_over not in ("truth", "union"):
            raise BddsegError(f"mean_over must be truth or union, got {self.mean_over!r}")
        if not 0 <= self.ignore <= 255:
            raise BddsegError(f"the ignore value must be in 0..255, got {self.ignore}")
        if self.mapping is None and self.ignore < k and self.ignore != IGNORE_VALUE:
            raise BddsegError(
                f"the ignore value {self.ignore} is also the train id of {self.names[self.ignore]!r}"
                "; give a mapping, or an ignore value of at least the number of classes"
            )
        for raw, tid in self.mapping or ():
            if not 0 <= raw <= 255 or not (0 <= tid < k or tid == IGNORE_VALUE):
                raise BddsegError(
                    f"mapping {raw} -> {tid}: raw values are 0..255, train ids 0..{k - 1} or 255"
                )

    @property
    def num(self) -> int:
        """K, the number of evaluated classes."""
        return len(self.names)

    def model_names(self, unknown: str = "ignore") -> tuple[str, ...]:
        """The model's output channels: the K names, plus ``unknown`` under ``unknown="class"``."""
        return (*self.names, UNKNOWN_NAME) if unknown == "class" else self.names

    def lut(self) -> np.ndarray:
        """int16 ``(256,)``: raw mask value -> train id, 255 (ignored) or :data:`INVALID`."""
        table = np.full(256, INVALID, dtype=np.int16)
        if self.mapping is None:
            table[: self.num] = np.arange(self.num)
        else:
            for raw, tid in self.mapping:
                table[raw] = tid
        table[self.ignore] = IGNORE_VALUE
        table.flags.writeable = False
        return table

    @property
    def identity(self) -> bool:
        """True when the masks hold train ids 0..K-1 and 255 already (nothing to map)."""
        return self.mapping is None and self.ignore == IGNORE_VALUE

    def valid_values(self) -> str:
        """The raw values allowed, for messages: ``0..18 and 255``."""
        ok = np.flatnonzero(self.lut() != INVALID).tolist()
        return _ranges(ok)

    def same_labels(self, other: Classes) -> bool:
        """Same class names in the same order (what a model and a dataset must share)."""
        return self.names == other.names

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "names": list(self.names),
            "colors": [list(c) for c in self.palette],
            "ignore": self.ignore,
            "mean_over": self.mean_over,
        }
        if self.mapping is not None:
            d["mapping"] = {raw: tid for raw, tid in self.mapping}
        return d

    def labels_only(self) -> Classes:
        """The same names and colours, reading masks of train ids (no mapping)."""
        return Classes(self.names, self.palette, self.name, mean_over=self.mean_over)


def _ranges(values: list[int]) -> str:
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if j == i else f"{values[i]}..{values[j]}")
        i = j + 1
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def default_palette(k: int) -> tuple[Color, ...]:
    """Distinct colours for ``k`` classes without colours of their own (the PASCAL VOC
    bit-interleaved colormap, skipping its black)."""
    out: list[Color] = []
    i = 1
    while len(out) < k:
        r = g = b = 0
        c = i
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out.append((r, g, b))
        i += 1
    return tuple(out)


BDD100K = Classes(CLASS_NAMES, PALETTE, "bdd100k", mean_over="truth")
"""The 19 evaluated classes of BDD100K (the Cityscapes train ids): the default class set."""

# cityscapesScripts' helpers/labels.py: (name, id, trainId); trainId 255 is ignored in eval.
# "license plate" (id -1) is not drawn into labelIds files (json2labelImg skips negative ids).
CITYSCAPES_LABELS: tuple[tuple[str, int, int], ...] = (
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12),
    ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
)  # fmt: skip

CITYSCAPES_LABEL_IDS = Classes(
    CLASS_NAMES,
    PALETTE,
    "cityscapes",
    ignore=IGNORE_VALUE,
    mapping=tuple((label_id, train_id) for _, label_id, train_id in CITYSCAPES_LABELS),
)
"""The 19 classes read from Cityscapes ``*_labelIds.png`` (also ACDC's ``*_gt_labelIds.png``):
ids 0..33 through the official table; 255 is allowed too, as unlabelled."""


def train_to_label_ids() -> np.ndarray:
    """uint8 ``(256,)``: Cityscapes train id -> label id (255 -> 0, unlabeled): what
    cityscapesScripts' evaluator expects of a prediction."""
    table = np.zeros(256, dtype=np.uint8)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        if train_id != IGNORE_VALUE:
            table[train_id] = label_id
    return table


# ---------------------------------------------------------------- a user's class file
def from_dict(d: Mapping[str, Any], source: str | Path | None = None) -> Classes:
    """A :class:`Classes` from the class file's (or a checkpoint's) mapping; every problem is
    one :class:`BddsegError` naming ``source``."""
    try:
        return _from_dict(d)
    except BddsegError as e:
        raise BddsegError(e.problem, source) from None


def _from_dict(d: Mapping[str, Any]) -> Classes:
    if not isinstance(d, Mapping):
        raise BddsegError("a class file must be a mapping with a 'names' list")
    unknown_keys = sorted(set(d) - {"name", "names", "colors", "ignore", "mapping", "mean_over"})
    if unknown_keys:
        raise BddsegError(
            f"unknown key(s) {', '.join(map(str, unknown_keys))} "
            "(valid: names, colors, ignore, mapping, name, mean_over)"
        )
    names = d.get("names")
    if not isinstance(names, list | tuple) or not names:
        raise BddsegError("'names' must be a non-empty list of class names")
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise BddsegError("every class name must be a non-empty string")
    names = tuple(n.strip() for n in names)
    colors = d.get("colors")
    palette = default_palette(len(names)) if colors is None else _colors(colors, len(names))
    ignore = d.get("ignore", IGNORE_VALUE)
    if isinstance(ignore, bool) or not isinstance(ignore, int):
        raise BddsegError(f"'ignore' must be an integer raw value, got {ignore!r}")
    mapping = d.get("mapping")
    pairs = None if mapping is None else _mapping(mapping, names)
    name = str(d.get("name", "custom"))
    mean_over = d.get("mean_over", "truth" if name == BDD100K.name else "union")
    return Classes(names, palette, name, int(ignore), pairs, mean_over)


def _colors(colors: Any, k: int) -> tuple[Color, ...]:
    if not isinstance(colors, list | tuple) or len(colors) != k:
        raise BddsegError(f"'colors' must list one [r, g, b] per class ({k})")
    out = []
    for c in colors:
        if (
            not isinstance(c, list | tuple)
            or len(c) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        ):
            raise BddsegError(f"colour {c!r} is not [r, g, b] with values 0..255")
        out.append((int(c[0]), int(c[1]), int(c[2])))
    return tuple(out)


def _mapping(mapping: Any, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise BddsegError("'mapping' must map raw mask values to train ids or class names")
    pairs = []
    for raw, target in mapping.items():
        try:
            raw_value = int(raw)
        except (TypeError, ValueError):
            raise BddsegError(f"mapping key {raw!r} is not a raw mask value (0..255)") from None
        if isinstance(target, str):
            if target == "ignore":
                tid = IGNORE_VALUE
            elif target in names:
                tid = names.index(target)
            else:
                raise BddsegError(f"mapping {raw} -> {target!r}: no class of that name")
        elif isinstance(target, int) and not isinstance(target, bool):
            tid = target
        else:
            raise BddsegError(f"mapping {raw} -> {target!r}: not a train id or a class name")
        pairs.append((raw_value, tid))
    return tuple(sorted(pairs))


def load_classes(path: str | Path) -> Classes:
    """Read a class file (YAML, see the module docstring). Raises :class:`BddsegError` naming
    the file on any problem."""
    p = Path(path)
    if not p.is_file():
        raise BddsegError("class file not found", p)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise BddsegError(f"cannot read the class file ({e.__class__.__name__})", p) from None
    return from_dict(d or {}, p)


def resolve_names(names: Iterable[str]) -> Classes:
    """The built-in class set with these names, if any (the BDD100K/Cityscapes 19 or an
    older checkpoint's 19/20 without a class record); else colours from :func:`default_palette`."""
    names = tuple(names)
    if names in (CLASS_NAMES, (*CLASS_NAMES, UNKNOWN_NAME)):
        return BDD100K
    return Classes(names, default_palette(len(names)))


# ---------------------------------------------------------------- Mapillary Vistas v1.2
# The 66 classes of Vistas v1.2 in config.json's label order (the mask's palette index is the
# id): (name, id, train id). Names as in config.json ("name"; mmseg's MapillaryDataset lists
# the same order by "readable" name). The train ids are the mapping of the domain-
# generalisation literature, RobustNet (Choi et al., CVPR 2021), shachoi/RobustNet
# datasets/mapillary.py, gen_id_to_ignore() (commit 8bcd90a), also tue-mps/benchmark-vfm-ss
# datasets/mappings.py: road <- road, lane marking (general), manhole; sidewalk <- curb,
# sidewalk; pole <- pole, utility pole; rider <- bicyclist, motorcyclist, other rider; train
# <- on rails; the rest one to one. Everything else (crosswalk markings, bike lanes, street
# lights, sign backs and frames, caravans, trailers, ...) is ignored (255), as there.
VISTAS_V12_LABELS: tuple[tuple[str, int, int], ...] = (
    ("animal--bird", 0, 255), ("animal--ground-animal", 1, 255),
    ("construction--barrier--curb", 2, 1), ("construction--barrier--fence", 3, 4),
    ("construction--barrier--guard-rail", 4, 255),
    ("construction--barrier--other-barrier", 5, 255), ("construction--barrier--wall", 6, 3),
    ("construction--flat--bike-lane", 7, 255), ("construction--flat--crosswalk-plain", 8, 255),
    ("construction--flat--curb-cut", 9, 255), ("construction--flat--parking", 10, 255),
    ("construction--flat--pedestrian-area", 11, 255),
    ("construction--flat--rail-track", 12, 255), ("construction--flat--road", 13, 0),
    ("construction--flat--service-lane", 14, 255), ("construction--flat--sidewalk", 15, 1),
    ("construction--structure--bridge", 16, 255),
    ("construction--structure--building", 17, 2), ("construction--structure--tunnel", 18, 255),
    ("human--person", 19, 11), ("human--rider--bicyclist", 20, 12),
    ("human--rider--motorcyclist", 21, 12), ("human--rider--other-rider", 22, 12),
    ("marking--crosswalk-zebra", 23, 255), ("marking--general", 24, 0),
    ("nature--mountain", 25, 255), ("nature--sand", 26, 255), ("nature--sky", 27, 10),
    ("nature--snow", 28, 255), ("nature--terrain", 29, 9), ("nature--vegetation", 30, 8),
    ("nature--water", 31, 255), ("object--banner", 32, 255), ("object--bench", 33, 255),
    ("object--bike-rack", 34, 255), ("object--billboard", 35, 255),
    ("object--catch-basin", 36, 255), ("object--cctv-camera", 37, 255),
    ("object--fire-hydrant", 38, 255), ("object--junction-box", 39, 255),
    ("object--mailbox", 40, 255), ("object--manhole", 41, 0), ("object--phone-booth", 42, 255),
    ("object--pothole", 43, 255), ("object--street-light", 44, 255),
    ("object--support--pole", 45, 5), ("object--support--traffic-sign-frame", 46, 255),
    ("object--support--utility-pole", 47, 5), ("object--traffic-light", 48, 6),
    ("object--traffic-sign--back", 49, 255), ("object--traffic-sign--front", 50, 7),
    ("object--trash-can", 51, 255), ("object--vehicle--bicycle", 52, 18),
    ("object--vehicle--boat", 53, 255), ("object--vehicle--bus", 54, 15),
    ("object--vehicle--car", 55, 13), ("object--vehicle--caravan", 56, 255),
    ("object--vehicle--motorcycle", 57, 17), ("object--vehicle--on-rails", 58, 16),
    ("object--vehicle--other-vehicle", 59, 255), ("object--vehicle--trailer", 60, 255),
    ("object--vehicle--truck", 61, 14), ("object--vehicle--wheeled-slow", 62, 255),
    ("void--car-mount", 63, 255), ("void--ego-vehicle", 64, 255), ("void--unlabeled", 65, 255),
)  # fmt: skip

MAPILLARY_VISTAS = Classes(
    CLASS_NAMES,
    PALETTE,
    "mapillary",
    ignore=IGNORE_VALUE,
    mapping=tuple((vistas_id, train_id) for _, vistas_id, train_id in VISTAS_V12_LABELS),
)
"""The 19 classes read from Mapillary Vistas v1.2 ``labels/*.png`` (palette indices 0..65)
through :data:`VISTAS_V12_LABELS`; 255 is allowed too, as unlabelled."""


__all__ = [
    "BDD100K",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_LABEL_IDS",
    "CLASSES_FILE",
    "Classes",
    "INVALID",
    "MAPILLARY_VISTAS",
    "VISTAS_V12_LABELS",
    "default_palette",
    "from_dict",
    "load_classes",
    "train_to_label_ids",
]
