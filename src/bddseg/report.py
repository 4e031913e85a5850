"""``bddseg report``: one self-contained HTML page for one or more run directories.

A run directory holds ``config.yaml``, ``log.csv``, ``eval/val/`` (from ``bddseg evaluate``)
and ``predictions/test/`` (from ``bddseg predict``). Further evaluations, on other datasets,
sit beside ``eval/val`` (``eval/KIND-SPLIT/metrics.json``, e.g. ``eval/cityscapes-val``): the
report puts every run's evaluations in one table, runs (by the dataset they trained on) x
test sets, the official mIoU in each cell (the domain-shift table), with each evaluation's
per-group mIoU (city, weather, ...) where ``metrics.json`` has ``groups``. Class names and
colours come from each ``metrics.json``'s ``classes`` (BDD100K's 19 without it). Everything
found is drawn; a section whose
inputs are missing says "not available" and why. Figures are embedded as base64 data URIs, and
the page loads nothing from anywhere else. The figures come from :mod:`bddseg.plots`, the
overlays from :mod:`bddseg.colors`; this module reads the runs and lays them out.
"""

from __future__ import annotations

import base64
import csv
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from PIL import Image

from bddseg._version import __version__
from bddseg.classes import BDD100K, Classes
from bddseg.colors import overlay
from bddseg.config import load_yaml
from bddseg.data import read_image
from bddseg.errors import BddsegError
from bddseg.files import atomic_write_text, read_json
from bddseg.layout import IMAGE_SUFFIXES, list_pairs
from bddseg.masks import read_mask
from bddseg.metrics import (
    IMAGE_LEVEL_LABEL,
    WITH_UNKNOWN_LABEL,
    classes_of,
    miou_label,
    official_arrays,
    official_label,
    with_unknown_keys,
)
from bddseg.plots import (
    confusion_figure,
    figure_bytes,
    image_matrix_figure,
    iou_delta_figure,
    iou_share_figure,
    loss_figure,
    loss_multi_figure,
    sample_grid_figure,
)
from bddseg.runs import (
    BEST,
    CONFIG,
    CONFUSION,
    EVAL_DIR,
    EVAL_SPLIT,
    LAST,
    LOG,
    METRICS,
    PER_IMAGE,
    PRED_DIR,
    eval_dir,
    predictions_dir,
)
from bddseg.trainlog import read_log
from bddseg.view import VIEW_DIR, VIEW_INDEX, Truth, find_truth, run_label

__all__ = ["load_run", "write_report"]

THUMB_WIDTH = 480  # px; sample tiles are drawn about 330 px wide
N_TRAIN, N_VAL, N_WORST, N_TEST = 8, 3, 4, 8


@dataclass
class Run:
    """Everything read from one run directory; ``missing`` says why an input is absent."""

    dir: Path
    name: str
    config: dict
    log: dict | None = None
    metrics: dict | None = None
    confusion: dict | None = None
    per_image: list[dict] | None = None
    missing: dict[str, str] = field(default_factory=dict)
    evals: dict[str, dict] = field(default_factory=dict)  # eval/NAME -> metrics.json

    @property
    def classes(self) -> Classes:
        """The main evaluation's class set (its ``metrics.json``; BDD100K without one)."""
        try:
            return classes_of(self.metrics)
        except BddsegError:
            return BDD100K

    @property
    def trained_on(self) -> str:
        """The dataset the run trained on: ``data.dataset`` where set, else the name of
        ``data.root``'s folder."""
        data = self.config.get("data") if isinstance(self.config.get("data"), dict) else {}
        kind = data.get("dataset")
        if kind and kind != "auto":
            return str(kind)
        return Path(str(data.get("root") or "?")).name or "?"

    @property
    def label(self) -> str:
        """``NAME (ARCH/ENCODER, LOSS, weights=W)``: what tells runs apart in a comparison.

        Read from the run's config (:func:`bddseg.view.run_label`: the viewer names runs
        the same way)."""
        return run_label(self.name, self.config)

    @property
    def eval_dir(self) -> Path:
        return eval_dir(self.dir)


