"""Run every benchmark at the small CPU sizes (``make bench``); see RESULTS.md for the figures.

Each script prints a markdown table; pass ``--device cuda`` to run the GPU variants.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    cuda = "--device" in sys.argv and "cuda" in sys.argv
    runs = [
        ["data_speed.py"],
        ["eval_speed.py", "--n", "100"],
        ["inference.py", *(["--device", "cuda"] if cuda else [])],
        [
            "train_throughput.py",
            *(
                ["--device", "cuda"]
                if cuda
                else ["--size", "128x256", "--batch", "2", "--steps", "3"]
            ),
        ],
    ]
    failed = 0
    for script, *args in runs:
        print(f"\n## {script} {' '.join(args)}\n", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / script), *args]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
