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
from bddseg.model import model_num_classes
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


@pytest.mark.parametrize("base_size", [None, (48, 80)], ids=["full-size", "base_size"])
def test_default_export_predicts_what_the_checkpoint_predicts(
    trained, synth_root, tmp_path, capsys, base_size
):
    """Issue 21: the default export takes the size the model was trained at (its val images'
    96x160, or base_size 48x80 padded to 64x96), `bddseg export` prints the parity check, and
    default `predict --onnx` agrees with default `predict --checkpoint` on >= 99.9% of pixels."""
    from bddseg.cli import main

    best = trained("ignore", base_size)
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(best), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    shape = "1x3x64x96" if base_size else "1x3x96x160"
    assert f"(input {shape})" in printed
    assert "parity with the checkpoint (fp32): on a 160x96 frame" in printed, printed
    assert OnnxForward(out).max_size == tuple(int(v) for v in shape.split("x")[2:])
    images = synth_root / "images" / "10k" / "val"
    kw = {"formats": ["mask"], "progress": False}
    predict_inputs([str(images)], tmp_path / "onnx", onnx=out, **kw)
    predict_inputs([str(images)], tmp_path / "torch", checkpoint=best, **kw)
    names = sorted(p.name for p in (tmp_path / "torch" / "masks").iterdir())
    assert len(names) == 6
    same = total = 0
    for name in names:
        a = np.asarray(Image.open(tmp_path / "onnx" / "masks" / name))
        b = np.asarray(Image.open(tmp_path / "torch" / "masks" / name))
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= MIN_AGREEMENT


def test_export_refuses_a_failed_parity_check_and_an_unknown_size(
    trained, ckpt, tmp_path, capsys, monkeypatch
):
    """An exported graph that predicts other classes than the checkpoint (here: its head's
    biases shifted before the export) is refused with one line and exit 2, nothing written,
    unless --no-check. A checkpoint that does not record its trained size is refused, naming
    --dynamic and --size; --size exports it."""
    from bddseg import export
    from bddseg.cli import main

    real_export = export._export_proto

    def broken(model, *args):
        with torch.no_grad():
            model.segmentation_head[0].bias += torch.linspace(0, 50, model_num_classes(model))
        return real_export(model, *args)

    monkeypatch.setattr(export, "_export_proto", broken)
    best, out = trained("ignore"), tmp_path / "broken.onnx"
    args = ["export", "--checkpoint", str(best), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not predict what the checkpoint predicts" in err[0], err
    assert str(best) in err[0] and "nothing written" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    assert main([*args, "--no-check"]) == 0 and out.exists()
    monkeypatch.setattr(export, "_export_proto", real_export)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--dynamic" in err and "--size" in err and not (tmp_path / "o.onnx").exists()
    args = ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.onnx")]
    assert main([*args, "--size", "64x96"]) == 0
    assert OnnxForward(tmp_path / "o.onnx").max_size == (64, 96)


@pytest.mark.slow
@pytest.mark.real
def test_fixed_export_parity_on_real_val_images(ckpt, real_root, tmp_path):
    out = export_onnx(ckpt, tmp_path / "fixed.onnx", size=(720, 1280)).path  # (1, 3, 736, 1280)
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
