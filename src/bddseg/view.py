"""``bddseg view``: a static site to browse every evaluated image of one or more runs.

Reads each run's evaluation (``RUN/eval/SPLIT``: ``per_image.csv``, ``confusion.json``,
``pred/STEM.png``) and the dataset it was scored on (``metrics.json``'s ``data`` record, else
the run's ``config.yaml``: the truth masks, read through the dataset's classes, and the
photos where there are any), and writes into ``OUT``::

    index.html  viewer.js  viewer.css   the page (no network: no CDN, no web fonts)
    data.js        every image's numbers, the confusion matrices and, for each cell
                   (true a, predicted b), the images with the most a -> b pixels
    photo/STEM.*   the photos, copied          thumb/STEM.jpg|png  320 px wide
    truth/STEM.png, pred/R/STEM.png            class ids (8-bit grayscale), coloured in the
                                               browser by an SVG filter (class toggles)

The data is a script (``data.js`` sets ``window.BDDSEG_VIEW``), not JSON: Chromium refuses
``fetch`` of a ``file://`` URL, and a canvas that draws a ``file://`` image is tainted, so
the masks stay plain class-id PNGs and an SVG filter colours them (a lookup table per
channel). The error view is drawn there too: the prediction over the truth with
``mix-blend-mode: difference`` gives 0 where they agree, and an SVG filter turns the rest red
(grey where the truth is unlabelled), so no error image is written. Each image's own numbers are counted here from its truth and prediction
(:func:`bddseg.fastpng.joint_histogram`, folded by :func:`bddseg.metrics.fold_histogram`
and read by :func:`bddseg.metrics.official_arrays`: the numbers of ``per_image.csv``).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import http.server
import importlib.resources
import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
from PIL import Image

from bddseg import fastpng, metrics, runs
from bddseg._version import __version__
from bddseg.classes import BDD100K, Classes
from bddseg.config import LossConfig, ModelConfig, load_yaml
from bddseg.errors import BddsegError, warn
from bddseg.files import atomic_write_bytes, atomic_write_text, read_json
from bddseg.labels import IGNORE_VALUE
from bddseg.layout import Layout, dataset_classes, find_layout, list_pairs
from bddseg.masks import check_counts, decode_mask, histogram, map_mask, read_bytes, remap_histogram
from bddseg.parallel import parallel_map

VIEW_DIR = "view"  # RUN/view/: where `bddseg view RUN` writes by default
VIEW_INDEX = "index.html"
ASSETS = ("viewer.js", "viewer.css")
THUMB_WIDTH = 320
TOP_PER_CELL = 50  # images kept per confusion cell: enough to browse, small data.js
UNKNOWN_COLOR = (255, 255, 255)  # a 20-class model's unknown (19), drawn in the viewer only

__all__ = [
    "VIEW_DIR",
    "Truth",
    "ViewRun",
    "build_view",
    "default_out",
    "find_truth",
    "run_label",
    "serve",
]


def run_label(name: str, config: dict) -> str:
    """``NAME (ARCH/ENCODER, LOSS, weights=W)``: what tells runs apart in a comparison.

    Read from the run's config; a key it lacks (a hand-written or older file) takes the
    default of :mod:`bddseg.config`, as training would have."""

    def section(key: str, defaults: Any) -> dict:
        given = config.get(key)
        return {**dataclasses.asdict(defaults), **(given if isinstance(given, dict) else {})}

    model, loss = section("model", ModelConfig()), section("loss", LossConfig())
    return (
        f"{name} ({model['arch']}/{model['encoder']}, {loss['name']}, "
        f"weights={loss['class_weights']})"
    )


@dataclasses.dataclass(frozen=True)
class ViewRun:
    """One run's evaluation, as the viewer reads it."""

    dir: Path
    name: str
    label: str
    config: dict
    eval_dir: Path
    stems: tuple[str, ...]  # per_image.csv's order
    confusion: list[list[int]]
    miou: float | None
    classes: Classes = BDD100K  # metrics.json's classes (BDD100K without them)
    data: dict = dataclasses.field(default_factory=dict)  # metrics.json's data record
    groups: tuple[str | None, ...] = ()  # per_image.csv's group column (city, condition)


def _evaluate_hint(run_dir: Path, split: str) -> str:
    ev = runs.eval_dir(run_dir, split)
    return (
        f"run `bddseg evaluate --checkpoint {run_dir / runs.BEST} --data ROOT --split {split} "
        f"--out {ev}` first"
    )


