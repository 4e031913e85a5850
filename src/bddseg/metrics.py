"""Segmentation metrics: one dataset-level confusion matrix and everything derived from it.

The matrix ``cm`` is ``int64 (K+1, K+1)`` for the K evaluated classes of the run
(:class:`bddseg.classes.Classes`; BDD100K's K is 19, the default), ``cm[t, p]`` = number of
pixels with truth ``t`` and prediction ``p``:

- rows ``t``: 0..K-1 the true class, K the raw ground-truth value 255 (unlabelled);
- columns ``p``: 0..K-1 the predicted class, K a predicted K (a model's ``unknown``) or 255
  (no prediction).

Below, 19 and 20 stand for K and K+1 as they are for BDD100K. The pure functions over a
matrix infer K from its shape; those that name classes take ``names`` (the K names, default
:func:`default_names`); those that count raw values take ``num_classes`` (K).

Three views derive from it (all values are fractions in 0..1; ``None`` where a ratio is 0/0):

- :func:`official_metrics`: exactly the official BDD100K evaluator (``bdd100k.eval.seg``,
  bdd100k 1.0.1). Row 19 is dropped; a predicted 19/255 on a labelled pixel is a miss (a
  false negative of the true class, a false positive of nothing); ``IoU = TP / (TP + FP + FN)``;
  **mIoU is the mean IoU over the classes present in the ground truth** of the evaluated set;
  pixel accuracy over labelled pixels; frequency-weighted IoU with ground-truth frequencies;
  per-class precision ``TP / (TP + FP)`` (the official tool calls it "Acc"). The official tool
  prints 0 for a 0/0 IoU or precision; we return ``None``. Its mIoU never averages those.
- :func:`with_unknown_metrics`: the original project's view, ``unknown`` (raw 255) as a 20th
  class: per class IoU, precision, recall, F1 (``2TP / (2TP + FP + FN)``) and pixel share;
  overall pixel accuracy; ``miou_19`` / ``miou_20``: the mean of the defined IoUs of the 19
  real classes / of all 20.
- image level (:func:`image_level_metrics`, :func:`image_level_matrix`): a class is present
  in an image when it covers at least ``min_pixels`` pixels, in the truth or in the prediction.

Counts are int64 everywhere: the official tool sums in int32, which wraps past about 2,330
full 1280x720 frames in one cell.

:func:`confusion_matrix` and :func:`image_presence` take torch tensors (the work stays on the
tensor's device) or numpy arrays. The mask-folder evaluator uses numpy so that it never
imports torch: that import alone (1.4 s here) costs more than scoring 500 pairs on 2 cores.
The derived metrics accept either and compute in float64 numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bddseg.classes import BDD100K, Classes, from_dict
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, IGNORE_VALUE, NUM_CLASSES, NUM_CLASSES_20, UNKNOWN_NAME
from bddseg.masks import format_values

AVERAGES = ("micro", "macro", "weighted", "samples")
# which classes the official mIoU averages: in the truth (BDD100K) or a non-empty union
# (Cityscapes and the rest), see official_arrays
MEAN_OVER = ("truth", "union")


def default_names(k: int) -> tuple[str, ...]:
    """The names of K classes when none are given: BDD100K's for 19, else ``class_0..``."""
    return CLASS_NAMES if k == NUM_CLASSES else tuple(f"class_{i}" for i in range(k))


def _names(k: int, names: tuple[str, ...] | None) -> tuple[str, ...]:
    names = default_names(k) if names is None else tuple(names)
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a matrix of {k} classes")
    return names


def _check_k(num_classes: int) -> None:
    if not 1 <= num_classes < IGNORE_VALUE - 1:
        raise ValueError(f"num_classes must be 1..{IGNORE_VALUE - 2}, got {num_classes}")


