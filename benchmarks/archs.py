"""The architectures of the bundled recipes side by side: training images/s (the recipe's
own step: its optimizer with layer decay, its auxiliary head) and inference images/s at
720x1280, against U-Net/ResNet34 in the same run.

    python benchmarks/archs.py --device cuda --out archs.json            # 512x1024, batch 8
    python benchmarks/archs.py --device cpu --size 128x256 --batch 2 --steps 2 --warmup 1 \\
        --infer-batch 1 --infer-steps 2                                  # a CPU smoke run

Every model is built from its recipe's ``model`` section with random weights (only its cost
matters) and runs under the recipe's ``run.precision`` (``auto``: bf16 on a GPU and on a CPU
with native bf16) and ``channels_last``. A training step is forward, the recipe's loss with
its auxiliary head, backward and the recipe's optimizer step, on a random batch. Inference is
:func:`bddseg.model.model_forward` (padding to the input multiple, autocast, no autograd) on
``--infer-batch`` frames. On CUDA the peak memory of training is recorded too.
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from bddseg.bench import device_name, time_forward
from bddseg.config import load_config, override
from bddseg.losses import build_loss
from bddseg.model import build_model, model_forward
from bddseg.optim import build_optimizer
from bddseg.precision import resolve_precision
from bddseg.schedule import lr_at, momentum_at, set_optimizer_hparams
from bddseg.train import loss_with_aux, set_torch_flags, setup_fabric

RECIPES = (
    "bdd100k_unet_r34_ce",
    "bdd100k_upernet_convnext_b",
    "bdd100k_deeplabv3plus_r50",
    "bdd100k_segformer_mit_b2",
)


def _hw(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def train_rate(recipe: str, args) -> dict:
    """Training images/s of ``recipe``'s step on random ``args.batch`` x ``args.size`` crops."""
    cfg = override(
        load_config(recipe),
        **{
            "model.pretrained": False,
            "run.accelerator": args.device,
            "run.devices": 1,
            "optim.batch_size": args.batch,
        },
    )
    set_torch_flags(cfg.run)
    fabric = setup_fabric(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.num_classes)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    model, optimizer = fabric.setup(model, optimizer)
    loss_fn = build_loss(cfg.loss, cfg.num_classes).to(fabric.device)
    h, w = args.size
    x = torch.randn(args.batch, 3, h, w, device=fabric.device)
    if cfg.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.num_classes, (args.batch, h, w), device=fabric.device)
    model.train()
    total = cfg.optim.max_steps or 1000

    steps = itertools.count()

    def step(x: torch.Tensor) -> None:
        i = next(steps)
        set_optimizer_hparams(
            optimizer, lr_at(i, total, cfg.optim), momentum_at(i, total, cfg.optim)
        )
        loss = loss_with_aux(loss_fn, model(x), y, cfg.model.aux_weight)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cuda = fabric.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timed = time_forward(step, x, args.steps, args.warmup, fabric.device)
    out = {
        "train_images_per_s": round(timed["images_per_s"], 2),
        "precision": resolve_precision(cfg.run.precision, fabric.device),
        "arch": cfg.model.arch,
        "encoder": cfg.model.encoder,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }
    if cuda:
        out["train_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return out


def infer_rate(recipe: str, args) -> dict:
    """Inference images/s at ``args.infer_size`` in batches of ``args.infer_batch``."""
    cfg = load_config(recipe)
    device = torch.device(args.device)
    model_cfg = override(cfg, **{"model.pretrained": False}).model
    model = build_model(model_cfg, cfg.num_classes).to(device).eval()
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = resolve_precision(cfg.run.precision, device)
    forward = model_forward(model, precision, device, cfg.run.channels_last)
    x = torch.randn(args.infer_batch, 3, *args.infer_size, device=device)
    timed = time_forward(forward, x, args.infer_steps, args.warmup, device)
    return {"infer_images_per_s": timed["images_per_s"], "infer_latency_ms": timed["latency_ms"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--size", type=_hw, default=(512, 1024), help="HxW of the training crops")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--infer-size", type=_hw, default=(720, 1280))
    p.add_argument("--infer-batch", type=int, default=8)
    p.add_argument("--infer-steps", type=int, default=20)
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args()
    machine = f"{device_name(torch.device(args.device))}, {torch.get_num_threads()} threads"
    print(
        f"train {args.size[0]}x{args.size[1]} batch {args.batch}, infer "
        f"{args.infer_size[0]}x{args.infer_size[1]} batch {args.infer_batch}; {machine}; "
        f"torch {torch.__version__}",
        flush=True,
    )
    results = {}
    for recipe in args.recipes.split(","):
        row = train_rate(recipe, args) | infer_rate(recipe, args)
        results[recipe] = row
        if args.device == "cuda":
            torch.cuda.empty_cache()
        print(f"{recipe:<28} {json.dumps(row)}", flush=True)
    base = results.get("bdd100k_unet_r34_ce")
    print(
        "\n| recipe | arch / encoder | params M | precision | train img/s | infer img/s |"
        + (" vs U-Net/R34 train, infer |" if base else "")
    )
    print("|---|---|---:|---|---:|---:|" + ("---|" if base else ""))
    for recipe, r in results.items():
        ratio = ""
        if base:
            t = r["train_images_per_s"] / base["train_images_per_s"]
            i = r["infer_images_per_s"] / base["infer_images_per_s"]
            ratio = f" {t:.2f}x, {i:.2f}x |"
        print(
            f"| {recipe} | {r['arch']} / {r['encoder']} | {r['params_m']} | {r['precision']} | "
            f"{r['train_images_per_s']} | {r['infer_images_per_s']} |{ratio}"
        )
    if args.out:
        payload = {
            "machine": machine,
            "torch": torch.__version__,
            "args": vars(args) | {"size": list(args.size), "infer_size": list(args.infer_size)},
            "results": results,
        }
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