# ---------------------------------------------------------------- reading a run
def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory. Only ``config.yaml`` is required; a missing or unreadable
    optional file is recorded in ``Run.missing`` and its sections show "not available".

    Raises:
        BddsegError: the directory or its ``config.yaml`` is missing or unreadable.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BddsegError("run directory not found", run_dir)
    if not (run_dir / CONFIG).is_file():
        raise BddsegError(f"no {CONFIG}: not a run directory (train writes one)", run_dir)
    run = Run(run_dir, run_dir.resolve().name, load_yaml(run_dir / CONFIG))
    ev = run.eval_dir
    optional = {
        "log": (run_dir / LOG, read_log),
        "metrics": (ev / METRICS, lambda p: read_json(p, "metrics")),
        "confusion": (ev / CONFUSION, lambda p: read_json(p, "confusion matrix")),
        "per_image": (ev / PER_IMAGE, _read_csv),
    }
    for key, (path, reader) in optional.items():
        if not path.is_file():
            run.missing[key] = f"{path} not found"
            continue
        try:
            setattr(run, key, reader(path))
        except BddsegError as e:  # a broken file: say so, go on
            run.missing[key] = str(e)
        except (OSError, ValueError, csv.Error) as e:
            run.missing[key] = f"{path}: cannot read ({e})"
    for name, path in _eval_dirs(run_dir).items():
        if name == EVAL_SPLIT:
            if run.metrics is not None:
                run.evals[name] = run.metrics
            continue
        try:
            run.evals[name] = read_json(path / METRICS, "metrics")
        except (BddsegError, OSError, ValueError):  # the table shows it as not evaluated
            continue
    return run


def _eval_dirs(run_dir: Path) -> dict[str, Path]:
    """``{NAME: RUN/eval/NAME}`` for every evaluation with a ``metrics.json``: ``val``
    first, the others by name."""
    base = run_dir / EVAL_DIR
    found = sorted(p for p in base.glob(f"*/{METRICS}") if p.is_file()) if base.is_dir() else []
    names = sorted((p.parent.name for p in found), key=lambda n: (n != EVAL_SPLIT, n))
    return {n: base / n for n in names}


def _unique_names(runs: list[Run]) -> None:
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}-{seen[r.name]}"


# ---------------------------------------------------------------- sample images
def _load_image(path: Path) -> np.ndarray:
    """uint8 (h, w, 3), at most THUMB_WIDTH wide."""
    arr = read_image(path).permute(1, 2, 0).numpy()
    h, w = arr.shape[:2]
    if w <= THUMB_WIDTH:
        return arr
    size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR))


def _load_mask(path: Path, like: np.ndarray, reader: Classes | None) -> np.ndarray:
    """A mask resized (nearest) to the thumbnail ``like``. Truth masks (``reader``: the
    dataset's classes) are validated and mapped to train ids (Cityscapes ``labelIds``, a
    user's mapping); predictions (``None``; which may hold K, unknown) are read as they are."""
    truth = reader is not None
    what = "ground-truth mask" if truth else "prediction"
    arr = read_mask(path, what, check_values=truth, classes=reader or BDD100K)
    h, w = like.shape[:2]
    if arr.shape != (h, w):
        arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.NEAREST))
    return arr


