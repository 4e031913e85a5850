"""Score a model over a split, or predictions against a dataset or a folder of PNG masks.

Every entry point accumulates one ``(K + 1, K + 1)`` confusion matrix (K classes: 19 for
BDD100K) and the per-image class presence (see :mod:`bddseg.metrics`; memory does not grow
with the pixel count) and writes, atomically, into ``out_dir``:

- ``metrics.json``: :func:`bddseg.metrics.to_contract`, ``classes`` (names, colours, the mIoU
  rule), ``data`` (root, kind, split; not for two folders), ``groups`` (mIoU per city or
  condition, where images have one), ``missing_predictions`` (stems, for predictions);
- ``per_class.csv``: class, iou, precision, recall, f1, pixel_share (the K + 1-class view),
  official_iou, official_precision, image_precision, image_recall, image_f1, image_support;
- ``confusion.json``: ``{"classes": K + 1 names, "matrix": pixel counts [truth][prediction],
  "image_matrix": metrics.image_level_matrix}``;
- ``per_image.csv``: stem, miou (official definition on that image alone, by the class set's
  rule), pixel_accuracy (over its labelled pixels), and group where images have one; empty
  where undefined;
- the evaluation plots, by :func:`bddseg.plots.write_eval_plots`.

The folder mode never imports torch (1.4 s of start-up, more than scoring 1,000 pairs).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bddseg import fastpng, metrics, runs
from bddseg.classes import BDD100K, Classes
from bddseg.config import INFERENCE_PRECISION
from bddseg.errors import BddsegError, warn
from bddseg.files import atomic_write_text
from bddseg.labels import IGNORE_VALUE, NUM_CLASSES
from bddseg.layout import dataset_classes, find_layout, list_pairs
from bddseg.masks import decode_mask, read_bytes, remap_histogram, write_mask
from bddseg.parallel import Preloaded, can_preload, parallel_map
from bddseg.progress import progress_bar

PER_CLASS_COLUMNS = (
    "class", "iou", "precision", "recall", "f1", "pixel_share", "official_iou",
    "official_precision", "image_precision", "image_recall", "image_f1", "image_support",
)  # fmt: skip


@dataclass
class Tally:
    """What an evaluation accumulates: the ``(K + 1, K + 1)`` pixel matrix (K classes; row
    and column K: unlabelled truth, unknown or no prediction), one small row per image, and a
    matrix per image group (a Cityscapes city, an ACDC condition) where images have one."""

    num_classes: int = NUM_CLASSES
    mean_over: str = "truth"  # which classes an image's mIoU averages (metrics.official_arrays)
    cm: np.ndarray = field(default=None)  # type: ignore[assignment]
    stems: list[str] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)
    group_cm: dict[str, np.ndarray] = field(default_factory=dict)
    true_presence: list[np.ndarray] = field(default_factory=list)
    pred_presence: list[np.ndarray] = field(default_factory=list)
    scores: list[tuple[float | None, float | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cm is None:
            k = self.num_classes + 1
            self.cm = np.zeros((k, k), dtype=np.int64)

    def add(self, stem: str, cm: Any, min_pixels: int, group: str | None = None) -> None:
        """Add one image's confusion matrix (numpy or torch, any device)."""
        cm = metrics.to_numpy(cm)
        self.cm += cm
        self.groups.append(group)
        if group is not None:
            if group not in self.group_cm:
                self.group_cm[group] = np.zeros_like(self.cm)
            self.group_cm[group] += cm
        t, p = metrics.presence_from_confusion(cm, min_pixels)
        a = metrics.official_arrays(cm, self.mean_over)
        self.stems.append(stem)
        self.true_presence.append(t)
        self.pred_presence.append(p)
        self.scores.append((a["miou"], a["pixel_accuracy"]))

    def merge(self, other: Tally) -> None:
        self.cm += other.cm
        self.stems += other.stems
        self.groups += other.groups
        for group, cm in other.group_cm.items():
            self.group_cm[group] = self.group_cm.get(group, 0) + cm
        self.true_presence += other.true_presence
        self.pred_presence += other.pred_presence
        self.scores += other.scores

    def presence(self) -> tuple[np.ndarray, np.ndarray]:
        """``bool (N, K + 1)`` truth and prediction presence."""
        empty = np.zeros((0, self.num_classes + 1), dtype=bool)
        t = np.stack(self.true_presence) if self.true_presence else empty
        p = np.stack(self.pred_presence) if self.pred_presence else empty
        return t, p


