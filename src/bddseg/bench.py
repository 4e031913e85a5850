"""Inference speed of the U-Net/ResNet34 at 720x1280: PyTorch fp32 and its variants, and the
ONNX export on onnxruntime and OpenVINO, in fp32 and static INT8.

What is timed: the network forward on a random ImageNet-normalised batch ``(B, 3, 720, 1280)``,
padded to 736x1280 and cropped back (as :func:`bddseg.model.forward_padded` does), with a
device synchronize after each call. Not timed: JPEG decoding, normalisation, argmax, writing.
Each variant runs ``warmup`` untimed calls (the first one's time is reported: it includes
``torch.compile``'s compilation), then ``iters`` timed calls; latency is the median per batch,
images/s is images over the summed call times, and CPU s/image is this process's CPU time
(all its threads) per image, a steadier figure on a shared CPU.

The INT8 rows time a static INT8 copy of the export (:func:`bddseg.quantize.quantize_arrays`)
calibrated on a few random frames: speed only. Its accuracy comes from
``bddseg export --quantize int8 --calibration ROOT`` (real photos), which writes the file
``predict --onnx`` runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bddseg.errors import BddsegError, first_line

VARIANTS = (
    "fp32",
    "channels_last",
    "bf16",
    "compile",
    "onnxruntime",
    "cl+bf16+compile",
    "int8",
    "openvino",
    "openvino-int8",
)
# The ONNX rows: variant -> (runtime, INT8?)
ONNX_VARIANTS = {
    "onnxruntime": ("onnxruntime", False),
    "int8": ("onnxruntime", True),
    "openvino": ("openvino", False),
    "openvino-int8": ("openvino", True),
}
CALIBRATION_FRAMES = 4  # random frames that calibrate the INT8 rows (speed only)


def default_variants(cuda: bool) -> list[str]:
    """All of :data:`VARIANTS` on CUDA but the CPU-only INT8 and OpenVINO rows; on a CPU all
    but ``cl+bf16+compile``, and the OpenVINO rows only where ``openvino`` is installed."""
    if cuda:
        return list(VARIANTS[:6])
    openvino = importlib.util.find_spec("openvino") is not None
    return [v for v in VARIANTS if v != "cl+bf16+compile" and (openvino or "openvino" not in v)]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; else what :mod:`platform` says)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {os.cpu_count()} logical cores"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(
    variant: str,
    model: torch.nn.Module,
    device: torch.device,
    onnx_path: Callable[[bool], Path],
    threads: int | None,
):
    """``variant`` -> a function of a normalised batch returning logits (timed as a whole);
    ``onnx_path(int8)`` gives the fp32 or INT8 ONNX file."""
    from bddseg.model import model_forward

    cl = variant in ("channels_last", "cl+bf16+compile")
    bf16 = variant in ("bf16", "cl+bf16+compile")
    if variant in ONNX_VARIANTS:
        from bddseg.onnx_runtime import OnnxForward

        runtime, int8 = ONNX_VARIANTS[variant]
        return OnnxForward(onnx_path(int8), device=str(device), threads=threads, runtime=runtime)
    net = copy.deepcopy(model)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    if "compile" in variant:
        net = torch.compile(net)

    # the forward predict and evaluate run (padding, autocast), with this variant's model
    return model_forward(net, "bf16-mixed" if bf16 else "32-true", device, channels_last=cl)


def time_forward(
    fn: Callable, x: torch.Tensor, iters: int, warmup: int, device: torch.device
) -> dict:
    """Time ``fn(x)``: a first call and ``warmup - 1`` more, untimed, then ``iters`` timed
    calls (median latency, throughput, CPU seconds), synchronising ``device`` after each."""
    start = time.perf_counter()
    fn(x)
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn(x)
        _sync(device)
    times = []
    cpu = time.process_time()
    for _ in range(iters):
        start = time.perf_counter()
        fn(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return {
        "first_call_s": round(first, 3),
        "latency_ms": round(statistics.median(times) * 1000, 1),
        "images_per_s": round(len(x) * len(times) / sum(times), 3),
        # CPU seconds this process used per image: on a shared, oversubscribed machine this
        # moves less than wall time does (onnxruntime's own threads count too)
        "cpu_s_per_image": round(cpu / (len(x) * len(times)), 3),
    }


def _measure(model, dev, variants, batch_sizes, shape, iters, warmup, threads, onnx_path, echo):
    rows: list[dict[str, Any]] = []
    for variant in variants:
        try:
            fn = _runner(variant, model, dev, onnx_path, threads)
        except Exception as e:  # e.g. no CUDA provider in this onnxruntime
            rows += [
                {"variant": variant, "batch": b, "error": first_line(e, 120)} for b in batch_sizes
            ]
            continue
        for b in batch_sizes:
            row: dict[str, Any] = {"variant": variant, "batch": b}
            try:
                x = torch.randn(b, 3, *shape, device=dev)
                row.update(time_forward(fn, x, iters, warmup, dev))
            except Exception as e:  # e.g. out of memory, or a compiler missing for compile
                row["error"] = first_line(e, 120)
            rows.append(row)
            echo(f"  {variant:>16} batch {b}: {row.get('error') or row['images_per_s']} images/s")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    base = {
        r["batch"]: r["images_per_s"] for r in rows if r["variant"] == "fp32" and "error" not in r
    }
    for r in rows:
        if "error" not in r and r["batch"] in base:
            r["vs_fp32"] = round(r["images_per_s"] / base[r["batch"]], 2)
    return rows


def run_inference_bench(
    device: str = "cpu",
    batch_sizes: list[int] | None = None,
    out: str | Path | None = None,
    *,
    variants: list[str] | None = None,
    iters: int | None = None,
    warmup: int | None = None,
    height: int = 720,
    width: int = 1280,
    checkpoint: str | Path | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every variant at every batch size; print a markdown table; optionally write JSON.

    Defaults are short on CPU (batch 1, 3 timed calls after 1 warm-up,
    :func:`default_variants`) and fuller on CUDA (batches 1 and 8, 20 timed calls after 5
    warm-ups). The model is a random U-Net/ResNet34 with 20 classes unless
    ``checkpoint`` is given. A variant that fails is reported in its row (``error``) and the
    others still run. Ratios are images/s over PyTorch fp32's at the same batch size.
    ``threads`` sets torch's and onnxruntime's intra-op threads for the run (on a shared,
    oversubscribed CPU one thread can beat two: waiting OpenMP threads spin).
    """
    from bddseg.checkpoints import save_checkpoint
    from bddseg.config import ModelConfig
    from bddseg.export import export_onnx
    from bddseg.files import atomic_write_text
    from bddseg.model import build_model, model_from_checkpoint
    from bddseg.precision import precision_note

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise BddsegError("--device cuda but torch sees no CUDA device")
    batch_sizes = batch_sizes or ([1, 8] if cuda else [1])
    variants = variants or default_variants(cuda)
    if "fp32" not in variants or any(v not in VARIANTS for v in variants):
        raise BddsegError(
            f"variants must include fp32 and come from {', '.join(VARIANTS)}; got {variants}"
        )
    iters = iters or (20 if cuda else 3)
    warmup = max(1, warmup or (5 if cuda else 1))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if checkpoint:
        model, _ = model_from_checkpoint(checkpoint, dev)
    else:
        torch.manual_seed(0)
        model = build_model(ModelConfig(pretrained=False), 20).to(dev).eval()
    with tempfile.TemporaryDirectory(prefix="bddseg-bench-") as tmp:

        @functools.cache
        def onnx_path(int8: bool = False) -> Path:  # made on first use, dynamic batch/H/W
            if int8:
                from bddseg.onnx_runtime import OnnxForward
                from bddseg.quantize import quantize_arrays

                pad = OnnxForward(onnx_path(), threads=1).padded  # what the model gets
                g = torch.Generator().manual_seed(0)
                frames = [pad(torch.randn(1, 3, height, width, generator=g))
                          for _ in range(CALIBRATION_FRAMES)]  # fmt: skip
                quantize_arrays(onnx_path(), Path(tmp) / "bench.int8.onnx", frames)
                return Path(tmp) / "bench.int8.onnx"
            ckpt = checkpoint or Path(tmp) / "bench.pt"
            if checkpoint is None:
                save_checkpoint(ckpt, _random_checkpoint(model))
            return export_onnx(ckpt, Path(tmp) / "bench.onnx", dynamic=True, check=False).path

        try:
            rows = _measure(model, dev, variants, batch_sizes, (height, width), iters, warmup,
                            threads, onnx_path, echo)  # fmt: skip
        finally:
            torch.set_num_threads(old_threads)
    result = {
        "device": device_name(dev),
        "torch": torch.__version__,
        "threads": threads or old_threads,
        "size": [height, width],
        "iters": iters,
        "warmup": warmup,
        # what train, evaluate and predict run at by default here: the bf16 or the fp32 row
        "precision_auto": precision_note("auto", dev),
        "rows": rows,
    }
    echo(markdown_table(result))
    if out:
        atomic_write_text(Path(out), json.dumps(result, indent=2) + "\n")
        echo(f"wrote {out}")
    return result