def _pick(items: Sequence, n: int) -> list:
    """``n`` items spread evenly over ``items`` (the same picks for every run)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _short(stem: str, n: int = 22) -> str:
    return stem if len(stem) <= n else stem[: n - 1] + "…"


def _uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _grid(tiles: list, titles: list, col_titles=None, cols: int | None = None) -> str:
    """A tile grid as a JPEG data URI; ``cols`` reflows flat lists into rows."""
    if cols:
        tiles = [tiles[i : i + cols] for i in range(0, len(tiles), cols)]
        titles = [titles[i : i + cols] for i in range(0, len(titles), cols)]
    return _uri(figure_bytes(sample_grid_figure(tiles, titles, col_titles), "jpeg"), "image/jpeg")


def _own_truth(run: Run) -> Truth:
    """The run's own dataset (``data.root``, ``data.dataset``, ``data.classes``): its train
    split."""
    return find_truth(run.dir, run.config, run.classes)


def _eval_truth(run: Run) -> Truth:
    """The dataset the main evaluation scored (``metrics.json``'s ``data``, else the run's)."""
    record = (run.metrics or {}).get("data")
    return find_truth(run.dir, run.config, run.classes, record if isinstance(record, dict) else {})


def _train_samples(run: Run) -> str:
    truth = _own_truth(run)
    pairs = _pick([p for p in list_pairs(truth.layout, "train") if p.image and p.mask], N_TRAIN)
    if not pairs:
        raise BddsegError(f"no train image/mask pairs under {truth.root}")
    tiles = []
    for p in pairs:
        img = _load_image(p.image)
        mask = _load_mask(p.mask, img, truth.classes)
        tiles.append(overlay(img, mask, palette=run.classes.palette))
    return _grid(tiles, [_short(p.stem) for p in pairs], cols=4)


def _val_samples(run: Run, worst: bool) -> str:
    """image | truth | prediction rows: spread over val, or the lowest per-image mIoU."""
    truth, pred_dir = _eval_truth(run), run.eval_dir / PRED_DIR
    if not pred_dir.is_dir():
        raise BddsegError(f"{pred_dir} not found (run bddseg evaluate)")
    scores = {r.get("stem"): _num(r.get("miou")) for r in run.per_image or []}
    if worst:
        if not scores:
            raise BddsegError(run.missing.get("per_image", f"{PER_IMAGE} is empty"))
        stems = sorted(scores, key=lambda s: (scores[s] is None, scores[s] or 0.0))[:N_WORST]
    else:
        stems = _pick(sorted(p.stem for p in pred_dir.glob("*.png")), N_VAL)
    split = str(((run.metrics or {}).get("data") or {}).get("split") or EVAL_SPLIT)
    pairs = {p.stem: p for p in list_pairs(truth.layout, split)}
    tiles, titles = [], []
    palette = run.classes.palette
    for stem in stems:
        pair, pred = pairs.get(stem), pred_dir / f"{stem}.png"
        if not (pair and pair.image and pair.mask and pred.is_file()):
            continue
        img = _load_image(pair.image)
        gt, guess = _load_mask(pair.mask, img, truth.classes), _load_mask(pred, img, None)
        tiles.append([img, overlay(img, gt, palette=palette), overlay(img, guess, palette=palette)])
        score = f" · mIoU {_pct(scores[stem])}%" if scores.get(stem) is not None else ""
        titles.append([_short(stem) + score, "", ""])
    if not tiles:
        raise BddsegError(f"no val images with a prediction under {truth.root}")
    return _grid(tiles, titles, ["image", "truth", "prediction"])


def _test_samples(run: Run) -> str:
    base = predictions_dir(run.dir)
    for kind in ("overlay", "color"):
        files = [p for p in sorted((base / kind).glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if files:
            files = _pick(files, N_TEST)
            return _grid([_load_image(p) for p in files], [_short(p.stem) for p in files], cols=4)
    raise BddsegError(f"{base}/overlay not found (run bddseg predict)")


# ---------------------------------------------------------------- numbers and tables
def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _pct(v) -> str:
    v = _num(v)
    return "—" if v is None else f"{100 * v:.1f}"


def _share(v) -> str:
    v = _num(v)
    return "—" if v is None else f"{100 * v:.2f}" if v >= 0.01 else f"{100 * v:.3f}"


def _count(v) -> str:
    return "—" if _num(v) is None else f"{int(v):,}"


def _shade(v) -> str:
    """A red (0) to green (1) background for a score; none for None."""
    v = _num(v)
    return "" if v is None else f"background:hsl({round(4 + 128 * min(max(v, 0.0), 1.0))},62%,89%)"


def _cell(v, fmt=_pct, shade: bool = True) -> dict:
    n = _num(v)
    return {
        "text": fmt(v),
        "v": "" if n is None else f"{n:.6g}",
        "style": _shade(v) if shade else "",
    }


def _swatch(name: str, classes: Classes = BDD100K) -> str:
    """CSS for a class's color chip; empty for unknown or a name not in ``classes`` (the
    template stripes it)."""
    if name not in classes.names:
        return ""
    return "background:rgb({},{},{})".format(*classes.palette[classes.names.index(name)])


def _get(d: dict | None, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def headline(k: int = 19) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The headline numbers of K classes as ``(title, keys into metrics.json)``: the official
    view first, then the others, each named by its view (metrics.py's labels)."""
    key_k, key_all = with_unknown_keys(k)
    return (
        (miou_label(k), ("official", "miou")),
        ("pixel accuracy (official)", ("official", "pixel_accuracy")),
        ("fwIoU (official)", ("official", "fwiou")),
        (f"mIoU ({k} classes, {WITH_UNKNOWN_LABEL})", ("with_unknown", key_k)),
        (f"mIoU ({k + 1} classes, {WITH_UNKNOWN_LABEL})", ("with_unknown", key_all)),
        ("image-level micro F1", ("image_level", "micro", "f1")),
        ("image-level macro F1", ("image_level", "macro", "f1")),
    )