# ---------------------------------------------------------------- writing the outputs
def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def _csv_text(header: tuple[str, ...], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([[_cell(v) for v in row] for row in rows])
    return buf.getvalue()


def _per_class_rows(result: dict[str, Any], classes: Classes) -> list[list[Any]]:
    wu, off, im = result["with_unknown"], result["official"], result["image_level"]
    rows = []
    for name in classes.model_names("class"):
        official = name in classes.names
        rows.append(
            [name]
            + [wu[k][name] for k in ("iou", "precision", "recall", "f1", "pixel_share")]
            + [off["iou"][name] if official else None]
            + [off["precision"][name] if official else None]
            + [im[k][name] for k in ("precision", "recall", "f1", "support")]
        )
    return rows


def write_outputs(
    out_dir: str | Path,
    tally: Tally,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
    workers: int = 1,
    plotter: Preloaded | None = None,
    classes: Classes = BDD100K,
) -> dict:
    """Write metrics.json, per_class.csv, confusion.json, per_image.csv and (``plots``) the
    plots, drawn by ``workers`` processes (in ``plotter``, a helper that has imported
    :mod:`bddseg.plots`, when given). ``classes``: the K classes the tally counts.

    Returns the metrics.json content (the contract, ``classes`` (:meth:`Classes.to_dict`),
    ``groups`` (official mIoU and image count per image group, where images have one), plus
    ``extra``).
    """
    out = Path(out_dir)
    if (tally.num_classes, tally.mean_over) != (classes.num, classes.mean_over):
        raise ValueError(f"a {tally.num_classes}-class tally written as {classes.num} classes")
    t, p = tally.presence()
    result = metrics.to_contract(tally.cm, t, p, names=classes.names, mean_over=classes.mean_over)
    result["classes"] = classes.labels_only().to_dict()
    if tally.group_cm:
        result["groups"] = {
            g: {
                "miou": metrics.official_arrays(cm, classes.mean_over)["miou"],
                "images": tally.groups.count(g),
            }
            for g, cm in sorted(tally.group_cm.items())
        }
    result.update(extra or {})
    atomic_write_text(out / runs.METRICS, json.dumps(result, indent=2, allow_nan=False) + "\n")
    rows = _per_class_rows(result, classes)
    atomic_write_text(out / runs.PER_CLASS, _csv_text(PER_CLASS_COLUMNS, rows))
    confusion = {
        "classes": list(classes.model_names("class")),
        "matrix": tally.cm.tolist(),
        "image_matrix": metrics.image_level_matrix(t, p).tolist(),
    }
    atomic_write_text(out / runs.CONFUSION, json.dumps(confusion) + "\n")
    columns: tuple[str, ...] = ("stem", "miou", "pixel_accuracy")
    per_image = [[s, m, a] for s, (m, a) in zip(tally.stems, tally.scores, strict=True)]
    if tally.group_cm:  # the city or condition of each image, to group by
        columns += ("group",)
        per_image = [row + [g] for row, g in zip(per_image, tally.groups, strict=True)]
    atomic_write_text(out / runs.PER_IMAGE, _csv_text(columns, per_image))
    if plotter is not None:
        plotter.call("write_eval_plots", out, result, confusion, workers)
    elif plots:
        from bddseg.plots import write_eval_plots  # matplotlib: imported only when drawing

        write_eval_plots(out, result, confusion, workers=workers)
    return result


# ---------------------------------------------------------------- folders of masks
def _score_chunk(
    chunk: list[tuple[str, str, str | None, str | None]], min_pixels: int, classes: Classes
) -> Tally:
    """Score ``(stem, gt_path, pred_path | None, group | None)`` pairs; runs in a worker
    process. Each pair goes through the native kernel of :mod:`bddseg.fastpng` where it
    applies; a truth of raw ids (Cityscapes labelIds, a user's mapping) is mapped to train ids
    on the histogram (:func:`bddseg.masks.remap_histogram`): one row fold, no per-pixel work."""
    tally = Tally(classes.num, classes.mean_over)
    for stem, gt_path, pred_path, group in chunk:
        gt_data = read_bytes(gt_path, "ground-truth mask")
        pred_data = None if pred_path is None else read_bytes(pred_path, "prediction")
        hist = None if pred_data is None else fastpng.joint_histogram(gt_data, pred_data)
        if hist is None:  # any other PNG kind, a bad file (named here) or a missing prediction
            hist = _decoded_histogram(gt_path, gt_data, pred_path, pred_data)
        try:  # predicted K..255 are misses (the official tool's rule); the truth is checked
            if not classes.identity:
                hist = remap_histogram(hist, classes, 0, gt_path, "ground-truth mask")
            cm = metrics.fold_histogram(hist, strict_pred=False, num_classes=classes.num)
        except BddsegError as e:
            raise BddsegError(e.problem, gt_path) from None
        tally.add(stem, cm, min_pixels, group)
    return tally


def _decoded_histogram(
    gt_path: str, gt_data: bytes, pred_path: str | None, pred_data: bytes | None
) -> np.ndarray:
    """The ``(256, 256)`` value histogram of a pair through the general decoder."""
    gt = decode_mask(gt_data, gt_path, "ground-truth mask")
    if pred_data is None:  # missing: all misses, as the official tool
        pred = np.full_like(gt, IGNORE_VALUE)
    else:
        pred = decode_mask(pred_data, pred_path, "prediction")
        if pred.shape != gt.shape:
            raise BddsegError(
                f"prediction is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
                f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}",
                pred_path,
            )
    return metrics.value_histogram(pred, gt)


