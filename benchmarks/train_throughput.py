"""Training-step throughput (images/s): our Fabric loop in several modes, a plain PyTorch loop,
and the original project's fastai ``unet_learner(resnet34)`` model, in one run.

    python benchmarks/train_throughput.py --device cuda                      # 512x1024, batch 8
    python benchmarks/train_throughput.py --device cpu --size 128x256 --batch 2 --steps 3

Every row times the same step on random data: forward, cross-entropy, backward, AdamW step
(lr set from the schedule each step, as in the loop). ``fabric-*`` rows use the loop's own
helpers (``set_torch_flags``, ``setup_fabric``, ``build_optimizer``, ``build_loss``);
``plain-*`` is smp's U-Net in a bare PyTorch loop; ``fastai-*`` is fastai's ``DynamicUnet``
on a torchvision ResNet34 (what ``unet_learner(resnet34)`` builds; random weights, only its
cost matters) in the same bare loop. fastai is optional: without it those rows say so.
Ratios are against ``fastai-fp32`` (or ``plain-fp32`` without fastai). bf16 and compile rows
are skipped on CPU unless asked for.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bddseg.bench import device_name
from bddseg.config import LossConfig, ModelConfig, from_dict
from bddseg.losses import build_loss
from bddseg.model import build_model
from bddseg.optim import build_optimizer
from bddseg.schedule import lr_at, momentum_at, set_optimizer_hparams
from bddseg.train import set_torch_flags, setup_fabric

NUM_CLASSES = 20


def fastai_unet(height: int, width: int) -> nn.Module:
    """fastai's ``unet_learner(resnet34)`` model: DynamicUnet over a ResNet34 body."""
    import torchvision
    from fastai.vision.models.unet import DynamicUnet

    body = nn.Sequential(*list(torchvision.models.resnet34().children())[:-2])
    return DynamicUnet(body, n_out=NUM_CLASSES, img_size=(height, width))


def batch(device: str, n: int, h: int, w: int, channels_last: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, h, w, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n, h, w), generator=g)
    x, y = x.to(device), y.to(device)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def fabric_step(
    device: str, precision: str, channels_last: bool, compile: bool, n, h, w
) -> Callable:
    """One step of our loop on Fabric, built from the loop's own pieces."""
    cfg = from_dict(
        {
            "run": {
                "accelerator": device,
                "devices": 1,
                "precision": precision,
                "channels_last": channels_last,
            },
            "optim": {"max_steps": 1000},
        }
    )
    set_torch_flags(cfg.run)  # as train() does: cuDNN benchmarking on a GPU
    fabric = setup_fabric(cfg)
    model = build_model(ModelConfig(pretrained=False), NUM_CLASSES)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    if compile:
        model = torch.compile(model)
    model, optimizer = fabric.setup(model, optimizer)
    loss_fn = build_loss(LossConfig(name="ce"), NUM_CLASSES).to(fabric.device)
    x, y = batch(str(fabric.device), n, h, w, channels_last)
    state = {"step": 0}

    def step():
        s = state["step"]
        set_optimizer_hparams(optimizer, lr_at(s, 1000, cfg.optim), momentum_at(s, 1000, cfg.optim))
        loss = loss_fn(model(x), y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1

    return step


def plain_step(model: nn.Module, device: str, bf16: bool, channels_last: bool, n, h, w) -> Callable:
    """A bare PyTorch step (no Fabric, torch's own cross-entropy)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = batch(device, n, h, w, channels_last)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step: Callable, device: str, warmup: int, steps: int, n: int) -> float:
    """Images per second over ``steps`` steps after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return n * steps / (time.perf_counter() - t)


def rows(args) -> dict[str, Callable[[], Callable]]:
    d, n, (h, w) = args.device, args.batch, args.size
    gpu = d == "cuda"
    table = {
        "fabric-fp32": lambda: fabric_step(d, "32-true", False, False, n, h, w),
        "fabric-channels_last": lambda: fabric_step(d, "32-true", True, False, n, h, w),
    }
    if gpu or args.all:
        table["fabric-bf16"] = lambda: fabric_step(d, "bf16-mixed", True, False, n, h, w)
        table["fabric-bf16-compile"] = lambda: fabric_step(d, "bf16-mixed", True, True, n, h, w)
    smp = lambda: build_model(ModelConfig(pretrained=False), NUM_CLASSES)  # noqa: E731
    table["plain-fp32"] = lambda: plain_step(smp(), d, False, False, n, h, w)
    if gpu or args.all:
        table["plain-bf16"] = lambda: plain_step(smp(), d, True, True, n, h, w)
    table["fastai-fp32"] = lambda: plain_step(fastai_unet(h, w), d, False, False, n, h, w)
    if gpu or args.all:
        table["fastai-bf16"] = lambda: plain_step(fastai_unet(h, w), d, True, True, n, h, w)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="512x1024", help="HxW of the training crops")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1, help="rounds over all rows; the best is kept")
    p.add_argument("--all", action="store_true", help="also bf16 and compile rows on CPU")
    p.add_argument("--only", help="comma list of row names")
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    machine = f"{device_name(torch.device(args.device))}, {torch.get_num_threads()} threads"
    print(
        f"{args.size[0]}x{args.size[1]}, batch {args.batch}, {args.steps} steps after {args.warmup}; {machine}; torch {torch.__version__}"
    )
    results: dict[str, float | str] = {}
    steps: dict[str, Callable] = {}
    for name, make in rows(args).items():
        if args.only and name not in args.only.split(","):
            continue
        try:
            steps[name] = make()
        except ImportError as e:
            results[name] = f"skipped: {e.name or e} not installed (pip install fastai)"
            print(f"{name:<22} {results[name]}", flush=True)
    # rounds over all rows, best round kept: a load spike on a shared machine hits one round
    # of one row, not a whole row
    for r in range(args.repeat):
        for name, step in steps.items():
            ips = timed(step, args.device, args.warmup if r == 0 else 1, args.steps, args.batch)
            results[name] = max(ips, results.get(name, 0.0))
            print(f"round {r + 1}: {name:<22} {ips:8.2f} images/s", flush=True)
    print()
    for name, v in results.items():
        print(f"{name:<22} {v:8.2f} images/s" if isinstance(v, float) else f"{name:<22} {v}")
    base = "fastai-fp32" if isinstance(results.get("fastai-fp32"), float) else "plain-fp32"
    print(f"\nratios against {base}:")
    for name, v in results.items():
        if isinstance(v, float) and isinstance(results.get(base), float):
            print(f"{name:<22} {v / results[base]:6.2f}x")
    if args.out:
        payload = {
            "machine": machine,
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "images_per_s": results,
        }
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
