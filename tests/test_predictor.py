"""The model runner (bddseg.predictor): Predictor, TTA, sliding windows and the scores ->
classes rule, on a random U-Net at small, odd sizes (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bddseg
from bddseg.errors import BddsegError
from bddseg.predictor import (
    Predictor,
    load_predictor,
    same_size_batches,
    sliding_window_probs,
    to_class_map,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return load_predictor(ckpt)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_three_line_api(ckpt, tmp_path):
    path = _save(tmp_path / "frame.png", _image(100, 150))
    p = bddseg.load_predictor(ckpt)
    mask = p.predict(np.asarray(Image.open(path)))
    assert mask.shape == (100, 150) and mask.dtype == np.uint8
    assert mask.max() <= 18
    np.testing.assert_array_equal(p.predict(path), mask)  # a path works too


def test_unknown_is_resolved_or_kept_as_255(unknown_ckpt):
    img = _image(64, 96)
    resolved = load_predictor(unknown_ckpt).predict(img)
    assert resolved.max() <= 18
    logits = load_predictor(unknown_ckpt).logits(img)
    assert (logits.argmax(1) == 19).all()  # the model really says unknown everywhere
    np.testing.assert_array_equal(resolved, logits[:, :19].argmax(1)[0].numpy())
    kept = load_predictor(unknown_ckpt, keep_unknown=True).predict(img)
    assert (kept == 255).all()


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


def test_same_size_batches_stream_full_batches_then_the_rest():
    taken = []

    def items():  # (name, size); records what has been read when each batch comes out
        for item in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 2), ("f", 1)]:
            taken.append(item[0])
            yield item

    seen = [
        ([name for name, _ in batch], "".join(taken))
        for batch in same_size_batches(items(), 2, lambda item: item[1])
    ]
    assert seen == [(["a", "c"], "abc"), (["b", "e"], "abcde"), (["d", "f"], "abcdef")]
    rest = list(same_size_batches([("a", 1), ("b", 2), ("c", 1)], 3, lambda item: item[1]))
    assert rest == [[("a", 1), ("c", 1)], [("b", 2)]]  # in the order their sizes first came


def test_bad_arguments(ckpt, predictor, tmp_path):
    with pytest.raises(BddsegError, match="uint8 HxWx3"):
        predictor.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(BddsegError, match="model file type"):
        load_predictor(tmp_path / "model.bin")
    with pytest.raises(BddsegError, match="unknown tta"):
        load_predictor(ckpt, tta="rotate")


def test_predict_follows_the_scale_the_model_was_trained_at(synth_root, trained, tmp_path):
    """A model trained with data.base_size sees images at that size in every route: training's
    validation, `evaluate --checkpoint` and the Python API's predict_batch give the same masks
    with their defaults (19 classes; see the three-routes test in test_train.py)."""
    from bddseg.checkpoints import load_checkpoint
    from bddseg.data import read_mask
    from bddseg.evaluate import evaluate_checkpoint
    from bddseg.export import export_onnx
    from bddseg.layout import list_pairs
    from bddseg.metrics import confusion_matrix, official_metrics

    best = trained("ignore", (48, 80))
    evaluate_checkpoint(best, synth_root, tmp_path / "eval", plots=False, progress=False)
    p = load_predictor(best)
    assert p.input_size == (48, 80)
    cm = torch.zeros(20, 20, dtype=torch.int64)
    pairs = list_pairs(synth_root, "val")
    for pair, mask in zip(pairs, p.predict_batch([q.image for q in pairs]), strict=True):
        assert mask.shape == (96, 160)
        saved = np.asarray(Image.open(tmp_path / "eval" / "pred" / f"{pair.stem}.png"))
        np.testing.assert_array_equal(mask, saved)
        cm += confusion_matrix(torch.from_numpy(mask), read_mask(pair.mask))
    validation = load_checkpoint(best)["best_metric"]  # the training validation's mIoU
    assert official_metrics(cm)["miou"] == pytest.approx(validation, abs=1e-9)
    # an ONNX export carries the input size, and its predictor follows it too
    onnx_p = load_predictor(export_onnx(best, tmp_path / "m.onnx").path)
    assert onnx_p.input_size == (48, 80)
    assert onnx_p.predict(pair.image).shape == (96, 160)


def test_predict_takes_one_image_and_points_to_predict_batch(predictor, tmp_path):
    """predict([a, b]) used to return a's mask alone; several images are predict_batch's."""
    a, b = _image(40, 60, seed=2), _image(40, 60, seed=3)
    paths = [_save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b)]
    stacked = np.stack([a, b])
    several = [paths, tuple(paths), [a, b], stacked, torch.from_numpy(stacked).permute(0, 3, 1, 2)]
    for images in several:
        with pytest.raises(TypeError, match=r"takes one image.*use predict_batch\(images\)"):
            predictor.predict(images)
    one_each = [predictor.predict(a), predictor.predict(b)]
    assert not np.array_equal(*one_each)  # so that a list answered with a's mask would show
    for images in (paths, stacked, torch.from_numpy(stacked).permute(0, 3, 1, 2)):
        masks = predictor.predict_batch(images)
        assert len(masks) == 2
        for mask, expected in zip(masks, one_each, strict=True):
            np.testing.assert_array_equal(mask, expected)
