"""The model (smp U-Net with a ResNet34 encoder), padding to a multiple of 32, checkpoints.

A checkpoint is a plain dict, loadable with ``torch.load(..., weights_only=True)``::

    {"format": "bddseg", "version": 1,
     "model": state_dict, "config": to_dict(cfg), "num_classes": 19 | 20,
     "step": int, "epoch": int, "best_metric": float | None,
     # only in training checkpoints (last.pt):
     "optimizer": ..., "scheduler": ..., "rng": ...}
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bddseg.config import PRECISIONS, Config, ModelConfig, from_dict, to_dict
from bddseg.errors import BddsegError
from bddseg.files import atomic_path

CHECKPOINT_FORMAT = "bddseg"
CHECKPOINT_VERSION = 1


def _smp():
    import segmentation_models_pytorch as smp

    return smp


ARCHS = {
    "unet": lambda: _smp().Unet,
    "fpn": lambda: _smp().FPN,
    "deeplabv3plus": lambda: _smp().DeepLabV3Plus,
}


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the segmentation network.

    Args:
        cfg: the model section of the config. ``pretrained`` loads ImageNet weights for the
            encoder from the model hub, unless ``encoder_weights`` names a local state-dict
            file (for air-gapped clusters).
        num_classes: 20 (``unknown: class``) or 19 (``unknown: ignore``).

    Returns:
        A module mapping float images ``(N, 3, H, W)`` (H, W multiples of 32) to logits
        ``(N, num_classes, H, W)``. Use :func:`forward_padded` for other sizes.

    Raises:
        BddsegError: unknown architecture, unreadable weights file, or hub weights that cannot
            be fetched (the message names ``--no-pretrained`` and ``--encoder-weights PATH``).
    """
    if cfg.arch not in ARCHS:
        raise BddsegError(f"unknown architecture {cfg.arch!r} (valid: {', '.join(ARCHS)})")
    cls = ARCHS[cfg.arch]()
    hub = cfg.pretrained and cfg.encoder_weights is None
    try:
        model = cls(
            encoder_name=cfg.encoder,
            encoder_weights="imagenet" if hub else None,
            in_channels=3,
            classes=num_classes,
        )
    except KeyError as e:
        raise BddsegError(f"unknown encoder {cfg.encoder!r} ({e})") from None
    except Exception as e:  # network failures surface as many exception types
        if not hub:
            raise
        raise BddsegError(
            f"cannot fetch ImageNet weights for encoder {cfg.encoder!r} "
            f"({e.__class__.__name__}); no network? Use --no-pretrained to start from random "
            "weights, or --encoder-weights PATH to load a local encoder state dict"
        ) from None
    if cfg.encoder_weights is not None:
        load_encoder_weights(model, cfg.encoder_weights)
    return model


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict (e.g. torchvision's ``resnet34`` weights).

    Keys of a full classifier (``fc.*``) are dropped; any other missing or unexpected key is
    an error, so a file for another encoder is not silently half-loaded.
    """
    p = Path(path)
    state = _torch_load(p, what="encoder weights")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BddsegError("encoder weights must be a state dict", p)
    state = {k.removeprefix("encoder."): v for k, v in state.items() if not k.startswith("fc.")}
    try:
        model.encoder.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = _state_dict_problem(e)
        raise BddsegError(f"weights do not fit the encoder: {first}", p) from None


def _state_dict_problem(e: RuntimeError) -> str:
    """The first specific line of a ``load_state_dict`` error (its first line is only "Error(s)
    in loading state_dict for Unet:"), shortened."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
    return detail if len(detail) <= 200 else detail[:197] + "..."


def pad_to_multiple(x: torch.Tensor, multiple: int = 32, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims of ``x`` on the bottom/right up to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), value=value)


def forward_padded(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``(N, 3, H, W)`` images of any size: pad to 32, crop logits back."""
    h, w = images.shape[-2:]
    return model(pad_to_multiple(images))[..., :h, :w]


def model_num_classes(model: nn.Module) -> int:
    """The number of classes an smp model (Fabric- or DDP-wrapped or not) predicts."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    return inner.segmentation_head[0].out_channels


def model_forward(
    model: nn.Module,
    precision: str = "32-true",
    device: str | torch.device | None = None,
    channels_last: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` as the forward every route runs (:class:`bddseg.predictor.Predictor` for
    predict, evaluate and training's validation; ``bddseg bench``): normalised images
    ``(N, 3, H, W)`` of any size -> float32 logits ``(N, C, H, W)``, padded to a multiple of
    32 and cropped back, under ``precision``'s autocast (:func:`resolve_precision`), without
    autograd. ``channels_last``: hand the padded batch over in that memory format (for a model
    converted to it)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device

    def forward(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(precision, device):
            return model(x)[..., :h, :w].float()

    forward.model = model  # type: ignore[attr-defined]  # for callers that want the module
    return forward


# ---------------------------------------------------------------- precision
@cache
def cpu_bf16_native() -> str | None:
    """The instruction set that computes bfloat16 natively on this CPU (``"AMX"`` or
    ``"AVX-512 BF16"``), or ``None`` where oneDNN would emulate bf16 (slower than fp32).

    Measured (benchmarks/RESULTS.md): U-Net/ResNet34 training steps 1.5x (Intel AMX) and 1.8x
    (AMD AVX-512 BF16) faster under bf16 autocast than fp32. ``BDDSEG_CPU_BF16=0`` or ``1``
    overrides the detection.
    """
    forced = os.environ.get("BDDSEG_CPU_BF16")
    if forced in ("0", "1"):
        return "BDDSEG_CPU_BF16=1" if forced == "1" else None
    try:
        if torch.cpu._is_amx_tile_supported():
            return "AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return "AVX-512 BF16"
        return None
    except AttributeError:  # private API moved: read the flags the kernel reports
        try:
            flags = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            return None
        return "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags else None


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``auto`` -> what runs fastest without changing results beyond noise: ``bf16-mixed`` on
    a CUDA GPU and on a CPU with native bf16 (:func:`cpu_bf16_native`), else ``32-true``.
    Training, ``evaluate``, ``predict`` and ``bench`` all decide through this. ``device`` is
    a torch device or an accelerator name (``auto``, ``cpu``, ``cuda``, ``gpu``, ``mps``)."""
    if precision not in PRECISIONS:
        raise BddsegError(f"unknown precision {precision!r} (valid: {', '.join(PRECISIONS)})")
    if precision != "auto":
        return precision
    kind = str(device).split(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind in ("cuda", "gpu"):
        return "bf16-mixed"
    return "bf16-mixed" if kind == "cpu" and cpu_bf16_native() else "32-true"


def precision_note(precision: str, device: str | torch.device = "cpu") -> str:
    """One phrase saying what ``precision`` resolves to on ``device`` and why."""
    chosen = resolve_precision(precision, device)
    if precision != "auto":
        return chosen
    kind = str(device).split(":")[0]
    cpu = kind == "cpu" or (kind == "auto" and not torch.cuda.is_available())
    if not cpu:
        return f"{chosen} (auto)"
    native = cpu_bf16_native()
    why = f"this CPU has {native}" if native else "this CPU would emulate bf16"
    return f"{chosen} (auto: {why})"


def autocast(
    precision: str, device: str | torch.device = "cpu"
) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (``auto`` resolved for ``device``): bf16 or
    fp16 autocast for the mixed precisions, nothing for the others."""
    device = torch.device(device)
    chosen = resolve_precision(precision, device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(chosen)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype)


def make_checkpoint(
    model: nn.Module | dict,
    cfg: Config,
    *,
    step: int = 0,
    epoch: int = 0,
    best_metric: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A checkpoint dict in the format above: ``model`` (a module or its state dict), the
    frozen ``cfg``, the class count it implies; ``extra`` adds entries (``val_metrics``, and
    for training checkpoints ``optimizer``, ``scheduler``, ...)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": state,
        "config": to_dict(cfg),
        "num_classes": cfg.num_classes,
        "step": step,
        "epoch": epoch,
        "best_metric": best_metric,
        **extra,
    }


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write ``ckpt`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def _torch_load(path: Path, what: str = "checkpoint") -> Any:
    if not path.is_file():
        raise BddsegError(f"{what} file not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # torch's first line is a migration notice; the line naming the global says what it is
        named = [line for line in lines if "GLOBAL" in line or "global" in line]
        first = (named or lines or ["unsafe content"])[0]
        raise BddsegError(
            f"refused to load {what}: it holds objects other than tensors and plain data "
            f"({first[:160]}); only load files you trust",
            path,
        ) from None
    except (PermissionError, IsADirectoryError) as e:
        raise BddsegError(f"cannot read {what} ({e.strerror})", path) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise BddsegError(
            f"not a readable {what} (truncated or corrupt: {e.__class__.__name__})", path
        ) from None
    # garbage bytes reach torch's legacy unpickler, which raises KeyError, IndexError, ...
    except Exception as e:
        raise BddsegError(
            f"not a readable {what} (not a PyTorch file: {e.__class__.__name__})", path
        ) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate a bddseg checkpoint with ``weights_only=True`` (no code runs)."""
    p = Path(path)
    ckpt = _torch_load(p)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise BddsegError("not a bddseg checkpoint (no 'format: bddseg' and 'model' entries)", p)
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt.get("config", {}), dict | None):
        raise BddsegError("damaged bddseg checkpoint: 'model' or 'config' is not a mapping", p)
    classes = ckpt.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)):
        raise BddsegError(f"damaged bddseg checkpoint: num_classes is {classes!r}", p)
    return ckpt


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Config]:
    """Rebuild the model stored in a checkpoint, in eval mode, without fetching weights."""
    p = Path(path)
    ckpt = load_checkpoint(p)
    cfg = from_dict(ckpt.get("config") or {}, source=str(p))
    model_cfg = cfg.model.__class__(
        **{**cfg.model.__dict__, "pretrained": False, "encoder_weights": None}
    )
    num_classes = int(ckpt.get("num_classes", cfg.num_classes))
    try:
        model = build_model(model_cfg, num_classes)
    except BddsegError as e:  # e.g. an architecture this version does not know: name the file
        raise BddsegError(e.problem, e.path or p) from None
    load_weights(model, ckpt["model"], p, f"{cfg.model.arch}/{cfg.model.encoder}", num_classes)
    return model.to(device).eval(), cfg


def load_weights(
    model: nn.Module,
    state: dict,
    path: str | Path,
    name: str = "the model",
    num_classes: int | None = None,
) -> None:
    """``model.load_state_dict(state, strict=True)`` (``torch.compile`` / DDP prefixes
    dropped); weights that do not fit raise a one-line :class:`BddsegError` naming ``path``."""
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        classes = f" with {num_classes} classes" if num_classes is not None else ""
        raise BddsegError(
            f"checkpoint weights do not fit {name}{classes}: {_state_dict_problem(e)}", path
        ) from None


__all__ = [
    "ModelConfig",
    "autocast",
    "build_model",
    "cpu_bf16_native",
    "forward_padded",
    "load_checkpoint",
    "load_encoder_weights",
    "load_weights",
    "make_checkpoint",
    "model_forward",
    "model_num_classes",
    "model_from_checkpoint",
    "pad_to_multiple",
    "precision_note",
    "resolve_precision",
    "save_checkpoint",
]
