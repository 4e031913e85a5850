"""`bddseg evaluate --pred --gt` against the official BDD100K evaluator on the same pairs.

Generates N (default 500) 1280x720 ground-truth masks (street-like: sky over a ragged
horizon, buildings, vegetation, a road in perspective with sidewalks, cars, poles, signs,
people, an ego-vehicle hood of 255) and predictions (the truth shifted by a few pixels, with
objects relabelled, stray blobs, and 19/255 on the hood). Then times both command lines, end to
end, on the same cores (``--workers``/``--nproc`` the same), alternating them ``--repeat``
times; checks that the numbers agree (x100, to 1e-4); prints the ratio of median times and,
with ``--append``, adds a section to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/eval_speed.py [--n 500] [--workers 2] [--append]
    .venv/bin/python benchmarks/eval_speed.py --real [--workers 2] [--append]

``--real`` takes the ground truth from the 1,000 official BDD100K val masks instead
(``$BDDSEG_VAL_MASKS``, default ../shared/data/bdd100k-val-masks; a set but missing folder is
an error): the truth is read in place, and each prediction is made from its truth the same way
(shifted, objects relabelled, stray blobs, 19/255/0 on the 255 pixels).

Needs the official tool in .venv-official (``make .venv-official``) or BDDSEG_OFFICIAL_PYTHON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bddseg.bench import cpu_model

REPO = Path(__file__).resolve().parents[1]
H, W = 720, 1280


# ---------------------------------------------------------------- masks
def _smooth_walk(rng: np.random.Generator, n: int, scale: float, smooth: int = 25) -> np.ndarray:
    walk = rng.normal(0, 1, n + smooth).cumsum()
    walk = np.convolve(walk, np.ones(smooth) / smooth, mode="valid")[:n]
    return (walk - walk.mean()) / (walk.std() + 1e-9) * scale


def make_gt(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.ogrid[:H, :W]
    m = np.full((H, W), 2, np.uint8)  # building
    horizon = 250 + _smooth_walk(rng, W, 60) + np.where(rng.random(W // 40).repeat(40) < 0.3, 80, 0)
    m[yy < horizon[None, :].astype(int)] = 10  # sky
    for _ in range(rng.integers(2, 6)):  # trees
        cy, cx, ry, rx = (
            rng.integers(200, 420),
            rng.integers(0, W),
            rng.integers(40, 140),
            rng.integers(60, 220),
        )
        m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 8
    y0, cx = 380 + rng.integers(-20, 20), W // 2 + rng.integers(-150, 150)
    half = (yy - y0) * (1.3 + rng.random())
    road = (yy > y0) & (np.abs(xx - cx) < half)
    side = (yy > y0) & (np.abs(xx - cx) < half * 1.35) & ~road
    terrain = (yy > y0) & (np.abs(xx - cx) < half * 1.6) & ~road & ~side
    m[terrain], m[side], m[road] = 9, 1, 0
    for _ in range(rng.integers(3, 12)):  # vehicles, people, poles, signs, lights, fences
        y = rng.integers(y0 + 5, H - 120)
        s = (y - y0) / (H - y0)  # perspective scale
        x = rng.integers(0, W)
        kind = rng.choice([13, 13, 13, 14, 15, 11, 12, 5, 4, 17, 18])
        bw, bh = {5: (6, 160), 11: (25, 70), 12: (25, 70), 4: (200, 40)}.get(int(kind), (180, 110))
        bw, bh = max(3, int(bw * (0.3 + s))), max(3, int(bh * (0.3 + s)))
        m[max(0, y - bh) : y, max(0, x - bw // 2) : x + bw // 2] = kind
        if kind == 5:  # a pole carries a sign or a light
            top = max(0, y - bh)
            m[top : top + 20, max(0, x - 12) : x + 12] = rng.choice([6, 7])
    hood = H - 60 - 40 * (1 - ((xx - W / 2) / (W / 2)) ** 2)
    m[np.broadcast_to(yy > hood, (H, W))] = 255
    for _ in range(rng.integers(0, 3)):  # small unlabelled patches
        y, x = rng.integers(0, H - 40), rng.integers(0, W - 40)
        m[y : y + rng.integers(5, 40), x : x + rng.integers(5, 40)] = 255
    return m


def make_pred(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    p = np.roll(gt, (rng.integers(-4, 5), rng.integers(-6, 7)), axis=(0, 1))
    confusions = {13: 14, 1: 0, 9: 8, 14: 15, 11: 12, 4: 3, 7: 6}
    for src, dst in confusions.items():
        if rng.random() < 0.4:
            y, x = rng.integers(0, H - 200), rng.integers(0, W - 300)
            region = p[y : y + 200, x : x + 300]
            region[region == src] = dst
    yy, xx = np.ogrid[:H, :W]
    for _ in range(rng.integers(2, 8)):  # stray blobs
        cy, cx, r = rng.integers(0, H), rng.integers(0, W), rng.integers(5, 40)
        p[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 19)
    p[gt == 255] = rng.choice([19, 255, 0])  # the hood: unknown, no prediction, or road
    return p


def _write_pair(args: tuple[int, int, Path]) -> None:
    i, seed, root = args
    rng = np.random.default_rng([seed, i])
    gt = make_gt(rng)
    Image.fromarray(gt).save(root / "gt" / f"{i:05d}.png")
    Image.fromarray(make_pred(rng, gt)).save(root / "pred" / f"{i:05d}.png")


def _write_real_pred(args: tuple[int, int, Path, Path]) -> None:
    i, seed, gt_path, root = args
    rng = np.random.default_rng([seed, i])
    with Image.open(gt_path) as im:
        gt = np.asarray(im)
    Image.fromarray(make_pred(rng, gt)).save(root / "pred" / gt_path.name)


def real_masks_dir() -> Path:
    """The official val masks: ``$BDDSEG_VAL_MASKS`` (must exist when set) or the default."""
    env = os.environ.get("BDDSEG_VAL_MASKS")
    base = Path(env) if env else REPO.parent / "shared" / "data" / "bdd100k-val-masks"
    folder = base / "labels" / "sem_seg" / "masks" / "val"
    if not folder.is_dir():
        sys.exit(f"no val masks at {folder} (BDDSEG_VAL_MASKS={env!r})")
    return folder


def generate_real(root: Path, gt_dir: Path, seed: int, workers: int) -> int:
    """Predictions for every real val mask in ``gt_dir``, into ``root/pred``; returns the count."""
    (root / "pred").mkdir(parents=True, exist_ok=True)
    gts = sorted(gt_dir.glob("*.png"))
    todo = [(i, seed, g, root) for i, g in enumerate(gts) if not (root / "pred" / g.name).exists()]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_real_pred, todo, chunksize=8))
    return len(gts)


def generate(root: Path, n: int, seed: int, workers: int) -> None:
    (root / "gt").mkdir(parents=True, exist_ok=True)
    (root / "pred").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_pair, [(i, seed, root) for i in range(n)], chunksize=8))


# ---------------------------------------------------------------- timing
def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the command and its worker processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def official_python() -> Path:
    p = Path(os.environ.get("BDDSEG_OFFICIAL_PYTHON") or REPO / ".venv-official" / "bin" / "python")
    if not p.exists():
        sys.exit(f"official evaluator not found at {p}: run `make .venv-official`")
    return p


def compare(ours: dict, official: dict) -> float:
    """Largest |difference| (x100 scale) over mIoU, pAcc, fwIoU and per-class IoU/precision."""
    off = ours["official"]
    pairs = [(off["miou"], official["IoU"][1]["AVERAGE"]), (off["pixel_accuracy"], official["pAcc"]),
             (off["fwiou"], official["fIoU"])]  # fmt: skip
    for name, v in official["IoU"][0].items():
        pairs.append((off["iou"][name], v))
    for name, v in official["Acc"][0].items():
        pairs.append((off["precision"][name], v))
    return max(abs(100 * (a or 0.0) - b) for a, b in pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", help="keep the generated pairs here (default: a temporary folder)")
    ap.add_argument(
        "--real", action="store_true", help="the 1,000 official val masks as ground truth"
    )
    ap.add_argument(
        "--append", action="store_true", help="add the figures to benchmarks/RESULTS.md"
    )
    args = ap.parse_args()

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bddseg_eval_speed_"))
    try:
        t0 = time.perf_counter()
        if args.real:
            gt_dir = real_masks_dir()
            args.n = generate_real(root, gt_dir, args.seed, args.workers)
        else:
            gt_dir = root / "gt"
            if not (gt_dir / f"{args.n - 1:05d}.png").exists():
                generate(root, args.n, args.seed, args.workers)
        print(f"{args.n} pairs in {root} ({time.perf_counter() - t0:.1f} s to generate)")
        bddseg = str(Path(sys.executable).with_name("bddseg"))
        ours_cmd = [bddseg, "evaluate", "--pred", str(root / "pred"), "--gt", str(gt_dir),
                    "--out", str(root / "ours"), "--workers", str(args.workers)]  # fmt: skip
        off_cmd = [str(official_python()), "-m", "bdd100k.eval.run", "-t", "sem_seg", "-g", str(gt_dir),
                   "-r", str(root / "pred"), "--nproc", str(args.workers), "--out-file", str(root / "official.json")]  # fmt: skip
        bare_cmd = [sys.executable, "-c", "import sys; from bddseg.evaluate import evaluate_folders as f; "
                    "f(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]), plots=False)",
                    str(root / "pred"), str(gt_dir), str(root / "bare"), str(args.workers)]  # fmt: skip
        load_before = os.getloadavg()
        times: dict[str, list[tuple[float, float]]] = {"ours": [], "bare": [], "official": []}
        for _ in range(args.repeat):
            times["ours"].append(_timed(ours_cmd))
            times["bare"].append(_timed(bare_cmd))
            times["official"].append(_timed(off_cmd))
        load_after = os.getloadavg()
        diff = compare(json.loads((root / "ours" / "metrics.json").read_text()),
                       json.loads((root / "official.json").read_text()))  # fmt: skip
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)

    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    runs = {k: ", ".join(f"{w:.2f}" for w, _ in v) for k, v in times.items()}

    def line(k: str) -> str:
        if k == "official":
            return f"**{wall[k]:.2f} s** wall ({runs[k]}), {cpu[k]:.2f} s CPU"
        return (f"**{wall[k]:.2f} s** wall ({runs[k]}), {cpu[k]:.2f} s CPU: **{wall['official'] / wall[k]:.1f}x** "
                f"faster by wall time, {cpu['official'] / cpu[k]:.1f}x by CPU time")  # fmt: skip

    diff_note = "" if diff <= 1e-4 else "  **MISMATCH**"
    machine = (f"{os.cpu_count()} cores ({cpu_model()}), shared with other jobs; load average "
               f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")  # fmt: skip
    what = (
        "official BDD100K val masks as truth (predictions made from them)"
        if args.real
        else "generated"
    )
    lines = [
        f"- {args.n} {what} 1280x720 pairs, `--workers {args.workers}` / `--nproc {args.workers}`; each "
        f"command end to end (interpreter start-up included); median of {args.repeat} alternating runs; "
        "CPU = user + system of the command and its worker processes",
        f"- official `python -m bdd100k.eval.run -t sem_seg` (1.0.1): {line('official')}",
        f"- `bddseg evaluate --pred --gt` as shipped (also writes the three plots): {line('ours')}",
        f"- the same without the plots (`evaluate_folders(..., plots=False)` in a fresh interpreter): {line('bare')}",
        f"- numbers: largest difference from the official tool over mIoU, pAcc, fwIoU and the 19 IoUs and "
        f"precisions: {diff:.1e} (x100 scale){diff_note}",
        f"- machine: {machine}; Python {platform.python_version()}",
    ]
    print("\n".join(lines))
    if args.append:
        path = REPO / "benchmarks" / "RESULTS.md"
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        section = (
            "\n## Evaluation speed: `bddseg evaluate --pred --gt` vs the official evaluator\n\n"
        )
        flags = "--real" if args.real else f"--n {args.n}"
        section += f"`benchmarks/eval_speed.py {flags} --workers {args.workers}` ({time.strftime('%Y-%m-%d')})\n\n"
        path.write_text(text.rstrip("\n") + "\n" + section + "\n".join(lines) + "\n")
        print(f"appended to {path}")
    if diff > 1e-4:
        sys.exit("numbers differ from the official evaluator")


if __name__ == "__main__":
    main()
