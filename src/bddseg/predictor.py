"""Full-resolution inference: a :class:`Predictor` over a PyTorch checkpoint or an ONNX file.

Three lines::

    import bddseg
    p = bddseg.load_predictor("runs/bdd100k_unet_r34/best.pt")  # or "model.onnx"
    mask = p.predict("frame.jpg")  # np.uint8 (H, W), train ids 0..18
    masks = p.predict_batch(["a.jpg", "b.jpg"])  # one mask per image (predict takes one)

Both runtimes share the same pre-processing (:func:`preprocess`, ImageNet mean/std on [0, 1]
RGB), padding to the model's input multiple (32 for the U-Net) and cropping back,
test-time augmentation, sliding windows and the mapping of scores to official train ids
(:func:`to_class_map`).
This is the one model runner: ``bddseg predict`` (files, folders and videos in and out:
:mod:`bddseg.predict`), ``bddseg evaluate --checkpoint`` and training's validation all go
through it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2 import InterpolationMode

from bddseg.checkpoints import checkpoint_classes, load_checkpoint
from bddseg.classes import BDD100K, Classes
from bddseg.config import INFERENCE_PRECISION, TTA_MODES, Config
from bddseg.data import normalize_image, read_image
from bddseg.errors import BddsegError
from bddseg.labels import IGNORE_VALUE, NUM_CLASSES
from bddseg.model import model_forward, model_from_checkpoint, model_num_classes

Forward = Callable[[torch.Tensor], torch.Tensor]
ImageLike = np.ndarray | torch.Tensor | str | Path
T = TypeVar("T")


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(..., 3, H, W)`` -> float32 ImageNet-normalised, same shape and device.

    The one normalisation is :func:`bddseg.data.normalize_image` (what training saw); it is
    applied on the batch, on the predictor's device.
    """
    return normalize_image(images)


