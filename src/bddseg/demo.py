"""``bddseg demo``: the whole pipeline on the built-in synthetic dataset, on CPU.

synthesise -> check -> class statistics -> train cross-entropy and focal + class weights
-> evaluate each on val -> predict the test split -> one HTML report comparing both runs, and
the viewer of every val image of both (``bddseg view``), which the report links to.
Every step calls the same public function the CLI and the notebook use; the two recipes are
the bundled ``configs/demo_ce.yaml`` and ``configs/demo_focal.yaml``.

On a machine with two or more cores the two experiments (train, evaluate, predict) run side
by side in two processes, each with half the cores: on 2 cores two single-threaded trainings
get through 1.1-1.2x the steps of one two-threaded training after the other (torch's
intra-op threads wait on each other in small convolutions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from bddseg import runs
from bddseg.config import Config
from bddseg.errors import BddsegError
from bddseg.files import atomic_write_text

# Sizes for the full demo (under 10 minutes on 2 cores) and for a quick smoke run (tests).
FULL = {"train": 240, "val": 50, "test": 12, "height": 256, "width": 448}
QUICK = {"train": 8, "val": 4, "test": 2, "height": 64, "width": 96}
EXPERIMENTS = (("ce", "cross-entropy"), ("focal", "focal + class weights"))
# what --quick changes in the recipe: a few steps on tiny images
QUICK_OVERRIDES = {
    "data.crop": [64, 96],
    "data.base_size": [64, 96],
    "optim.max_steps": 2,
    "optim.batch_size": 2,
    "run.val_every": 2,
    "run.log_every": 1,
}


def _say(msg: str) -> None:
    print(f"[bddseg demo] {msg}", flush=True)


def demo_config(
    data_root: str | Path, out: str | Path, loss: str = "ce", quick: bool = False
) -> Config:
    """The demo's recipe: ``configs/demo_{loss}.yaml`` (the file is the recipe, with the
    reasons for each setting) on ``data_root``, writing to ``out``.

    ``loss`` is ``"ce"`` (cross-entropy) or ``"focal"`` (softmax focal loss with square-root
    median-frequency class weights). ``quick`` shrinks it to a few steps for tests.
    """
    from bddseg.config import bundled_config, load_config

    if loss not in ("ce", "focal"):
        raise BddsegError(f"the demo trains 'ce' or 'focal', not {loss!r}")
    overrides = {"data.root": str(data_root), "run.out": str(out)}
    if quick:
        overrides.update(QUICK_OVERRIDES)
    return load_config(bundled_config(f"demo_{loss}"), overrides=overrides)


class _Prefixed:
    """A text stream that starts every line with ``prefix`` (two experiments share a terminal)."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.at_start = stream, prefix, True

    def write(self, text: str) -> int:
        for part in text.splitlines(keepends=True):
            if self.at_start:
                self.stream.write(self.prefix)
            self.stream.write(part)
            self.at_start = part.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:  # plain lines, no progress bars fighting over the terminal
        return False


def run_experiment(
    root: Path,
    run_dir: Path,
    loss: str,
    quick: bool = False,
    workers: int = 1,
    threads: int | None = None,
    prefix: str | None = None,
) -> dict:
    """Train one demo recipe (resuming a stopped run), evaluate its best.pt on val and predict
    the test split; returns the evaluation's metrics.json. ``threads`` sets torch's intra-op
    threads; ``prefix`` starts every printed line (for a run in a child process)."""
    import torch

    from bddseg.evaluate import evaluate_checkpoint
    from bddseg.predict import predict_inputs
    from bddseg.train import train

    if prefix is not None:
        sys.stdout = _Prefixed(sys.stdout, prefix)
        sys.stderr = _Prefixed(sys.stderr, prefix)
    if threads:
        torch.set_num_threads(threads)
    cfg = demo_config(root, run_dir, loss=loss, quick=quick)
    if (run_dir / runs.LAST).exists():
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True))
    train(cfg)
    metrics = evaluate_checkpoint(
        run_dir / runs.BEST,
        root,
        runs.eval_dir(run_dir),
        split=runs.EVAL_SPLIT,
        workers=workers,
        progress=prefix is None,
    )
    predict_inputs(
        [str(root / "images" / "10k" / runs.PREDICT_SPLIT)],
        runs.predictions_dir(run_dir),
        checkpoint=str(run_dir / runs.BEST),
        workers=min(workers, 2),
        progress=prefix is None,
    )
    return metrics


def _run_experiments(root: Path, out: Path, quick: bool, workers: int, parallel: bool) -> dict:
    """``{loss: metrics}`` for both experiments: in two child processes with half the cores
    each when ``parallel``, else one after the other in this process."""
    run_dirs = {loss: out / "runs" / loss for loss, _ in EXPERIMENTS}
    if not parallel:
        results = {}
        for loss, label in EXPERIMENTS:
            _say(f"training {label} -> {run_dirs[loss]}")
            results[loss] = run_experiment(root, run_dirs[loss], loss, quick, workers)
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, workers // len(EXPERIMENTS))
    _say(
        f"training {' and '.join(label for _, label in EXPERIMENTS)} side by side "
        f"({threads} thread(s) each) -> {out / 'runs'}"
    )
    context = multiprocessing.get_context("spawn")  # no forked OpenMP or torch state
    with ProcessPoolExecutor(len(EXPERIMENTS), mp_context=context) as pool:
        futures = {
            loss: pool.submit(
                run_experiment, root, run_dirs[loss], loss, quick, 1, threads, f"[{loss}] "
            )
            for loss, _ in EXPERIMENTS
        }
        return {loss: f.result() for loss, f in futures.items()}


def run_demo(
    out: Path, quick: bool = False, workers: int | None = None, parallel: bool | None = None
) -> dict:
    """Run the demo into ``out``; returns ``{experiment: metrics.json dict}``.

    ``parallel`` (default: on with two or more cores, off for ``quick``) runs the two
    experiments side by side. Re-running reuses the dataset and resumes or skips finished
    trainings.
    """
    from bddseg.check import check_dataset
    from bddseg.plots import plot_class_stats
    from bddseg.report import write_report
    from bddseg.stats import compute_stats
    from bddseg.synth import make_dataset
    from bddseg.view import build_view

    t0 = time.perf_counter()
    out = Path(out)
    sizes = QUICK if quick else FULL
    workers = workers or os.cpu_count() or 1
    if parallel is None:
        parallel = workers >= 2 and not quick

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

    results = _run_experiments(root, out, quick, workers, parallel)
    for loss, label in EXPERIMENTS:
        off = results[loss]["official"]
        _say(f"{label}: val mIoU {off['miou']:.3f}, pixel accuracy {off['pixel_accuracy']:.3f}")

    run_dirs = [out / "runs" / loss for loss, _ in EXPERIMENTS]
    viewer = build_view(run_dirs, out / "viewer", workers=workers)
    html = write_report(run_dirs, out / "report.html", viewer=viewer)
    _say(f"done in {time.perf_counter() - t0:.0f} s")
    for loss, label in EXPERIMENTS:
        m = results[loss]["official"]
        _say(f"  {label:<22} val mIoU {m['miou']:.3f}  pixel acc {m['pixel_accuracy']:.3f}")
    _say(f"report: {html.resolve()}")
    _say(f"viewer: {viewer.resolve()} (every val image of both runs)")
    return results
