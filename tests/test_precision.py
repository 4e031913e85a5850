"""bddseg.precision: what ``auto`` resolves to, and that bf16 on CPU changes no result beyond
noise (issue 14): the demo recipe, shortened.

``precision: auto`` runs bf16 autocast on a CPU with AMX or AVX-512 BF16 (both CI machine
kinds have one). Here the demo recipe (U-Net/ResNet34 from random weights, 128x224, AdamW
one-cycle) trains for STEPS steps on a smaller synthetic set, in fp32 with two seeds and in
bf16 with the first; then:

- inference: the fp32 model's masks under bf16 autocast agree with its fp32 masks on at least
  99% of the val pixels;
- training: the bf16 run's final val mIoU lies within the fp32 seed-to-seed spread (widened
  to at least MIN_SPREAD: two seeds are a small sample of that spread).

Inference (Predictor, load_predictor, predict, evaluate) runs 32-true unless asked, whatever
the CPU (issue 21): the same checkpoint gives the same masks everywhere.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

import bddseg
import bddseg.model
from bddseg.cli import build_parser, main
from bddseg.demo import demo_config
from bddseg.errors import BddsegError
from bddseg.precision import autocast, cpu_bf16_native, precision_note, resolve_precision
from bddseg.predict import predict_inputs
from bddseg.predictor import Predictor, load_predictor
from bddseg.synth import make_dataset
from bddseg.train import train

STEPS = 60
MIN_SPREAD = 0.03


# ---------------------------------------------------------------- which precision auto is
@pytest.fixture()
def cpu_bf16(monkeypatch):
    """Set ``BDDSEG_CPU_BF16`` and forget the cached detection (also afterwards)."""

    def force(value: str) -> None:
        monkeypatch.setenv("BDDSEG_CPU_BF16", value)
        cpu_bf16_native.cache_clear()

    cpu_bf16_native.cache_clear()
    yield force
    cpu_bf16_native.cache_clear()


def test_auto_precision_follows_the_cpu(cpu_bf16):
    cpu_bf16("1")
    assert cpu_bf16_native() == "BDDSEG_CPU_BF16=1"
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    assert precision_note("auto", "cpu") == "bf16-mixed (auto: this CPU has BDDSEG_CPU_BF16=1)"
    ctx = autocast("auto", "cpu")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    cpu_bf16("0")
    assert cpu_bf16_native() is None
    assert resolve_precision("auto", "cpu") == "32-true"
    assert precision_note("auto", "cpu") == "32-true (auto: this CPU would emulate bf16)"
    assert isinstance(autocast("auto", "cpu"), contextlib.nullcontext)


def test_explicit_and_gpu_precisions(cpu_bf16):
    cpu_bf16("0")
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        assert resolve_precision(precision, "cpu") == precision
        assert precision_note(precision, "cpu") == precision
    assert resolve_precision("auto", "cuda:1") == resolve_precision("auto", "gpu") == "bf16-mixed"
    assert autocast("16-mixed", "cpu").fast_dtype == torch.float16
    with pytest.raises(BddsegError, match="unknown precision 'fp8' \\(valid: auto, 32-true"):
        resolve_precision("fp8")


# ---------------------------------------------------------------- inference is fp32 unless asked
@pytest.fixture()
def ran_at(monkeypatch) -> list[str]:
    """The precisions (resolved) that model forwards run under, in order: every route
    (Predictor, predict, evaluate) runs the model through bddseg.model.model_forward."""
    seen: list[str] = []
    real = bddseg.model.autocast

    def spy(precision, device="cpu"):
        seen.append(resolve_precision(precision, device))
        return real(precision, device)

    monkeypatch.setattr(bddseg.model, "autocast", spy)
    return seen


def test_inference_flags_default_to_fp32_and_training_to_auto():
    parser = build_parser()
    assert parser.parse_args(["predict", "x.jpg", "--out", "o"]).precision == "32-true"
    assert parser.parse_args(["evaluate", "--out", "o"]).precision == "32-true"
    assert parser.parse_args(["train"]).precision is None  # the config's run.precision: auto
    from bddseg.config import Config

    assert Config().run.precision == "auto"


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("native", ["1", "0"], ids=["cpu-bf16", "no-cpu-bf16"])
def test_inference_runs_fp32_by_default_on_every_cpu(native, cpu_bf16, ran_at, ckpt, tmp_path):
    """The same checkpoint gives the same masks on every machine (and the ONNX export's):
    whether or not the CPU computes bf16, every inference route runs fp32 unless asked."""
    cpu_bf16(native)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    fp32 = Predictor.from_checkpoint(ckpt, precision="32-true").logits(image)
    ran_at.clear()
    for p in (Predictor.from_checkpoint(ckpt), load_predictor(ckpt), bddseg.load_predictor(ckpt)):
        torch.testing.assert_close(p.logits(image), fp32, rtol=0, atol=0)
    predict_inputs([str(tmp_path / "a.png")], tmp_path / "lib", checkpoint=ckpt,
                   formats=["mask"], workers=0, progress=False)  # fmt: skip
    argv = ["predict", tmp_path / "a.png", "--checkpoint", ckpt, "--out", tmp_path / "cli"]
    assert main([str(a) for a in [*argv, "--format", "mask", "--workers", "0"]]) == 0
    assert ran_at == ["32-true"] * 5
    ran_at.clear()  # bf16 stays available where asked; auto still follows the CPU
    load_predictor(ckpt, precision="bf16-mixed").logits(image)
    load_predictor(ckpt, precision="auto").logits(image)
    assert ran_at == ["bf16-mixed", "bf16-mixed" if native == "1" else "32-true"]


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_checkpoint_cli_runs_fp32_by_default(cpu_bf16, ran_at, ckpt, synth_root, tmp_path):
    cpu_bf16("1")
    argv = ["evaluate", "--checkpoint", ckpt, "--data", synth_root, "--out", tmp_path / "ev"]
    assert main([str(a) for a in [*argv, "--workers", "0", "--no-plots"]]) == 0
    assert ran_at and set(ran_at) == {"32-true"}


# ---------------------------------------------------------------- the demo recipe in bf16


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_data")
    return make_dataset(out, train=48, val=12, test=1, seed=3, workers=2)


def _train(root, out, precision: str, seed: int):
    cfg = demo_config(root, out, loss="ce")
    from bddseg.config import override

    cfg = override(
        cfg,
        **{
            "optim.max_steps": STEPS,
            "run.val_every": STEPS,
            "run.precision": precision,
            "run.seed": seed,
            "run.log_every": STEPS,
        },
    )
    return train(cfg)


@pytest.fixture(scope="module")
def runs(demo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision_runs")
    return {
        ("32-true", 0): _train(demo_root, tmp / "fp32_0", "32-true", 0),
        ("32-true", 1): _train(demo_root, tmp / "fp32_1", "32-true", 1),
        ("bf16-mixed", 0): _train(demo_root, tmp / "bf16_0", "bf16-mixed", 0),
    }


def test_auto_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    try:
        for forced, expected in (("1", "bf16-mixed"), ("0", "32-true")):
            monkeypatch.setenv("BDDSEG_CPU_BF16", forced)
            cpu_bf16_native.cache_clear()
            assert resolve_precision("auto", "cpu") == expected
        monkeypatch.delenv("BDDSEG_CPU_BF16")
        cpu_bf16_native.cache_clear()
        native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        assert (resolve_precision("auto", "cpu") == "bf16-mixed") == native
        assert resolve_precision("32-true", "cpu") == "32-true"  # explicit always wins
    finally:
        cpu_bf16_native.cache_clear()


@pytest.mark.slow
def test_bf16_inference_masks_agree_with_fp32(runs, demo_root):
    best = runs[("32-true", 0)].run_dir / "best.pt"
    fp32 = Predictor.from_checkpoint(best, precision="32-true")
    bf16 = Predictor.from_checkpoint(best, precision="bf16-mixed")
    images = sorted((demo_root / "images" / "10k" / "val").glob("*.jpg"))
    same = total = 0
    for path in images:
        a, b = fp32.class_map(path).cpu().numpy(), bf16.class_map(path).cpu().numpy()
        same += int(np.count_nonzero(a == b))
        total += a.size
    agreement = same / total
    print(f"bf16 vs fp32 mask agreement: {agreement:.4%} of {total} pixels")
    assert agreement >= 0.99


@pytest.mark.slow
def test_bf16_training_within_seed_spread(runs):
    fp32 = [runs[("32-true", s)].best_miou for s in (0, 1)]
    bf16 = runs[("bf16-mixed", 0)].best_miou
    spread = max(max(fp32) - min(fp32), MIN_SPREAD)
    print(f"val mIoU after {STEPS} steps: fp32 seeds 0/1 {fp32}, bf16 seed 0 {bf16:.4f}")
    assert min(fp32) - spread <= bf16 <= max(fp32) + spread
