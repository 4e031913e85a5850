"""Inference speed at 720x1280: PyTorch fp32, channels_last, bf16 autocast, torch.compile and
onnxruntime, as ratios to plain fp32. A thin wrapper over ``bddseg bench`` (same flags).

    .venv/bin/python benchmarks/inference.py [--device cuda] [--batch-sizes 1,8] [--out bench.json]

On CPU the defaults are short (batch 1, 3 timed calls); on CUDA batches 1 and 8, 20 timed calls,
plus the combined channels_last + bf16 + compile variant. Results go in benchmarks/RESULTS.md
with the machine they came from.
"""

from __future__ import annotations

import sys

from bddseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
