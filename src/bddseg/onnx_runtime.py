"""The forward behind ``load_predictor("m.onnx")``: an ONNX file (fp32, or INT8 from
:mod:`bddseg.quantize`) as a function from normalised images to logits, run by onnxruntime
or OpenVINO.

Written by :func:`bddseg.export.export_onnx`; normalisation, TTA and the mapping to train ids
stay in :mod:`bddseg.predictor`, shared with the PyTorch runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bddseg.classes import BDD100K, Classes, resolve_names
from bddseg.classes import from_dict as classes_from_dict
from bddseg.errors import BddsegError, first_line
from bddseg.labels import NUM_CLASSES
from bddseg.model import pad_to_multiple

# What runs an ONNX file: onnxruntime (the default, CPU or CUDA), or OpenVINO (the ``openvino``
# extra; CPU) reading the same file
RUNTIMES = ("onnxruntime", "openvino")


def onnx_classes(meta: dict[str, str], num_outputs: int, path: Path) -> Classes:
    """The K classes an ONNX file predicts: its ``bddseg.classes`` metadata (bddseg >= 0.9),
    else BDD100K's for 19 or 20 outputs, else ``class_0..`` with generated colours."""
    record = meta.get("bddseg.classes")
    if record is not None:
        try:
            classes = classes_from_dict(json.loads(record), path)
        except ValueError:
            raise BddsegError("bad bddseg.classes in the ONNX metadata", path) from None
    elif num_outputs in (NUM_CLASSES, NUM_CLASSES + 1):
        classes = BDD100K
    else:
        classes = resolve_names(f"class_{i}" for i in range(num_outputs))
    if num_outputs not in (classes.num, classes.num + 1):
        raise BddsegError(f"{num_outputs} outputs for {classes.num} classes in the metadata", path)
    return classes


class OnnxForward:
    """An ONNX file as a forward: normalised ``(N, 3, H, W)`` -> logits ``(N, C, H, W)``.

    Pads to the multiple the file records (``bddseg.pad_multiple``, 32 when absent; dynamic
    export) or up to the fixed input size, and crops back,
    like :func:`bddseg.model.forward_padded`. ``max_size`` is the fixed ``(H, W)`` or None.
    ``threads``: the runtime's intra-op threads (default: one per core). ``runtime``: one of
    :data:`RUNTIMES`.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        threads: int | None = None,
        runtime: str = "onnxruntime",
    ):
        p = Path(path)
        if not p.is_file():
            raise BddsegError("ONNX file not found", p)
        if runtime not in RUNTIMES:
            raise BddsegError(f"unknown runtime {runtime!r} (valid: {', '.join(RUNTIMES)})")
        session = _onnxruntime if runtime == "onnxruntime" else _openvino
        self._run, shape, c, meta = session(p, device, threads)
        self.runtime = runtime
        if len(shape) != 4 or shape[1] != 3:
            raise BddsegError("expected one input of shape (N, 3, H, W)", p)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        fixed = all(isinstance(s, int) for s in shape[2:])
        self.max_size: tuple[int, int] | None = (shape[2], shape[3]) if fixed else None
        self.num_classes = c if isinstance(c, int) else int(meta.get("bddseg.num_classes", 0))
        if not self.num_classes:
            raise BddsegError("cannot tell the number of classes of this ONNX model", p)
        self.classes = onnx_classes(meta, self.num_classes, p)
        try:
            size = json.loads(meta.get("bddseg.input_size", "null"))
            self.input_size = (int(size[0]), int(size[1])) if size else None
        except (ValueError, TypeError, IndexError, KeyError):
            raise BddsegError("bad bddseg.input_size in the ONNX metadata", p) from None
        try:
            self.pad_multiple = int(meta.get("bddseg.pad_multiple", "32"))
            if self.pad_multiple < 1:
                raise ValueError
        except ValueError:
            raise BddsegError("bad bddseg.pad_multiple in the ONNX metadata", p) from None
        self.path = p

    def padded(self, x: torch.Tensor) -> np.ndarray:
        """Normalised ``(N, 3, H, W)`` -> the float32 array the model gets: padded to the
        multiple (dynamic file) or up to the fixed size (also what INT8 calibration feeds)."""
        h, w = x.shape[-2:]
        if self.max_size is None:
            xp = pad_to_multiple(x, self.pad_multiple)
        else:
            mh, mw = self.max_size
            if h > mh or w > mw:
                raise BddsegError(
                    f"image {h}x{w} is larger than this fixed-size ONNX model ({mh}x{mw}); "
                    "export with --dynamic or predict in windows",
                    self.path,
                )
            xp = F.pad(x, (0, mw - w, 0, mh - h))
        return np.ascontiguousarray(xp.detach().float().cpu().numpy())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        arr = self.padded(x)
        step = self.fixed_batch or len(arr)
        outs = []
        for i in range(0, len(arr), step):
            chunk = arr[i : i + step]
            n = len(chunk)
            if n < step:  # a fixed batch larger than what is left: pad with zeros
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self._run(chunk)[:n])
        return torch.from_numpy(np.concatenate(outs))[..., :h, :w].to(x.device)


def _onnxruntime(p: Path, device: str, threads: int | None):
    """An onnxruntime session: ``(run, input shape, output channels, metadata)``; a
    dimension is an ``int`` where fixed."""
    import onnxruntime as ort

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
        session = ort.InferenceSession(str(p), options, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, ... from the C++ side
        raise BddsegError(f"not a loadable ONNX model ({first_line(e)})", p) from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise BddsegError("expected one input of shape (N, 3, H, W)", p)
    names = [outputs[0].name], inputs[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(names[0], {names[1]: batch})[0]

    meta = session.get_modelmeta().custom_metadata_map
    return run, list(inputs[0].shape), outputs[0].shape[1], meta


def _openvino(p: Path, device: str, threads: int | None):
    """The same for OpenVINO (the ``openvino`` extra), reading the ONNX file itself; fp32
    everywhere its graph is fp32 (OpenVINO would take bf16 on a CPU that has it: other
    masks on other machines)."""
    try:
        import openvino as ov
    except ImportError:
        raise BddsegError(
            "--runtime openvino needs the openvino package: pip install 'bddseg[openvino]'"
        ) from None
    if device != "cpu":
        raise BddsegError(f"--runtime openvino runs on the CPU here, not {device}: --device cpu")
    core = ov.Core()
    try:
        model = core.read_model(str(p))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", config)
    except Exception as e:  # RuntimeError from the C++ side
        raise BddsegError(f"OpenVINO cannot load this ONNX model ({first_line(e)})", p) from None
    if len(model.inputs) != 1:
        raise BddsegError("expected one input of shape (N, 3, H, W)", p)
    shape = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
    c = model.outputs[0].get_partial_shape()[1]
    meta = {}
    if model.has_rt_info("framework"):  # the ONNX metadata_props
        meta = {k: v.astype(str) for k, v in model.get_rt_info()["framework"].items()}
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> np.ndarray:
        return request.infer({0: batch})[compiled.output(0)].copy()

    return run, shape, c.get_length() if c.is_static else None, meta


__all__ = ["RUNTIMES", "OnnxForward"]
