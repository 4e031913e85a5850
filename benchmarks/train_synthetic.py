"""The demo's training on the built-in dataset: val mIoU against wall time, into RESULTS.md.

    python benchmarks/train_synthetic.py                     # both experiments, as the demo
    python benchmarks/train_synthetic.py --loss ce --out /tmp/ts

Builds the demo's synthetic dataset (``bddseg.demo.FULL`` sizes) unless it is already in
``OUT/data``, trains each experiment with :func:`bddseg.train.demo_config`, and reads the
val rows of each run's ``log.csv``. Also records process CPU time and the load average, since
the wall time on a shared machine says little alone: on 2 free cores wall ~ CPU time / 1.8.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import resource
import shutil
import time
from pathlib import Path

from bddseg.demo import FULL, demo_config
from bddseg.synth import make_dataset
from bddseg.train import train

SECTION = "## Training on the built-in dataset (benchmarks/train_synthetic.py)"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def read_curve(run_dir: Path) -> list[tuple[float, int, float, float]]:
    """``(time_s, step, val_miou, val_pixel_accuracy)`` for every validation row of log.csv."""
    with open(run_dir / "log.csv", newline="") as f:
        return [
            (
                float(r["time_s"]),
                int(r["step"]),
                float(r["val_miou"]),
                float(r["val_pixel_accuracy"]),
            )
            for r in csv.DictReader(f)
            if r["val_miou"]
        ]


def from_run_dir(run_dir: Path) -> dict:
    """A finished run (e.g. from ``bddseg demo``), recorded without retraining."""
    from bddseg.checkpoints import load_checkpoint
    from bddseg.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    curve = read_curve(run_dir)
    best = load_checkpoint(run_dir / "best.pt").get("best_metric")
    result = type("R", (), {"best_miou": best})()
    return {"loss": cfg.loss.name, "cfg": cfg, "wall": curve[-1][0], "cpu": float("nan"),
            "load": (float("nan"), float("nan")), "result": result, "curve": curve}  # fmt: skip


def run(loss: str, root: Path, out: Path) -> dict:
    cfg = demo_config(root, out / "runs" / loss, loss=loss)
    shutil.rmtree(out / "runs" / loss, ignore_errors=True)  # a fresh run each time
    load0, cpu0, t0 = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    result = train(cfg)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    curve = read_curve(out / "runs" / loss)
    return {
        "loss": loss,
        "cfg": cfg,
        "wall": wall,
        "cpu": cpu,
        "load": (load0, os.getloadavg()[0]),
        "result": result,
        "curve": curve,
    }


def markdown(runs: list[dict], sizes: dict) -> str:
    cfg = runs[0]["cfg"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {_threads()}"
    lines = [
        SECTION,
        "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M')} on {machine}. Dataset: {sizes['train']} train / "
        f"{sizes['val']} val synthetic images at {sizes['height']}x{sizes['width']} "
        f"(`bddseg.synth`, seed 0). Recipe: `configs/demo_ce.yaml` / `configs/demo_focal.yaml` "
        f"(U-Net/ResNet34, random init, {cfg.optim.name} {cfg.optim.schedule} lr {cfg.optim.lr:g}, "
        f"batch {cfg.optim.batch_size}, {cfg.optim.max_steps or cfg.optim.epochs} "
        f"{'steps' if cfg.optim.max_steps else 'epochs'}, train/val at base size "
        f"{cfg.data.base_size}, crop {cfg.data.crop}). mIoU: official definition (mean over the "
        "classes present in the val truth), computed by the training loop's validation.",
        "",
        "| experiment | final val mIoU | pixel acc | best mIoU | wall s | CPU s | load avg (start, end) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        t, step, miou, pacc = r["curve"][-1]
        lines.append(
            f"| {r['loss']} | {miou:.3f} | {pacc:.3f} | {r['result'].best_miou:.3f} | "
            f"{r['wall']:.0f} | {r['cpu']:.0f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        )
    lines += [
        "",
        "Val mIoU against training wall time (time_s in log.csv, validation included):",
        "",
    ]
    lines += [
        "| experiment | step | time s | val mIoU | pixel acc |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        for t, step, miou, pacc in r["curve"]:
            lines.append(f"| {r['loss']} | {step} | {t:.0f} | {miou:.3f} | {pacc:.3f} |")
    return "\n".join(lines) + "\n"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def write_section(path: Path, text: str) -> None:
    """Replace this script's section of RESULTS.md (or append it); others' sections stay."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    new = (
        pattern.sub(lambda m: text + "\n", old)
        if pattern.search(old)
        else old.rstrip("\n") + "\n\n" + text
    )
    path.write_text(new, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/bddseg_train_synthetic")
    p.add_argument("--loss", default="ce,focal")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    p.add_argument("--no-write", action="store_true", help="print the section only")
    p.add_argument("--from-runs", help="comma list of finished run dirs: record, don't train")
    args = p.parse_args()
    if args.from_runs:
        runs = [from_run_dir(Path(d)) for d in args.from_runs.split(",")]
        text = markdown(runs, FULL)
        print(text)
        if not args.no_write:
            write_section(Path(args.results), text)
        return
    out = Path(args.out)
    root = out / "data" / "bdd100k"
    if not (root / "images" / "10k" / "val").is_dir():
        root = make_dataset(out / "data", seed=0, workers=os.cpu_count() or 1, **FULL)
    runs = []
    for loss in args.loss.split(","):
        r = run(loss, root, out)
        print(
            f"{loss}: wall {r['wall']:.0f} s, CPU {r['cpu']:.0f} s, curve {r['curve']}", flush=True
        )
        runs.append(r)
    text = markdown(runs, FULL)
    print(text)
    if not args.no_write:
        write_section(Path(args.results), text)


if __name__ == "__main__":
    main()
