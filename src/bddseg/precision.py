"""Precision: which one ``auto`` means on this machine, and its autocast.

``auto`` is bf16 autocast on a CUDA GPU and on a CPU that computes bf16 natively (Intel AMX,
AVX-512 BF16 as on AMD Zen 4), fp32 elsewhere, where oneDNN would emulate bf16 and run slower
than fp32. It is the default of training steps only: what ``auto`` means depends on the
machine, so every reported number (training's validation, ``evaluate``) and every mask
``predict`` writes defaults to ``32-true``, the same on every machine and what the ONNX export
computes; ``auto`` and ``bf16-mixed`` are there when asked for. All decide through
:func:`resolve_precision`.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache
from pathlib import Path

import torch

from bddseg.config import PRECISIONS
from bddseg.errors import BddsegError


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


__all__ = ["autocast", "cpu_bf16_native", "precision_note", "resolve_precision"]