HEADLINE = headline(19)  # BDD100K's
# the per-class table's columns: (view, metric, format, shaded); the template's group header
# and its separators (at columns 1, 2 and 7) follow this order
CLASS_COLUMNS = (
    ("official", "iou", _pct, True),
    *(("with_unknown", k, _pct, True) for k in ("iou", "precision", "recall", "f1")),
    ("with_unknown", "pixel_share", _share, False),
    *(("image_level", k, _pct, True) for k in ("precision", "recall", "f1")),
    ("image_level", "support", _count, False),
)


def _class_rows(m: dict) -> list[dict]:
    classes = classes_of(m)
    return [
        {
            "name": n,
            "swatch": _swatch(n, classes),
            "cells": [_cell(_get(m, view, k, n), f, sh) for view, k, f, sh in CLASS_COLUMNS],
        }
        for n in classes.model_names("class")
    ]


def _average_rows(m: dict) -> list[dict]:
    rows = []
    for avg in ("micro", "macro", "weighted", "samples"):
        d = _get(m, "image_level", avg) or {}
        cells = [_cell(d.get(k)) for k in ("precision", "recall", "f1")]
        rows.append(
            {"name": f"{avg} avg", "cells": [*cells, _cell(d.get("support"), _count, False)]}
        )
    return rows


def _averaged_text(classes: Classes) -> str:
    """Which classes the official mIoU averages, by the class set's rule (``mean_over``)."""
    if classes.mean_over == "truth":
        return "classes present in the truth"
    return "classes with pixels in the truth or the prediction"


def _averaged(run: Run) -> int:
    """How many classes the official mIoU averages, by the class set's rule (``mean_over``).
    ``truth`` (BDD100K): the classes with pixels in the truth (``metrics.json``'s pixel
    shares), else those with a defined IoU. ``union``: from the confusion matrix
    (:func:`bddseg.metrics.official_arrays`) where it has the run's K + 1 rows, else the
    classes with a defined IoU (TP + FP + FN > 0: the same classes)."""
    m, classes = run.metrics or {}, run.classes
    share = _get(m, "with_unknown", "pixel_share") or {}
    if classes.mean_over == "truth" and share:  # a class is in the truth with pixels there
        return sum((_num(share.get(n)) or 0) > 0 for n in classes.names)
    if classes.mean_over == "union":
        try:
            cm = np.asarray((run.confusion or {}).get("matrix"), dtype=np.int64)
        except (TypeError, ValueError):
            cm = None
        if cm is not None and cm.shape == (classes.num + 1, classes.num + 1):
            return int(official_arrays(cm, "union")["averaged"].sum())
    return sum(v is not None for v in (_get(m, "official", "iou") or {}).values())