def _random_checkpoint(model: torch.nn.Module) -> dict[str, Any]:
    from bddseg.checkpoints import make_checkpoint
    from bddseg.config import Config

    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return make_checkpoint(state, Config())  # the default config: 20 classes, as built above


def markdown_table(result: dict[str, Any]) -> str:
    """The rows of :func:`run_inference_bench` as a markdown table, with the machine."""
    h, w = result["size"]
    lines = [
        f"{result['device']}; {result['threads']} threads; torch {result['torch']}; {h}x{w}; "
        f"{result['iters']} timed calls after {result['warmup']} warm-up",
        "",
        f"`precision: auto` (training's default; evaluate and predict on request) here: {result.get('precision_auto', '?')}",
        "",
        "| variant | batch | images/s | latency ms (median) | vs fp32 | first call s "
        "| CPU s/image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['batch']} | failed: {r['error']} | | | | |")
        else:
            ratio = f"{r['vs_fp32']:.2f}x" if "vs_fp32" in r else "-"
            lines.append(
                f"| {r['variant']} | {r['batch']} | {r['images_per_s']:.2f} | {r['latency_ms']:.1f} "
                f"| {ratio} | {r['first_call_s']:.1f} | {r['cpu_s_per_image']:.2f} |"
            )
    return "\n".join(lines)


__all__ = [
    "ONNX_VARIANTS",
    "VARIANTS",
    "default_variants",
    "cpu_model",
    "device_name",
    "markdown_table",
    "run_inference_bench",
    "time_forward",
]