def _pngs(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise BddsegError(f"{what} folder not found", folder)
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix == ".png" and p.is_file()}


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    workers: int = 1,
    min_pixels: int = 1,
    plots: bool = True,
    classes: Classes = BDD100K,
) -> dict:
    """Compare a folder of predicted PNG masks with a folder of ground-truth PNG masks.

    Pairs by file stem, like the official tool (``bdd100k.eval.run -t sem_seg``): a ground
    truth without a prediction counts as all misses (prediction 255 everywhere) and is listed
    under ``missing_predictions``; predictions without a ground truth are ignored. Predictions
    must be single-channel 8-bit PNGs; a value of 19 or more is a miss (official rule).

    Args:
        pred_dir, gt_dir: folders holding ``STEM.png`` files (not searched recursively).
        out_dir: where the outputs go (see the module doc).
        workers: processes decoding and counting in parallel (each takes a chunk of pairs;
            few pairs are scored inline, see :func:`bddseg.parallel.parallel_map`). With
            plots and ``workers`` > 1, one more process imports matplotlib meanwhile and
            then draws them. Pairs are scored through :mod:`bddseg.fastpng` where it
            applies.
        min_pixels: image-level presence threshold.
        plots: also write the plots (matplotlib's import and three figures: about 1.1 s of
            CPU, as much as scoring 1,000 pairs).
        classes: what the ground truth holds (BDD100K's train ids by default; a class set
            with a mapping reads raw ids, e.g. Cityscapes labelIds).

    Returns:
        The metrics.json content.

    Raises:
        BddsegError: a folder missing, no ground-truth PNGs, an unreadable or non-8-bit mask,
            a prediction whose size differs from its ground truth, a ground-truth value
            outside 0..18 and 255 (the class set's values). The message names the file.
    """
    gt_dir = Path(gt_dir)
    gts = _pngs(gt_dir, "ground-truth")
    if not gts:
        raise BddsegError("no .png masks in the ground-truth folder", gt_dir)
    truth = [(stem, path, None) for stem, path in gts.items()]
    return _score_predictions(pred_dir, truth, out_dir, workers, min_pixels, plots, classes, {})


