"""Static INT8 quantisation of an exported fp32 ONNX model, and what it costs in accuracy.

:func:`quantize_onnx` calibrates on train photos of a dataset, fed through the model's own
pre-processing (the :class:`~bddseg.predictor.Predictor` of the fp32 file: resized to the
size the model was trained at, normalised, padded to its input multiple), writes a QDQ model
(onnxruntime.quantization: per-channel int8 weights, uint8 activations, MinMax ranges), and
scores it against the fp32 model on held-out val photos with the official metric
(:func:`compare_models`). The file is an ordinary ONNX model with the fp32 file's metadata:
``load_predictor``, ``predict --onnx`` and ``bench`` run it as they run any other.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from bddseg.classes import Classes
from bddseg.errors import BddsegError, first_line
from bddseg.files import atomic_path
from bddseg.layout import Pair, dataset_classes, find_layout, list_pairs

# The export warns past this mIoU drop (absolute, official metric): OpenVINO's and
# PaddleSeg's published INT8 segmentation models lose 0.03-0.44 pp
MAX_MIOU_DROP = 0.01
# Layers that may be kept in fp32 (nodes_to_exclude): the names resolve on the graph, the
# first Conv (it sees the raw image, whose range one uint8 scale covers badly) and the last
# one (the segmentation head, whose logits the argmax compares)
KEEP_FP32 = ("first-conv", "head")


def calibration_pairs(
    root: str | Path, split: str, count: int | None, dataset: str = "auto"
) -> list[Pair]:
    """``count`` pairs of ``split`` with a photo (all with ``None``), spread evenly over the
    sorted list; for ``val``, only pairs that also have a mask. ``root``: a dataset in any
    layout bddseg reads (``dataset``: its kind, or ``auto``).

    Raises:
        BddsegError: the root is missing or not a dataset, or the split has no photos.
    """
    pairs = [
        p
        for p in list_pairs(root, split, dataset)
        if p.image is not None and (split != "val" or p.mask)
    ]
    if not pairs:
        if split == "val":
            raise BddsegError("no labelled val photos to score INT8 on (--eval-images 0)", root)
        raise BddsegError(f"no {split} photos to calibrate INT8 on", root)
    if count is not None and count < 1:
        raise BddsegError(f"the number of {split} photos must be at least 1, got {count}")
    if count is None or count >= len(pairs):
        return pairs
    return [pairs[i * len(pairs) // count] for i in range(count)]


class _Recorder:
    """A forward that records what the fp32 model would receive (padded as
    :class:`~bddseg.onnx_runtime.OnnxForward` pads it) and returns zeros: run under a
    :class:`~bddseg.predictor.Predictor`, it captures the model's exact inputs."""

    def __init__(self, forward: Any):
        self.forward, self.inputs = forward, []
        self.input_size = forward.input_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(self.forward.padded(x))
        return torch.zeros((len(x), self.forward.num_classes, *x.shape[-2:]))


def model_inputs(fp32: str | Path, photos: Sequence[Path]) -> list[np.ndarray]:
    """The float32 ``(1, 3, H, W)`` arrays the fp32 ONNX model gets for ``photos`` when a
    :class:`~bddseg.predictor.Predictor` runs it (trained size, normalisation, padding)."""
    from bddseg.onnx_runtime import OnnxForward
    from bddseg.predictor import Predictor

    recorder = _Recorder(OnnxForward(fp32, threads=1))
    predictor = Predictor(recorder, recorder.forward.num_classes, input_size=recorder.input_size)
    for photo in photos:
        predictor.logits(photo)
    return recorder.inputs


def _reader(name: str, arrays: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: a} for a in arrays])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    return Reader()


