#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one pass (about 6 minutes on an H100/H200):
#   1. training-step throughput at 512x1024, batch 8 (ours in fp32 / channels_last / bf16 /
#      bf16+compile, a plain PyTorch loop, fastai's unet_learner(resnet34) model);
#   2. inference at 720x1280 (fp32, channels_last, bf16, channels_last+bf16+compile) at
#      batches 1, 8 and 16;
#   3. the loop end to end on the GPU: the demo's cross-entropy recipe on the built-in dataset
#      (bf16 autocast, channels_last), then `bddseg evaluate` of its best checkpoint on CUDA;
#   4. the zoo recipes' architectures against U-Net/ResNet34 (benchmarks/archs.py): training
#      images/s at 512x1024 batch 8 and 16 (with peak memory), inference at 720x1280 batch 8.
# Needs a Python with torch (CUDA), bddseg's dependencies and, for the fastai rows, fastai.
#   OUT=results bash benchmarks/gpu.sh
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "== $* ($(date +%T))"; }

log machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
nproc

log "1. training-step throughput"
timeout 200 "$PY" benchmarks/train_throughput.py --device cuda --size 512x1024 --batch 8 \
    --steps 20 --warmup 5 --out "$OUT/train_throughput.json" 2>&1 | tee "$OUT/train_throughput.txt"

log "2. inference at 720x1280"
timeout 180 "$PY" -m bddseg.cli bench --device cuda --batch-sizes 1,8,16 \
    --variants fp32,channels_last,bf16,cl+bf16+compile --iters 20 --warmup 5 \
    --out "$OUT/inference.json" 2>&1 | tee "$OUT/inference.txt"

log "3. the demo recipe trained and evaluated on the GPU"
data=$(mktemp -d)
{
    "$PY" -m bddseg.cli synth "$data" --train 240 --val 50 --test 12 --height 256 --width 448 \
        --workers 8 &&
    time timeout 150 "$PY" -m bddseg.cli train --config configs/demo_ce.yaml --data "$data/bdd100k" \
        --out "$data/run" --accelerator cuda --precision auto --workers 4 &&
    cp "$data/run/log.csv" "$OUT/demo_ce_gpu_log.csv" &&
    "$PY" -m bddseg.cli evaluate --checkpoint "$data/run/best.pt" --data "$data/bdd100k" \
        --split val --out "$data/eval" --device cuda &&
    cp "$data/eval/metrics.json" "$OUT/demo_ce_gpu_metrics.json"
} 2>&1 | tail -40 | tee "$OUT/demo_gpu.txt"

log "4. the zoo recipes' architectures"
for b in 8 16; do
    timeout 300 "$PY" benchmarks/archs.py --device cuda --size 512x1024 --batch $b --steps 10 \
        --warmup 3 --infer-batch 8 --infer-steps 10 --out "$OUT/archs_b$b.json" 2>&1 |
        grep -v "Automatic Mixed" | tee "$OUT/archs_b$b.txt"
done
log done