def evaluate_dataset_predictions(
    pred_dir: str | Path,
    root: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    dataset: str = "auto",
    classes_file: str | Path | None = None,
    workers: int = 1,
    min_pixels: int = 1,
    plots: bool = True,
) -> dict:
    """Compare a folder of predicted masks (``STEM.png``, train ids, as ``bddseg predict``
    writes them) with the truth of ``split`` of a dataset in any layout bddseg reads
    (:mod:`bddseg.layout`: BDD100K, Cityscapes, ACDC, Mapillary Vistas, a user's folder). The
    truth is read through the dataset's classes (Cityscapes ``labelIds`` by the official
    table, ...); ``metrics.json`` also records ``data`` (root, kind, split) and, where images
    have a city or condition, the official mIoU per group. Otherwise as
    :func:`evaluate_folders`."""
    layout = find_layout(root, dataset)
    classes = dataset_classes(layout, classes_file)
    pairs = [p for p in list_pairs(root, split, dataset=dataset) if p.mask is not None]
    if not pairs:
        raise BddsegError(f"no ground-truth masks in the {split} split", root)
    truth = [(p.stem, p.mask, p.group) for p in pairs]
    extra = {"data": data_record(root, layout.kind, split)}
    return _score_predictions(pred_dir, truth, out_dir, workers, min_pixels, plots, classes, extra)


def data_record(root: str | Path, kind: str, split: str) -> dict[str, str]:
    """What ``metrics.json`` says of the data it was scored on (the report's columns)."""
    return {
        "root": str(Path(root).resolve()),
        "kind": kind,
        "split": split,
        "name": Path(root).resolve().name,
    }


def _score_predictions(
    pred_dir: str | Path,
    truth: list[tuple[str, Path, str | None]],
    out_dir: str | Path,
    workers: int,
    min_pixels: int,
    plots: bool,
    classes: Classes,
    extra: dict[str, Any],
) -> dict:
    if min_pixels < 1:
        raise BddsegError(f"min_pixels must be at least 1, got {min_pixels}")
    pred_dir = Path(pred_dir)
    preds = _pngs(pred_dir, "prediction")
    items = [(s, str(g), str(preds[s]) if s in preds else None, grp) for s, g, grp in truth]
    missing = [s for s, _, p, _ in items if p is None]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        warn(f"{len(missing)} of {len(items)} ground-truth masks have no prediction in "
              f"{pred_dir} ({shown}); counted as all misses")  # fmt: skip
    orphans = len(set(preds) - {s for s, _, _ in truth})
    if orphans:
        warn(f"{orphans} prediction(s) in {pred_dir} have no ground truth; ignored")
    tally = Tally(classes.num, classes.mean_over)
    extra = {**extra, "missing_predictions": missing}
    helper = plots and workers > 1 and can_preload()
    # with workers, a helper process imports matplotlib while they score, then draws; else
    # matplotlib's import (0.4 s) runs here, in the otherwise idle parent, meanwhile
    with Preloaded("bddseg.plots") if helper else contextlib.nullcontext() as plotter:
        preload = (
            (lambda: importlib.import_module("bddseg.plots")) if plots and not helper else None
        )
        chunks = parallel_map(_score_chunk, items, workers, min_pixels, classes, meanwhile=preload)
        for part in chunks:
            tally.merge(part)
        return write_outputs(
            out_dir, tally, extra, plots=plots, workers=workers, plotter=plotter, classes=classes
        )


# ---------------------------------------------------------------- a model over a split
@dataclass
class Scored:
    """What :func:`score_split` returns: the tally and the mean loss (``None`` without a
    loss function). Samples skipped under ``on_bad_sample: skip`` were warned about."""

    tally: Tally
    loss: float | None


