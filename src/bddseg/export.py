"""ONNX export of a checkpoint and a parity check against PyTorch (the onnxruntime forward
that runs the file is :class:`bddseg.onnx_runtime.OnnxForward`).

The graph maps ``images``, float32 ``(N, 3, H, W)`` ImageNet-normalised RGB with H and W
multiples of the model's input multiple (:func:`bddseg.model.input_multiple`: 32 for the
default U-Net; recorded as ``bddseg.pad_multiple``), to ``logits``, float32 ``(N, C, H, W)``.
Normalisation, padding, TTA and the mapping to train ids stay outside the graph, in
:mod:`bddseg.predictor`, shared by both runtimes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from bddseg.checkpoints import checkpoint_classes, load_checkpoint
from bddseg.data import IMAGENET_MEAN, IMAGENET_STD, read_image
from bddseg.errors import BddsegError, first_line
from bddseg.files import atomic_path
from bddseg.layout import list_pairs
from bddseg.model import input_multiple, model_from_checkpoint, model_num_classes

# A parity check fails past these: onnxruntime and PyTorch fp32 differ by about 1e-5 in the
# logits; an export that predicts other masks (a wrong input size, a broken op) is refused
PARITY_MAX_DIFF = 1e-3  # max |logit difference|, relative to max(1, largest |logit|)
PARITY_MIN_AGREEMENT = 0.999  # fraction of pixels with the same class


# Architectures whose dynamic-shape export runs but breaks at other sizes (found by
# tests/test_archs.py): refused rather than written. Their fixed export matches PyTorch at
# the size it was made for.
NO_DYNAMIC_EXPORT = ("pspnet", "upernet")
NO_DYNAMIC_EXPORT_WHY = (
    "the exporter fixes its adaptive-pooling sizes at the traced size, so onnxruntime fails "
    "on any other"
)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_onnx` wrote: the file, the input shape (``None`` for dynamic
    height and width) and the parity check (:func:`check_parity`; ``None`` with
    ``check=False``); with ``quantize="int8"``, ``path`` is the INT8 file, ``fp32`` the fp32
    one it was made from and ``int8`` :func:`bddseg.quantize.quantize_onnx`'s report."""

    path: Path
    input_shape: tuple[int, int, int, int] | None
    parity: dict[str, Any] | None
    fp32: Path | None = None
    int8: dict[str, Any] | None = None


