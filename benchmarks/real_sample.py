"""Real street scenes: bddseg's recipes against the original project's, at equal CPU time.

Every contestant trains from random weights (no network) on the train pairs of the real
BDD100K sample (``$BDDSEG_SAMPLE_DATA``: 170 train / 50 val pairs, 1280x720) at the same
input size (frames downscaled to ``--size``), on the same cores, for the same wall-clock
budget of training, and is scored on the val pairs with the official metric at the masks'
full 1280x720 resolution (predictions upsampled bilinearly). Validation time is not counted.

Contestants:

- ``original``: the original project's recipe, run for real: fastai ``unet_learner`` with
  ResNet34, its loss, 20 classes, ``fit_one_cycle`` (``benchmarks/fastai_original.py``, in
  the ``.venv-fastai`` virtual environment that ``make .venv-fastai`` builds).
- ``bddseg-ce`` and ``bddseg-focal``: bddseg's CPU recipe (``--recipe``, by default
  ``configs/real_sample_cpu.yaml``) with cross-entropy, and with softmax focal loss +
  square-root median-frequency class weights.
- ``bddseg-equal-epochs``: the better of the two bddseg recipes, trained for as many epochs
  as ``original`` managed in its budget (a full schedule over those epochs): recipe quality
  at equal data, not only speed.
- ``--variant NAME:KEY=VALUE,...``: more bddseg contestants, the recipe with overrides (the
  ablations in ``benchmarks/RESULTS.md``), e.g. ``--variant ema:run.ema_decay=0.99``.

Each budgeted run first times a few steps of its own (a probe) and sets its step or epoch
count to fill the budget. Finished contestants are kept in ``OUT/results/NAME.json`` and not
rerun (``--fresh`` reruns them), so an interrupted benchmark continues where it stopped.

    python benchmarks/real_sample.py --budget 480 --out runs/real_sample    # make bench-real

writes ``OUT/real_sample.json`` (one object per contestant: ``name``, ``miou``,
``pixel_accuracy``, ``per_class_iou``, ``images_seen``, ``epochs``, ``wall_s``, ``curve``),
``OUT/real_sample.md`` (the tables) and ``OUT/real_sample.png`` (val mIoU against training
seconds).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from bddseg.bench import cpu_model
from bddseg.config import load_config, override
from bddseg.labels import CLASS_NAMES
from bddseg.layout import list_pairs
from bddseg.metrics import official_metrics
from bddseg.precision import cpu_bf16_native
from bddseg.train import train

REPO = Path(__file__).resolve().parents[1]
FASTAI_PY = REPO / ".venv-fastai" / "bin" / "python"
CE = {"loss.name": "ce", "loss.class_weights": "none"}
FOCAL = {
    "loss.name": "focal",
    "loss.gamma": 2.0,
    "loss.class_weights": "median",
    "loss.class_weight_power": 0.5,
}
PROBE_STEPS = 8  # the probe's steps; the first 3 (warm-up) are not timed


def data_root(arg: str | None) -> Path:
    """``--data``, else ``$BDDSEG_SAMPLE_DATA``, else ``../shared/data/bdd100k-sample``."""
    env = os.environ.get("BDDSEG_SAMPLE_DATA")
    root = Path(arg or env or REPO.parent / "shared" / "data" / "bdd100k-sample")
    if not root.is_dir():
        sys.exit(f"error: {root}: the real BDD100K sample is not there (set BDDSEG_SAMPLE_DATA)")
    return root


def scored(name: str, cm, extra: dict) -> dict:
    """A contestant's result from its final val confusion matrix."""
    m = official_metrics(cm)
    return {
        "name": name,
        "miou": m["miou"],
        "pixel_accuracy": m["pixel_accuracy"],
        "per_class_iou": m["iou"],
        "confusion": [[int(v) for v in row] for row in cm.tolist()],
        **extra,
    }


# ---------------------------------------------------------------- bddseg contestants
def recipe_config(recipe: Path, root: Path, size: tuple[int, int], out: Path, overrides: dict):
    cfg = load_config(recipe)
    cfg = override(cfg, **{"data.root": str(root), "data.base_size": list(size)})
    cfg = override(cfg, **{"run.out": str(out), "run.resume": True}, **overrides)
    return cfg


