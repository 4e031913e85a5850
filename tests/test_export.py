"""ONNX export and onnxruntime parity with PyTorch, on a random U-Net.

Tolerance: the largest |logit difference| must stay below 1e-5 of the largest |logit| (the
random model's logits reach 100-250, so about 1e-3 to 2.5e-3 absolute; measured 4-7e-4), and
at least 99.9% of pixels must get the same class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from bddseg.errors import BddsegError
from bddseg.export import check_parity, export_onnx
from bddseg.onnx_runtime import OnnxForward
from bddseg.predict import predict_inputs
from bddseg.predictor import load_predictor

REL_TOL = 1e-5
MIN_AGREEMENT = 0.999


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dynamic_onnx(ckpt, tmp_path_factory) -> Path:
    from bddseg.cli import main

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--dynamic"]) == 0
    return out


def _assert_parity(result: dict) -> None:
    assert result["max_abs_diff"] <= REL_TOL * result["max_abs_logit"], result
    assert result["argmax_agreement"] >= MIN_AGREEMENT, result


def test_dynamic_export_two_sizes(ckpt, dynamic_onnx):
    model = onnx.load(str(dynamic_onnx))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "images" and model.graph.output[0].name == "logits"
    assert dims == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["bddseg.num_classes"] == "20"
    forward = OnnxForward(dynamic_onnx)
    assert forward.max_size is None and forward.num_classes == 20
    torch_p = load_predictor(ckpt, precision="32-true")  # the exported graph is fp32
    for shape in [(1, 3, 96, 160), (2, 3, 100, 150)]:  # the second is padded to 128x160
        x = torch.randn(shape)
        a, b = torch_p.logits(x), forward(x)
        assert b.shape == (shape[0], 20, *shape[2:])
        assert (a - b).abs().max() <= REL_TOL * a.abs().max()


def test_check_parity_and_onnx_predictor(ckpt, dynamic_onnx):
    images = [_image(100, 150, 0), _image(64, 96, 1)]
    result = check_parity(ckpt, dynamic_onnx, images)
    assert result["images"] == 2 and result["pixels"] == 100 * 150 + 64 * 96
    _assert_parity(result)
    onnx_masks = load_predictor(dynamic_onnx, tta="flip").predict_batch(images)
    torch_masks = load_predictor(ckpt, tta="flip", precision="32-true").predict_batch(images)
    for a, b in zip(onnx_masks, torch_masks, strict=True):
        assert (a == b).mean() >= MIN_AGREEMENT


def test_predict_inputs_with_onnx(ckpt, dynamic_onnx, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(_image(70, 90)).save(tmp_path / "in" / "f.png")
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(tmp_path / "in")], out, onnx=dynamic_onnx, formats=["mask"], workers=0, progress=False
    )
    assert summary["written"] == 1
    mask = np.asarray(Image.open(out / "masks" / "f.png"))
    fp32 = load_predictor(ckpt, precision="32-true")  # what was exported
    assert (mask == fp32.predict(tmp_path / "in" / "f.png")).mean() >= MIN_AGREEMENT


def test_export_errors(ckpt, tmp_path):
    with pytest.raises(BddsegError, match=r"\.onnx"):
        export_onnx(ckpt, tmp_path / "model.bin")
    with pytest.raises(BddsegError, match="not found"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(BddsegError, match="ONNX"):
        load_predictor(tmp_path / "junk.onnx")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.real
def test_fixed_export_parity_on_real_val_images(ckpt, real_root, tmp_path):
    out = export_onnx(ckpt, tmp_path / "fixed.onnx")  # (1, 3, 736, 1280)
    assert OnnxForward(out).max_size == (736, 1280)
    assert not list(tmp_path.glob(".*.tmp"))
    images = sorted((real_root / "images" / "10k" / "val").glob("*.jpg"))[:2]
    result = check_parity(ckpt, out, images)
    assert result["pixels"] == 2 * 720 * 1280
    _assert_parity(result)


def test_bench_small_runs_and_writes_json(tmp_path):
    import json

    from bddseg.bench import markdown_table, run_inference_bench

    out = tmp_path / "bench.json"
    result = run_inference_bench(
        variants=["fp32", "channels_last", "bf16"], batch_sizes=[1, 2], iters=1, height=64,
        width=96, out=out, echo=lambda line: None,
    )  # fmt: skip
    assert json.loads(out.read_text()) == result
    assert [(r["variant"], r["batch"]) for r in result["rows"]] == [
        (v, b) for v in ("fp32", "channels_last", "bf16") for b in (1, 2)
    ]
    assert all(r["vs_fp32"] > 0 for r in result["rows"])
    assert "| fp32 | 1 |" in markdown_table(result)
    with pytest.raises(BddsegError, match="fp32"):
        run_inference_bench(variants=["bf16"])
