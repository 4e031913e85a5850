"""``bddseg models``: the architectures and encoders bddseg supports, as a table.

Each row is an architecture/encoder pair with its parameter count, its input multiple, its
GFLOPs at 720x1280 and whether its ONNX export takes dynamic shapes; :func:`measure` adds the
CPU latency of one frame and an actual ONNX export with the parity check of
:mod:`bddseg.export`.

GFLOPs are multiply-adds (FLOPs / 2), the convention of papers, fvcore and mmseg's
``get_flops``, of the convolutions and matrix products (what
:class:`torch.utils.flop_counter.FlopCounterMode` counts) of one 720x1280 frame padded to the
model's input multiple as bddseg runs it (736x1280 for a multiple of 32). They are counted on
PyTorch's ``meta`` device (shapes only: no memory, no arithmetic), or by a real CPU forward
where a model cannot run there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bddseg.checkpoints import make_checkpoint, save_checkpoint
from bddseg.config import ModelConfig, from_dict, load_config
from bddseg.errors import BddsegError
from bddseg.model import build_model, input_multiple, model_forward
from bddseg.precision import precision_note, resolve_precision

FRAME = (720, 1280)  # a BDD100K frame (height, width)
# PyTorch vs onnxruntime, as tests/test_archs.py checks every architecture: largest |logit
# difference| over the largest |logit|, and the share of pixels whose argmax agrees
PARITY_REL_TOL = 1e-4
PARITY_MIN_AGREEMENT = 0.999

# The rows `bddseg models` lists: every architecture with ResNet-34 (dpt takes only ViT-style
# encoders), then BDD100K model-zoo-style pairs and small choices for a laptop.
MODELS: tuple[tuple[str, str], ...] = (
    ("unet", "resnet34"),
    ("unetplusplus", "resnet34"),
    ("fpn", "resnet34"),
    ("pspnet", "resnet34"),
    ("deeplabv3", "resnet34"),
    ("deeplabv3plus", "resnet34"),
    ("linknet", "resnet34"),
    ("manet", "resnet34"),
    ("pan", "resnet34"),
    ("upernet", "resnet34"),
    ("segformer", "resnet34"),
    ("dpt", "tu-vit_small_patch16_224"),
    ("upernet", "tu-convnext_tiny"),
    ("upernet", "tu-convnext_base"),
    ("deeplabv3plus", "resnet50"),
    ("deeplabv3plus", "resnet101"),
    ("segformer", "mit_b0"),
    ("segformer", "mit_b2"),
    ("unet", "resnet18"),
    ("fpn", "efficientnet-b0"),
)


# the pairs a bundled recipe trains (bddseg train --config NAME), with the BDD100K model
# zoo's val mIoU for its recipe where the zoo has one (configs/README.md); their rows
# describe the network the recipe builds (its decoder width and output stride)
RECIPES: dict[tuple[str, str], tuple[str, float | None]] = {
    ("unet", "resnet34"): ("bdd100k_unet_r34_ce", None),
    ("upernet", "tu-convnext_tiny"): (
        "bdd100k_upernet_convnext_b --encoder tu-convnext_tiny.fb_in1k",
        64.36,
    ),
    ("upernet", "tu-convnext_base"): ("bdd100k_upernet_convnext_b", 67.26),
    ("deeplabv3plus", "resnet50"): ("bdd100k_deeplabv3plus_r50", 63.96),
    ("deeplabv3plus", "resnet101"): ("bdd100k_deeplabv3plus_r50 --encoder resnet101", 64.49),
    ("segformer", "mit_b2"): ("bdd100k_segformer_mit_b2", None),
}


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``size`` rounded up to multiples of ``multiple``, as :func:`bddseg.model.model_forward`
    pads it."""
    h, w = size
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def recipe_options(arch: str, encoder: str) -> dict[str, Any]:
    """The architecture options (decoder width, output stride) of the bundled recipe that
    trains this pair (:data:`RECIPES`), so its row describes the network the recipe builds;
    ``{}`` for other pairs (smp's defaults). The auxiliary head trains only and is left out."""
    recipe = RECIPES.get((arch, encoder), (None, None))[0]
    if recipe is None:
        return {}
    model = load_config(recipe.partition(" ")[0]).model
    return {"decoder_channels": model.decoder_channels, "output_stride": model.output_stride}