def _run_summary(run: Run) -> str:
    """One sentence on the official view: mIoU, pixel accuracy, best and weakest class."""
    m = run.metrics
    if not m:
        return f"{run.label}: no evaluation ({run.missing.get('metrics')})."
    classes = run.classes
    text = (
        f"{run.label}: {miou_label(classes.num)} {_pct(_get(m, 'official', 'miou'))}% over the "
        f"{_averaged(run)} {_averaged_text(classes)} of {m.get('num_images', '?')} images, "
        "pixel accuracy "
        f"{_pct(_get(m, 'official', 'pixel_accuracy'))}%."
    )
    iou = {n: v for n, v in (_get(m, "official", "iou") or {}).items() if _num(v) is not None}
    if iou:
        best, worst = max(iou, key=iou.get), min(iou, key=iou.get)
        text += f" Best class {best} ({_pct(iou[best])}%), weakest {worst} ({_pct(iou[worst])}%)"
        never = [n for n, v in (_get(m, "official", "precision") or {}).items() if v is None]
        text += f"; never predicted: {', '.join(never)}." if never else "."
    return text


def _compare_row(vals: list[float | None], names: list[str]) -> dict:
    """Each run's value (the single best marked), deltas against the first run, the winner."""
    known = [v for v in vals if v is not None]
    best = max(known) if len(known) > 1 else None
    winners = [n for n, v in zip(names, vals, strict=True) if best is not None and v == best]
    values = [
        {"text": _pct(v), "best": v == best and len(winners) == 1, "style": _shade(v)} for v in vals
    ]
    deltas = []
    for v in vals[1:]:
        d = None if v is None or vals[0] is None else v - vals[0]
        cls = "" if d is None or abs(d) < 5e-4 else ("pos" if d > 0 else "neg")
        deltas.append({"text": "—" if d is None else f"{100 * d:+.1f}", "cls": cls})
    winner = "—" if not winners else winners[0] if len(winners) == 1 else "tie"
    return {"values": values, "deltas": deltas, "winner": winner}


def _all_classes(runs: list[Run]) -> list[tuple[str, Classes]]:
    """Every evaluated class of the runs' main evaluations, the first run's order first, each
    with the class set that colours it."""
    seen: dict[str, Classes] = {}
    for r in runs:
        for n in r.classes.names:
            seen.setdefault(n, r.classes)
    return list(seen.items())


def _comparison(runs: list[Run]) -> dict:
    """Headline numbers (the official mIoU first) and the official per-class IoU (the K
    classes, 255 ignored; every class of any run) side by side."""
    names = [r.name for r in runs]
    per_run = [headline(r.classes.num) for r in runs]
    rows = [
        {
            "title": title,
            "cells": _compare_row(
                [_num(_get(r.metrics, *h[i][1])) for r, h in zip(runs, per_run, strict=True)],
                names,
            ),
        }
        for i, (title, _) in enumerate(per_run[0])
    ]
    classes, wins = [], dict.fromkeys(names, 0)
    for c, owner in _all_classes(runs):
        row = _compare_row([_num(_get(r.metrics, "official", "iou", c)) for r in runs], names)
        classes.append({"name": c, "swatch": _swatch(c, owner), **row})
        if row["winner"] in wins:
            wins[row["winner"]] += 1
    ious = {r.name: _get(r.metrics, "official", "iou") for r in runs}
    logs = {r.name: r.log for r in runs if r.log}
    return {
        "view": official_label(runs[0].classes.num),
        "runs": [{"name": r.name, "label": r.label} for r in runs],
        "headline": rows,
        "classes": classes,
        "wins": wins,
        "summary": _comparison_summary(runs, wins, len(classes)),
        "curves": _figure(loss_multi_figure, logs, missing=None if logs else f"no run has a {LOG}"),
        "delta": _figure(
            iou_delta_figure,
            ious,
            missing=None if all(ious.values()) else "a run has no evaluation",
        ),
    }


def _comparison_summary(runs: list[Run], wins: dict[str, int], n: int) -> str:
    scored = [(r, _num(_get(r.metrics, "official", "miou"))) for r in runs]
    scored = sorted(((r, v) for r, v in scored if v is not None), key=lambda t: -t[1])
    if len(scored) < 2:
        return "Fewer than two runs have an evaluation, so there is nothing to compare."
    (top, a), (second, b) = scored[:2]
    text = (
        f"{top.label} wins on {miou_label(top.classes.num)}: {_pct(a)}% vs {_pct(b)}% for "
        f"{second.name} "
        f"({100 * (a - b):+.1f} points)"
    )
    if len(runs) > 2:
        return text + "; classes won: " + ", ".join(f"{n} {k}" for n, k in wins.items()) + "."
    other = next(name for name in wins if name != top.name)
    rest = n - sum(wins.values())
    text += (
        f", and has the higher official IoU on {wins[top.name]} of {n} classes; "
        f"{other} wins on {wins[other]}"
    )
    return text + (f", {rest} tied or undefined." if rest else ".")


