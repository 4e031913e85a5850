"""ONNX export of a checkpoint, the onnxruntime forward behind ``load_predictor("m.onnx")``,
and a parity check against PyTorch.

The graph maps ``images``, float32 ``(N, 3, H, W)`` ImageNet-normalised RGB with H and W
multiples of 32, to ``logits``, float32 ``(N, C, H, W)``. Normalisation, padding, TTA and the
mapping to train ids stay outside the graph, in :mod:`bddseg.predict`, shared by both runtimes.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bddseg.errors import BddsegError
from bddseg.files import atomic_path
from bddseg.labels import class_names
from bddseg.model import model_from_checkpoint, pad_to_multiple

FIXED_SIZE = (720, 1280)  # BDD100K frames; a fixed export takes (1, 3, 736, 1280)
PAD_MULTIPLE = 32


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {lines[0][:200]}" if lines else e.__class__.__name__


def export_onnx(
    checkpoint: str | Path, out: str | Path, opset: int = 18, dynamic: bool = False
) -> Path:
    """Export a checkpoint to ONNX with the torch.export-based (dynamo) exporter.

    Args:
        checkpoint: a bddseg ``.pt`` checkpoint.
        out: the ``.onnx`` file to write (atomically; weights inside the file).
        opset: ONNX opset version.
        dynamic: batch, height and width left symbolic (H and W must still be multiples of
            32; :class:`OnnxForward` pads). Otherwise the input is fixed at ``(1, 3, 736, 1280)``,
            a 720x1280 frame padded to 32; smaller images are padded up to it, larger ones are
            predicted in 736x1280 windows.

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
    num_classes = model.segmentation_head[0].out_channels
    h, w = (-(-s // PAD_MULTIPLE) * PAD_MULTIPLE for s in FIXED_SIZE)
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
            f"ONNX export failed at opset {opset} ({_first_line(e)})", checkpoint
        ) from None
    proto = program.model_proto
    meta = {
        "bddseg.num_classes": str(num_classes),
        "bddseg.class_names": json.dumps(list(class_names(num_classes))),
        "bddseg.mean": json.dumps(list(IMAGENET_MEAN)),
        "bddseg.std": json.dumps(list(IMAGENET_STD)),
        "bddseg.pad_multiple": str(PAD_MULTIPLE),
        # the scale the model was trained at (data.base_size): Predictor resizes images to it
        "bddseg.input_size": json.dumps(list(cfg.data.base_size) if cfg.data.base_size else None),
        "bddseg.input": "images: float32 (N,3,H,W) ImageNet-normalised RGB, H and W multiples of 32",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    import onnx

    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    return out


class OnnxForward:
    """onnxruntime session as a forward: normalised ``(N, 3, H, W)`` -> logits ``(N, C, H, W)``.

    Pads to a multiple of 32 (dynamic export) or up to the fixed input size, and crops back,
    like :func:`bddseg.model.forward_padded`. ``max_size`` is the fixed ``(H, W)`` or None.
    ``threads``: onnxruntime's intra-op threads (default: one per core).
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise BddsegError("ONNX file not found", p)
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BddsegError(
                    "this onnxruntime has no CUDA provider: pip install onnxruntime-gpu, "
                    "or use --device cpu"
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(p), options, providers=providers)
        except Exception as e:  # InvalidProtobuf, Fail, ... from the C++ side
            raise BddsegError(f"not a loadable ONNX model ({_first_line(e)})", p) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
            raise BddsegError("expected one input of shape (N, 3, H, W)", p)
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        shape = inputs[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        fixed = all(isinstance(s, int) for s in shape[2:])
        self.max_size: tuple[int, int] | None = (shape[2], shape[3]) if fixed else None
        meta = self.session.get_modelmeta().custom_metadata_map
        c = outputs[0].shape[1]
        self.num_classes = c if isinstance(c, int) else int(meta.get("bddseg.num_classes", 0))
        if not self.num_classes:
            raise BddsegError("cannot tell the number of classes of this ONNX model", p)
        try:
            size = json.loads(meta.get("bddseg.input_size", "null"))
            self.input_size = (int(size[0]), int(size[1])) if size else None
        except (ValueError, TypeError, IndexError, KeyError):
            raise BddsegError("bad bddseg.input_size in the ONNX metadata", p) from None
        self.path = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.max_size is None:
            xp = pad_to_multiple(x)
        else:
            mh, mw = self.max_size
            if h > mh or w > mw:
                raise BddsegError(
                    f"image {h}x{w} is larger than this fixed-size ONNX model ({mh}x{mw}); "
                    "export with --dynamic or predict in windows",
                    self.path,
                )
            xp = F.pad(x, (0, mw - w, 0, mh - h))
        arr = np.ascontiguousarray(xp.detach().float().cpu().numpy())
        step = self.fixed_batch or len(arr)
        outs = []
        for i in range(0, len(arr), step):
            chunk = arr[i : i + step]
            n = len(chunk)
            if n < step:  # a fixed batch larger than what is left: pad with zeros
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.session.run([self.output_name], {self.input_name: chunk})[0][:n])
        return torch.from_numpy(np.concatenate(outs))[..., :h, :w].to(x.device)


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
    from bddseg.predict import Predictor

    torch_p = Predictor.from_checkpoint(checkpoint, device)
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


__all__ = ["FIXED_SIZE", "OnnxForward", "check_parity", "export_onnx"]