def run_bddseg(name: str, cfg, budget: float | None, epochs: int | None, evals: int) -> dict:
    """Train ``cfg`` for ``budget`` seconds (steps set by a probe) or ``epochs`` epochs."""
    out = Path(cfg.run.out)
    plan_file = out / "plan.json"
    if plan_file.exists():  # an interrupted run: same plan, resumed from last.pt
        plan = json.loads(plan_file.read_text())
    else:
        shutil.rmtree(out, ignore_errors=True)
        plan = {"steps": None, "probe_s_per_step": None}
        if epochs is not None:
            plan["epochs"] = epochs
        else:
            plan["probe_s_per_step"] = probe_bddseg(cfg, out / "probe")
            plan["steps"] = max(1, math.floor(budget / plan["probe_s_per_step"]))
        out.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(plan))
    if plan["steps"] is not None:
        cfg = override(cfg, **{"optim.max_steps": plan["steps"]})
        total = plan["steps"]
    else:
        optim = dataclasses.replace(cfg.optim, max_steps=None, epochs=plan["epochs"])
        cfg = dataclasses.replace(cfg, optim=optim)  # override() skips None values
        total = plan["epochs"] * (len(list_pairs(cfg.data.root, "train")) // cfg.optim.batch_size)
    every = max(1, math.ceil(total / evals))
    cfg = override(
        cfg,
        **{"run.out": str(out / "run"), "run.val_every": every, "run.log_every": every},
        **{"run.checkpoint_every": every},
    )
    result = train(cfg)
    if result.last_confusion is None:  # last.pt was already at the end: nothing ran
        sys.exit(f"error: {out}: this run had finished; remove the folder to rerun it")
    rows = read_log(out / "run" / "log.csv")
    curve = [
        {"train_s": r["train_s"], "epoch": r["epoch"], "miou": r["val_miou"]}
        for r in rows
        if r.get("val_miou") is not None
    ]
    last = rows[-1]
    return scored(
        name,
        result.last_confusion,
        {
            "images_seen": int(last["step"]) * cfg.optim.batch_size * cfg.optim.accumulate,
            "epochs": last["epoch"],
            "wall_s": last["train_s"],
            "steps": int(last["step"]),
            "probe_s_per_step": plan["probe_s_per_step"],
            "curve": curve,
            "config": yaml.safe_load((out / "run" / "config.yaml").read_text()),
        },
    )


def probe_bddseg(cfg, out: Path) -> float:
    """Seconds per optimizer step of ``cfg`` on this machine, from a short run of its own."""
    shutil.rmtree(out, ignore_errors=True)
    probe = override(
        cfg,
        **{"run.out": str(out), "optim.max_steps": PROBE_STEPS, "run.log_every": 1},
        **{"run.val_every": 10**6, "data.max_val_images": 1},
    )
    train(probe)
    rows = {int(r["step"]): r for r in read_log(out / "log.csv")}
    seconds = (rows[PROBE_STEPS - 1]["train_s"] - rows[2]["train_s"]) / (PROBE_STEPS - 3)
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def read_log(path: Path) -> list[dict]:
    """``log.csv`` rows as floats (None where empty)."""
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    return rows


# ---------------------------------------------------------------- the original recipe
def run_original(
    name: str, root: Path, size: tuple[int, int], out: Path, budget, epochs, threads: int
) -> dict:
    if not FASTAI_PY.exists():
        sys.exit(f"error: {FASTAI_PY}: fastai's venv is missing; run `make .venv-fastai`")
    out.mkdir(parents=True, exist_ok=True)
    pairs = {
        s: [[str(p.image), str(p.mask)] for p in list_pairs(root, s) if p.image and p.mask]
        for s in ("train", "val")
    }
    (out / "pairs.json").write_text(json.dumps(pairs))
    cmd = [str(FASTAI_PY), str(REPO / "benchmarks" / "fastai_original.py")]
    cmd += ["--pairs", str(out / "pairs.json"), "--size", *map(str, size)]
    cmd += ["--threads", str(threads)]
    cmd += ["--epochs", str(epochs)] if epochs else ["--budget", str(budget)]
    log = out / "fastai.jsonl"
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, check=True)
    lines = [json.loads(s) for s in log.read_text().splitlines() if s.startswith("{")]
    probe = next((x for x in lines if "probe_s_per_batch" in x), {})
    epochs_rows = [x for x in lines if "confusion" in x]
    curve = [
        {
            "train_s": x["train_s"],
            "epoch": x["epoch"],
            "miou": official_metrics(torch.tensor(x["confusion"]))["miou"],
        }
        for x in epochs_rows
    ]
    last = epochs_rows[-1]
    return scored(
        name,
        torch.tensor(last["confusion"]),
        {
            "images_seen": last["images_seen"],
            "epochs": last["epoch"],
            "wall_s": last["train_s"],
            "probe_s_per_step": probe.get("probe_s_per_batch"),
            "curve": curve,
        },
    )


# ---------------------------------------------------------------- output
def write_outputs(out: Path, results: list[dict], meta: dict) -> None:
    (out / "real_sample.json").write_text(json.dumps(results, indent=1))
    (out / "real_sample.md").write_text(tables(results, meta))
    plot(results, out / "real_sample.png", meta)


def per_class_table(results: list[dict]) -> list[str]:
    """The Markdown rows of each contestant's val IoU per class ("-" where undefined)."""
    lines = ["| class | " + " | ".join(r["name"] for r in results) + " |"]
    lines.append("|---" * (len(results) + 1) + "|")
    for c in CLASS_NAMES:
        cells = [r["per_class_iou"].get(c) for r in results]
        shown = ["-" if v is None or v != v else f"{v:.3f}" for v in cells]
        lines.append(f"| {c} | " + " | ".join(shown) + " |")
    return lines