def score_split(
    predictor: Any,
    dataset: Any,
    *,
    batch_size: int = 1,
    workers: int = 0,
    min_pixels: int = 1,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    on_mask: Callable[[str, np.ndarray], None] | None = None,
    progress: bool = False,
) -> Scored:
    """Score ``predictor`` (a :class:`bddseg.predictor.Predictor`) over ``dataset``: the one
    scoring loop of bddseg. Training's validation and ``bddseg evaluate --checkpoint`` both
    call it, so their numbers agree by construction.

    ``dataset`` is a :class:`bddseg.data.SegDataset` built by :func:`eval_dataset`: uint8
    images at the model's scale and the truth ``uint8 (H, W)`` (train ids 0..K-1 of the
    dataset's classes and 255, never remapped to K) at its own size. Images of one size go
    through the model together (at most ``batch_size``); the
    scores are resized to the truth's size (bilinear), turned into classes by
    :func:`bddseg.predictor.to_class_map` and counted against the raw truth
    (:func:`bddseg.metrics.confusion_matrix`: the official rule).

    Args:
        loss_fn: ``(scores (N, C, H, W) float32, raw truth (N, H, W) int64) -> loss``; the
            mean over the images is returned (training's val loss; it maps 255 as its run's
            ``data.unknown`` says).
        on_mask: called with each image's stem and its class map (``uint8 (H, W)``, what
            ``bddseg predict`` writes).
        workers: data-loading processes (0 or 1: in this process).
    """
    import torch

    from bddseg.predictor import same_size_batches, to_class_map

    if min_pixels < 1:
        raise BddsegError(f"min_pixels must be at least 1, got {min_pixels}")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, batch_size),
        num_workers=workers if workers > 1 else 0,
        collate_fn=list,  # None (a skipped sample) stays in place: positions are indices
    )
    classes = getattr(dataset, "classes", BDD100K)
    k = classes.num
    tally, loss_total, images, position = Tally(k, classes.mean_over), 0.0, 0, 0
    bar = progress_bar("evaluate", enabled=progress)
    with bar, torch.inference_mode():
        task = bar.add_task("evaluate", total=len(dataset))
        for batch in loader:
            items = [(position + j, s) for j, s in enumerate(batch) if s is not None]
            position += len(batch)
            for group in same_size_batches(items, loader.batch_size, _shapes):
                x = torch.stack([image for _, (image, _) in group])
                truth = torch.stack([mask for _, (_, mask) in group]).to(predictor.device)
                scores = predictor.scores(x, size=tuple(truth.shape[-2:]))
                if loss_fn is not None:
                    loss_total += float(loss_fn(scores, truth.long())) * len(group)
                preds = to_class_map(scores, predictor.keep_unknown, k)
                for (i, _), pred, raw in zip(group, preds, truth, strict=True):
                    pair = dataset.pairs[i]
                    stem = pair.stem
                    if pred.device.type == "cpu":  # numpy: single-threaded, no OpenMP stalls
                        cm = metrics.confusion_matrix(pred.numpy(), raw.numpy(), num_classes=k)
                    else:
                        cm = metrics.confusion_matrix(pred, raw, num_classes=k)
                    tally.add(stem, cm, min_pixels, getattr(pair, "group", None))
                    if on_mask is not None:
                        on_mask(stem, pred.cpu().numpy())
                images += len(group)
            bar.advance(task, len(batch))
    loss = loss_total / images if loss_fn is not None and images else None
    return Scored(tally, loss)


def _shapes(item: tuple[int, tuple[Any, Any]]) -> tuple[int, ...]:
    """The image's and the truth's shapes of a ``(position, (image, mask))`` item."""
    return (*item[1][0].shape, *item[1][1].shape)