# ---------------------------------------------------------------- sections
def _figure(build, *args, missing: str | None = None) -> dict:
    """A figure section: ``{"uri": PNG data URI}``, or ``{"missing": reason}``."""
    if missing:
        return {"uri": None, "missing": missing}
    return {"uri": _uri(figure_bytes(build(*args), "png")), "missing": None}


def _samples(build, *args) -> dict:
    """A sample section; its inputs may be absent (BddsegError): "not available", and why."""
    try:
        return {"uri": build(*args), "missing": None}
    except BddsegError as e:
        return {"uri": None, "missing": str(e)}


def _config_sections(cfg: dict) -> list[dict]:
    def show(v) -> str:
        return (
            " × ".join(map(str, v)) if isinstance(v, list | tuple) else "—" if v is None else str(v)
        )

    return [
        {"name": s, "items": [(k, show(v)) for k, v in d.items()]}
        for s, d in cfg.items()
        if isinstance(d, dict)
    ]


def _run_context(run: Run, index: int) -> dict:
    m, conf = run.metrics, run.confusion or {}
    k = run.classes.num
    classes = conf.get("classes") or list(run.classes.model_names("class"))
    no_conf = run.missing.get("confusion", f"{CONFUSION} has no such matrix")
    ctx = {
        "id": f"run-{index}",
        "name": run.name,
        "label": run.label,
        "dir": str(run.dir),
        "summary": _run_summary(run),
        "config": _config_sections(run.config),
        "checkpoints": [p.name for p in (run.dir / BEST, run.dir / LAST) if p.is_file()],
        "loss": _figure(loss_figure, run.log, missing=run.missing.get("log")),
        "metrics": m is not None,
        "missing_eval": run.missing.get("metrics"),
        "num_images": (m or {}).get("num_images"),
        "confusion": _figure(
            confusion_figure,
            conf.get("matrix"),
            classes,
            missing=None if "matrix" in conf else no_conf,
        ),
        "image_matrix": _figure(
            image_matrix_figure,
            conf.get("image_matrix"),
            classes,
            _get(m, "image_level", "support"),
            missing=None if "image_matrix" in conf else no_conf,
        ),
        "samples": [
            ("Train samples with their masks", _samples(_train_samples, run)),
            ("Val samples: image | truth | prediction", _samples(_val_samples, run, False)),
            (f"Worst val images by per-image {miou_label(k)}", _samples(_val_samples, run, True)),
            ("Test predictions", _samples(_test_samples, run)),
        ],
        "legend": [
            {"name": n, "swatch": _swatch(n, run.classes)} for n in run.classes.model_names("class")
        ],
        "groups": _groups(run),
        "views": _views(k),
        "averaged": _averaged_text(run.classes),
    }
    if m is not None:
        ctx["headline"] = [
            {"title": t, "text": _pct(_get(m, *keys)), "style": _shade(_get(m, *keys))}
            for t, keys in headline(k)
        ]
        ctx["classes"] = _class_rows(m)
        ctx["averages"] = _average_rows(m)
        ctx["iou_share"] = _figure(iou_share_figure, m)
    return ctx


def _views(k: int) -> dict[str, str]:
    return {
        "official": official_label(k),
        "with_unknown": WITH_UNKNOWN_LABEL,
        "image_level": IMAGE_LEVEL_LABEL,
    }