def model_config(arch: str, encoder: str) -> ModelConfig:
    """The ``ModelConfig`` a row describes: the pair with :func:`recipe_options`, no weights."""
    return ModelConfig(
        arch=arch, encoder=encoder, pretrained=False, **recipe_options(arch, encoder)
    )


def _build(arch: str, encoder: str, num_classes: int, device: str) -> nn.Module:
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        return build_model(model_config(arch, encoder), num_classes).eval()


def _build_meta_or_cpu(arch: str, encoder: str, num_classes: int) -> nn.Module:
    """The model on the ``meta`` device, else (its constructor reads a tensor's value, as
    MiT's does) on the CPU; a bad pair raises build_model's one-line error."""
    try:
        return _build(arch, encoder, num_classes, "meta")
    except Exception:  # any failure: the CPU build raises the real error, if there is one
        return _build(arch, encoder, num_classes, "cpu")


def count_flops(model: nn.Module, size: tuple[int, int]) -> int:
    """FLOPs (2 per multiply-add) :class:`~torch.utils.flop_counter.FlopCounterMode` counts in
    one forward of ``model`` on a ``(1, 3, *size)`` input on the model's device (``size``
    must already be a multiple of its input multiple).

    Attention runs PyTorch's math kernel here, whose matrix products the counter sees on every
    device (it does not count the CPU's fused attention kernel).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.zeros(1, 3, *size, device=device)
    with (
        FlopCounterMode(display=False) as counter,
        sdpa_kernel(SDPBackend.MATH),
        torch.inference_mode(),
    ):
        model(x)
    return counter.get_total_flops()


def _flops_meta_or_cpu(
    model: nn.Module, size: tuple[int, int], on_cpu: Callable[[], nn.Module]
) -> tuple[int, str]:
    """``(FLOPs, where counted)``: on ``model`` moved to (or built on) the ``meta`` device,
    else by a real CPU forward of ``model`` or, if it is on ``meta``, of ``on_cpu()``."""
    on_meta = next(model.parameters()).device.type == "meta"
    try:
        return count_flops(model if on_meta else copy.deepcopy(model).to("meta"), size), "meta"
    except Exception:  # an op without a meta kernel, or one that reads a value
        return count_flops(on_cpu() if on_meta else model, size), "cpu"


def describe(
    arch: str, encoder: str, num_classes: int = 19, size: tuple[int, int] = FRAME
) -> dict[str, Any]:
    """One row of the table, without measuring anything.

    Args:
        arch, encoder: the pair, as ``--arch``/``--encoder`` of ``bddseg train`` take it.
        num_classes: 19 (``unknown: ignore``) or 20 (``unknown: class``).
        size: the image ``(height, width)``, padded up to the model's input multiple.

    Returns:
        ``arch``, ``encoder``, ``params`` (exact count of the model ``build_model`` makes
        with ``pretrained=False``), ``input_multiple``, ``input_size`` (the padded size),
        ``macs`` (multiply-adds, i.e. FLOPs / 2: the papers', fvcore's and mmseg's
        convention) and ``gflops`` (``macs`` / 1e9, rounded), ``counted_on`` (``meta`` or ``cpu``), and ``onnx``: ``dynamic`` where
        ``bddseg export --dynamic`` works, else ``static only`` (the fixed 720x1280 export).
        Every architecture's ONNX parity is checked by tests/test_archs.py;
        :func:`measure` checks this pair's.

    Raises:
        BddsegError: a pair build_model refuses (one line naming both).
    """
    from bddseg.export import NO_DYNAMIC_EXPORT  # imports onnx: not for MODELS, resolve_pairs

    model = _build_meta_or_cpu(arch, encoder, num_classes)
    multiple = input_multiple(model)
    padded = padded_size(size, multiple)
    flops, where = _flops_meta_or_cpu(
        model, padded, lambda: _build(arch, encoder, num_classes, "cpu")
    )
    return {
        "arch": arch,
        "encoder": encoder,
        "params": sum(p.numel() for p in model.parameters()),
        "input_multiple": multiple,
        "input_size": list(padded),
        "macs": flops // 2,
        "gflops": round(flops / 2 / 1e9, 2),
        "counted_on": where,
        "onnx": "static only" if arch in NO_DYNAMIC_EXPORT else "dynamic",
        "recipe": RECIPES.get((arch, encoder), (None, None))[0],
        "zoo_val_miou": RECIPES.get((arch, encoder), (None, None))[1],
    }


def _latency(model: nn.Module, size: tuple[int, int], runs: int) -> dict[str, Any]:
    """Median ms of one image of ``size`` through :func:`bddseg.model.model_forward` in fp32
    and in what ``precision: auto`` resolves to here (after one warm-up call)."""
    from bddseg.bench import time_forward

    auto = resolve_precision("auto", "cpu")
    x = torch.randn(1, 3, *size)
    out: dict[str, Any] = {"precision_auto": auto}
    for key, precision in (("fp32_ms", "32-true"), ("auto_ms", auto)):
        if key == "auto_ms" and auto == "32-true":
            out[key] = out["fp32_ms"]
            continue
        timed = time_forward(
            model_forward(model, precision, "cpu"), x, runs, 1, torch.device("cpu")
        )
        out[key] = timed["latency_ms"]
    return out


def _checkpoint(model: nn.Module, arch: str, encoder: str, num_classes: int, path: Path) -> Path:
    # the row's own model config (recipe options included), so export rebuilds this network
    cfg = from_dict({"data": {"unknown": "class" if num_classes == 20 else "ignore"}})
    cfg = dataclasses.replace(cfg, model=model_config(arch, encoder))
    save_checkpoint(path, make_checkpoint(model, cfg))
    return path


def _onnx_parity(model: nn.Module, arch: str, encoder: str, num_classes: int) -> dict[str, Any]:
    """Export ``model`` (fixed 720x1280 input) to a temporary folder and compare
    onnxruntime's logits with PyTorch's on one random 720x1280 frame (the size the fixed
    export is made for: a smaller image is padded to it, which the layers near its border
    see)."""
    from bddseg.export import FRAME_SIZE, check_parity, export_onnx

    image = np.random.default_rng(0).integers(0, 256, (*FRAME_SIZE, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="bddseg-models-") as tmp:
        ckpt = _checkpoint(model, arch, encoder, num_classes, Path(tmp) / "model.pt")
        try:
            onnx = export_onnx(ckpt, Path(tmp) / "model.onnx", size=FRAME_SIZE, check=False).path
        except BddsegError as e:
            return {"parity": "export failed", "onnx_error": e.problem}
        result = check_parity(ckpt, onnx, [image])
    rel = result["max_abs_diff"] / max(result["max_abs_logit"], 1e-12)
    ok = rel <= PARITY_REL_TOL and result["argmax_agreement"] >= PARITY_MIN_AGREEMENT
    return {
        "parity": "pass" if ok else "FAIL",
        "max_rel_diff": float(f"{rel:.3g}"),
        "argmax_agreement": round(result["argmax_agreement"], 6),
    }


def measure(
    arch: str,
    encoder: str,
    num_classes: int = 19,
    size: tuple[int, int] = FRAME,
    runs: int = 3,
) -> dict[str, Any]:
    """Measure one pair on the CPU (random weights, seed 0).

    Returns:
        ``threads`` (torch's intra-op threads), ``precision_auto`` (what ``auto`` resolves to
        here), ``fp32_ms`` and ``auto_ms`` (median latency of one ``size`` image through
        :func:`bddseg.model.model_forward`, padding included, over ``runs`` calls after one
        warm-up), and the ONNX check: the fixed 720x1280 export of
        :func:`bddseg.export.export_onnx` compared by :func:`bddseg.export.check_parity` on
        one random 720x1280 frame (whatever ``size``): ``parity`` (``pass`` when the largest logit difference
        is within 1e-4 of the largest logit and 99.9% of argmaxes agree, else ``FAIL``),
        ``max_rel_diff``, ``argmax_agreement``; or ``parity: export failed`` and
        ``onnx_error``.
    """
    torch.manual_seed(0)
    model = _build(arch, encoder, num_classes, "cpu")
    row: dict[str, Any] = {"threads": torch.get_num_threads()}
    row.update(_latency(model, size, runs))
    row.update(_onnx_parity(model, arch, encoder, num_classes))
    return row


def resolve_pairs(
    archs: Sequence[str] | None = None, encoders: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """The rows to list: :data:`MODELS`; only those of ``archs`` (or ``encoders``) when one
    is given; the pairs ``zip(archs, encoders)`` when both are (one value goes with all of
    the other's)."""
    archs, encoders = list(archs or []), list(encoders or [])
    if archs and encoders:
        if len(archs) == 1 or len(encoders) == 1:
            n = max(len(archs), len(encoders))
            archs, encoders = archs * (n // len(archs)), encoders * (n // len(encoders))
        if len(archs) != len(encoders):
            raise BddsegError(
                f"{len(archs)} --arch and {len(encoders)} --encoder: give one of each per "
                "pair, or one of either for all"
            )
        return list(dict.fromkeys(zip(archs, encoders, strict=True)))
    pairs = [(a, e) for a, e in MODELS if (not archs or a in archs)]
    pairs = [(a, e) for a, e in pairs if (not encoders or e in encoders)]
    if not pairs:
        raise BddsegError(
            f"no listed model has encoder {', '.join(encoders)}: give --arch too to list a pair"
        )
    return pairs


def model_table(
    pairs: Sequence[tuple[str, str]] | None = None,
    num_classes: int = 19,
    *,
    measured: bool = False,
    size: tuple[int, int] = FRAME,
    runs: int = 3,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """:func:`describe` each pair (default :data:`MODELS`), and :func:`measure` it when
    ``measured``; ``echo`` gets one progress line per measured row."""
    rows = []
    for arch, encoder in pairs or MODELS:
        row = describe(arch, encoder, num_classes, size)
        if measured:
            row.update(measure(arch, encoder, num_classes, size, runs))
            if echo:
                echo(f"measured {arch}/{encoder}: {row['fp32_ms']} ms fp32, {row['parity']}")
        rows.append(row)
    return {
        "size": list(size),
        "num_classes": num_classes,
        "torch": torch.__version__,
        "measured": measured,
        "threads": torch.get_num_threads() if measured else None,
        "precision_auto": precision_note("auto", "cpu") if measured else None,
        "smp_encoders": smp_encoder_count(),
        "rows": rows,
    }


def smp_encoder_count() -> int:
    """How many encoders segmentation_models_pytorch itself offers (timm's come on top)."""
    import segmentation_models_pytorch as smp

    return len(smp.encoders.get_encoder_names())


def _cells(row: dict[str, Any], measured: bool) -> list[str]:
    cells = [
        row["arch"],
        row["encoder"],
        f"{row['params'] / 1e6:.1f}",
        str(row["input_multiple"]),
        f"{row['gflops']:.1f}",
        row["onnx"],
        (row.get("recipe") or "")
        + (f" (zoo {row['zoo_val_miou']:.1f})" if row.get("zoo_val_miou") else ""),
    ]
    if measured:
        rel = row.get("max_rel_diff")
        parity = row["parity"] if rel is None else f"{row['parity']} ({rel:.1e})"
        cells += [f"{row['fp32_ms']:.0f}", f"{row['auto_ms']:.0f}", parity]
    return cells


def markdown_table(result: dict[str, Any]) -> str:
    """The result of :func:`model_table` as a markdown table, with a header and a footer."""
    h, w = result["size"]
    measured = result["measured"]
    head = ["arch", "encoder", "params M", "multiple", f"GFLOPs {h}x{w}", "ONNX export"]
    head += ["recipe (zoo val mIoU)"]
    if measured:
        head += ["CPU ms fp32", "CPU ms auto", "ONNX parity (rel diff)"]
    lines = [
        f"{result['num_classes']} classes; GFLOPs: multiply-adds (FLOPs/2, as papers, fvcore "
        f"and mmseg count) of one {h}x{w} image padded to the model's input multiple; ONNX "
        "export: dynamic shapes or a fixed 720x1280 input (every architecture's parity is "
        "checked by tests/test_archs.py)",
    ]
    if measured:
        lines.append(
            f"CPU: median of one image, torch {result['torch']}, {result['threads']} thread(s); "
            f"auto = {result['precision_auto']}"
        )
    rule = "|---|---|---:|---:|---:|---|---|" + ("---:|---:|---|" if measured else "")
    lines += ["", "| " + " | ".join(head) + " |", rule]
    lines += ["| " + " | ".join(_cells(r, measured)) + " |" for r in result["rows"]]
    lines += [
        "",
        f"Any of smp's {result['smp_encoders']} encoders and any timm model with "
        "features_only, as tu-NAME, work too: bddseg train --arch ARCH --encoder ENCODER "
        "(bddseg models --arch ARCH --encoder ENCODER describes the pair).",
    ]
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    """The result of :func:`model_table` as JSON text."""
    return json.dumps(result, indent=2) + "\n"


__all__ = [
    "FRAME",
    "MODELS",
    "count_flops",
    "describe",
    "markdown_table",
    "measure",
    "model_table",
    "padded_size",
    "resolve_pairs",
    "smp_encoder_count",
    "to_json",
]
