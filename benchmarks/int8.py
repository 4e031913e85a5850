"""INT8 against fp32 on the CPU: what static INT8 costs in accuracy on real photos, and what it
buys in speed, on onnxruntime and OpenVINO, against PyTorch fp32.

    .venv/bin/python benchmarks/int8.py --checkpoint RUN/best.pt [--data ROOT] [--threads 2]

``RUN`` is a model of the real-photo recipe (``bddseg train --config
configs/real_sample_cpu.yaml --data ROOT``); ``ROOT`` defaults to ``$BDDSEG_SAMPLE_DATA``, else
``../shared/data/bdd100k-sample`` (170 train / 50 val photos).

1. Accuracy: ``bddseg export --quantize int8`` as shipped (fixed input at the trained size,
   16 calibration photos from train), scored against fp32 on every val photo (official mIoU
   at the masks' 1280x720, pixel agreement); once more with the first conv and the head kept
   in fp32 (``--keep-fp32 first-conv,head``).
2. Speed at the trained size: those files, one normalised frame per call, each runtime.
3. Speed at 720x1280: ``bddseg bench`` (dynamic export; the INT8 rows calibrated on random
   frames, which sets the ranges but not the kernels) for torch fp32, onnxruntime and OpenVINO
   in fp32 and INT8: the best CPU path against torch fp32.

Writes ``OUT/int8.json`` and ``OUT/int8.md`` (the tables, with the machine and the date).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from bddseg.bench import device_name, run_inference_bench, time_forward
from bddseg.export import export_onnx
from bddseg.onnx_runtime import OnnxForward
from bddseg.quantize import KEEP_FP32, quantize_onnx

REPO = Path(__file__).resolve().parents[1]
CALIBRATION_IMAGES = 16  # bddseg export's default


def accuracy(checkpoint: Path, root: Path, tmp: Path) -> tuple[dict, dict[str, Path]]:
    """The shipped export, and the same with :data:`KEEP_FP32` in fp32, on all val photos."""
    done = export_onnx(
        checkpoint, tmp / "m.onnx", quantize="int8", calibration=root,
        calibration_images=CALIBRATION_IMAGES, eval_images=None,
    )  # fmt: skip
    kept = quantize_onnx(
        done.fp32, tmp / "kept.onnx", root, calibration_images=CALIBRATION_IMAGES,
        eval_images=None, keep_fp32=KEEP_FP32, try_keep=False,
    )  # fmt: skip
    files = {
        "fp32": done.fp32,
        "int8": done.path,
        "int8, first conv + head fp32": tmp / "kept.onnx",
    }
    return {"int8": done.int8["scores"], "int8_keep": kept["scores"]}, files


def trained_size_speed(files: dict[str, Path], threads: int, iters: int) -> list[dict]:
    """Each file on each runtime at its fixed input, one random normalised frame per call."""
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    rows = []
    for runtime in runtimes:
        for name, path in files.items():
            forward = OnnxForward(path, threads=threads, runtime=runtime)
            h, w = forward.input_size or forward.max_size
            x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
            row = {"runtime": runtime, "model": name, "size": [h, w]}
            row.update(time_forward(forward, x, iters, 1, torch.device("cpu")))
            rows.append(row)
            print(f"  {runtime:>11} {name}: {row['images_per_s']} images/s", flush=True)
    return rows


def markdown(result: dict) -> str:
    a, k = result["accuracy"]["int8"], result["accuracy"]["int8_keep"]
    h, w = result["trained_size"][0]["size"]
    lines = [
        f"{result['machine']}; {result['threads']} threads; {result['date']}; "
        f"checkpoint {result['checkpoint']}",
        "",
        f"Accuracy on {a['images']} real val photos (official mIoU at 1280x720; "
        f"{CALIBRATION_IMAGES} calibration photos from train):",
        "",
        "| model | mIoU | drop vs fp32 (pp) | pixels as fp32 |",
        "|---|---:|---:|---:|",
        f"| fp32 ONNX | {a['miou_fp32']:.4f} | - | - |",
        f"| INT8 (`export --quantize int8`) | {a['miou_int8']:.4f} | "
        f"{a['miou_drop'] * 100:+.2f} | {a['agreement']:.2%} |",
        f"| INT8, first conv + head fp32 | {k['miou_int8']:.4f} | "
        f"{k['miou_drop'] * 100:+.2f} | {k['agreement']:.2%} |",
        "",
        f"Speed at the trained size ({w}x{h} input, padded to the model's multiple), batch 1:",
        "",
        "| runtime | model | images/s | latency ms | vs fp32, same runtime | CPU s/image |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = {r["runtime"]: r["images_per_s"] for r in result["trained_size"] if r["model"] == "fp32"}
    for r in result["trained_size"]:
        lines.append(
            f"| {r['runtime']} | {r['model']} | {r['images_per_s']:.2f} | {r['latency_ms']:.1f} "
            f"| {r['images_per_s'] / base[r['runtime']]:.2f}x | {r['cpu_s_per_image']:.3f} |"
        )
    from bddseg.bench import markdown_table

    lines += ["", "At 720x1280 (`bddseg bench`):", "", markdown_table(result["full_size"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a real-photo recipe model (.pt)")
    parser.add_argument("--data", help="the real sample (default: $BDDSEG_SAMPLE_DATA, else "
                        "../shared/data/bdd100k-sample)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default: 2)")
    parser.add_argument("--iters", type=int, default=5, help="timed calls (default: 5)")
    parser.add_argument("--out", default="runs/int8", help="output folder (default: runs/int8)")
    args = parser.parse_args()
    root = Path(args.data or os.environ.get("BDDSEG_SAMPLE_DATA") or
                REPO.parent / "shared" / "data" / "bdd100k-sample")  # fmt: skip
    if not root.is_dir():
        sys.exit(f"error: {root}: the real BDD100K sample is not there (set BDDSEG_SAMPLE_DATA)")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bddseg-int8-bench-") as tmp:
        print("accuracy ...", flush=True)
        scores, files = accuracy(Path(args.checkpoint), root, Path(tmp))
        print(json.dumps(scores, indent=1), flush=True)
        print("speed at the trained size ...", flush=True)
        small = trained_size_speed(files, args.threads, args.iters)
    print("speed at 720x1280 ...", flush=True)
    variants = ["fp32", "onnxruntime", "int8"]
    if importlib.util.find_spec("openvino"):
        variants += ["openvino", "openvino-int8"]
    full = run_inference_bench(
        variants=variants, iters=max(2, args.iters // 2), checkpoint=args.checkpoint,
        threads=args.threads, echo=lambda s: print(s, flush=True),
    )  # fmt: skip
    result = {
        "machine": device_name(torch.device("cpu")),
        "date": datetime.date.today().isoformat(),
        "threads": args.threads,
        "checkpoint": str(args.checkpoint),
        "accuracy": scores,
        "trained_size": small,
        "full_size": full,
    }
    (out / "int8.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "int8.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    print(f"wrote {out / 'int8.json'} and {out / 'int8.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
