"""What ``--init-from`` buys on real photos, at equal optimizer steps (issue 23).

ImageNet weights cannot be fetched here, but bddseg's own generator can pretrain a model
offline. Every contestant runs the real-photo recipe (``--recipe``, by default
``configs/real_sample_cpu.yaml``: U-Net/ResNet34, 180x320 frames, batch 8, focal + sqrt
median weights, AdamW one-cycle, bf16 where native) for the same total number of optimizer
steps at the same batch and input size, so the CPU cost is the same by construction (each
stage's measured training seconds are recorded to show it). Stages chain with
``model.init_from`` (``bddseg train --init-from``): the whole network loads, head rows by
class name, and each stage runs a fresh one-cycle schedule.

Contestants (``--steps S``, 200 by default, so S/2 = 100):

- ``random``: the recipe from random weights, S steps on the real sample (as shipped).
- ``synth+real``: S/2 steps on the built-in synthetic scenes (``bddseg synth``, written at
  the real frames' 720x1280 so decoding costs the same), then ``--init-from`` its
  ``best.pt`` for S/2 steps on the real sample.
- ``real+real``: S/2 steps on the real sample, then ``--init-from`` that run's ``best.pt``
  for S/2 more (a warm restart at the same total).
- ``random-2x`` and ``synth2x+real2x`` (``--long``): 2S random steps against S synthetic +
  S real.

Each is scored on the 50 val photos of the real sample with the official metric at
1280x720, by the last validation of its last stage (``bddseg.train``'s validation, the
route ``bddseg evaluate --checkpoint`` shares) on the final weights. Finished stages are kept
in ``OUT/stages/NAME.json`` and finished contestants in ``OUT/results/NAME.json``, so an
interrupted benchmark continues where it stopped (``--fresh`` reruns everything).

    python benchmarks/init_from.py --out runs/init_from            # the three contestants
    python benchmarks/init_from.py --out runs/init_from --long     # + the 2x pair

writes ``OUT/init_from.json`` and ``OUT/init_from.md`` (the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_sample import (  # noqa: E402
    cpu_name,
    data_root,
    per_class_table,
    read_log,
    recipe_config,
    scored,
)

from bddseg.train import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SYNTH = {"train": 200, "val": 20, "height": 720, "width": 1280}


def contestants(steps: int) -> dict[str, list[tuple[str, int]]]:
    """Each contestant's stages in order: (data, steps), data ``real`` or ``synth``."""
    half = steps // 2
    return {
        "random": [("real", steps)],
        "synth+real": [("synth", half), ("real", steps - half)],
        "real+real": [("real", half), ("real", steps - half)],
        "random-2x": [("real", 2 * steps)],
        "synth2x+real2x": [("synth", steps), ("real", steps)],
    }


def synth_root(out: Path) -> Path:
    """The built-in synthetic scenes, written once into ``OUT/synth`` (``bddseg synth``)."""
    folder = out / "synth"
    root = folder / "bdd100k"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [str(Path(sys.executable).with_name("bddseg")), "synth", str(folder)]
        cmd += ["--train", str(SYNTH["train"]), "--val", str(SYNTH["val"]), "--test", "0"]
        cmd += ["--height", str(SYNTH["height"]), "--width", str(SYNTH["width"])]
        subprocess.run(cmd, check=True)
        (folder / "done").write_text(json.dumps(SYNTH))
    return root


def run_stage(name: str, root: Path, steps: int, init: Path | None, out: Path, args) -> dict:
    """Train the recipe ``steps`` steps on ``root`` (from ``init`` if given); the scored result.

    Validates at the end only (the real stages also halfway when ``steps`` > 100), so the
    result's confusion matrix is the final weights' on ``root``'s val split.
    """
    every = steps // 2 if steps > 100 else steps
    overrides = {
        "optim.max_steps": steps,
        "run.val_every": every,
        "run.checkpoint_every": every,
        "run.log_every": 10,
        "model.init_from": str(init) if init else None,
    }
    cfg = recipe_config(args.recipe, root, tuple(args.size), out, overrides)
    start = time.perf_counter()
    result = train(cfg)
    if result.last_confusion is None:
        sys.exit(f"error: {out}: this stage had finished; remove the folder to rerun it")
    rows = read_log(out / "log.csv")
    last = rows[-1]
    curve = [
        {"step": int(r["step"]), "train_s": r["train_s"], "miou": r["val_miou"]}
        for r in rows
        if r.get("val_miou") is not None
    ]
    return scored(
        name,
        result.last_confusion,
        {
            "data": str(root),
            "steps": int(last["step"]),
            "images_seen": int(last["step"]) * cfg.optim.batch_size * cfg.optim.accumulate,
            "train_s": last["train_s"],
            "total_s": round(time.perf_counter() - start, 1),
            "init_from": str(init) if init else None,
            "best_miou": result.best_miou,
            "curve": curve,
            "load_after": os.getloadavg(),
        },
    )


