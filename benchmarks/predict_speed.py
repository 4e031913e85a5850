"""``bddseg predict`` end to end against the forward pass alone (issue 24).

Makes ``--n`` (default 1,000) 1280x720 frames, the real sample's JPEGs copied in turn
(``$BDDSEG_SAMPLE_DATA``, default ../shared/data/bdd100k-sample) into a temporary folder,
and for each route (a checkpoint, its ONNX export) measures:

- *forward*: images/s of the :class:`bddseg.predictor.Predictor` that ``predict`` loads (same
  batch of 1, precision and runtime), on frames decoded beforehand and held in memory:
  resize to the model's size, the network, scores back to 720x1280, argmax, ``.numpy()``.
- *e2e*: images/s of ``bddseg predict FRAMES --checkpoint|--onnx M --out OUT`` over the
  ``--n`` frames, the whole command (start-up and model loading included), for each set of
  ``--formats`` (default: the default ``mask,color,overlay``, and masks only).

The ratio e2e / forward says how much reading and writing costs beyond the model. The forward
is timed right before and right after each command and the two are averaged, so that both
see about the same load on a shared machine; ``--repeat`` runs it all again.

    .venv/bin/python benchmarks/predict_speed.py [--checkpoint runs/x/best.pt] [--n 1000]
        [--routes onnx,checkpoint] [--formats mask,color,overlay:mask] [--repeat 1]

Without ``--checkpoint``, the model is ``configs/real_sample_cpu.yaml``'s (U-Net/ResNet34,
base_size 180x320) with random weights, saved in bddseg's checkpoint format.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bddseg.bench import cpu_model

REPO = Path(__file__).resolve().parents[1]


def sample_photos() -> list[Path]:
    env = os.environ.get("BDDSEG_SAMPLE_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data" / "bdd100k-sample"
    photos = sorted((root / "images").rglob("*.jpg"))
    if not photos:
        sys.exit(f"no .jpg photos under {root / 'images'} (BDDSEG_SAMPLE_DATA={env!r})")
    return photos


def make_frames(folder: Path, n: int) -> list[Path]:
    """``n`` frames ``000000.jpg``.. in ``folder``: the sample's photos in turn (hard links
    where the file system allows, else copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in zip(range(n), itertools.cycle(sample_photos()), strict=False):
        dst = folder / f"{i:06d}.jpg"
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        out.append(dst)
    return out


def random_checkpoint(path: Path) -> Path:
    """The real-photo recipe's model with random weights, in bddseg's checkpoint format."""
    from bddseg.checkpoints import make_checkpoint, save_checkpoint
    from bddseg.config import load_config
    from bddseg.model import build_model

    cfg = load_config(REPO / "configs" / "real_sample_cpu.yaml")
    torch.manual_seed(0)
    save_checkpoint(path, make_checkpoint(build_model(cfg).eval(), cfg))
    return path


def export_onnx(checkpoint: Path, path: Path) -> Path:
    if not path.exists():
        cmd = [sys.executable, "-m", "bddseg.cli", "export", "--checkpoint", str(checkpoint)]
        subprocess.run([*cmd, "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return path


def forward_rate(model: Path, frames: list[Path], calls: int) -> dict:
    """Images/s of ``predict``'s predictor on decoded frames (batch 1), after one warm-up."""
    from bddseg.data import read_image
    from bddseg.predictor import load_predictor

    predictor = load_predictor(model, "cpu")  # predict's defaults: fp32, onnxruntime
    images = [read_image(f) for f in frames[: min(len(frames), 20, calls)]]
    predictor.class_map(images[0][None]).cpu().numpy()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        predictor.class_map(images[i % len(images)][None]).cpu().numpy()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"images": calls, "seconds": wall, "images_s": calls / wall, "cpu_s_image": cpu / calls}


def e2e_rate(route: str, model: Path, frames_dir: Path, n: int, formats: str, out: Path) -> dict:
    """Images/s of the whole ``bddseg predict`` command on the folder (``--overwrite``-free:
    ``out`` is emptied first); its CPU time is the command's and its children's."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bddseg.cli", "predict", str(frames_dir), f"--{route}", str(model)]
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--out", str(out), "--format", formats], check=True)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    written = sum(1 for _ in (out / "masks").glob("*.png")) if "mask" in formats else n
    assert written == n, f"predict wrote {written} of {n}"
    return {"images": n, "seconds": wall, "images_s": n / wall, "cpu_s_image": cpu / n}


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="frames predicted end to end")
    ap.add_argument("--forward-calls", type=int, default=100, help="timed forward calls")
    ap.add_argument("--checkpoint", type=Path, help="a bddseg .pt (default: random weights)")
    ap.add_argument("--routes", default="onnx,checkpoint", help="comma list: onnx, checkpoint")
    ap.add_argument(
        "--formats", default="mask,color,overlay:mask", help="colon list of --format values"
    )
    ap.add_argument("--repeat", type=int, default=1, help="forward/e2e alternations")
    ap.add_argument("--workdir", type=Path, help="where frames and outputs go (default: a tmp)")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bddseg_predict_speed_"))
    frames = make_frames(work / "frames", args.n)
    ckpt = args.checkpoint or random_checkpoint(work / "random.pt")
    models = {"checkpoint": ckpt}
    routes = args.routes.split(",")
    if "onnx" in routes:
        models["onnx"] = export_onnx(ckpt, work / f"{ckpt.stem}.onnx")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__}, ")
    print(f"{torch.get_num_threads()} threads; {args.n} frames in {work}; model {ckpt}")
    rows = []
    for rep, route in itertools.product(range(args.repeat), routes):
        before = forward_rate(models[route], frames, args.forward_calls)
        print(f"[{rep}] {route} forward: {before['images_s']:.2f} img/s (load {load_average()})")
        for formats in args.formats.split(":"):
            e2e = e2e_rate(route, models[route], work / "frames", args.n, formats, work / "out")
            # the forward again right after: the load of a shared machine moves in minutes
            after = forward_rate(models[route], frames, args.forward_calls)
            print(f"[{rep}] {route} forward: {after['images_s']:.2f} img/s (load {load_average()})")
            fwd = {k: (before[k] + after[k]) / 2 for k in ("images_s", "cpu_s_image")}
            fwd["before"], fwd["after"] = before["images_s"], after["images_s"]
            row = {"repeat": rep, "route": route, "formats": formats, "forward": fwd, "e2e": e2e}
            row["ratio"] = e2e["images_s"] / fwd["images_s"]
            rows.append(row)
            before = after
            print(
                f"[{rep}] {route} {formats}: e2e {e2e['images_s']:.2f} img/s "
                f"({e2e['seconds']:.0f} s), ratio {row['ratio']:.2f} (load {load_average()})",
                flush=True,
            )
    print(
        "\n| route | formats | forward img/s (before, after) | e2e img/s | e2e / forward |", end=""
    )
    print(" CPU s/img forward / e2e |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        f, e = r["forward"], r["e2e"]
        print(
            f"| {r['route']} | {r['formats']} | {f['images_s']:.2f} ({f['before']:.2f}, "
            f"{f['after']:.2f}) | {e['images_s']:.2f} | "
            f"{r['ratio']:.2f} | {f['cpu_s_image']:.3f} / {e['cpu_s_image']:.3f} |"
        )
    if len(rows) > 1:
        print(f"median ratio {statistics.median(r['ratio'] for r in rows):.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
