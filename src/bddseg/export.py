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
from pathlib import Path
from typing import Any

import torch

from bddseg.errors import BddsegError, first_line
from bddseg.files import atomic_path
from bddseg.labels import class_names
from bddseg.model import input_multiple, model_from_checkpoint, model_num_classes

FIXED_SIZE = (720, 1280)  # BDD100K frames; a fixed export takes (1, 3, 736, 1280) (U-Net)


# Architectures whose dynamic-shape export runs but breaks at other sizes (found by
# tests/test_archs.py): refused rather than written. Their fixed export matches PyTorch on
# full 720x1280 frames; a smaller image is padded to the frame, which their global pooling sees.
NO_DYNAMIC_EXPORT = ("pspnet", "upernet")
NO_DYNAMIC_EXPORT_WHY = (
    "the exporter fixes its adaptive-pooling sizes at the traced size, so onnxruntime fails "
    "on any other"
)


def export_onnx(
    checkpoint: str | Path, out: str | Path, opset: int = 18, dynamic: bool = False
) -> Path:
    """Export a checkpoint to ONNX with the torch.export-based (dynamo) exporter.

    Args:
        checkpoint: a bddseg ``.pt`` checkpoint.
        out: the ``.onnx`` file to write (atomically; weights inside the file).
        opset: ONNX opset version.
        dynamic: batch, height and width left symbolic (H and W must still be multiples of
            the model's input multiple, 32 for the U-Net;
            :class:`~bddseg.onnx_runtime.OnnxForward` pads). Otherwise the input is fixed at
            a 720x1280 frame padded to that multiple (``(1, 3, 736, 1280)`` for the U-Net);
            smaller images are padded up to it, larger ones are predicted in windows of it.

    Returns:
        ``out``. The file's metadata holds ``bddseg.num_classes``, ``bddseg.class_names``,
        ``bddseg.mean``/``bddseg.std`` and ``bddseg.pad_multiple``.
    """
    from bddseg.data import IMAGENET_MEAN, IMAGENET_STD

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise BddsegError(
            "the output must end in .onnx (load_predictor picks the runtime by it)", out
        )
    model, cfg = model_from_checkpoint(checkpoint, "cpu")
    if dynamic and cfg.model.arch in NO_DYNAMIC_EXPORT:
        raise BddsegError(
            f"--dynamic is not supported for {cfg.model.arch}: {NO_DYNAMIC_EXPORT_WHY}; export "
            "without it (a fixed 720x1280 input: smaller images are padded, larger ones windowed)",
            checkpoint,
        )
    num_classes = model_num_classes(model)
    multiple = input_multiple(model)
    h, w = (-(-s // multiple) * multiple for s in FIXED_SIZE)
    dummy = torch.zeros(1, 3, h, w)
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (dummy,),
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
    proto = program.model_proto
    meta = {
        "bddseg.num_classes": str(num_classes),
        "bddseg.class_names": json.dumps(list(class_names(num_classes))),
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
    import onnx

    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    return out


def check_parity(
    checkpoint: str | Path, onnx_path: str | Path, images: Sequence[Any], device: str = "cpu"
) -> dict[str, float]:
    """Compare PyTorch and onnxruntime logits on ``images`` (arrays, tensors or paths).

    Returns:
        ``max_abs_diff`` (largest |logit difference| over all pixels and classes),
        ``max_abs_logit`` (scale of the PyTorch logits, for a relative reading),
        ``argmax_agreement`` (fraction of pixels whose argmax over all classes is equal),
        ``pixels`` and ``images``.
    """
    from bddseg.predictor import Predictor

    torch_p = Predictor.from_checkpoint(checkpoint, device, precision="32-true")  # as exported
    onnx_p = Predictor.from_onnx(onnx_path, device)
    diff = scale = 0.0
    same = total = 0
    for image in images:
        a = torch_p.logits(image).cpu()
        b = onnx_p.logits(image).cpu()
        diff = max(diff, (a - b).abs().max().item())
        scale = max(scale, a.abs().max().item())
        same += (a.argmax(1) == b.argmax(1)).sum().item()
        total += a[:, 0].numel()
    return {
        "images": len(images),
        "pixels": total,
        "max_abs_diff": diff,
        "max_abs_logit": scale,
        "argmax_agreement": same / max(total, 1),
    }


__all__ = ["FIXED_SIZE", "check_parity", "export_onnx"]
