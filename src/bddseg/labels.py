"""BDD100K semantic-segmentation classes: constants only.

Train ids, names and colors follow the official toolkit's ``bdd100k/label/label.py``
(the Cityscapes train-id table). The table in the toolkit's ``configs/sem_seg.toml`` swaps
the colors of wall and fence; we do not use it.
"""

from __future__ import annotations

IGNORE_VALUE = 255  # raw mask value for unlabeled pixels (ego vehicle, bridge, ...)
UNKNOWN_ID = 19  # the original project's remap of 255 (``unknown: class``)
NUM_CLASSES = 19  # the official, evaluated classes
NUM_CLASSES_20 = NUM_CLASSES + 1  # with unknown: a 20-class model, the confusion matrix's bins

CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
UNKNOWN_NAME = "unknown"
CLASS_NAMES_20: tuple[str, ...] = (*CLASS_NAMES, UNKNOWN_NAME)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),  # road
    (244, 35, 232),  # sidewalk
    (70, 70, 70),  # building
    (102, 102, 156),  # wall
    (190, 153, 153),  # fence
    (153, 153, 153),  # pole
    (250, 170, 30),  # traffic light
    (220, 220, 0),  # traffic sign
    (107, 142, 35),  # vegetation
    (152, 251, 152),  # terrain
    (70, 130, 180),  # sky
    (220, 20, 60),  # person
    (255, 0, 0),  # rider
    (0, 0, 142),  # car
    (0, 0, 70),  # truck
    (0, 60, 100),  # bus
    (0, 80, 100),  # train
    (0, 0, 230),  # motorcycle
    (119, 11, 32),  # bicycle
)
IGNORE_COLOR = (0, 0, 0)  # the official color maps draw 255 black


def class_names(num_classes: int) -> tuple[str, ...]:
    """Names for a 19-class (official) or 20-class (with ``unknown``) model."""
    if num_classes == NUM_CLASSES:
        return CLASS_NAMES
    if num_classes == NUM_CLASSES_20:
        return CLASS_NAMES_20
    raise ValueError(f"num_classes must be 19 or 20, got {num_classes}")
