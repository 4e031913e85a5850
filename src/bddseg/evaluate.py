"""Score a model over a split, or compare two folders of PNG masks.

Both entry points accumulate one ``(20, 20)`` confusion matrix and the per-image class
presence (see :mod:`bddseg.metrics`; memory does not grow with the pixel count) and write,
atomically, into ``out_dir``:

- ``metrics.json``: :func:`bddseg.metrics.to_contract` (plus ``missing_predictions``, a list
  of stems, for folders);
- ``per_class.csv``: class, iou, precision, recall, f1, pixel_share (the 20-class view),
  official_iou, official_precision, image_precision, image_recall, image_f1, image_support;
- ``confusion.json``: ``{"classes": 20 names, "matrix": pixel counts [truth][prediction],
  "image_matrix": metrics.image_level_matrix}``;
- ``per_image.csv``: stem, miou (official definition on that image alone: the mean IoU over
  the classes in its truth), pixel_accuracy (over its labelled pixels); empty where undefined;
- the evaluation plots, by :func:`bddseg.plots.write_eval_plots` (re-exported by report).

The folder mode never imports torch (1.4 s of start-up, more than scoring 500 pairs).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bddseg import metrics
from bddseg.errors import BddsegError
from bddseg.files import atomic_path, atomic_write_text
from bddseg.labels import CLASS_NAMES, CLASS_NAMES_20, IGNORE_VALUE

PER_CLASS_COLUMNS = (
    "class", "iou", "precision", "recall", "f1", "pixel_share", "official_iou",
    "official_precision", "image_precision", "image_recall", "image_f1", "image_support",
)  # fmt: skip


@dataclass
class Tally:
    """What an evaluation accumulates: the pixel matrix and one small row per image."""

    cm: np.ndarray = field(default_factory=lambda: np.zeros((20, 20), dtype=np.int64))
    stems: list[str] = field(default_factory=list)
    true_presence: list[np.ndarray] = field(default_factory=list)
    pred_presence: list[np.ndarray] = field(default_factory=list)
    scores: list[tuple[float | None, float | None]] = field(default_factory=list)

    def add(self, stem: str, cm: Any, min_pixels: int) -> None:
        """Add one image's confusion matrix (numpy or torch, any device)."""
        cm = metrics.to_numpy(cm)
        self.cm += cm
        t, p = metrics.presence_from_confusion(cm, min_pixels)
        a = metrics.official_arrays(cm)
        self.stems.append(stem)
        self.true_presence.append(t)
        self.pred_presence.append(p)
        self.scores.append((a["miou"], a["pixel_accuracy"]))

    def merge(self, other: Tally) -> None:
        self.cm += other.cm
        self.stems += other.stems
        self.true_presence += other.true_presence
        self.pred_presence += other.pred_presence
        self.scores += other.scores

    def presence(self) -> tuple[np.ndarray, np.ndarray]:
        """``bool (N, 20)`` truth and prediction presence."""
        empty = np.zeros((0, 20), dtype=bool)
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


def _per_class_rows(result: dict[str, Any]) -> list[list[Any]]:
    wu, off, im = result["with_unknown"], result["official"], result["image_level"]
    rows = []
    for name in CLASS_NAMES_20:
        official = name in CLASS_NAMES
        rows.append(
            [name]
            + [wu[k][name] for k in ("iou", "precision", "recall", "f1", "pixel_share")]
            + [off["iou"][name] if official else None]
            + [off["precision"][name] if official else None]
            + [im[k][name] for k in ("precision", "recall", "f1", "support")]
        )
    return rows


def write_outputs(
    out_dir: str | Path, tally: Tally, extra: dict[str, Any] | None = None, plots: bool = True
) -> dict:
    """Write metrics.json, per_class.csv, confusion.json, per_image.csv and (``plots``) the plots.

    Returns the metrics.json content (the contract, plus ``extra``).
    """
    out = Path(out_dir)
    t, p = tally.presence()
    result = metrics.to_contract(tally.cm, t, p)
    result.update(extra or {})
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "per_class.csv", _csv_text(PER_CLASS_COLUMNS, _per_class_rows(result)))
    confusion = {
        "classes": list(CLASS_NAMES_20),
        "matrix": tally.cm.tolist(),
        "image_matrix": metrics.image_level_matrix(t, p).tolist(),
    }
    atomic_write_text(out / "confusion.json", json.dumps(confusion) + "\n")
    per_image = [[s, m, a] for s, (m, a) in zip(tally.stems, tally.scores, strict=True)]
    atomic_write_text(
        out / "per_image.csv", _csv_text(("stem", "miou", "pixel_accuracy"), per_image)
    )
    if plots:
        _write_plots(out)
    return result