# ---------------------------------------------------------------- across datasets
def _tested_on(run: Run, name: str, m: dict) -> tuple[str, str]:
    """``(dataset, split)`` an evaluation scored: its ``data`` record (name, else kind), else
    the folder's name (``val``: the run's own dataset; ``KIND-SPLIT``)."""
    data = m.get("data") if isinstance(m.get("data"), dict) else {}
    dataset = data.get("name") or data.get("kind")
    split = data.get("split")
    if not dataset or not split:
        guess = (run.trained_on, name) if "-" not in name else tuple(name.rsplit("-", 1))
        dataset, split = dataset or guess[0], split or guess[1]
    return str(dataset), str(split)


def _shift_table(runs: list[Run]) -> dict | None:
    """Runs (rows, by the dataset they trained on) x test sets (columns, each evaluation's
    dataset and split): the official mIoU, empty where not evaluated. None with fewer than
    two test sets."""
    columns: list[tuple[str, str]] = []
    cells: dict[tuple[int, tuple[str, str]], float | None] = {}
    for i, r in enumerate(runs):
        for name, m in r.evals.items():
            col = _tested_on(r, name, m)
            if col not in columns:
                columns.append(col)
            cells[i, col] = _num(_get(m, "official", "miou"))
    if len(columns) < 2:  # one test set: the comparison has its mIoU already
        return None
    rows = []
    for i, r in enumerate(runs):
        row = []
        for col in columns:
            if (i, col) not in cells:
                row.append({"text": "", "style": "", "own": False})
                continue
            v = cells[i, col]
            row.append({"text": _pct(v), "style": _shade(v), "own": col[0] == r.trained_on})
        rows.append({"name": r.name, "trained_on": r.trained_on, "cells": row})
    return {
        "columns": [f"{d} {s}" for d, s in columns],
        "rows": rows,
        "title": miou_label(runs[0].classes.num),
    }


def _groups(run: Run) -> list[dict]:
    """Per evaluation with ``groups`` in its metrics.json: ``{"title", "rows": [{"name",
    "miou", "images", "style"}]}``, groups sorted by name."""
    out = []
    for name, m in run.evals.items():
        groups = m.get("groups")
        if not isinstance(groups, dict) or not groups:
            continue
        dataset, split = _tested_on(run, name, m)
        rows = [
            {
                "name": str(g),
                "miou": _pct(_get(v, "miou")),
                "style": _shade(_get(v, "miou")),
                "images": _count(_get(v, "images")),
            }
            for g, v in sorted(groups.items())
        ]
        out.append({"title": f"{dataset} {split}", "rows": rows})
    return out


def _viewer_link(runs: list[Run], out: Path, viewer: str | Path | None) -> str | None:
    """The viewer's index.html relative to the report: ``viewer``, else a single run's
    ``RUN/view/index.html`` when ``bddseg view`` built one."""
    if viewer is None and len(runs) == 1 and (runs[0].dir / VIEW_DIR / VIEW_INDEX).is_file():
        viewer = runs[0].dir / VIEW_DIR / VIEW_INDEX
    if viewer is None:
        return None
    return Path(os.path.relpath(Path(viewer).resolve(), out.resolve().parent)).as_posix()


def write_report(
    run_dirs: Sequence[str | Path], out: str | Path, viewer: str | Path | None = None
) -> Path:
    """Write one self-contained HTML report for ``run_dirs`` to ``out``; returns ``out``.
    The header links to ``viewer`` (the index.html of ``bddseg view``; default: a single
    run's ``RUN/view/index.html`` if there is one).

    One run: its summary, headline numbers, config, curves, per-class table, figures and
    samples. Several: first a comparison (headline numbers and per-class IoU side by side,
    deltas against the first run, the better run per class marked, overlaid curves), then
    each run's section.

    Raises:
        BddsegError: no run given, or a run directory without ``config.yaml``.
    """
    if not run_dirs:
        raise BddsegError("give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bddseg", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template("report.html").render(
        title="bddseg report: " + " vs ".join(r.name for r in runs),
        version=__version__,
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        viewer=_viewer_link(runs, Path(out), viewer),
        comparison=_comparison(runs) if len(runs) > 1 else None,
        runs=[_run_context(r, i) for i, r in enumerate(runs)],
        shift=_shift_table(runs),
    )
    atomic_write_text(Path(out), html)
    return Path(out)
