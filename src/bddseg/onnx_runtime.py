"""The onnxruntime forward behind ``load_predictor("m.onnx")``: an ONNX file as a function
from normalised images to logits.

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

from bddseg.errors import BddsegError, first_line
from bddseg.model import pad_to_multiple


class OnnxForward:
    """onnxruntime session as a forward: normalised ``(N, 3, H, W)`` -> logits ``(N, C, H, W)``.

    Pads to the multiple the file records (``bddseg.pad_multiple``, 32 when absent; dynamic
    export) or up to the fixed input size, and crops back,
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
            raise BddsegError(f"not a loadable ONNX model ({first_line(e)})", p) from None
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
        try:
            self.pad_multiple = int(meta.get("bddseg.pad_multiple", "32"))
            if self.pad_multiple < 1:
                raise ValueError
        except ValueError:
            raise BddsegError("bad bddseg.pad_multiple in the ONNX metadata", p) from None
        self.path = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
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


__all__ = ["OnnxForward"]