def _write_plots(out: Path) -> None:
    # bddseg.report re-exports this from bddseg.plots, but also imports bddseg.data and so
    # torch (1.5 s): take it from where it is defined.
    try:
        from bddseg.plots import write_eval_plots
    except ImportError:  # TODO(integration): plots.py is another engineer's; drop this guard
        return
    write_eval_plots(out)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- folders of masks
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_problem(data: bytes) -> str | None:
    """What is wrong with a PNG's chunk structure: a chunk whose CRC does not match, or a file
    cut short before ``IEND``. Neither Pillow's decoder (nor the official evaluator, which uses
    it) nor libspng as pyspng drives it checks the CRCs: one flipped byte in 13-19% of our
    corruption trials decoded into wrong labels without an error (benchmarks/RESULTS.md).
    Checking them costs a few microseconds per mask. ``None`` for a sound file or a non-PNG
    (Pillow names what it is)."""
    if data[:8] != _PNG_SIGNATURE:
        return None
    view, i = memoryview(data), 8
    while i + 12 <= len(data):
        end = i + 12 + int.from_bytes(view[i : i + 4], "big")
        if end > len(data):
            break
        kind = bytes(view[i + 4 : i + 8])
        if zlib.crc32(view[i + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            name = kind.decode("latin-1") if kind.isalpha() else repr(kind)
            return f"its {name} chunk fails its CRC check (the file is corrupt)"
        if kind == b"IEND":
            return None
        i = end
    return "the file is truncated (it ends before the IEND chunk)"


def _decode_gray8(data: bytes) -> np.ndarray | None:
    """The fast path for the common case, an 8-bit grayscale PNG (what BDD100K masks are):
    libspng through ``pyspng`` decodes it about twice as fast as Pillow. ``None`` for any
    other PNG, for a file libspng refuses (Pillow then decodes it or names the problem) or when
    pyspng is not installed. Call it on files that passed :func:`_png_problem`."""
    try:
        import pyspng
    except ImportError:
        return None
    # signature, IHDR length 13 and type, width, height, bit depth 8, color type 0 (gray)
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    if data[24] != 8 or data[25] != 0:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not 0 < width * height <= (Image.MAX_IMAGE_PIXELS or 2**31):
        return None  # Pillow refuses it as a decompression bomb, with the reason
    try:
        array = pyspng.load(data)
    except Exception:  # noqa: BLE001 - any refusal: Pillow decides and names the problem
        return None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8 or array.shape != (height, width):
        return None
    return array


def _read_png(path: str | Path, what: str) -> np.ndarray:
    """Decode a single-channel 8-bit PNG (mode L, or P read as its indices) to ``uint8 (H, W)``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BddsegError(f"{what} not found", path) from None
    except (PermissionError, IsADirectoryError) as e:
        raise BddsegError(f"cannot read {what} ({e.strerror})", path) from None
    problem = _png_problem(data)
    if problem:
        raise BddsegError(f"cannot decode {what}: {problem}", path)
    fast = _decode_gray8(data)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise BddsegError(f"{what} is not a PNG (it is {im.format})", path)
            if im.mode not in ("L", "P"):
                raise BddsegError(
                    f"{what} must be a single-channel 8-bit PNG, not mode {im.mode}", path
                )
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BddsegError(f"cannot decode {what} ({e.__class__.__name__}: {e})", path) from None


def _score_chunk(chunk: list[tuple[str, str, str | None]], min_pixels: int) -> Tally:
    """Score ``(stem, gt_path, pred_path | None)`` pairs; runs in a worker process."""
    tally = Tally()
    for stem, gt_path, pred_path in chunk:
        gt = _read_png(gt_path, "ground-truth mask")
        if pred_path is None:  # missing: all misses, as the official tool
            pred = np.full_like(gt, IGNORE_VALUE)
        else:
            pred = _read_png(pred_path, "prediction")
            if pred.shape != gt.shape:
                raise BddsegError(
                    f"prediction is {pred.shape[1]}x{pred.shape[0]} but its ground truth "
                    f"{gt_path} is {gt.shape[1]}x{gt.shape[0]}",
                    pred_path,
                )
        try:  # predicted 19..255 are misses (the official tool's rule); the truth is checked
            cm = metrics.confusion_matrix(pred, gt, strict_pred=False)
        except BddsegError as e:
            raise BddsegError(e.problem, gt_path) from None
        tally.add(stem, cm, min_pixels)
    return tally


def _pngs(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise BddsegError(f"{what} folder not found", folder)
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix == ".png" and p.is_file()}


def _chunks(items: list, workers: int) -> list[list]:
    """About four chunks per worker: balanced load, few round trips."""
    n = max(1, min(len(items), workers * 4))
    size = -(-len(items) // n)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _map_chunks(chunks: list[list], min_pixels: int, workers: int) -> list[Tally]:
    if workers <= 1 or len(chunks) <= 1:
        return [_score_chunk(c, min_pixels) for c in chunks]
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)))
    try:
        return list(pool.map(_score_chunk, chunks, repeat(min_pixels)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, don't finish the rest


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    workers: int = 1,
    min_pixels: int = 1,
    plots: bool = True,
) -> dict:
    """Compare a folder of predicted PNG masks with a folder of ground-truth PNG masks.

    Pairs by file stem, like the official tool (``bdd100k.eval.run -t sem_seg``): a ground
    truth without a prediction counts as all misses (prediction 255 everywhere) and is listed
    under ``missing_predictions``; predictions without a ground truth are ignored. Predictions
    must be single-channel 8-bit PNGs; a value of 19 or more is a miss (official rule).

    Args:
        pred_dir, gt_dir: folders holding ``STEM.png`` files (not searched recursively).
        out_dir: where the outputs go (see the module doc).
        workers: processes decoding and counting in parallel (each takes a chunk of pairs).
        min_pixels: image-level presence threshold.
        plots: also write the plots (matplotlib: about 2 s, more than scoring 500 pairs).

    Returns:
        The metrics.json content.

    Raises:
        BddsegError: a folder missing, no ground-truth PNGs, an unreadable or non-8-bit mask,
            a prediction whose size differs from its ground truth, a ground-truth value
            outside 0..18 and 255. The message names the file.
    """
    if min_pixels < 1:
        raise BddsegError(f"min_pixels must be at least 1, got {min_pixels}")
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gts = _pngs(gt_dir, "ground-truth")
    if not gts:
        raise BddsegError("no .png masks in the ground-truth folder", gt_dir)
    preds = _pngs(pred_dir, "prediction")
    items = [(s, str(g), str(preds[s]) if s in preds else None) for s, g in gts.items()]
    missing = [s for s, _, p in items if p is None]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        _warn(f"{len(missing)} of {len(items)} ground-truth masks have no prediction in "
              f"{pred_dir} ({shown}); counted as all misses")  # fmt: skip
    extra = len(set(preds) - set(gts))
    if extra:
        _warn(f"{extra} prediction(s) in {pred_dir} have no ground truth; ignored")
    tally = Tally()
    for part in _map_chunks(_chunks(items, workers), min_pixels, workers):
        tally.merge(part)
    return write_outputs(out_dir, tally, {"missing_predictions": missing}, plots=plots)


# ---------------------------------------------------------------- a model over a split
def model_scores(model, images, tta: str, size: tuple[int, int]):
    """Class scores ``float (N, C, *size)`` whose argmax is the prediction: the logits for
    ``none``, else the mean softmax over the views (:func:`bddseg.predict.tta_probs`, the same
    views as ``bddseg predict``), resized to ``size`` (bilinear) where the model input's size
    differs from the mask's. Training's validation scores through this too."""
    import torch.nn.functional as F

    from bddseg.model import forward_padded
    from bddseg.predict import tta_probs

    if tta == "none":
        out = forward_padded(model, images)
    else:
        out = tta_probs(lambda x: forward_padded(model, x).softmax(1), images, tta)
    if tuple(out.shape[-2:]) != size:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out


class _WithRawMask:
    """Dataset items ``(index, model input, raw uint8 mask)``: metrics use the raw mask."""

    def __init__(self, dataset, read_mask):
        self.dataset, self.read_mask = dataset, read_mask

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image = self.dataset[i][0]
        return i, image, self.read_mask(self.dataset.pairs[i].mask)


def _save_mask(path: Path, pred: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(pred).save(tmp, format="PNG")  # uint8 (H, W): mode L


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    split: str = "val",
    tta: str = "none",
    device: str = "cpu",
    batch_size: int = 1,
    workers: int = 1,
    min_pixels: int = 1,
    save_pred: bool = True,
    plots: bool = True,
    progress: bool = True,
) -> dict:
    """Run a checkpoint over a split at full resolution and score it against the raw masks.

    The model sees what :func:`bddseg.data.build_dataset` gives for evaluation (the
    checkpoint's data config: ``unknown`` mode, ``base_size``); its scores are resized to the
    raw mask's size when they differ. The argmax is scored against the raw mask (0..18/255):
    a 20-class model's prediction 19 is a miss in the official view and ``unknown`` in the
    20-class view. The per-pixel counting (one ``bincount`` per image) runs on ``device``;
    only each image's 20x20 counts come back to the CPU, where they are summed.

    Args:
        tta: ``none``, ``flip`` (mean softmax of the image and its mirror) or ``flip+scales``
            (also at scales 0.75 and 1.25).
        workers: data-loading processes (0 or 1: in this process).
        save_pred: also write ``out_dir/pred/STEM.png`` (class ids, 19 kept).
        plots: also write the plots.
        progress: show a progress bar on stderr.

    Returns:
        The metrics.json content.
    """
    import dataclasses

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bddseg import data
    from bddseg.model import model_from_checkpoint
    from bddseg.predict import TTA_MODES

    if tta not in TTA_MODES:
        raise BddsegError(f"unknown tta {tta!r} (valid: {', '.join(TTA_MODES)})")
    if min_pixels < 1:
        raise BddsegError(f"min_pixels must be at least 1, got {min_pixels}")
    model, cfg = model_from_checkpoint(checkpoint, device=device)
    dcfg = dataclasses.replace(
        cfg.data,
        root=str(data_root),
        max_train_images=None,
        max_val_images=None,
        on_bad_sample="error",
    )
    # uint8 images, normalised on the device: a fifth of the bytes from the loader workers
    raw_images = data.build_dataset(dcfg, split, train=False, normalize=False)
    dataset = _WithRawMask(raw_images, data.read_mask)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, batch_size),
        num_workers=workers if workers > 1 else 0,
        collate_fn=list,
    )
    out, n, tally = Path(out_dir), len(dataset), Tally()
    if n == 0:
        raise BddsegError(f"no image/mask pairs in the {split} split", data_root)
    columns = (TextColumn("evaluate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=Console(stderr=True), disable=not progress)
    with bar, torch.inference_mode():
        task = bar.add_task("evaluate", total=n)
        for batch in loader:
            by_shape: dict[tuple, list] = {}
            for item in batch:  # images of one size go through the model together
                by_shape.setdefault((*item[1].shape, *item[2].shape), []).append(item)
            for group in by_shape.values():
                images = data.normalize_image(torch.stack([img for _, img, _ in group]).to(device))
                size = tuple(group[0][2].shape)
                preds = model_scores(model, images, tta, size).argmax(1).to(torch.uint8)
                for (i, _, raw), pred in zip(group, preds, strict=True):
                    stem = dataset.dataset.pairs[i].stem
                    if pred.device.type == "cpu":  # numpy: single-threaded, no OpenMP stalls
                        cm = metrics.confusion_matrix(pred.numpy(), raw.numpy())
                    else:
                        cm = metrics.confusion_matrix(pred, raw.to(pred.device))
                    tally.add(stem, cm, min_pixels)
                    if save_pred:
                        _save_mask(out / "pred" / f"{stem}.png", pred.cpu().numpy())
            bar.advance(task, len(batch))
    return write_outputs(out, tally, plots=plots)


__all__ = [
    "Tally",
    "evaluate_checkpoint",
    "evaluate_folders",
    "model_scores",
    "write_outputs",
]