def run_contestant(name: str, stages: list[tuple[str, int]], real: Path, out: Path, args):
    """Run (or resume) ``name``'s stages, each from the previous one's ``best.pt``."""
    done: list[dict] = []
    init = None
    for i, (data, steps) in enumerate(stages):
        sname = f"{name}.{i}-{data}{steps}"
        sfile = out / "stages" / f"{sname}.json"
        sdir = out / "runs" / sname
        if sfile.exists() and not args.fresh:
            r = json.loads(sfile.read_text())
            print(f"{sname}: kept from {sfile} (val mIoU {r['miou']:.4f})")
        else:
            if args.fresh:
                shutil.rmtree(sdir, ignore_errors=True)
            root = real if data == "real" else synth_root(out)
            r = run_stage(sname, root, steps, init, sdir, args)
            r["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            sfile.write_text(json.dumps(r, indent=1))
            print(f"{sname}: val mIoU {r['miou']:.4f} on {data}, {r['train_s']:.0f} s train")
        done.append(r)
        init = sdir / "best.pt"
    last = done[-1]
    return {
        **last,
        "name": name,
        "stages": [
            {k: s[k] for k in ("name", "data", "steps", "train_s", "miou", "init_from")}
            for s in done
        ],
        "steps": sum(s["steps"] for s in done),
        "images_seen": sum(s["images_seen"] for s in done),
        "train_s": sum(s["train_s"] for s in done),
        "real_steps": sum(s["steps"] for s in done if s["data"] == str(real)),
    }


def tables(results: list[dict], meta: dict) -> str:
    lines = [
        f"{meta['cpu']}, {meta['threads']} threads, input {meta['size'][0]}x{meta['size'][1]}, "
        f"recipe {meta['recipe']}",
        "",
        "| contestant | stages (steps) | val mIoU | pixel acc | steps | images seen | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        st = " + ".join(
            f"{'synth' if 'synth' in s['name'].split('.')[1] else 'real'} {s['steps']}"
            f" ({s['train_s']:.0f} s, {s['miou']:.3f})"
            for s in r["stages"]
        )
        lines.append(
            f"| {r['name']} | {st} | {r['miou']:.4f} | {r['pixel_accuracy']:.4f} | {r['steps']} "
            f"| {r['images_seen']} | {r['train_s']:.0f} |"
        )
    lines += ["", *per_class_table(results)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "init_from")
    p.add_argument("--data", help="the real sample's root (default $BDDSEG_SAMPLE_DATA)")
    p.add_argument("--recipe", type=Path, default=REPO / "configs" / "real_sample_cpu.yaml")
    p.add_argument("--size", type=int, nargs=2, default=(180, 320), metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=200, help="total optimizer steps per contestant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--long", action="store_true", help="also random-2x and synth2x+real2x")
    p.add_argument("--only", help="comma-separated contestants (default: the three)")
    p.add_argument("--fresh", action="store_true", help="rerun stages already finished")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    real, out = data_root(args.data), args.out
    for sub in ("results", "stages", "runs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plan = contestants(args.steps)
    names = ["random", "synth+real", "real+real"] + (
        ["random-2x", "synth2x+real2x"] if args.long else []
    )
    names = args.only.split(",") if args.only else names
    meta = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "size": args.size,
        "recipe": str(
            args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe
        ),
    }
    results = []
    for name in names:
        if name not in plan:
            sys.exit(f"error: unknown contestant {name!r} (one of {', '.join(plan)})")
        done = out / "results" / f"{name}.json"
        if done.exists() and not args.fresh:
            r = json.loads(done.read_text())
            print(f"{name}: kept from {done} (val mIoU {r['miou']:.4f})")
        else:
            r = run_contestant(name, plan[name], real, out, args)
            r["machine"] = meta
            done.write_text(json.dumps(r, indent=1))
            print(f"{name}: val mIoU {r['miou']:.4f}, {r['steps']} steps, {r['train_s']:.0f} s")
        results.append(r)
    (out / "init_from.json").write_text(json.dumps(results, indent=1))
    (out / "init_from.md").write_text(tables(results, meta))
    print(tables(results, meta))
    print(f"wrote {out / 'init_from.json'}, {out / 'init_from.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