def load_view_run(run_dir: str | Path, split: str = runs.EVAL_SPLIT) -> ViewRun:
    """Read what the viewer needs from ``run_dir``.

    Raises:
        BddsegError: no ``config.yaml``, or no evaluation of ``split`` (the message says
            which ``bddseg evaluate`` to run first).
    """
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file():
        raise BddsegError(f"no {runs.CONFIG}: not a run directory (train writes one)", run_dir)
    ev = runs.eval_dir(run_dir, split)
    needed = (runs.PER_IMAGE, runs.CONFUSION, runs.PRED_DIR)
    if not all((ev / n).exists() for n in needed):
        missing = next(n for n in needed if not (ev / n).exists())
        raise BddsegError(f"no {missing} in {ev}: {_evaluate_hint(run_dir, split)}", run_dir)
    with open(ev / runs.PER_IMAGE, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    stems = tuple(row["stem"] for row in rows)
    groups = tuple(row.get("group") or None for row in rows)
    confusion = read_json(ev / runs.CONFUSION, "confusion matrix")
    scores = read_json(ev / runs.METRICS, "metrics") if (ev / runs.METRICS).is_file() else {}
    config = load_yaml(run_dir / runs.CONFIG)
    name = run_dir.resolve().name
    try:
        classes = metrics.classes_of(scores)
    except BddsegError as e:
        raise BddsegError(f"its classes: {e.problem}", ev / runs.METRICS) from None
    return ViewRun(
        run_dir, name, run_label(name, config), config, ev, stems, confusion["matrix"],
        (scores.get("official") or {}).get("miou"), classes,
        scores.get("data") if isinstance(scores.get("data"), dict) else {}, groups,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Truth:
    """Where an evaluation's ground truth is, and how to read it: ``layout`` (of ``root``)
    and ``classes``, the class set whose ``mapping`` turns the masks' raw values into the
    run's train ids (Cityscapes ``labelIds`` by the official table, a user's mapped masks)."""

    root: Path
    layout: Layout
    classes: Classes


def _config_data(config: dict) -> dict:
    data = config.get("data") if isinstance(config, dict) else None
    return data if isinstance(data, dict) else {}


def _existing(path: str | Path, run_dir: Path) -> Path | None:
    """``path`` as given (absolute, or relative to the cwd), else relative to the run dir."""
    for candidate in (Path(path), run_dir / path):
        if candidate.exists():
            return candidate
    return None


def _same(a: Path, b: Path | None) -> bool:
    try:
        return b is not None and a.resolve() == b.resolve()
    except OSError:
        return False


def find_truth(
    run_dir: str | Path,
    config: dict,
    run_classes: Classes = BDD100K,
    record: dict | None = None,
    data_root: str | Path | None = None,
    hint: str = "",
) -> Truth:
    """The ground truth of a run's evaluation: ``data_root`` if given, else the root its
    ``metrics.json`` records (``record``: its ``data``, ``{root, kind, ...}``) where that
    folder exists, else the run's ``data.root`` (absolute, relative to the cwd, or to the run
    folder). The layout is the recorded kind (or ``data.dataset``); the masks are read through
    the dataset's classes (:func:`bddseg.layout.dataset_classes`, with the run's ``data.classes``
    for its own root) when they name the run's classes, else as the run's train ids.
    ``hint``: what a message on a missing root adds (``": give --data"``).

    Raises:
        BddsegError: no root to be found, or not a dataset root.
    """
    run_dir = Path(run_dir)
    data, record = _config_data(config), record or {}
    own_root = _existing(data["root"], run_dir) if data.get("root") else None
    own_kind = str(data.get("dataset") or "auto")
    rec_root = Path(record["root"]) if record.get("root") else None
    rec_kind = str(record.get("kind") or "auto")
    if data_root is not None:
        root = Path(data_root)
        kind = rec_kind if _same(root, rec_root) else own_kind if _same(root, own_root) else "auto"
    elif rec_root is not None and rec_root.is_dir():
        root, kind = rec_root, rec_kind
    elif own_root is not None and own_root.is_dir():
        root, kind = own_root, own_kind
    elif not data.get("root"):
        raise BddsegError(f"{runs.CONFIG} has no data.root{hint and hint + ' ROOT'}", run_dir)
    else:
        raise BddsegError(
            f"dataset root {data['root']} (data.root of {runs.CONFIG}) not found{hint}"
        )
    try:
        layout = find_layout(root, kind)
    except BddsegError:
        if kind == "auto":
            raise
        layout = find_layout(root, "auto")
    classes_file = None
    if data.get("classes") and _same(root, own_root):
        classes_file = _existing(str(data["classes"]), run_dir)
    try:
        reader = dataset_classes(layout, classes_file)
    except BddsegError:  # no class file for a folder layout: the masks hold train ids
        reader = run_classes.labels_only()
    if not reader.same_labels(run_classes):  # another class set's file: read train ids
        reader = run_classes.labels_only()
    return Truth(root, layout, reader)


def default_out(run_dirs: list[Path]) -> Path:
    """``RUN/view`` for one run; for several, ``view`` beside the first run."""
    first = Path(run_dirs[0])
    return first / VIEW_DIR if len(run_dirs) == 1 else first.parent / VIEW_DIR


# ---------------------------------------------------------------- per image (worker side)
def _is_gray8(data: bytes) -> bool:
    """An 8-bit grayscale PNG (IHDR depth 8, colour type 0): the browser reads its values."""
    return len(data) > 26 and data[12:16] == b"IHDR" and data[24] == 8 and data[25] == 0


def _png(array: np.ndarray, palette: tuple | None = None) -> bytes:
    im = Image.fromarray(array, "L" if palette is None else "P")
    if palette is not None:
        im.putpalette([v for rgb in palette for v in rgb])
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Write under a temporary name and rename: a crash leaves no half-written file under
    the final name. No fsync (atomic_path's): one per file was half of a 1,000-image build,
    and a site lost with the machine is rebuilt by running ``bddseg view`` again."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BddsegError(f"cannot write ({e.strerror or e})", path) from None


def _thumb(photo: Path | None, truth: np.ndarray, dest_stem: Path, classes: Classes) -> str:
    """A THUMB_WIDTH-wide thumbnail: the photo (JPEG) or else the coloured truth (PNG)."""
    if photo is not None:
        with Image.open(photo) as im:
            w, h = im.size
            size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
            im.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            small = im.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=80)
        path = dest_stem.with_suffix(".jpg")
        _write(path, buf.getvalue())
        return path.name
    step = max(1, math.ceil(truth.shape[1] / THUMB_WIDTH))
    lut = (*classes.palette, UNKNOWN_COLOR, *[(0, 0, 0)] * (256 - classes.num - 1))
    path = dest_stem.with_suffix(".png")
    _write(path, _png(np.ascontiguousarray(truth[::step, ::step]), lut))
    return path.name


def _confusion(
    gt_data: bytes,
    gt: np.ndarray,
    pred_data: bytes | None,
    path: str | None,
    k: int,
    reader: Classes = BDD100K,
    truth_path: str | None = None,
):
    """``int64 (K+1, K+1)`` of one image, as evaluate counts it (a missing prediction: misses),
    and the decoded prediction where it had to be decoded (else ``None``). ``gt_data``/``gt``:
    the truth's raw values, mapped to train ids on the histogram through ``reader``."""
    hist = pred = None
    if pred_data is not None:
        hist = fastpng.joint_histogram(gt_data, pred_data)  # no decode: the common case
        if hist is None:
            pred = decode_mask(pred_data, path, "prediction")
            if pred.shape != gt.shape:
                raise BddsegError("prediction is not the size of its truth mask", path)
    if hist is None:
        hist = metrics.value_histogram(np.full_like(gt, IGNORE_VALUE) if pred is None else pred, gt)
    if not reader.identity:
        hist = remap_histogram(hist, reader, 0, truth_path, "ground-truth mask")
    return metrics.fold_histogram(hist, strict_pred=False, num_classes=k), pred


def _build_chunk(
    items: list[tuple], out: str, classes: Classes = BDD100K, reader: Classes | None = None
) -> list[tuple]:
    """Write one chunk's files; returns per image ``(stem, int64 (R, K+1, K+1) confusion
    matrices, thumbnail name, photo name | None, (H, W), [has a prediction, per run])``.

    ``items``: ``(stem, photo path | None, truth path, (prediction path | None per run))``.
    ``reader``: the class set that reads the truth (default ``classes``): a truth of other
    raw values (Cityscapes ``labelIds``) is written in train ids, the viewer's colours.
    The masks are copied as they are (8-bit grayscale PNGs; anything else is re-encoded as
    one) and the error view is drawn in the browser from them, so a prediction is decoded
    only where the joint histogram's fast path does not apply.
    """
    reader = classes if reader is None else reader
    out_dir, done = Path(out), []
    for stem, photo, truth_path, preds in items:
        gt_data = read_bytes(truth_path, "ground-truth mask")
        gt = decode_mask(gt_data, truth_path, "ground-truth mask")  # the thumbnail's
        if reader.identity:
            ids = gt
            _write(out_dir / "truth" / f"{stem}.png", gt_data if _is_gray8(gt_data) else _png(gt))
        else:  # raw values -> train ids, checked (the error names the file and the values)
            check_counts(histogram(gt), truth_path, "ground-truth mask", reader)
            ids = map_mask(gt, reader)
            _write(out_dir / "truth" / f"{stem}.png", _png(ids))
        cms = []
        for r, pred_path in enumerate(preds):
            pred_data = None if pred_path is None else read_bytes(pred_path, "prediction")
            try:
                cm, pred = _confusion(
                    gt_data, gt, pred_data, pred_path, classes.num, reader, truth_path
                )
            except BddsegError as e:
                raise BddsegError(e.problem, e.path or truth_path) from None
            cms.append(cm)
            if pred_data is not None:
                if not _is_gray8(pred_data):
                    pred = decode_mask(pred_data, pred_path, "prediction") if pred is None else pred
                    pred_data = _png(pred)
                _write(out_dir / "pred" / str(r) / f"{stem}.png", pred_data)
        thumb = _thumb(photo, ids, out_dir / "thumb" / stem, classes)
        photo_name = None
        if photo is not None:
            photo_name = f"{stem}{Path(photo).suffix.lower()}"
            _write(out_dir / "photo" / photo_name, read_bytes(photo, "photo"))
        done.append(
            (stem, np.stack(cms), thumb, photo_name, gt.shape, [p is not None for p in preds])
        )
    return done


# ---------------------------------------------------------------- the site
def _r(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def _image_entry(
    stem: str,
    cms: np.ndarray,
    thumb: str,
    photo: str | None,
    shape: tuple,
    has: list[bool],
    mean_over: str = "truth",
) -> dict:
    """One image's numbers; its mIoU averages the classes ``mean_over`` names (the class
    set's rule, as ``per_image.csv``)."""
    scores = [metrics.official_arrays(cm, mean_over) for cm in cms]
    return {
        "s": stem,
        "t": "thumb/" + quote(thumb),
        "p": None if photo is None else "photo/" + quote(photo),
        "h": int(shape[0]),
        "w": int(shape[1]),
        "m": [int(h) for h in has],
        "miou": [_r(a["miou"]) for a in scores],
        "acc": [_r(a["pixel_accuracy"]) for a in scores],
        "iou": [[_r(v, 3) for v in a["iou"]] for a in scores],
        "c": [int(i) for i in np.flatnonzero(scores[0]["present"])],
    }


def _top_cells(cms: np.ndarray, n: int = TOP_PER_CELL) -> dict[str, list[list[int]]]:
    """``{"a,b": [[image index, pixels], ...]}`` for ``cms`` ``int64 (N, K+1, K+1)``: per cell,
    the ``n`` images with the most true-a predicted-b pixels, most first; empty cells left out."""
    n_bins = cms.shape[-1]
    flat = cms.reshape(len(cms), -1)
    k = min(n, len(cms))
    top = np.argpartition(-flat, k - 1, axis=0)[:k] if k < len(cms) else np.argsort(-flat, 0)
    cells = {}
    for cell in np.flatnonzero(flat.sum(0)):
        idx = top[:, cell]
        idx = idx[np.argsort(-flat[idx, cell], kind="stable")]
        idx = idx[flat[idx, cell] > 0]
        cells[f"{cell // n_bins},{cell % n_bins}"] = [[int(i), int(flat[i, cell])] for i in idx]
    return cells


def _items(view_runs: list[ViewRun], split: str, truth: Truth) -> list[tuple]:
    """``(stem, photo, truth, preds)`` for every image the first run evaluated."""
    root = truth.root
    pairs = {p.stem: p for p in list_pairs(truth.layout, split)}
    items, no_truth = [], []
    for stem in view_runs[0].stems:
        pair = pairs.get(stem)
        if pair is None or pair.mask is None:
            no_truth.append(stem)
            continue
        preds = []
        for run in view_runs:
            p = run.eval_dir / runs.PRED_DIR / f"{stem}.png"
            preds.append(str(p) if p.is_file() else None)
        items.append((stem, None if pair.image is None else str(pair.image), str(pair.mask), preds))
    if no_truth:
        warn(f"{len(no_truth)} evaluated image(s) have no truth mask under {root}; left out")
    if not items:
        raise BddsegError(
            f"none of the evaluated images has a truth mask in its {split} split", root
        )
    return items


def build_view(
    run_dirs: list[str | Path],
    out: str | Path | None = None,
    split: str = runs.EVAL_SPLIT,
    data_root: str | Path | None = None,
    workers: int = 1,
) -> Path:
    """Write the viewer of ``split`` for ``run_dirs`` into ``out`` (default
    :func:`default_out`); returns its ``index.html``.

    Every image the first run evaluated is shown; a later run without its prediction counts
    it as all misses (as ``bddseg evaluate``). Photos are optional: without them the viewer
    draws the masks alone.

    Args:
        data_root: the dataset (default: the root the first run's ``metrics.json`` records,
            else its ``data.root``; :func:`find_truth`). Its masks are read through the
            dataset's classes (Cityscapes ``labelIds``: shown in train-id colours).
        workers: processes writing the images (see :func:`bddseg.parallel.parallel_map`).

    Raises:
        BddsegError: a run without its evaluation (the message says what to run first), a
            dataset root not found, an unreadable mask.
    """
    if not run_dirs:
        raise BddsegError("give at least one run directory")
    view_runs = [load_view_run(d, split) for d in run_dirs]
    names = [r.name for r in view_runs]
    for i, r in enumerate(view_runs):  # the same folder name twice: number them
        if names.count(r.name) > 1:
            label = run_label(f"{r.name}-{i + 1}", r.config)
            view_runs[i] = dataclasses.replace(r, name=f"{r.name}-{i + 1}", label=label)
    out = Path(out) if out is not None else default_out([Path(d) for d in run_dirs])
    first = view_runs[0]
    truth = find_truth(
        first.dir, first.config, first.classes, first.data, data_root, ": give --data"
    )
    items = _items(view_runs, split, truth)
    folders = ["truth", "thumb", *(f"pred/{r}" for r in range(len(view_runs)))]
    for folder in folders + ["photo"] * any(photo for _, photo, _, _ in items):
        (out / folder).mkdir(parents=True, exist_ok=True)
    classes = view_runs[0].classes  # the first run's class set names and colours the masks
    for r in view_runs[1:]:
        if not r.classes.same_labels(classes):
            raise BddsegError(
                f"its classes ({', '.join(r.classes.names)}) are not those of "
                f"{view_runs[0].name} ({', '.join(classes.names)}): view them apart",
                r.dir,
            )
    parts = parallel_map(_build_chunk, items, workers, str(out), classes, truth.classes)
    done = [row for part in parts for row in part]
    images = [_image_entry(*row, mean_over=classes.mean_over) for row in done]
    group_of = dict(zip(first.stems, first.groups, strict=True))
    groups = sorted({g for g in group_of.values() if g})
    for im in images:  # the city or condition (per_image.csv's group column), as an index
        g = group_of.get(im["s"])
        im["g"] = groups.index(g) if g in groups else None
    cms = np.stack([row[1] for row in done])  # (N, R, K+1, K+1)
    data = {
        "version": __version__,
        "split": split,
        "classes": list(classes.model_names("class")),
        "official": classes.num,
        "palette": [list(c) for c in (*classes.palette, UNKNOWN_COLOR)],
        "runs": [{"name": r.name, "label": r.label, "miou": _r(r.miou)} for r in view_runs],
        "confusion": [r.confusion for r in view_runs],
        "cells": [_top_cells(cms[:, i]) for i in range(len(view_runs))],
        "photos": any(im["p"] for im in images),
        "groups": groups,
        "images": images,
    }
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    atomic_write_text(out / "data.js", f"window.BDDSEG_VIEW = {text};\n")
    templates = importlib.resources.files("bddseg") / "templates"
    for name in ASSETS:
        atomic_write_bytes(out / name, (templates / name).read_bytes())
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bddseg", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("viewer.html").render(
        title="bddseg view: " + " vs ".join(r.name for r in view_runs),
        runs=data["runs"],
        split=split,
        count=len(images),
        version=__version__,
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    atomic_write_text(out / VIEW_INDEX, html)
    return out / VIEW_INDEX


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


def serve(folder: str | Path, port: int = 8000) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``folder`` on 127.0.0.1:``port`` (0: any free port) from a daemon thread;
    returns the server (``shutdown()`` stops it) and its URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise BddsegError(f"cannot serve on 127.0.0.1:{port} ({e.strerror or e})") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/{VIEW_INDEX}"
