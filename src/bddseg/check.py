"""Check a whole dataset before training on it: every pair of every split, all problems at once.

Decoding runs in a process pool (:func:`bddseg.parallel.parallel_map`); the pairs come from
:mod:`bddseg.layout`, the decoders from :mod:`bddseg.data`, the masks' valid values from the
dataset's class set (:func:`bddseg.layout.dataset_classes`). Every problem is reported as
``(path, reason)``, one line each.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bddseg import parallel
from bddseg.classes import BDD100K, Classes
from bddseg.data import init_decode_worker, read_image, read_mask, size_problem
from bddseg.errors import BddsegError
from bddseg.layout import (
    LABELLED_SPLITS,
    Layout,
    Pair,
    dataset_classes,
    find_layout,
    layout_splits,
    pairs_and_duplicates,
)


@dataclass
class CheckReport:
    """``summary[split]``: images, masks, bad (stems with a problem), seconds, pairs_per_s.
    ``problems``: ``(path, reason)``, one per problem, all of them."""

    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_pair(pair: Pair, classes: Classes = BDD100K) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    size = None
    if pair.image is not None:
        try:
            size = tuple(read_image(pair.image).shape[1:])
        except BddsegError as e:
            problems.append((str(pair.image), e.problem))
    if pair.mask is not None:
        try:
            msize = tuple(read_mask(pair.mask, classes).shape)
            if size is not None and msize != size:
                problems.append((str(pair.mask), size_problem(msize, size)))
        except BddsegError as e:
            problems.append((str(pair.mask), e.problem))
    return problems


def _check_chunk(
    pairs: list[Pair], classes: Classes = BDD100K
) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(p.stem, _check_pair(p, classes)) for p in pairs]


def check_dataset(
    root: str | Path, workers: int = 1, dataset: str = "auto", classes_file: str | None = None
) -> CheckReport:
    """Check every pair of every split present, listing all problems at once.

    For each split: every image decodes, every mask decodes as single-channel 8-bit with values
    the dataset's class set allows (BDD100K: 0..18 and 255; ``classes_file``, else
    ROOT/classes.yaml, else the layout's: :func:`bddseg.layout.dataset_classes`) and has its
    image's height and width, every train/val image has a mask, no mask lacks an image, no
    stem appears twice. ``dataset``: the layout (``auto``: detected). Decoding runs in
    ``workers`` processes (one pool for all splits).

    Raises:
        BddsegError: the root is missing or not a recognised layout, or a bad class file (the
            problems of the files themselves are the report's).
    """
    report = CheckReport()
    layout = find_layout(root, dataset)
    classes = dataset_classes(layout, classes_file)
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            pool = stack.enter_context(parallel.pool(workers, init_decode_worker))
        for split in layout_splits(layout):
            report.summary[split], problems = _check_split(layout, split, workers, pool, classes)
            report.problems += problems
    return report


def _check_split(
    layout: Layout,
    split: str,
    workers: int,
    pool: ProcessPoolExecutor | None,
    classes: Classes,
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    pairs, dupes = pairs_and_duplicates(layout, split)
    problems = [(str(p), "duplicate stem: another file has the same name") for p in dupes]
    if not pairs:  # a folder that exists but holds nothing is a mistake, not a clean split
        problems.append((str(layout.images[split]), f"the {split} split is empty (no images)"))
    bad = {p.stem for p in dupes}
    for p in pairs:
        if p.image is None:
            problems.append((str(p.mask), "mask without an image"))
            bad.add(p.stem)
        elif p.mask is None and split in LABELLED_SPLITS:
            missing = layout.expected_mask(split, p.image)
            problems.append((str(p.image), f"image without a mask (no {missing})"))
            bad.add(p.stem)
    start = time.perf_counter()
    # classes travels to the workers with each chunk (a frozen dataclass: it pickles)
    for chunk in parallel.parallel_map(_check_chunk, pairs, workers, classes, executor=pool):
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