def eval_dataset(data_cfg: Any, split: str, on_bad_sample: str = "error") -> Any:
    """The dataset :func:`score_split` takes: ``split`` of ``data_cfg.root`` through the eval
    transform (``data.base_size``), uint8 images, and the raw truth (0..18 and 255, never
    remapped to 19) at its own size."""
    from bddseg.data import build_dataset

    cfg = dataclasses.replace(data_cfg, unknown="ignore", on_bad_sample=on_bad_sample)
    return build_dataset(cfg, split, train=False, normalize=False, full_masks=True)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    split: str = "val",
    *,
    dataset: str = "auto",
    classes_file: str | Path | None = None,
    tta: str = "none",
    device: str = "cpu",
    precision: str = INFERENCE_PRECISION,
    keep_unknown: bool = False,
    batch_size: int = 1,
    workers: int = 1,
    min_pixels: int = 1,
    save_pred: bool = True,
    plots: bool = True,
    progress: bool = True,
) -> dict:
    """Run a checkpoint over a split at full resolution and score it against the raw masks.

    The model is rebuilt from the checkpoint and scored by :func:`score_split`, exactly as
    training's validation scores it (same function, same rebuild): the images at the scale of
    the checkpoint's ``data.base_size``, the scores resized to the raw mask's size, classes by
    :func:`bddseg.predictor.to_class_map` (a 20-class model's best real class; with
    ``keep_unknown`` the argmax over all 20, 255 where ``unknown`` wins), scored against the
    raw mask (0..18/255). The saved masks are exactly what ``bddseg predict`` writes.

    ``data_root`` may hold any layout bddseg reads (``dataset`` forces one): a BDD100K model
    scored on Cityscapes, ACDC or Mapillary Vistas (mapped to the same 19 classes), or a
    user's classes (``classes_file``, or ``ROOT/classes.yaml``). The dataset's class names
    must be the checkpoint's. ``metrics.json`` records ``data`` (root, kind, split) and the
    official mIoU per image group (city, condition) where there are groups.

    Args:
        tta: ``none``, ``flip`` (mean softmax of the image and its mirror) or ``flip+scales``
            (also at scales 0.75 and 1.25).
        precision: ``32-true`` (default: the same numbers on every machine, and those of the
            ONNX export), or ``auto`` / ``bf16-mixed`` (faster on a GPU or a CPU with native
            bf16; a few pixels may change), see :func:`bddseg.precision.resolve_precision`.
            ``metrics.json`` records the one used (``precision``).
        keep_unknown: a 20-class model's ``unknown`` wins where it is the argmax (the original
            project's 20-class view; a miss in the official one), see
            :func:`bddseg.predictor.to_class_map`.
        workers: data-loading processes (0 or 1: in this process).
        save_pred: also write ``out_dir/pred/STEM.png`` (class ids, as ``bddseg predict``).
        plots: also write the plots.
        progress: show a progress bar on stderr.

    Returns:
        The metrics.json content.
    """
    from bddseg.precision import resolve_precision
    from bddseg.predictor import Predictor

    if min_pixels < 1:
        raise BddsegError(f"min_pixels must be at least 1, got {min_pixels}")
    # the images come at the model's scale from the loader (its workers resize them): the
    # predictor takes them as they are and returns the masks at the raw mask's size
    predictor = Predictor.from_checkpoint(
        checkpoint, device, precision=precision, tta=tta, keep_unknown=keep_unknown, input_size=None
    )
    same_root = Path(data_root).resolve() == Path(predictor.config.data.root or ".").resolve()
    dcfg = dataclasses.replace(
        predictor.config.data, root=str(data_root), max_train_images=None, max_val_images=None,
        extra_roots=(), dataset=dataset,
        # the training run's class file names a path on its machine: kept for its own data
        classes=str(classes_file or (predictor.config.data.classes if same_root else "")),
    )  # fmt: skip
    data = eval_dataset(dcfg, split)
    if len(data) == 0:
        raise BddsegError(f"no image/mask pairs in the {split} split", data_root)
    if not data.classes.same_labels(predictor.classes):
        raise BddsegError(
            f"the dataset's classes ({_names(data.classes)}) are not the checkpoint's "
            f"({_names(predictor.classes)}); evaluate on data with the same classes",
            data_root,
        )
    out = Path(out_dir)

    def save(stem: str, pred: np.ndarray) -> None:
        write_mask(out / runs.PRED_DIR / f"{stem}.png", pred)

    scored = score_split(
        predictor, data, batch_size=batch_size, workers=workers, min_pixels=min_pixels,
        on_mask=save if save_pred else None, progress=progress,
    )  # fmt: skip
    extra = {
        "precision": resolve_precision(precision, predictor.device),
        "data": data_record(data_root, find_layout(data_root, dataset).kind, split),
    }
    return write_outputs(out, scored.tally, extra, plots=plots, classes=data.classes)


def _names(classes: Classes) -> str:
    shown = ", ".join(classes.names[:4]) + (", ..." if classes.num > 4 else "")
    return f"{classes.num}: {shown}"


__all__ = [
    "Scored",
    "Tally",
    "eval_dataset",
    "data_record",
    "evaluate_checkpoint",
    "evaluate_dataset_predictions",
    "evaluate_folders",
    "score_split",
    "write_outputs",
]
