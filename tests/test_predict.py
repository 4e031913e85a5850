"""Predictor and predict_inputs on a random U-Net at small, odd sizes (CPU, seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bddseg
from bddseg.config import Config, ModelConfig, to_dict
from bddseg.errors import BddsegError
from bddseg.labels import PALETTE
from bddseg.model import build_model, save_checkpoint
from bddseg.predict import (
    Predictor,
    load_predictor,
    predict_inputs,
    sliding_window_probs,
    to_class_map,
    unique_names,
)


def _checkpoint(path: Path, unknown_bias: float | None = None) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained=False), 20)
    if unknown_bias is not None:  # make class 19 (unknown) win everywhere
        with torch.no_grad():
            model.segmentation_head[0].bias[19] = unknown_bias
    ckpt = {"format": "bddseg", "version": 1, "model": model.state_dict(),
            "config": to_dict(Config()), "num_classes": 20, "step": 0, "epoch": 0,
            "best_metric": None}  # fmt: skip
    save_checkpoint(path, ckpt)
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def unknown_ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "unknown.pt", unknown_bias=1e4)


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return load_predictor(ckpt)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _no_temp_files(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_three_line_api(ckpt, tmp_path):
    path = _save(tmp_path / "frame.png", _image(100, 150))
    p = bddseg.load_predictor(ckpt)
    mask = p.predict(np.asarray(Image.open(path)))
    assert mask.shape == (100, 150) and mask.dtype == np.uint8
    assert mask.max() <= 18
    np.testing.assert_array_equal(p.predict(path), mask)  # a path works too


def test_writes_mask_color_overlay_at_input_size(ckpt, predictor, tmp_path):
    sizes = {"a": (100, 150), "b": (97, 131)}  # not multiples of 32
    for stem, (h, w) in sizes.items():
        _save(tmp_path / "in" / f"{stem}.png", _image(h, w))
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(tmp_path / "in")], out, checkpoint=ckpt, workers=0, progress=False
    )
    assert summary["written"] == 2 and summary["skipped"] == 0
    for stem, (h, w) in sizes.items():
        mask = Image.open(out / "masks" / f"{stem}.png")
        color = Image.open(out / "color" / f"{stem}.png")
        overlay = Image.open(out / "overlay" / f"{stem}.jpg")
        assert (mask.mode, mask.size) == ("L", (w, h))
        assert (color.mode, color.size) == ("RGB", (w, h))
        assert (overlay.format, overlay.size) == ("JPEG", (w, h))
        m = np.asarray(mask)
        assert m.max() <= 18  # unknown resolved: a valid official submission
        np.testing.assert_array_equal(m, predictor.predict(tmp_path / "in" / f"{stem}.png"))
        lut = np.array(PALETTE, dtype=np.uint8)
        np.testing.assert_array_equal(np.asarray(color), lut[m])
    _no_temp_files(out)


def test_unknown_is_resolved_or_kept_as_255(unknown_ckpt, tmp_path):
    img = _image(64, 96)
    resolved = load_predictor(unknown_ckpt).predict(img)
    assert resolved.max() <= 18
    logits = load_predictor(unknown_ckpt).logits(img)
    assert (logits.argmax(1) == 19).all()  # the model really says unknown everywhere
    np.testing.assert_array_equal(resolved, logits[:, :19].argmax(1)[0].numpy())
    kept = load_predictor(unknown_ckpt, keep_unknown=True).predict(img)
    assert (kept == 255).all()

    _save(tmp_path / "in" / "x.png", img)
    out = tmp_path / "out"
    predict_inputs(
        [str(tmp_path / "in" / "x.png")], out, checkpoint=unknown_ckpt, keep_unknown=True,
        workers=0, progress=False,
    )  # fmt: skip
    assert (np.asarray(Image.open(out / "masks" / "x.png")) == 255).all()
    assert (np.asarray(Image.open(out / "color" / "x.png")) == 0).all()  # 255 is drawn black


def test_to_class_map_19_classes_never_writes_255():
    scores = torch.randn(2, 19, 5, 7)
    np.testing.assert_array_equal(to_class_map(scores, keep_unknown=True), scores.argmax(1))


def test_tta_flip_is_the_mean_of_two_softmaxes(ckpt):
    img = _image(64, 96, seed=1)
    plain = load_predictor(ckpt)
    flip = load_predictor(ckpt, tta="flip")
    a = plain.logits(img).softmax(1)
    b = plain.logits(np.ascontiguousarray(img[:, ::-1])).softmax(1).flip(-1)
    torch.testing.assert_close(flip.probs(img), (a + b) / 2, atol=1e-5, rtol=1e-5)
    assert flip.predict(img).shape == (64, 96)


def test_tta_flip_scales_runs(ckpt):
    p = load_predictor(ckpt, tta="flip+scales")
    probs = p.probs(_image(70, 90))
    assert probs.shape == (1, 20, 70, 90)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 70, 90))


def test_sliding_window_covers_every_pixel():
    def pointwise(x):  # a per-pixel "model": tiling must not change its output
        return torch.cat([x, -x], 1)

    x = torch.randn(2, 3, 50, 70)
    expected = pointwise(x).softmax(1)
    got = sliding_window_probs(pointwise, x, window=(32, 32), overlap=0.5)
    torch.testing.assert_close(got, expected)


def test_sliding_window_predictor(ckpt):
    p = load_predictor(ckpt, window=(64, 64), overlap=0.25)
    assert p.predict(_image(100, 150)).shape == (100, 150)
    whole = load_predictor(ckpt, window=(128, 160))  # one window = one plain pass
    img = _image(100, 150)
    np.testing.assert_array_equal(whole.predict(img), load_predictor(ckpt).predict(img))


def test_predict_batch_matches_single(predictor):
    imgs = [_image(64, 96, 0), _image(70, 90, 1), _image(64, 96, 2)]
    masks = predictor.predict_batch(imgs, batch_size=2)
    for img, mask in zip(imgs, masks, strict=True):
        np.testing.assert_array_equal(mask, predictor.predict(img))


def test_folder_glob_and_stem_clashes(ckpt, tmp_path):
    src = tmp_path / "in"
    _save(src / "a" / "x.png", _image(40, 60))
    _save(src / "b" / "x.jpg", _image(40, 60))
    _save(src / "b" / "deep" / "y.png", _image(48, 64))
    _save(tmp_path / "other" / "z.png", _image(40, 60))
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(src), str(tmp_path / "other" / "*.png"), str(src / "a" / "x.png")],  # x.png twice
        out, checkpoint=ckpt, formats=["mask"], batch_size=2, workers=2, progress=False,
    )  # fmt: skip
    assert summary["written"] == 4 and summary["skipped"] == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "a__x.png",
        "b__x.png",
        "y.png",
        "z.png",
    ]
    assert not (out / "color").exists() and not (out / "overlay").exists()


def test_unique_names_same_folder_two_extensions(tmp_path):
    paths = [tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "y.png"]
    assert unique_names(paths) == ["x_jpg", "x_png", "y"]


def test_unreadable_inputs_are_reported_and_skipped(ckpt, tmp_path, capsys):
    _save(tmp_path / "in" / "good.png", _image(40, 60))
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    missing = str(tmp_path / "nope.jpg")
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(tmp_path / "in"), missing], out, checkpoint=ckpt, workers=0, progress=False
    )
    assert summary["written"] == 1 and summary["skipped"] == 3
    assert set(summary["skipped_files"]) == {
        str(tmp_path / "in" / "broken.jpg"), str(tmp_path / "in" / "empty.png"), missing,
    }  # fmt: skip
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all("skipped" in w for w in warnings)
    assert "broken.jpg" in err
    _no_temp_files(out)


def test_cli_predict(ckpt, tmp_path, capsys):
    from bddseg.cli import main

    _save(tmp_path / "in" / "f.png", _image(40, 60))
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "in"), "--checkpoint", str(ckpt), "--out", str(out),
               "--format", "mask,color", "--tta", "flip", "--workers", "0"])  # fmt: skip
    assert rc == 0
    assert (out / "masks" / "f.png").is_file() and (out / "color" / "f.png").is_file()
    assert "wrote 1 prediction(s)" in capsys.readouterr().out


def test_bad_arguments(ckpt, predictor, tmp_path):
    with pytest.raises(BddsegError, match="uint8 HxWx3"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(BddsegError, match="model file type"):
        load_predictor(tmp_path / "model.bin")
    with pytest.raises(BddsegError, match="unknown tta"):
        load_predictor(ckpt, tta="rotate")
    with pytest.raises(BddsegError, match="format"):
        predict_inputs([str(tmp_path)], tmp_path / "o", checkpoint=ckpt, formats=["svg"])


def test_video_without_backend_says_what_to_install(ckpt, tmp_path, monkeypatch):
    video = tmp_path / "drive.mp4"
    video.write_bytes(b"\0" * 16)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("av", "cv2") else real(name, *a),
    )
    with pytest.raises(BddsegError, match="pip install av"):
        predict_inputs([str(video)], tmp_path / "out", checkpoint=ckpt, progress=False)


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV not installed")
def test_video_frames_sampled_and_named(ckpt, tmp_path):
    import av

    video = tmp_path / "drive.mp4"
    with av.open(str(video), "w") as container:  # 3 s at 10 fps
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(
                np.full((64, 96, 3), i * 8, np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(video)], out, checkpoint=ckpt, formats=["mask"], video_fps=2.0, workers=0,
        progress=False,
    )  # fmt: skip
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"drive_{i:06d}.png" for i in (0, 5, 10, 15, 20, 25)]
    assert summary["written"] == 6
    assert Image.open(out / "masks" / names[0]).size == (96, 64)


@pytest.mark.slow
@pytest.mark.real
def test_real_val_images_full_resolution(ckpt, real_root, tmp_path):
    images = sorted((real_root / "images" / "10k" / "val").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    summary = predict_inputs([str(p) for p in images], out, checkpoint=ckpt, progress=False)
    assert summary["written"] == 2
    for img in images:
        mask = Image.open(out / "masks" / f"{img.stem}.png")
        assert (mask.mode, mask.size) == ("L", (1280, 720))
        assert np.asarray(mask).max() <= 18


def test_written_masks_evaluate_like_the_model(ckpt, synth_root, tmp_path):
    """Masks from predict, scored by ``evaluate --pred --gt``, give the numbers that
    ``evaluate --checkpoint`` gives with the same ``keep_unknown`` (255 where unknown wins)."""
    from bddseg.evaluate import evaluate_checkpoint, evaluate_folders

    images = synth_root / "images" / "10k" / "val"
    pred = tmp_path / "pred"
    predict_inputs(
        [str(images)], pred, checkpoint=ckpt, formats=["mask"], keep_unknown=True, workers=0,
        progress=False,
    )  # fmt: skip
    for mask in (pred / "masks").iterdir():  # official format rules: L, 8-bit, 0..18 or 255
        m = Image.open(mask)
        assert m.mode == "L" and m.size == Image.open(images / f"{mask.stem}.jpg").size
        assert set(np.unique(np.asarray(m))) <= set(range(19)) | {255}
    gt = synth_root / "labels" / "sem_seg" / "masks" / "val"
    from_files = evaluate_folders(pred / "masks", gt, tmp_path / "ev1", plots=False)
    direct = evaluate_checkpoint(ckpt, synth_root, tmp_path / "ev2", workers=0, plots=False,
                                 keep_unknown=True)  # fmt: skip
    assert from_files["num_images"] == direct["num_images"] == len(list(images.iterdir()))
    assert from_files["official"] == direct["official"]  # same confusion matrix, exactly
    assert from_files["with_unknown"] == direct["with_unknown"]


def test_predict_follows_the_scale_the_model_was_trained_at(synth_root, tmp_path):
    """A model trained with data.base_size sees images at that size in every route: training's
    validation, `evaluate --checkpoint` and `predict` give the same masks (19 classes; all
    in batches of 4, contiguous memory: the same kernels, see the three-routes test in
    test_train.py)."""
    from bddseg.config import from_dict
    from bddseg.data import list_pairs, read_mask
    from bddseg.evaluate import evaluate_checkpoint
    from bddseg.export import export_onnx
    from bddseg.metrics import confusion_matrix
    from bddseg.train import train

    cfg = from_dict(
        {
            "data": {"root": str(synth_root), "unknown": "ignore", "workers": 0},
            "model": {"pretrained": False},
            "optim": {"batch_size": 4, "max_steps": 2},
            "run": {"out": str(tmp_path / "run"), "accelerator": "cpu", "val_every": 2,
                    "channels_last": False},
        }
    )  # fmt: skip
    cfg = from_dict({"data": {"base_size": [48, 80], "crop": [48, 80]}}, cfg)
    result = train(cfg)
    best = tmp_path / "run" / "best.pt"
    evaluate_checkpoint(best, synth_root, tmp_path / "eval", batch_size=4, plots=False,
                        progress=False)  # fmt: skip
    p = load_predictor(best)
    assert p.input_size == (48, 80)
    cm = torch.zeros(20, 20, dtype=torch.int64)
    pairs = list_pairs(synth_root, "val")
    for pair, mask in zip(pairs, p.predict_batch([q.image for q in pairs], 4), strict=True):
        assert mask.shape == (96, 160)
        saved = np.asarray(Image.open(tmp_path / "eval" / "pred" / f"{pair.stem}.png"))
        np.testing.assert_array_equal(mask, saved)
        cm += confusion_matrix(torch.from_numpy(mask), read_mask(pair.mask))
    assert torch.equal(cm, result.last_confusion)  # the training validation's matrix
    # an ONNX export carries the input size, and its predictor follows it too
    onnx_p = load_predictor(export_onnx(best, tmp_path / "m.onnx"))
    assert onnx_p.input_size == (48, 80)
    assert onnx_p.predict(pair.image).shape == (96, 160)