def to_class_map(
    scores: torch.Tensor, keep_unknown: bool = False, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """Scores ``(N, C, H, W)`` (logits or probabilities) -> uint8 train ids ``(N, H, W)``.

    The one rule that turns a model's scores into classes: ``bddseg predict``
    (:class:`Predictor`), ``bddseg evaluate --checkpoint``
    (:func:`bddseg.evaluate.evaluate_checkpoint`) and training's validation
    (:func:`bddseg.train.evaluate`) all go through it, so they score identical masks.

    For a 20-class model (``data.unknown: class``), ``unknown`` (19) is never written:

    - default: each pixel gets the best of the 19 real classes (argmax over the first 19
      scores). This is what the official metric should see: it ignores ground-truth 255 and
      counts a predicted 19/255 on a labelled pixel as a miss, so the best real class can only
      help, and the masks are valid official submissions. Training validates this way.
    - ``keep_unknown=True``: the argmax over all 20; pixels where ``unknown`` wins become 255
      (the original project's 20-class view, where ``unknown`` is a class; both 19 and 255
      land in the confusion matrix's column 19).

    For a 19-class model both are the plain argmax. ``num_classes``: K, the evaluated classes
    of the model's class set (19 for BDD100K's; a K + 1-channel model has ``unknown`` last).
    """
    k = num_classes
    if scores.shape[1] > k and not keep_unknown:
        return scores[:, :k].argmax(1).to(torch.uint8)
    ids = scores.argmax(1)
    ids[ids >= k] = IGNORE_VALUE
    return ids.to(torch.uint8)


def same_size_batches(
    items: Iterable[T], batch_size: int, size: Callable[[T], Hashable]
) -> Iterator[list[T]]:
    """``items`` in lists of at most ``batch_size`` that share ``size(item)`` (a shape), for
    the model to take together: the one grouping of :meth:`Predictor.predict_batch`,
    ``bddseg predict`` and :func:`bddseg.evaluate.score_split`.

    Streams: a list is yielded as soon as it is full, so ``items`` may be an iterator (a
    DataLoader); the part-filled ones follow at the end, in the order their sizes first came.
    Each list keeps the input order.
    """
    pending: dict[Hashable, list[T]] = {}
    for item in items:
        key = size(item)
        group = pending.setdefault(key, [])
        group.append(item)
        if len(group) >= batch_size:
            yield pending.pop(key)
    yield from pending.values()


def _starts(size: int, win: int, stride: int) -> list[int]:
    if size <= win:
        return [0]
    return [*range(0, size - win, stride), size - win]


def sliding_window_probs(
    forward: Forward, x: torch.Tensor, window: tuple[int, int], overlap: float = 0.25
) -> torch.Tensor:
    """Average softmax over overlapping ``window`` tiles of ``x`` ``(N, 3, H, W)``.

    Tiles are ``min(window, image)`` in size, spaced ``(1 - overlap) * window`` apart, the
    last one flush with the border; every pixel is covered at least once.
    Returns float32 ``(N, C, H, W)`` probabilities.
    """
    n, _, h, w = x.shape
    wh, ww = min(window[0], h), min(window[1], w)
    sh, sw = max(1, int(wh * (1 - overlap))), max(1, int(ww * (1 - overlap)))
    total = None
    count = torch.zeros((1, 1, h, w), device=x.device)
    for y in _starts(h, wh, sh):
        for x0 in _starts(w, ww, sw):
            p = forward(x[..., y : y + wh, x0 : x0 + ww]).float().softmax(1)
            if total is None:
                total = torch.zeros((n, p.shape[1], h, w), device=p.device)
            total[..., y : y + wh, x0 : x0 + ww] += p
            count[..., y : y + wh, x0 : x0 + ww] += 1
    return total / count.to(total.device)


def tta_probs(probs_fn: Forward, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Mean softmax over the views of ``tta`` (see :data:`TTA_MODES`).

    Each view rescales ``x`` (bilinear), optionally flips it horizontally, runs ``probs_fn``
    (normalised images -> probabilities), undoes the flip and resizes back to ``(H, W)``.
    """
    scales, flip = TTA_MODES[tta]
    h, w = x.shape[-2:]
    total, views = None, 0
    for s in scales:
        size = (round(h * s), round(w * s))
        xs = x if s == 1.0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            p = probs_fn(xs.flip(-1) if flipped else xs)
            if flipped:
                p = p.flip(-1)
            if s != 1.0:
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            views += 1
    return total / views


def _as_chw(image: ImageLike) -> torch.Tensor:
    """One image (uint8 HxWx3 array, uint8 3xHxW tensor or a path) -> uint8 tensor (3, H, W)."""
    if isinstance(image, str | Path):
        return read_image(Path(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise BddsegError(
                f"expected a uint8 HxWx3 RGB array, got {image.dtype} with shape {image.shape}"
            )
        rgb = np.ascontiguousarray(image[..., :3])
        if not rgb.flags.writeable:  # torch.from_numpy warns on read-only arrays (PIL's)
            rgb = rgb.copy()
        return torch.from_numpy(rgb).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise BddsegError(
                f"expected a uint8 3xHxW tensor, got {image.dtype} with shape {tuple(image.shape)}"
            )
        return image
    raise BddsegError(f"cannot use {type(image).__name__} as an image (array, tensor or path)")


class Predictor:
    """Images in, official train-id masks out, at the input's full resolution.

    Args:
        forward: normalised float images ``(N, 3, H, W)`` of any size -> logits
            ``(N, C, H, W)`` (padding to the network's multiple is the forward's job).
        num_classes: the model's outputs: K, or K + 1 for a model with ``unknown``.
        classes: the K classes (names, colours; BDD100K's by default). A checkpoint or an
            ONNX file exported by bddseg carries its own.
        device: where inputs are sent before ``forward``.
        tta: ``"none"``, ``"flip"`` (mean softmax of the image and its mirror) or
            ``"flip+scales"`` (scales 0.75, 1.0, 1.25, each with its mirror: 6 passes).
        window: ``(h, w)`` to predict in overlapping tiles (averaged softmax) instead of one
            pass; for images too large for memory. ``None``: one pass, unless ``forward``
            has a ``max_size`` (a fixed-shape ONNX file) that the image exceeds.
        overlap: fraction of a window shared with its neighbour.
        keep_unknown: see :func:`to_class_map`. The official evaluator counts 255 as a miss.
        input_size: ``(h, w)`` the model takes images at (a checkpoint's ``data.base_size``,
            the scale it was trained at): images are resized to it (bilinear, antialiased,
            as in training) and the scores resized back to the image (bilinear), as
            ``bddseg evaluate --checkpoint`` does. ``None``: the image's own size.
    """

    def __init__(
        self,
        forward: Forward,
        num_classes: int,
        *,
        device: str | torch.device = "cpu",
        tta: str = "none",
        window: tuple[int, int] | None = None,
        overlap: float = 0.25,
        keep_unknown: bool = False,
        input_size: tuple[int, int] | None = None,
        classes: Classes = BDD100K,
    ):
        if tta not in TTA_MODES:
            raise BddsegError(f"unknown tta {tta!r} (valid: {', '.join(TTA_MODES)})")
        if not 0.0 <= overlap < 1.0:
            raise BddsegError(f"overlap must be in [0, 1), got {overlap}")
        self.forward = forward
        self.num_classes = num_classes
        self.classes = classes
        if num_classes not in (classes.num, classes.num + 1):
            raise BddsegError(
                f"the model has {num_classes} outputs but {classes.num} classes were given"
            )
        self.device = torch.device(device)
        self.tta = tta
        self.window = window
        self.overlap = overlap
        self.keep_unknown = keep_unknown
        self.input_size = tuple(input_size) if input_size else None
        self.config: Config | None = None  # the checkpoint's, for a predictor built from one

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | dict[str, Any],
        device: str | torch.device = "cpu",
        *,
        precision: str = INFERENCE_PRECISION,
        **options: Any,
    ) -> Predictor:
        """A PyTorch predictor at ``precision``: ``32-true`` (default: the same masks on every
        machine, those of the ONNX export), or, where asked, ``bf16-mixed`` or ``auto`` (bf16
        autocast on a GPU or a CPU with native bf16, see
        :func:`bddseg.precision.resolve_precision`: faster, but a few pixels may change).
        Images are taken at the scale the model was trained at (``input_size``: the config's
        ``data.base_size`` unless given). ``path`` may also be a checkpoint dict (training's
        validation scores the one ``best.pt`` would hold)."""
        device = torch.device(device)
        source = None if isinstance(path, dict) else Path(path)
        ckpt = path if source is None else load_checkpoint(source)  # read once, used twice
        model, cfg = model_from_checkpoint(ckpt, device, source=source)
        options.setdefault("input_size", cfg.data.base_size)
        options.setdefault("classes", checkpoint_classes(ckpt, source))
        forward = model_forward(model, precision, device)
        predictor = cls(forward, model_num_classes(model), device=device, **options)
        predictor.config = cfg
        return predictor

    @classmethod
    def from_onnx(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        runtime: str = "onnxruntime",
        **options: Any,
    ) -> Predictor:
        """An ONNX predictor (fp32 or INT8) with the same pre- and post-processing, on
        ``runtime``: ``onnxruntime`` or ``openvino`` (:data:`bddseg.onnx_runtime.RUNTIMES`)."""
        from bddseg.onnx_runtime import OnnxForward

        forward = OnnxForward(path, device=str(device), runtime=runtime)
        options.setdefault("input_size", forward.input_size)
        options.setdefault("classes", forward.classes)
        return cls(forward, forward.num_classes, device="cpu", **options)

    # ---------------------------------------------------------------- tensors
    def _batch(
        self, images: ImageLike | Sequence[ImageLike]
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Anything accepted -> (normalised float32 ``(N, 3, h, w)`` on ``self.device`` at the
        model's input size, the images' own ``(H, W)``).

        A float tensor is taken as already normalised (what the training Dataset yields).
        """
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            x = images if images.ndim == 4 else images[None]
            size = tuple(x.shape[-2:])
            if self.input_size and size != self.input_size:
                x = F.interpolate(x, self.input_size, mode="bilinear", antialias=True)
            return x.to(self.device), size
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            chw = list(images)
        elif (
            isinstance(images, list | tuple) or isinstance(images, np.ndarray) and images.ndim == 4
        ):
            chw = [_as_chw(a) for a in images]
        else:
            chw = [_as_chw(images)]
        sizes = {tuple(c.shape[-2:]) for c in chw}
        if len(sizes) != 1:
            raise BddsegError(f"a batch needs images of one size, got {sorted(sizes)}")
        x, size = torch.stack(chw), sizes.pop()
        if self.input_size and size != self.input_size:  # uint8, as training's EvalTransform
            x = TF.resize_image(
                x, list(self.input_size), InterpolationMode.BILINEAR, antialias=True
            )
        return preprocess(x.to(self.device)), size

    @staticmethod
    def _back(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Scores resized (bilinear) to the images' own size where the model saw another."""
        if tuple(scores.shape[-2:]) == tuple(size):
            return scores
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)

    def logits(
        self, images: ImageLike | Sequence[ImageLike], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Raw logits ``(N, C, H, W)`` float32 of one plain pass (no TTA, no window)."""
        x, own = self._batch(images)
        return self._back(self.forward(x).float(), size or own)

    def _window_for(self, x: torch.Tensor) -> tuple[int, int] | None:
        if self.window is not None:
            return self.window
        max_size = getattr(self.forward, "max_size", None)  # a fixed-shape ONNX file
        if max_size and (x.shape[-2] > max_size[0] or x.shape[-1] > max_size[1]):
            return max_size
        return None

    def _view_probs(self, x: torch.Tensor) -> torch.Tensor:
        window = self._window_for(x)
        if window is None:
            return self.forward(x).float().softmax(1)
        return sliding_window_probs(self.forward, x, window, self.overlap)

    def probs(
        self, images: ImageLike | Sequence[ImageLike], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Softmax ``(N, C, H, W)`` averaged over the TTA views and the windows."""
        x, own = self._batch(images)
        return self._back(tta_probs(self._view_probs, x, self.tta), size or own)

    def scores(
        self, images: ImageLike | Sequence[ImageLike], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """What the masks are the argmax of: logits for one plain pass, else :meth:`probs`;
        at ``size`` (bilinear; default: the images' own size, e.g. a full-size mask's where
        the images given are already at the model's scale)."""
        x, own = self._batch(images)
        if self.tta == "none" and self._window_for(x) is None:
            return self._back(self.forward(x).float(), size or own)
        return self._back(tta_probs(self._view_probs, x, self.tta), size or own)

    def class_map(
        self, images: ImageLike | Sequence[ImageLike], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """uint8 train ids ``(N, H, W)`` on ``self.device`` (see :func:`to_class_map`)."""
        return to_class_map(self.scores(images, size), self.keep_unknown, self.classes.num)

    # ---------------------------------------------------------------- numpy
    def predict(self, image: ImageLike) -> np.ndarray:
        """One image (uint8 HxWx3 RGB array, uint8 3xHxW tensor or path) -> uint8 ``(H, W)``.

        Values are train ids 0..18, or 255 where the model says ``unknown`` when
        ``keep_unknown`` is set (the official evaluator counts 255 as a miss).

        Raises:
            TypeError: for several images (a list, a tuple, a 4-D array or tensor): use
                :meth:`predict_batch`, which returns one mask per image.
        """
        if isinstance(image, list | tuple) or getattr(image, "ndim", None) == 4:
            what = type(image).__name__ if isinstance(image, list | tuple) else "4-D batch"
            raise TypeError(
                f"Predictor.predict takes one image, got a {what}: use "
                "predict_batch(images) for several (it returns one mask per image)"
            )
        return self.class_map(image)[0].cpu().numpy()

    def predict_batch(self, images: Sequence[ImageLike], batch_size: int = 1) -> list[np.ndarray]:
        """Many images (a list of what :meth:`predict` takes, sizes may differ; or a uint8
        ``(N, H, W, 3)`` array or ``(N, 3, H, W)`` tensor) -> their uint8 ``(H, W)`` masks, in
        order; same-size images share batches of at most ``batch_size``. The default, one at
        a time, gives exactly the masks of ``bddseg predict``, ``evaluate`` and training's
        validation (a convolution's result can depend on its batch, even in fp32: a larger
        ``batch_size`` is faster on a GPU and may change a pixel here and there)."""
        chw = [_as_chw(a) for a in images]
        out: list[np.ndarray | None] = [None] * len(chw)
        for part in same_size_batches(range(len(chw)), batch_size, lambda i: chw[i].shape[-2:]):
            maps = self.class_map([chw[i] for i in part]).cpu().numpy()
            for i, m in zip(part, maps, strict=True):
                out[i] = m
        return out  # type: ignore[return-value]


def load_predictor(path: str | Path, device: str = "cpu", **options: Any) -> Predictor:
    """A :class:`Predictor` for a checkpoint (``.pt``: PyTorch) or ``.onnx`` (onnxruntime).

    ``options`` go to :class:`Predictor` (``tta``, ``window``, ``overlap``, ``keep_unknown``);
    ``precision`` (default ``32-true``; see :meth:`Predictor.from_checkpoint`) to the PyTorch
    one (an ONNX model runs as exported); ``runtime`` (default ``onnxruntime``, or
    ``openvino``) to the ONNX one.
    """
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        options.pop("precision", None)
        return Predictor.from_onnx(p, device, **options)
    if options.pop("runtime", "onnxruntime") != "onnxruntime":
        raise BddsegError("a runtime is chosen for an .onnx model; a checkpoint runs on PyTorch", p)
    if p.suffix.lower() in (".pt", ".pth", ".ckpt"):
        return Predictor.from_checkpoint(p, device, **options)
    raise BddsegError("unknown model file type: expected a .pt checkpoint or an .onnx file", p)


__all__ = [
    "Forward",
    "ImageLike",
    "Predictor",
    "load_predictor",
    "preprocess",
    "same_size_batches",
    "sliding_window_probs",
    "to_class_map",
    "tta_probs",
]
