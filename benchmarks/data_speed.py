"""Data-layer speed: decoded+augmented samples/s per core, and `data check` pairs/s.

    .venv/bin/python benchmarks/data_speed.py [--real ../shared/data/bdd100k-real] [--n 32]

Training samples: 1280x720 JPEG + PNG mask -> train_transform (random scale 0.5-2.0,
512x1024 crop, flip, jitter 0.3) -> ImageNet-normalised float32 + int64 mask, in one process
with one thread (= per core). Sources: the real BDD100K pairs (when found) and generated
1280x720 street-like pairs. `check_dataset` pairs/s on the real pairs, the generated pairs and
the built-in synthetic set (bddseg.synth, 256x448), with 1 and 2 worker processes.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bddseg.check import check_dataset
from bddseg.config import DataConfig
from bddseg.data import SegDataset, read_image, read_mask
from bddseg.labels import PALETTE
from bddseg.layout import list_pairs
from bddseg.transforms import train_transform

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "bdd100k-real"


def make_pairs(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 1280x720 pairs in the flat official layout: blocky scene-like masks, photos made
    of the class colors plus texture noise (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    img_dir, msk_dir = root / "images/10k/train", root / "labels/sem_seg/masks/train"
    img_dir.mkdir(parents=True, exist_ok=True)
    msk_dir.mkdir(parents=True, exist_ok=True)
    lut = np.array([*PALETTE, *[(0, 0, 0)] * (256 - len(PALETTE))], np.uint8)
    yy = np.arange(720)[:, None]
    for i in range(n):
        mask = np.full((720, 1280), 10, np.uint8)  # sky
        mask[yy.repeat(1280, 1) > 300 + rng.integers(-40, 40)] = 2  # buildings
        mask[yy.repeat(1280, 1) > 420] = 0  # road
        for _ in range(40):
            c = int(rng.choice([*range(19), 255]))
            y, x = int(rng.integers(0, 680)), int(rng.integers(0, 1240))
            h, w = int(rng.integers(8, 160)), int(rng.integers(8, 240))
            mask[y : y + h, x : x + w] = c
        mask[660:] = 255  # hood
        photo = lut[mask].astype(np.int16) + rng.normal(0, 12, (720, 1280, 1)).astype(np.int16)
        photo = np.clip(photo, 0, 255).astype(np.uint8)
        Image.fromarray(photo).save(img_dir / f"gen-{i:04d}.jpg", quality=90)
        Image.fromarray(mask, "L").save(msk_dir / f"gen-{i:04d}.png")
    return root


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def samples_per_s(root: Path, rounds: int) -> dict[str, tuple[float, float]]:
    """Single-thread (wall, CPU-time) rates: decode only, and decode + augment + normalise.

    On a shared machine the wall rate depends on the neighbours; the CPU-time rate is what
    one core does when it is ours (samples per CPU second).
    """
    torch.set_num_threads(1)
    pairs = [p for p in list_pairs(root, "train") if p.image and p.mask]
    cfg = DataConfig(crop=(512, 1024), scale=(0.5, 2.0), jitter=0.3, hflip=True)
    ds = SegDataset(pairs, unknown="class", transform=train_transform(cfg))
    ds[0]  # warm up
    n = len(pairs) * rounds

    def decode():
        for _ in range(rounds):
            for p in pairs:
                read_image(p.image), read_mask(p.mask)

    def full():
        for _ in range(rounds):
            for i in range(len(ds)):
                image, mask = ds[i]
                assert image.shape == (3, 512, 1024) and mask.shape == (512, 1024)

    out = {"n": n}
    for name, fn in (("decode", decode), ("full", full)):
        wall, cpu = _timed(fn)
        out[name] = (n / wall, n / cpu)
    return out


def replicate(src: Path, dst: Path, times: int) -> Path:
    """A bigger check set: the train pairs of ``src`` copied ``times`` times (new stems)."""
    for p in list_pairs(src, "train"):
        for k in range(times):
            for f, sub in ((p.image, "images/10k/train"), (p.mask, "labels/sem_seg/masks/train")):
                out = dst / sub / f"{p.stem}-{k}{f.suffix}"
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, out)
    return dst


def check_rate(root: Path, workers: int) -> tuple[float, float, int]:
    """(pairs/s wall, pairs per CPU-second of this process and its pool workers, pairs)."""
    before = os.times()
    report = check_dataset(root, workers=workers)
    after = os.times()
    assert report.ok, report.problems[:3]
    cpu = sum(a - b for a, b in zip(after[:4], before[:4], strict=True))
    pairs = sum(s["images"] for s in report.summary.values())
    seconds = sum(s["seconds"] for s in report.summary.values())
    return pairs / seconds, pairs / cpu, pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", default=os.environ.get("BDDSEG_REAL_DATA", str(DEFAULT_REAL)))
    p.add_argument("--n", type=int, default=32, help="generated 1280x720 pairs")
    p.add_argument("--synth", type=int, default=120, help="bddseg.synth train images")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=8, help="copies of the train pairs for check")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"generated 1280x720": make_pairs(Path(tmp) / "gen", args.n)}
        real = Path(args.real)
        if (real / "images").is_dir():
            sources = {"real BDD100K 1280x720": real, **sources}
        for name, root in sources.items():
            r = samples_per_s(root, args.rounds)
            for key, how in (("decode", "decode only"), ("full", "decode + aug + normalise")):
                wall, cpu = r[key]
                rows.append(
                    f"| train sample, {name} | {how} | {cpu:.0f} /CPU-s ({wall:.0f} /s wall) "
                    f"| {r['n']} |"
                )
        big = next(iter(sources.values()))
        label = f"{args.copies}x the {next(iter(sources))} train pairs"
        sources[label] = replicate(big, Path(tmp) / "big", args.copies)
        try:
            from bddseg.synth import make_dataset

            sources["synthetic 256x448"] = make_dataset(
                Path(tmp) / "synth", train=args.synth, val=0, test=0, seed=0, workers=2
            )
        except (ImportError, TypeError) as e:
            print(f"(no synthetic set: {e})")
        for name, root in sources.items():
            for workers in (1, 2):
                wall, cpu, n = check_rate(root, workers)
                rows.append(
                    f"| data check, {name} | {workers} worker(s) | {cpu:.0f} /CPU-s "
                    f"({wall:.0f} /s wall) | {n} |"
                )

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores (load average {load}), "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print("| what | how | rate per CPU-second (wall) | items |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
