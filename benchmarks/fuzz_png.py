"""The PNG differential fuzz run of tests/test_png_differential.py, for longer.

    .venv/bin/python benchmarks/fuzz_png.py --seconds 300 --seed 1

Mutates sound mask PNGs (chunks duplicated, moved, dropped, resized; IHDR lengths and sizes;
chunks between IDATs; zlib header bytes; APNG chunks; bit flips with the CRC fixed up or not;
truncations) and reads each pair through the native kernel (:mod:`bddseg.fastpng`) and through
the general decoder (:func:`bddseg.masks.decode_mask`). Prints how many cases ran, how many the
kernel counted and the general decoder refused, and each disagreement (the kernel counting a
file the general decoder refuses or counts differently, or the general decoder raising
anything but a BddsegError); exit 1 if there was any.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import time
from pathlib import Path

from bddseg import fastpng
from bddseg.bench import cpu_model

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    """A module of tests/ (its helpers, no pytest run), imported as the tests import it."""
    sys.path.insert(0, str(REPO / "tests"))
    return importlib.import_module(name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    p.add_argument("--seed", type=int, default=1, help="the run's seed (the test uses 0)")
    p.add_argument("--out", help="also write the disagreeing pairs here (gt/pred per case)")
    args = p.parse_args()
    if not fastpng.available():
        print("bddseg._fastpng is not built: nothing to compare", file=sys.stderr)
        return 2
    diff = _load("test_png_differential")
    start = time.perf_counter()
    result = diff.fuzz(seed=args.seed, seconds=args.seconds)
    took = time.perf_counter() - start
    print(f"machine: {cpu_model()}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"seed {args.seed}: {result.cases} cases in {took:.0f} s "
        f"({result.cases / took:.0f}/s): kernel counted {result.kernel_counted}, "
        f"general decoder refused {result.refused}, "
        f"{result.cases - result.kernel_counted - result.refused} handed over and decoded; "
        f"{len(result.disagreements)} disagreements"
    )
    for n, problem, gt, pred in result.disagreements[:20]:
        print(f"  case {n}: {problem}")
        if args.out:
            folder = Path(args.out) / f"case{n}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "gt.png").write_bytes(gt)
            (folder / "pred.png").write_bytes(pred)
    return 1 if result.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