def resolve_nodes(model: onnx.ModelProto, keep: Sequence[str]) -> list[str]:
    """Names in ``keep`` -> node names: ``first-conv`` and ``head`` (see :data:`KEEP_FP32`),
    anything else taken as a node name of the graph."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    names = {n.name for n in model.graph.node}
    out = []
    for k in keep:
        if k in KEEP_FP32:
            if not convs:
                raise BddsegError(f"--keep-fp32 {k}: the model has no Conv node")
            out.append(convs[0] if k == "first-conv" else convs[-1])
        elif k in names:
            out.append(k)
        else:
            raise BddsegError(
                f"--keep-fp32: no node named {k!r} (use {', '.join(KEEP_FP32)} or node names)"
            )
    return out


def quantize_onnx(
    fp32: str | Path,
    out: str | Path,
    calibration: str | Path,
    *,
    calibration_images: int = 16,
    eval_images: int | None = 8,
    keep_fp32: Sequence[str] = (),
    try_keep: bool = True,
    echo: Callable[[str], None] = print,
    dataset: str = "auto",
    classes_file: str | Path | None = None,
) -> dict[str, Any]:
    """Quantise the fp32 ONNX model ``fp32`` to INT8 (static, QDQ) and score it.

    Args:
        fp32: an ONNX model from :func:`bddseg.export.export_onnx`.
        out: the INT8 ``.onnx`` to write (atomically; nothing is written on an error).
        calibration: a dataset root; its train photos calibrate the activation ranges, its
            labelled val photos score both models.
        calibration_images: train photos to calibrate on (spread evenly over the split).
        eval_images: val photos to score on (``None``: all of them; 0: no scoring).
        keep_fp32: layers left unquantised (:func:`resolve_nodes`).
        try_keep: when the mIoU drop passes :data:`MAX_MIOU_DROP` and no layer is kept in
            fp32, quantise once more keeping :data:`KEEP_FP32` and report that model's
            scores under ``"with_keep"`` (the file written is still the one asked for).

    Returns:
        ``{"calibration_images", "keep_fp32" (node names), "scores"}`` with ``scores`` as
        :func:`compare_models` returns them (``None`` without scoring), and ``"with_keep"``
        where it was tried.

    Raises:
        BddsegError: the calibration folder is missing or has no photos, or onnxruntime
            cannot quantise the model (the message names the file).
    """
    fp32, out = Path(fp32), Path(out)
    pairs = calibration_pairs(calibration, "train", calibration_images, dataset)
    photos = [p.image for p in pairs]
    val = calibration_pairs(calibration, "val", eval_images, dataset) if eval_images != 0 else []
    truth = dataset_classes(find_layout(calibration, dataset), classes_file) if val else None
    arrays = model_inputs(fp32, photos)
    with atomic_path(out) as dst:
        nodes = quantize_arrays(fp32, dst, arrays, keep_fp32)
        _stamp(dst, {"calibration_images": len(photos), "keep_fp32": nodes})
        scores = compare_models(fp32, dst, val, truth) if val else None
    result = {"calibration_images": len(photos), "keep_fp32": nodes, "scores": scores}
    if try_keep and not nodes and scores and scores["miou_drop"] > MAX_MIOU_DROP:
        echo(f"mIoU drop {scores['miou_drop'] * 100:.2f} pp: trying {','.join(KEEP_FP32)} in fp32")
        with tempfile.TemporaryDirectory(prefix="bddseg-int8-") as tmp:
            kept = Path(tmp) / "kept.onnx"
            quantize_arrays(fp32, kept, arrays, KEEP_FP32)
            result["with_keep"] = compare_models(fp32, kept, val, truth)
    return result


def quantize_arrays(
    fp32: str | Path, out: str | Path, arrays: Sequence[np.ndarray], keep_fp32: Sequence[str] = ()
) -> list[str]:
    """Quantise ``fp32`` into ``out`` (static, QDQ), calibrated on ``arrays`` (the float32
    inputs the model gets, :func:`model_inputs`); returns the node names kept in fp32."""
    fp32 = Path(fp32)
    with tempfile.TemporaryDirectory(prefix="bddseg-int8-") as tmp:
        pre = _preprocess(fp32, Path(tmp) / "pre.onnx")
        model = onnx.load(str(pre), load_external_data=False)
        nodes = resolve_nodes(model, keep_fp32)
        _quantize(pre, Path(out), model.graph.input[0].name, list(arrays), nodes, fp32)
    return nodes


def _preprocess(fp32: Path, dst: Path) -> Path:
    """onnxruntime's recommended pre-pass (shape inference, graph optimisation): its
    quantiser needs the shapes, and fused graphs quantise into fewer Q/DQ pairs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # without onnxruntime's symbolic shape inference: it stops at a dynamic export's
        # symbolic H and W, and then leaves a model-sized scratch file in the working
        # directory; onnx's own shape inference, which still runs, covers these graphs
        quant_pre_process(str(fp32), str(dst), skip_symbolic_shape=True)
    except Exception as e:  # onnx / onnxruntime raise many types
        raise BddsegError(
            f"cannot prepare this model for quantisation ({first_line(e)})", fp32
        ) from None
    return dst