# ---------------------------------------------------------------- accumulation
def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array."""
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_byte_range(x: Any, what: str) -> None:
    """Integer inputs that are not uint8 must hold values in 0..255 (the histogram's bins)."""
    if _is_torch(x):
        if str(x.dtype) == "torch.uint8" or x.numel() == 0:
            return
        if x.dtype.is_floating_point or x.dtype.is_complex or str(x.dtype) == "torch.bool":
            raise TypeError(f"{what} must hold integer ids, got {x.dtype}")
        lo, hi = int(x.min()), int(x.max())
    else:
        x = np.asarray(x)
        if x.dtype == np.uint8 or x.size == 0:
            return
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{what} must hold integer ids, got {x.dtype}")
        lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > IGNORE_VALUE:
        raise BddsegError(f"{what} has values outside 0..255 (min {lo}, max {hi})")


def value_histogram(pred: Any, target: Any) -> Any:
    """Joint histogram of raw values: ``int64 (256, 256)``, ``[target value, pred value]``.

    One ``bincount`` over ``target * 256 + pred``: for tensors on their device (int32 indices:
    half the memory traffic of int64), for numpy arrays over runs of equal values
    (:func:`_bincount_runs`). Same array type and device as the inputs.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise BddsegError(
            f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
        )
    _check_byte_range(pred, "prediction")
    _check_byte_range(target, "target")
    if _is_torch(pred):
        import torch

        idx = target.to(torch.int32) * 256 + pred.to(torch.int32)
        return torch.bincount(idx.reshape(-1), minlength=256 * 256).view(256, 256)
    idx = (
        (np.asarray(target).astype(np.uint16) << 8) | np.asarray(pred).astype(np.uint16)
    ).reshape(-1)
    return _bincount_runs(idx).reshape(256, 256)


def _bincount_runs(idx: np.ndarray) -> np.ndarray:
    """``np.bincount(idx, minlength=65536)`` as int64, counting runs of equal values.

    Masks are piecewise constant: a 1280x720 pair has a few thousand runs of equal (truth,
    prediction) values, so weighting each run's value by its length is ~4x faster than
    visiting every pixel. Noisy inputs (many runs) take the plain per-pixel path.
    """
    change = idx[1:] != idx[:-1]
    if idx.size < 2 or np.count_nonzero(change) > idx.size // 16:
        return np.bincount(idx, minlength=256 * 256).astype(np.int64)
    bounds = np.concatenate(([0], np.flatnonzero(change) + 1, [idx.size]))
    counts = np.bincount(idx[bounds[:-1]], weights=np.diff(bounds), minlength=256 * 256)
    return counts.astype(np.int64)  # float64 weights are exact below 2**53


def fold_histogram(hist: Any, strict_pred: bool = True, num_classes: int = NUM_CLASSES) -> Any:
    """Fold a ``(256, 256)`` value histogram into the ``(K+1, K+1)`` confusion matrix,
    K = ``num_classes``.

    Truth 255 goes to row K; prediction K and 255 go to column K. With ``strict_pred=False``
    any prediction value from K to 255 is a miss (column K), as in the official tool.

    Raises:
        BddsegError: truth values outside 0..K-1 and 255, or (``strict_pred``) prediction
            values outside 0..K and 255. The message lists them.
    """
    _check_k(num_classes)
    k = num_classes
    bad_t = np.flatnonzero(to_numpy(hist[k:IGNORE_VALUE].sum(1)))
    if bad_t.size:
        values = format_values((bad_t + k).tolist())
        raise BddsegError(f"ground truth has invalid values {values} (valid: 0..{k - 1} and 255)")
    if strict_pred:
        bad_p = np.flatnonzero(to_numpy(hist[:, k + 1 : IGNORE_VALUE].sum(0)))
        if bad_p.size:
            values = format_values((bad_p + k + 1).tolist())
            raise BddsegError(f"prediction has invalid values {values} (valid: 0..{k} and 255)")
    cat = _cat(hist)
    rows = cat((hist[:k], hist[IGNORE_VALUE:]), 0)  # (K+1, 256)
    return cat((rows[:, :k], rows[:, k:].sum(1)[:, None]), 1)


def _cat(x: Any):
    if _is_torch(x):
        import torch

        return torch.cat
    return np.concatenate


def confusion_matrix(
    pred: Any, target: Any, strict_pred: bool = True, num_classes: int = NUM_CLASSES
) -> Any:
    """The ``int64 (K+1, K+1)`` confusion matrix of one or more masks (see the module doc).

    Args:
        pred: predicted ids, any shape, uint8 or integer; values 0..K or 255.
        target: ground truth (train ids) of the same shape; values 0..K-1 or 255.
        strict_pred: False counts prediction values K+1..254 as misses instead of raising.
        num_classes: K, the evaluated classes (19 for BDD100K).

    Returns:
        A torch tensor on the inputs' device, or a numpy array for numpy inputs.
    """
    hist = value_histogram(pred, target)
    return fold_histogram(hist, strict_pred=strict_pred, num_classes=num_classes)


def image_presence(
    mask: Any, num_classes: int = NUM_CLASSES_20, min_pixels: int = 1, evaluated: int = NUM_CLASSES
) -> np.ndarray:
    """``bool (num_classes,)``: classes covering at least ``min_pixels`` pixels of ``mask``.

    ``mask`` holds ids 0..K or 255, K = ``evaluated`` (255 counts as K, ``unknown``);
    ``num_classes`` is K+1 or K (then ``unknown`` is left out).
    """
    _check_k(evaluated)
    k = evaluated
    if num_classes not in (k, k + 1):
        raise ValueError(f"num_classes must be {k} or {k + 1}, got {num_classes}")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be at least 1, got {min_pixels}")
    _check_byte_range(mask, "mask")
    if _is_torch(mask):
        import torch

        counts = to_numpy(torch.bincount(mask.reshape(-1).to(torch.int64), minlength=256))
    else:
        counts = np.bincount(np.asarray(mask).reshape(-1).astype(np.int64), minlength=256)
    if counts[k + 1 : IGNORE_VALUE].any():
        raise BddsegError(f"mask has values other than 0..{k} and 255")
    counts = np.concatenate([counts[:k], [counts[k] + counts[IGNORE_VALUE]]])
    return (counts >= min_pixels)[:num_classes]


def presence_from_confusion(cm: Any, min_pixels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(truth, prediction)`` presence, each ``bool (K+1,)``, from one image's confusion
    matrix. Equal to :func:`image_presence` on the truth and on the prediction (K/255 as
    unknown).
    """
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be at least 1, got {min_pixels}")
    c = to_numpy(cm)
    return c.sum(1) >= min_pixels, c.sum(0) >= min_pixels


# ---------------------------------------------------------------- pixel-level views
def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` as float64, NaN where ``den`` is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _named(values: np.ndarray, names: tuple[str, ...]) -> dict[str, float | None]:
    return {n: _f(v) for n, v in zip(names, values, strict=True)}


def _nanmean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _as_cm(cm: Any) -> np.ndarray:
    c = to_numpy(cm).astype(np.int64, copy=False)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"confusion matrix must be (K+1)x(K+1) with K >= 1, got {c.shape}")
    return c


def official_arrays(cm: Any, mean_over: str = "truth") -> dict[str, Any]:
    """The official view as arrays: ``iou``, ``precision`` (float64 (K,), NaN for 0/0),
    ``present`` (bool (K,), class in the truth), ``averaged`` (bool (K,), the classes the
    mean takes), ``miou``, ``pixel_accuracy``, ``fwiou``.

    ``mean_over``: which classes mIoU averages, by the benchmark's own rule. ``"truth"``:
    those present in the ground truth (the BDD100K toolkit). ``"union"``: those whose union
    ``TP + FP + FN`` is not empty, so a class predicted on labelled pixels but absent from the
    truth counts as 0 (cityscapesScripts' evaluator, mmseg's ``nanmean``; Cityscapes, ACDC,
    Mapillary Vistas and a user's classes). On a set where every class is in the truth, the
    two are equal."""
    if mean_over not in MEAN_OVER:
        raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}")
    c = _as_cm(cm)
    k = c.shape[0] - 1
    c = c[:k]  # truth-255 row dropped; column K (misses) kept
    tp = np.diag(c[:, :k])
    gt = c.sum(1)  # labelled pixels of each true class
    pred = c[:, :k].sum(0)  # predictions of each class on labelled pixels
    iou = _div(tp, gt + pred - tp)
    present = gt > 0
    averaged = present if mean_over == "truth" else gt + pred - tp > 0
    total = gt.sum()
    fwiou = float((gt[present] * iou[present]).sum() / total) if total else None
    return {
        "iou": iou,
        "precision": _div(tp, pred),
        "present": present,
        "averaged": averaged,
        "miou": float(iou[averaged].mean()) if averaged.any() else None,
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "fwiou": fwiou,
    }


def official_metrics(
    cm: Any, names: tuple[str, ...] | None = None, mean_over: str = "truth"
) -> dict[str, Any]:
    """The official BDD100K evaluator's numbers, as fractions (it prints them x100); with
    ``mean_over="union"`` the mIoU of cityscapesScripts' evaluator (see :func:`official_arrays`).

    Returns ``{"miou", "pixel_accuracy", "fwiou", "iou": {name: f|None},
    "precision": {name: f|None}}`` over the K classes ``names`` (default
    :func:`default_names`: :data:`labels.CLASS_NAMES` for K = 19).
    """
    a = official_arrays(cm, mean_over)
    names = _names(len(a["iou"]), names)
    return {
        "miou": a["miou"],
        "pixel_accuracy": a["pixel_accuracy"],
        "fwiou": a["fwiou"],
        "iou": _named(a["iou"], names),
        "precision": _named(a["precision"], names),
    }


def with_unknown_keys(k: int = NUM_CLASSES) -> tuple[str, str]:
    """The keys of :func:`with_unknown_metrics`' two means: ``("miou_19", "miou_20")`` for
    K = 19; each names how many classes it averages."""
    return f"miou_{k}", f"miou_{k + 1}"


def with_unknown_metrics(cm: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The original project's view: K+1 classes, raw 255 as ``unknown``.

    Returns ``{"miou_K", "miou_K+1"`` (:func:`with_unknown_keys`; ``miou_19``, ``miou_20``
    for BDD100K), ``"pixel_accuracy", "iou", "precision", "recall", "f1", "pixel_share"}``;
    the per-class dicts are keyed by ``names`` (the K classes, default
    :func:`default_names`) and ``unknown``. ``pixel_share`` is the class's share of all truth
    pixels (unknown included).
    """
    c = _as_cm(cm)
    k = c.shape[0] - 1
    all_names = (*_names(k, names), UNKNOWN_NAME)
    tp = np.diag(c)
    gt, pred, total = c.sum(1), c.sum(0), c.sum()
    iou = _div(tp, gt + pred - tp)
    key_k, key_all = with_unknown_keys(k)
    return {
        key_k: _nanmean(iou[:k]),
        key_all: _nanmean(iou),
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "iou": _named(iou, all_names),
        "precision": _named(_div(tp, pred), all_names),
        "recall": _named(_div(tp, gt), all_names),
        "f1": _named(_div(2 * tp, gt + pred), all_names),
        "pixel_share": _named(_div(gt, np.full_like(gt, total)), all_names),
    }


# ---------------------------------------------------------------- image-level view
def _presence_pair(true_presence: Any, pred_presence: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = to_numpy(true_presence).astype(bool), to_numpy(pred_presence).astype(bool)
    if t.ndim == 0 or p.ndim == 0:
        raise ValueError("presence must be (N, K+1) or (K+1,)")
    t = t.reshape(-1, t.shape[-1] if t.shape[-1] else NUM_CLASSES_20)
    p = p.reshape(-1, p.shape[-1] if p.shape[-1] else NUM_CLASSES_20)
    if t.shape != p.shape:
        raise ValueError(f"presence shapes differ: {t.shape} vs {p.shape}")
    return t, p


def _zero_nan(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x, nan=0.0)


def image_level_metrics(
    true_presence: Any, pred_presence: Any, names: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Per-class and averaged precision/recall/F1 of class presence, as sklearn's
    ``classification_report`` computes them for multilabel input.

    Args:
        true_presence, pred_presence: ``bool (N, K+1)``, one row per image (the last column
            ``unknown``).
        names: the K class names (default :func:`default_names`).

    Returns:
        ``{"precision", "recall", "f1": {name: f|None}, "support": {name: int}, "micro",
        "macro", "weighted", "samples": {"precision", "recall", "f1", "support"}}``. Per
        class, 0/0 is ``None``. The averages follow sklearn (``zero_division=0``): an
        undefined per-class or per-image value counts as 0; macro averages all K+1 classes,
        weighted weights them by support; samples averages per-image scores; every average's
        support is the total number of (image, class) presences.
    """
    t, p = _presence_pair(true_presence, pred_presence)
    all_names = (*_names(t.shape[1] - 1, names), UNKNOWN_NAME)
    tp = (t & p).sum(0)
    n_true, n_pred = t.sum(0), p.sum(0)
    prec, rec, f1 = _div(tp, n_pred), _div(tp, n_true), _div(2 * tp, n_true + n_pred)
    support = int(n_true.sum())

    def avg(pr: float, rc: float, f: float) -> dict[str, Any]:
        return {"precision": float(pr), "recall": float(rc), "f1": float(f), "support": support}

    w = n_true / support if support else np.zeros(t.shape[1])
    st, sp, stp = t.sum(1), p.sum(1), (t & p).sum(1)
    mi_p = _zero_nan(_div(tp.sum(), n_pred.sum()))
    mi_r = _zero_nan(_div(tp.sum(), n_true.sum()))
    mi_f = _zero_nan(_div(2 * tp.sum(), n_true.sum() + n_pred.sum()))
    return {
        "precision": _named(prec, all_names),
        "recall": _named(rec, all_names),
        "f1": _named(f1, all_names),
        "support": {n: int(s) for n, s in zip(all_names, n_true, strict=True)},
        "micro": avg(mi_p, mi_r, mi_f),
        "macro": avg(*(_zero_nan(x).mean() for x in (prec, rec, f1))),
        "weighted": avg(*((_zero_nan(x) * w).sum() for x in (prec, rec, f1))),
        "samples": avg(
            *(
                _zero_nan(x).mean() if len(t) else 0.0
                for x in (_div(stp, sp), _div(stp, st), _div(2 * stp, st + sp))
            )
        ),
    }


def image_level_matrix(true_presence: Any, pred_presence: Any) -> np.ndarray:
    """The original project's "Confusion Matrix | Classification", ``int64 (K+1, K+1)``.

    - off the diagonal, ``[i, j]`` = images where class ``i`` is in the truth but was **not**
      predicted (an image-level miss of ``i``) and class ``j`` was predicted: what the model
      saw instead. A row's off-diagonal cells are therefore at most the misses of ``i``.
    - on the diagonal, ``[i, i]`` = images where class ``i`` was predicted (true plus false
      positives).

    Read off the original figure: for ``wall`` (support 96, recall 0.34, precision 0.29 in its
    report: about 33 hits, 63 misses, 113 predictions) the row shows at most 63 off the
    diagonal and 112 on it; ``train`` (7 images, never predicted) shows 0 on the diagonal and
    7 under road, building, vegetation and sky.
    """
    t, p = _presence_pair(true_presence, pred_presence)
    missed = (t & ~p).astype(np.int64)
    m = missed.T @ p.astype(np.int64)  # its diagonal is 0: a missed class is not predicted
    m[np.diag_indices(p.shape[1])] = p.sum(0)
    return m


# ---------------------------------------------------------------- names of the views
# How figures, tables and messages name each view, so that one mIoU reads the same everywhere:
# the official one leads, and any other number says which view it comes from.
def official_label(k: int = NUM_CLASSES) -> str:
    """``official: K classes, 255 ignored``: the official view of K classes."""
    return f"official: {k} classes, 255 ignored"


def miou_label(k: int = NUM_CLASSES) -> str:
    """``mIoU (official: K classes, 255 ignored)``: the headline number's name."""
    return f"mIoU ({official_label(k)})"


OFFICIAL_LABEL = official_label(NUM_CLASSES)  # BDD100K's 19
WITH_UNKNOWN_LABEL = "unknown (255) as a class"
IMAGE_LEVEL_LABEL = "image level: a class present in an image or not"
MIOU_LABEL = miou_label(NUM_CLASSES)


# ---------------------------------------------------------------- the metrics.json contract
def classes_of(result: Mapping[str, Any] | None) -> Classes:
    """The class set a ``metrics.json`` was scored with: its ``"classes"``
    (:meth:`Classes.to_dict`), else BDD100K's (files from before the record, or none)."""
    d = (result or {}).get("classes")
    return from_dict(d) if isinstance(d, Mapping) else BDD100K


def to_contract(
    cm: Any,
    true_presence: Any,
    pred_presence: Any,
    names: tuple[str, ...] | None = None,
    mean_over: str = "truth",
) -> dict[str, Any]:
    """The ``metrics.json`` contract: ``num_images``, ``official``, ``with_unknown`` and
    ``image_level`` (see :func:`official_metrics`, :func:`with_unknown_metrics`,
    :func:`image_level_metrics`), classes named by ``names`` (the K names; default
    :func:`default_names`). Plain Python numbers, ``None`` where undefined. The caller adds
    ``classes`` (:meth:`bddseg.classes.Classes.to_dict`) and ``data``."""
    t, p = _presence_pair(true_presence, pred_presence)
    return {
        "num_images": int(len(t)),
        "official": official_metrics(cm, names, mean_over),
        "with_unknown": with_unknown_metrics(cm, names),
        "image_level": image_level_metrics(t, p, names),
    }


__all__ = [
    "AVERAGES",
    "MEAN_OVER",
    "IMAGE_LEVEL_LABEL",
    "MIOU_LABEL",
    "OFFICIAL_LABEL",
    "WITH_UNKNOWN_LABEL",
    "classes_of",
    "confusion_matrix",
    "default_names",
    "fold_histogram",
    "image_level_matrix",
    "image_level_metrics",
    "image_presence",
    "miou_label",
    "official_arrays",
    "official_label",
    "official_metrics",
    "presence_from_confusion",
    "to_contract",
    "to_numpy",
    "value_histogram",
    "with_unknown_keys",
    "with_unknown_metrics",
]
