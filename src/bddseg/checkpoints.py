"""Checkpoints: the format, saving, and loading without running code.

A checkpoint is a plain dict, loadable with ``torch.load(..., weights_only=True)``::

    {"format": "bddseg", "version": 1,
     "model": state_dict, "config": to_dict(cfg), "num_classes": K | K + 1,
     "classes": Classes.to_dict(),  # the run's K classes (names, colours); absent before
                                    # bddseg 0.9: the 19 BDD100K classes (checkpoint_classes)
     "step": int, "epoch": int, "best_metric": float | None,
     "val_metrics": {"val_loss", "miou", "pixel_accuracy", "precision"} | None,
     "image_size": [H, W] | None,  # of the val images (the fixed ONNX export's default)
     # only in training checkpoints (last.pt):
     "optimizer": ..., "scheduler": ..., "rng": ...}

Rebuilding the model from one is :func:`bddseg.model.model_from_checkpoint`.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bddseg.classes import BDD100K, Classes
from bddseg.classes import from_dict as classes_from_dict
from bddseg.config import Config, to_dict
from bddseg.errors import BddsegError
from bddseg.files import atomic_path

CHECKPOINT_FORMAT = "bddseg"
CHECKPOINT_VERSION = 1


def make_checkpoint(
    model: nn.Module | dict,
    cfg: Config,
    *,
    step: int = 0,
    epoch: int = 0,
    best_metric: float | None = None,
    classes: Classes = BDD100K,
    **extra: Any,
) -> dict[str, Any]:
    """A checkpoint dict in the format above: ``model`` (a module or its state dict), the
    frozen ``cfg``, the run's ``classes`` and the output count they imply with
    ``cfg.data.unknown``; ``extra`` adds entries (``val_metrics``, and for training
    checkpoints ``optimizer``, ``scheduler``, ...)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": state,
        "config": to_dict(cfg),
        "num_classes": len(classes.model_names(cfg.data.unknown)),
        "classes": classes.to_dict(),
        "step": step,
        "epoch": epoch,
        "best_metric": best_metric,
        **extra,
    }


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write ``ckpt`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def safe_torch_load(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain data only, no
    code runs. Every failure (missing, unreadable, truncated, not a PyTorch file, holding
    other objects) is one :class:`BddsegError` naming ``path`` and ``what`` it should be."""
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
    ckpt = safe_torch_load(p)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "model" not in ckpt:
        raise BddsegError("not a bddseg checkpoint (no 'format: bddseg' and 'model' entries)", p)
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt.get("config", {}), dict | None):
        raise BddsegError("damaged bddseg checkpoint: 'model' or 'config' is not a mapping", p)
    classes = ckpt.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)):
        raise BddsegError(f"damaged bddseg checkpoint: num_classes is {classes!r}", p)
    if "classes" in ckpt and not isinstance(ckpt["classes"], dict):
        raise BddsegError("damaged bddseg checkpoint: 'classes' is not a mapping", p)
    return ckpt


def checkpoint_classes(ckpt: dict[str, Any], source: str | Path | None = None) -> Classes:
    """The K classes a checkpoint's model was trained on (without ``unknown``): its
    ``classes`` record, or BDD100K's 19 for a checkpoint written before classes were
    recorded. The model's outputs are these plus ``unknown`` when ``num_classes`` is K + 1."""
    record = ckpt.get("classes")
    classes = BDD100K if record is None else classes_from_dict(record, source)
    n = ckpt.get("num_classes")
    if n is not None and n not in (classes.num, classes.num + 1):
        raise BddsegError(
            f"damaged bddseg checkpoint: {n} outputs for {classes.num} classes", source
        )
    return classes


def checkpoint_output_names(
    ckpt: dict[str, Any], source: str | Path | None = None
) -> tuple[str, ...]:
    """The names of the model's output channels: the classes, plus ``unknown`` when the
    model has K + 1 outputs."""
    classes = checkpoint_classes(ckpt, source)
    unknown = "class" if ckpt.get("num_classes") == classes.num + 1 else "ignore"
    return classes.model_names(unknown)


__all__ = [
    "checkpoint_classes",
    "checkpoint_output_names",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "make_checkpoint",
    "safe_torch_load",
    "save_checkpoint",
]
