"""``bddseg demo``: the whole pipeline on the built-in synthetic dataset, on CPU.

synthesise -> check -> class statistics -> train cross-entropy and focal + class weights
-> evaluate each on val -> predict the test split -> one HTML report comparing both runs.
Every step calls the same public function the CLI and the notebook use.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from bddseg.files import atomic_write_text

# Sizes for the full demo (under 10 minutes on 2 cores) and for a quick smoke run (tests).
FULL = {"train": 240, "val": 50, "test": 12, "height": 256, "width": 448}
QUICK = {"train": 8, "val": 4, "test": 2, "height": 64, "width": 96}
EXPERIMENTS = (("ce", "cross-entropy"), ("focal", "focal + class weights"))


def _say(msg: str) -> None:
    print(f"[bddseg demo] {msg}", flush=True)


def run_demo(out: Path, quick: bool = False, workers: int | None = None) -> dict:
    """Run the demo into ``out``; returns ``{experiment: metrics.json dict}``.

    Re-running reuses the dataset and resumes or skips finished trainings.
    """
    import os

    from bddseg.data import check_dataset, compute_stats
    from bddseg.evaluate import evaluate_checkpoint
    from bddseg.predict import predict_inputs
    from bddseg.report import plot_class_stats, write_report
    from bddseg.synth import make_dataset
    from bddseg.train import demo_config, train

    t0 = time.perf_counter()
    out = Path(out)
    sizes = QUICK if quick else FULL
    workers = workers or os.cpu_count() or 1

    data_dir = out / "data"
    root = data_dir / "bdd100k"
    if (root / "images" / "10k" / "test").is_dir() and (data_dir / ".complete").exists():
        _say(f"reusing the synthetic dataset in {root}")
    else:
        _say(f"writing the synthetic dataset ({sizes}) to {data_dir}")
        root = make_dataset(data_dir, seed=0, workers=workers, **sizes)
        atomic_write_text(data_dir / ".complete", json.dumps(sizes))

    report = check_dataset(root, workers=workers)
    for split, s in report.summary.items():
        _say(f"check {split}: {s['images']} images, {s['masks']} masks, {s['bad']} bad")
    if report.problems:  # our own generator: a problem here is a bug, say so loudly
        raise RuntimeError(f"synthetic dataset failed its check: {report.problems[:3]}")

    stats = compute_stats(root, split="train", workers=workers)
    atomic_write_text(out / "stats_train.json", json.dumps(stats, indent=2))
    plot_class_stats(stats, out / "stats_train.png")
    top = sorted(stats["pixel_share"].items(), key=lambda kv: -kv[1])
    _say("train pixel share: " + ", ".join(f"{n} {p:.1f}%" for n, p in top[:6]) + ", ...")

    results, run_dirs = {}, []
    for loss, label in EXPERIMENTS:
        run_dir = out / "runs" / loss
        cfg = demo_config(root, run_dir, loss=loss, quick=quick)
        if (run_dir / "last.pt").exists():
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True))
        _say(f"training {label} -> {run_dir}")
        train(cfg)
        eval_dir = run_dir / "eval" / "val"
        metrics = evaluate_checkpoint(
            run_dir / "best.pt", root, eval_dir, split="val", workers=workers
        )
        predict_inputs(
            [str(root / "images" / "10k" / "test")],
            run_dir / "predictions" / "test",
            checkpoint=str(run_dir / "best.pt"),
        )
        off = metrics["official"]
        _say(f"{label}: val mIoU {off['miou']:.3f}, pixel accuracy {off['pixel_accuracy']:.3f}")
        results[loss] = metrics
        run_dirs.append(run_dir)

    html = write_report(run_dirs, out / "report.html")
    _say(f"done in {time.perf_counter() - t0:.0f} s")
    for (_loss, label), m in zip(EXPERIMENTS, results.values(), strict=True):
        _say(
            f"  {label:<22} val mIoU {m['official']['miou']:.3f}  pixel acc {m['official']['pixel_accuracy']:.3f}"
        )
    _say(f"report: {html.resolve()}")
    return results