def trained_size(ckpt: dict[str, Any], cfg: Any) -> tuple[int, int] | None:
    """The ``(H, W)`` the model takes images at: ``data.base_size`` (the predictor resizes
    every image to it), else the size of the images it was validated on (recorded in the
    checkpoint as ``image_size``); ``None`` where neither is known (an older checkpoint)."""
    if cfg.data.base_size:
        return tuple(cfg.data.base_size)
    size = ckpt.get("image_size")
    return (int(size[0]), int(size[1])) if size else None


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    opset: int = 18,
    dynamic: bool = False,
    size: tuple[int, int] | None = None,
    check: bool = True,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    calibration_images: int = 16,
    eval_images: int | None = 8,
    keep_fp32: Sequence[str] = (),
) -> Exported:
    """Export a checkpoint to ONNX with the torch.export-based (dynamo) exporter, and check
    that onnxruntime predicts what PyTorch predicts before the file is put in place.

    Args:
        checkpoint: a bddseg ``.pt`` checkpoint.
        out: the ``.onnx`` file to write (atomically; weights inside the file).
        opset: ONNX opset version.
        dynamic: batch, height and width left symbolic (H and W must still be multiples of
            the model's input multiple, 32 for the U-Net;
            :class:`~bddseg.onnx_runtime.OnnxForward` pads). Otherwise the input is fixed at
            the size the model was trained at (:func:`trained_size`, padded to that multiple:
            ``(1, 3, 736, 1280)`` for a U-Net validated on 720x1280 frames), or ``size``:
            images of that size are predicted exactly as PyTorch predicts them (smaller ones
            are padded up to it, larger ones predicted in windows of it).
        size: ``(H, W)`` for a fixed export, instead of the trained size.
        check: run :func:`check_parity` on one frame at the model's size (a val image of the
            checkpoint's dataset when it is on disk, else a seeded random one) and refuse
            (:class:`BddsegError`, no file written) when the logits differ by more than
            :data:`PARITY_MAX_DIFF` or fewer than :data:`PARITY_MIN_AGREEMENT` of the pixels
            get the same class.
        quantize: ``"int8"``: write the fp32 model as ``STEM.fp32.onnx`` beside ``out``, then
            static INT8 into ``out`` (:func:`bddseg.quantize.quantize_onnx`, calibrated on
            ``calibration_images`` train photos of the dataset ``calibration`` and scored
            against fp32 on ``eval_images`` of its val photos, keeping ``keep_fp32`` layers
            unquantised).

    Returns:
        :class:`Exported`. The file's metadata holds ``bddseg.num_classes``,
        ``bddseg.class_names`` (the outputs' names), ``bddseg.classes`` (the K classes with
        their colours), ``bddseg.mean``/``bddseg.std``, ``bddseg.pad_multiple`` and
        ``bddseg.input_size`` (``data.base_size``, which the predictor resizes images to).
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise BddsegError(
            "the output must end in .onnx (load_predictor picks the runtime by it)", out
        )
    if quantize not in (None, "int8"):
        raise BddsegError(f"unknown quantisation {quantize!r} (valid: int8)")
    if quantize and calibration is None:
        raise BddsegError("--quantize int8 needs --calibration ROOT (a dataset to calibrate on)")
    if quantize:  # the calibration data first: a missing folder fails before the export
        from bddseg.quantize import calibration_pairs

        calibration_pairs(calibration, "train", calibration_images)
        if eval_images != 0:
            calibration_pairs(calibration, "val", eval_images)
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt, "cpu", source=checkpoint)
    if dynamic and cfg.model.arch in NO_DYNAMIC_EXPORT:
        raise BddsegError(
            f"--dynamic is not supported for {cfg.model.arch}: {NO_DYNAMIC_EXPORT_WHY}; export "
            "without it (a fixed input at the size the model was trained at, or --size HxW)",
            checkpoint,
        )
    multiple = input_multiple(model)
    frame = size or trained_size(ckpt, cfg)
    if frame is None and not dynamic:
        raise BddsegError(
            "this checkpoint does not record the image size it was trained at (an older "
            "bddseg): export with --dynamic, or give the frame size with --size HxW",
            checkpoint,
        )
    h, w = (-(-s // multiple) * multiple for s in (frame or (2 * multiple, 2 * multiple)))
    proto = _export_proto(model, (1, 3, h, w), opset, dynamic, checkpoint)
    classes = checkpoint_classes(ckpt, checkpoint)
    outputs = model_num_classes(model)
    meta = {
        "bddseg.num_classes": str(outputs),
        "bddseg.class_names": json.dumps(
            list(classes.model_names("class" if outputs > classes.num else "ignore"))
        ),
        # the K classes (names, colours): predict's colour maps and the Python API read them
        "bddseg.classes": json.dumps(classes.labels_only().to_dict()),
        "bddseg.mean": json.dumps(list(IMAGENET_MEAN)),
        "bddseg.std": json.dumps(list(IMAGENET_STD)),
        "bddseg.pad_multiple": str(multiple),
        # the scale the model was trained at (data.base_size): Predictor resizes images to it
        "bddseg.input_size": json.dumps(list(cfg.data.base_size) if cfg.data.base_size else None),
        "bddseg.input": "images: float32 (N,3,H,W) ImageNet-normalised RGB, "
        f"H and W multiples of {multiple}",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    parity = None
    fp32 = out.with_name(out.stem + ".fp32.onnx") if quantize else out
    with atomic_path(fp32) as tmp:
        onnx.save_model(proto, str(tmp))
        if check:  # on the temporary file: a failed check leaves nothing behind
            image = parity_image(cfg, frame or FRAME_SIZE, any_size=bool(cfg.data.base_size))
            parity = check_parity(ckpt, tmp, [image])
            _require_parity(parity, checkpoint)
    shape = None if dynamic else (1, 3, h, w)
    if not quantize:
        return Exported(out, shape, parity)
    from bddseg.quantize import quantize_onnx

    int8 = quantize_onnx(
        fp32, out, calibration, calibration_images=calibration_images,
        eval_images=eval_images, keep_fp32=keep_fp32,
    )  # fmt: skip
    return Exported(out, shape, parity, fp32=fp32, int8=int8)


FRAME_SIZE = (720, 1280)  # a BDD100K frame: the parity image of a dynamic export


def _export_proto(model, shape, opset: int, dynamic: bool, checkpoint) -> Any:
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (torch.zeros(shape),),
                input_names=["images"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=(axes,) if dynamic else None,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; an unsupported opset is the usual one
        raise BddsegError(
            f"ONNX export failed at opset {opset} ({first_line(e)})", checkpoint
        ) from None
    return program.model_proto


def parity_image(cfg: Any, size: tuple[int, int], any_size: bool = False) -> torch.Tensor:
    """A real-size frame for the parity check, uint8 ``(3, H, W)``: the first val image of
    the checkpoint's dataset when it is on disk and of ``size`` (of any size with
    ``any_size``: a model with ``data.base_size`` sees every image resized to it), else
    seeded random pixels of ``size``."""
    try:
        pairs = list_pairs(cfg.data.root, cfg.data.val_split) if cfg.data.root else []
        first = next((p.image for p in pairs if p.image is not None), None)
        if first is not None:
            image = read_image(first)
            if any_size or tuple(image.shape[-2:]) == tuple(size):
                return image
    except BddsegError:
        pass  # the training data is elsewhere or gone: random pixels
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8)


def _require_parity(parity: dict[str, Any], checkpoint) -> None:
    limit = PARITY_MAX_DIFF * max(1.0, parity["max_abs_logit"])
    if parity["max_abs_diff"] > limit or parity["argmax_agreement"] < PARITY_MIN_AGREEMENT:
        raise BddsegError(
            f"the ONNX model does not predict what the checkpoint predicts: {parity_line(parity)}"
            f" (limits: {PARITY_MAX_DIFF:g} x max(1, largest logit), "
            f"{PARITY_MIN_AGREEMENT:.1%} agreement); nothing written (--no-check writes it anyway)",
            checkpoint,
        )


def parity_line(parity: dict[str, Any]) -> str:
    """The parity check in one phrase, as ``bddseg export`` prints it."""
    h, w = parity["size"]
    return (
        f"on a {w}x{h} frame, max |logit difference| {parity['max_abs_diff']:.2g} (logits up "
        f"to {parity['max_abs_logit']:.3g}), same class on {parity['argmax_agreement']:.4%} of "
        "pixels"
    )


def check_parity(
    checkpoint: str | Path | dict[str, Any],
    onnx_path: str | Path,
    images: Sequence[Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """Compare PyTorch (fp32) and onnxruntime logits on ``images`` (arrays, tensors or
    paths), each through its :class:`~bddseg.predictor.Predictor` (input size, padding).

    Returns:
        ``max_abs_diff`` (largest |logit difference| over all pixels and classes),
        ``max_abs_logit`` (scale of the PyTorch logits, for a relative reading),
        ``argmax_agreement`` (fraction of pixels whose argmax over all classes is equal),
        ``pixels``, ``images`` and ``size`` (the last image's ``(H, W)``).
    """
    from bddseg.predictor import Predictor

    torch_p = Predictor.from_checkpoint(checkpoint, device, precision="32-true")  # as exported
    onnx_p = Predictor.from_onnx(onnx_path, device)
    diff = scale = 0.0
    same = total = 0
    size = None
    for image in images:
        a = torch_p.logits(image).cpu()
        b = onnx_p.logits(image).cpu()
        diff = max(diff, (a - b).abs().max().item())
        scale = max(scale, a.abs().max().item())
        same += (a.argmax(1) == b.argmax(1)).sum().item()
        total += a[:, 0].numel()
        size = tuple(a.shape[-2:])
    return {
        "size": size,
        "images": len(images),
        "pixels": total,
        "max_abs_diff": diff,
        "max_abs_logit": scale,
        "argmax_agreement": same / max(total, 1),
    }


__all__ = ["FRAME_SIZE", "Exported", "check_parity", "export_onnx", "parity_line", "trained_size"]