def tables(results: list[dict], meta: dict) -> str:
    lines = [
        f"budget {meta['budget']} s of training per contestant, input {meta['size'][0]}x"
        f"{meta['size'][1]}, {meta['threads']} threads, {meta['cpu']}",
        "",
        "| contestant | val mIoU | pixel acc | epochs | images seen | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['miou']:.4f} | {r['pixel_accuracy']:.4f} | {r['epochs']:.1f} "
            f"| {r['images_seen']} | {r['wall_s']:.0f} |"
        )
    lines += ["", *per_class_table(results)]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        xs = [p["train_s"] for p in r["curve"]]
        ys = [p["miou"] for p in r["curve"]]
        ax.plot(xs, ys, marker="o", label=f"{r['name']} ({r['miou']:.3f})")
    ax.set_xlabel("training seconds (validation excluded)")
    ax.set_ylabel("val mIoU (official, 1280x720)")
    ax.set_title(
        f"Real BDD100K sample: {meta['size'][0]}x{meta['size'][1]} input, "
        f"{meta['threads']} CPU threads"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_name() -> str:
    """The CPU's model, and its native bf16 (what ``precision: auto`` keys on) where it has it."""
    native = cpu_bf16_native()
    return f"{cpu_model()} ({native})" if native else cpu_model()


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition(":")
    overrides = {}
    for item in filter(None, re.split(r",(?=[\w.]+=)", spec)):  # commas inside [..] stay
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=480.0, help="training seconds per contestant")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "real_sample")
    p.add_argument("--data", help="dataset root (default $BDDSEG_SAMPLE_DATA)")
    p.add_argument("--recipe", type=Path, default=REPO / "configs" / "real_sample_cpu.yaml")
    p.add_argument("--size", type=int, nargs=2, default=(180, 320), metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--evals", type=int, default=6, help="val points on each curve")
    p.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,...")
    p.add_argument("--only", help="comma-separated contestants to run (default: the standard four)")
    p.add_argument("--fresh", action="store_true", help="rerun contestants already finished")
    p.add_argument(
        "--epochs", type=int, help="bddseg contestants train this many epochs, not --budget"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    root, size, out = data_root(args.data), tuple(args.size), args.out
    (out / "results").mkdir(parents=True, exist_ok=True)
    standard = ["original", "bddseg-ce", "bddseg-focal", "bddseg-equal-epochs"]
    variants = dict(parse_variant(v) for v in args.variant)
    names = args.only.split(",") if args.only else standard + list(variants)
    meta = {"budget": args.budget, "size": size, "threads": args.threads, "cpu": cpu_name()}
    results: dict[str, dict] = {}
    for name in names:
        done = out / "results" / f"{name}.json"
        if done.exists() and not args.fresh:
            results[name] = json.loads(done.read_text())
            print(f"{name}: kept from {done} (mIoU {results[name]['miou']:.4f})")
            continue
        start = time.perf_counter()
        if name == "original":
            r = run_original(name, root, size, out / "runs" / name, args.budget, None, args.threads)
        elif name == "bddseg-equal-epochs":
            r = equal_epochs(out, root, size, args)
        else:
            extra = {"bddseg-ce": CE, "bddseg-focal": FOCAL}.get(name, variants.get(name))
            if extra is None:
                sys.exit(f"error: unknown contestant {name!r} (give it with --variant)")
            cfg = recipe_config(args.recipe, root, size, out / "runs" / name, extra)
            budget = None if args.epochs else args.budget
            r = run_bddseg(name, cfg, budget, args.epochs, args.evals)
        r["total_s"] = round(time.perf_counter() - start, 1)
        r["machine"] = meta
        done.write_text(json.dumps(r, indent=1))
        results[name] = r
        print(
            f"{name}: val mIoU {r['miou']:.4f} after {r['epochs']:.1f} epochs, {r['wall_s']:.0f} s"
        )
    write_outputs(out, list(results.values()), meta)
    print(f"wrote {out / 'real_sample.json'}, {out / 'real_sample.md'}, {out / 'real_sample.png'}")
    return 0


def equal_epochs(out: Path, root: Path, size, args) -> dict:
    """The better bddseg recipe, for the epochs the original recipe reached in its budget."""
    found = {}
    for name in ("original", "bddseg-ce", "bddseg-focal"):
        f = out / "results" / f"{name}.json"
        if not f.exists():
            sys.exit(f"error: bddseg-equal-epochs needs {name} first ({f} is missing)")
        found[name] = json.loads(f.read_text())
    best = max(("bddseg-ce", "bddseg-focal"), key=lambda n: found[n]["miou"])
    epochs = max(1, round(found["original"]["epochs"]))
    cfg = recipe_config(
        args.recipe,
        root,
        size,
        out / "runs" / "bddseg-equal-epochs",
        CE if best == "bddseg-ce" else FOCAL,
    )
    r = run_bddseg("bddseg-equal-epochs", cfg, None, epochs, args.evals)
    r["recipe"] = best
    return r


if __name__ == "__main__":
    sys.exit(main())