def _quantize(src: Path, dst: Path, name: str, arrays, nodes: list[str], fp32: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    try:
        quantize_static(
            str(src),
            str(dst),
            _reader(name, arrays),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # u8 activations x s8 weights: the pair onnxruntime's x86 VNNI kernels take
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes or None,
        )
    except Exception as e:  # onnxruntime raises many types
        raise BddsegError(
            f"onnxruntime cannot quantise this model ({first_line(e)})", fp32
        ) from None


def _stamp(path: Path, info: dict[str, Any]) -> None:
    """Add ``bddseg.quantized`` to the metadata (the fp32 file's keys are kept by the
    quantiser)."""
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "bddseg.quantized", json.dumps({"precision": "int8", **info})
    onnx.save_model(model, str(path))


def compare_models(
    fp32: str | Path, int8: str | Path, pairs: Sequence[Pair], truth: Classes | None = None
) -> dict[str, Any]:
    """Score two ONNX models on labelled ``pairs`` (full-resolution masks from their
    :class:`~bddseg.predictor.Predictor`, the official metric of
    :mod:`bddseg.metrics` from one confusion matrix per model over all photos).

    ``truth``: the class set that reads the masks (the dataset's,
    :func:`bddseg.layout.dataset_classes`: Cityscapes ``labelIds`` mapped to train ids);
    default: the model's own classes, reading train ids. The scores count the model's K
    classes and average them by the truth's ``mean_over`` rule (as ``bddseg evaluate``:
    Cityscapes' union, BDD100K's classes in the truth).

    Returns:
        ``images``, ``pixels``, ``agreement`` (fraction of pixels where the two masks are
        equal), ``miou_fp32``, ``miou_int8`` and ``miou_drop`` (fp32 minus int8, absolute).

    Raises:
        BddsegError: the dataset's classes are not the model's; a bad mask.
    """
    from bddseg.masks import read_mask
    from bddseg.metrics import confusion_matrix, official_metrics
    from bddseg.predictor import Predictor

    a, b = Predictor.from_onnx(fp32), Predictor.from_onnx(int8)
    classes = a.classes
    if truth is None:
        truth = classes.labels_only()
    elif not truth.same_labels(classes):
        raise BddsegError(
            f"the dataset's {truth.num} classes ({', '.join(truth.names[:4])}"
            f"{', ...' if truth.num > 4 else ''}) are not the model's {classes.num}; score "
            "INT8 on data with the model's classes",
            fp32,
        )
    k = classes.num
    cm_a = cm_b = 0
    same = total = 0
    for pair in pairs:
        gt = read_mask(pair.mask, "ground-truth mask", classes=truth)
        pa, pb = a.predict(pair.image), b.predict(pair.image)
        cm_a = cm_a + confusion_matrix(pa, gt, strict_pred=False, num_classes=k)
        cm_b = cm_b + confusion_matrix(pb, gt, strict_pred=False, num_classes=k)
        same += int((pa == pb).sum())
        total += pa.size
    miou_a = official_metrics(cm_a, classes.names, truth.mean_over)["miou"] or 0.0
    miou_b = official_metrics(cm_b, classes.names, truth.mean_over)["miou"] or 0.0
    return {
        "images": len(pairs),
        "pixels": total,
        "agreement": same / max(total, 1),
        "miou_fp32": miou_a,
        "miou_int8": miou_b,
        "miou_drop": miou_a - miou_b,
    }


def int8_line(result: dict[str, Any]) -> str:
    """The scores in one phrase, as ``bddseg export`` prints them."""
    s = result["scores"]
    if s is None:
        return f"calibrated on {result['calibration_images']} train photos; not scored"
    return (
        f"calibrated on {result['calibration_images']} train photos; on {s['images']} val "
        f"photos, same class as fp32 on {s['agreement']:.2%} of pixels, mIoU "
        f"{s['miou_int8']:.4f} vs fp32 {s['miou_fp32']:.4f} "
        f"(drop {s['miou_drop'] * 100:+.2f} pp)"
    )


def drop_warning(result: dict[str, Any]) -> str | None:
    """A warning when the mIoU drop passes :data:`MAX_MIOU_DROP`, saying whether keeping
    :data:`KEEP_FP32` in fp32 helps (measured), else ``None``."""
    s = result["scores"]
    if s is None or s["miou_drop"] <= MAX_MIOU_DROP:
        return None
    text = (
        f"INT8 loses {s['miou_drop'] * 100:.2f} pp of mIoU on {s['images']} val photos "
        f"(threshold {MAX_MIOU_DROP * 100:g} pp)"
    )
    kept = result.get("with_keep")
    if kept is None:
        return text + "; more --calibration-images may help, or ship the fp32 model"
    flag = f"--keep-fp32 {','.join(KEEP_FP32)}"
    if kept["miou_drop"] < s["miou_drop"]:
        return (
            f"{text}; keeping the first conv and the head in fp32 ({flag}) loses "
            f"{kept['miou_drop'] * 100:.2f} pp ({kept['agreement']:.2%} of pixels as fp32)"
        )
    return f"{text}; keeping the first conv and the head in fp32 ({flag}) does not help"


__all__ = [
    "KEEP_FP32",
    "MAX_MIOU_DROP",
    "calibration_pairs",
    "compare_models",
    "drop_warning",
    "int8_line",
    "model_inputs",
    "quantize_arrays",
    "quantize_onnx",
    "resolve_nodes",
]
