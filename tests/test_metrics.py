"""metrics.py against hand-computed matrices, a naive reference, sklearn, and int32 wrap-around."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bddseg import metrics as M
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, CLASS_NAMES_20

U8 = np.uint8


def cm_of(pred, target, **kw) -> np.ndarray:
    return M.confusion_matrix(np.asarray(pred, U8), np.asarray(target, U8), **kw)


def naive_cm(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    cm = np.zeros((20, 20), dtype=np.int64)
    for t, p in zip(target.ravel().tolist(), pred.ravel().tolist(), strict=True):
        cm[19 if t == 255 else t, 19 if p >= 19 else p] += 1
    return cm


# ---------------------------------------------------------------- the confusion matrix
def test_hand_computed_small_matrix():
    target = [[0, 0, 1, 255], [0, 1, 1, 255]]
    pred = [[0, 1, 1, 0], [255, 1, 19, 255]]
    cm = cm_of(pred, target)
    assert cm.dtype == np.int64 and cm.shape == (20, 20)
    expected = np.zeros((20, 20), dtype=np.int64)
    expected[0, 0], expected[0, 1], expected[0, 19] = 1, 1, 1
    expected[1, 1], expected[1, 19] = 2, 1
    expected[19, 0], expected[19, 19] = 1, 1
    np.testing.assert_array_equal(cm, expected)

    off = M.official_metrics(cm)
    # road: TP 1, FN 2 (one to sidewalk, one a miss), FP 0 -> 1/3; sidewalk: TP 2, FP 1, FN 1 -> 2/4
    assert off["iou"]["road"] == pytest.approx(1 / 3)
    assert off["iou"]["sidewalk"] == pytest.approx(2 / 4)
    assert off["precision"]["road"] == pytest.approx(
        1.0
    )  # the prediction 0 on truth 255 is dropped
    assert off["precision"]["sidewalk"] == pytest.approx(2 / 3)
    assert off["miou"] == pytest.approx(
        (1 / 3 + 1 / 2) / 2
    )  # only road and sidewalk are in the truth
    assert off["pixel_accuracy"] == pytest.approx(3 / 6)
    assert off["fwiou"] == pytest.approx(3 / 6 * 1 / 3 + 3 / 6 * 2 / 4)
    assert off["iou"]["building"] is None and off["precision"]["building"] is None

    wu = M.with_unknown_metrics(cm)
    # 20 classes: road TP 1, row 3, col 2 -> 1/4; sidewalk 2/(3+3-2); unknown TP 1, row 2, col 3 -> 1/4
    assert wu["iou"]["road"] == pytest.approx(1 / 4)
    assert wu["iou"]["sidewalk"] == pytest.approx(2 / 4)
    assert wu["iou"]["unknown"] == pytest.approx(1 / 4)
    assert wu["precision"]["road"] == pytest.approx(1 / 2)
    assert wu["recall"]["unknown"] == pytest.approx(1 / 2)
    assert wu["f1"]["sidewalk"] == pytest.approx(2 * 2 / (3 + 3))
    assert wu["pixel_share"]["unknown"] == pytest.approx(2 / 8)
    assert wu["pixel_accuracy"] == pytest.approx(4 / 8)
    assert wu["miou_19"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert wu["miou_20"] == pytest.approx((1 / 4 + 2 / 4 + 1 / 4) / 3)


def test_perfect():
    target = np.array([[0, 5, 18, 255], [13, 13, 255, 2]], U8)
    cm = cm_of(target, target)
    off, wu = M.official_metrics(cm), M.with_unknown_metrics(cm)
    assert off["miou"] == off["pixel_accuracy"] == off["fwiou"] == 1.0
    assert wu["miou_19"] == wu["miou_20"] == wu["pixel_accuracy"] == 1.0
    present = {"road", "pole", "bicycle", "car", "building"}
    for name in CLASS_NAMES:
        assert off["iou"][name] == (1.0 if name in present else None)
    assert wu["iou"]["unknown"] == 1.0


def test_all_wrong():
    target = np.arange(19, dtype=U8).repeat(3).reshape(3, 19)
    pred = (target + 1) % 19
    off = M.official_metrics(cm_of(pred, target))
    assert off["miou"] == 0.0 and off["pixel_accuracy"] == 0.0 and off["fwiou"] == 0.0
    assert all(v == 0.0 for v in off["iou"].values())
    assert M.with_unknown_metrics(cm_of(pred, target))["iou"]["unknown"] is None


def test_class_absent_from_truth_but_predicted():
    target = np.array([[0, 0, 0, 1]], U8)
    pred = np.array([[0, 0, 2, 1]], U8)  # building predicted, never in the truth
    off = M.official_metrics(cm_of(pred, target))
    assert off["iou"]["building"] == 0.0  # defined: 0 / (0 + 1 FP + 0)
    assert off["precision"]["building"] == 0.0
    assert off["iou"]["road"] == pytest.approx(2 / 3)
    assert off["miou"] == pytest.approx((2 / 3 + 1) / 2)  # building is not averaged
    wu = M.with_unknown_metrics(cm_of(pred, target))
    assert wu["miou_19"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # the original's mean does count it
    assert wu["recall"]["building"] is None


def test_predictions_of_255_and_19_are_misses_not_false_positives():
    target = np.array([[3, 3, 3, 4]], U8)
    for miss in (19, 255):
        pred = np.array([[3, miss, miss, 4]], U8)
        cm = cm_of(pred, target)
        off = M.official_metrics(cm)
        assert off["iou"]["wall"] == pytest.approx(1 / 3)  # FN 2, FP 0
        assert off["precision"]["wall"] == 1.0
        assert off["pixel_accuracy"] == pytest.approx(2 / 4)
        wu = M.with_unknown_metrics(cm)
        assert wu["iou"]["unknown"] == 0.0 and wu["precision"]["unknown"] == 0.0
        assert wu["recall"]["unknown"] is None


def test_an_image_that_is_all_255():
    target = np.full((4, 5), 255, U8)
    pred = np.zeros((4, 5), U8)
    cm = cm_of(pred, target)
    off = M.official_metrics(cm)
    assert off["miou"] is None and off["pixel_accuracy"] is None and off["fwiou"] is None
    assert off["iou"]["road"] is None  # its false positives sit on ignored pixels: dropped
    wu = M.with_unknown_metrics(cm)
    assert wu["iou"]["road"] == 0.0 and wu["iou"]["unknown"] == 0.0
    assert wu["pixel_share"]["unknown"] == 1.0
    # Added to a normal image, the official numbers do not move.
    t2, p2 = np.array([[1, 1, 2]], U8), np.array([[1, 2, 2]], U8)
    assert M.official_metrics(cm + cm_of(p2, t2)) == M.official_metrics(cm_of(p2, t2))


def test_empty_matrix_is_all_none():
    cm = np.zeros((20, 20), np.int64)
    off, wu = M.official_metrics(cm), M.with_unknown_metrics(cm)
    assert off["miou"] is None and wu["miou_19"] is None and wu["pixel_accuracy"] is None
    assert set(wu["iou"].values()) == {None}


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(U8, (6, 7), elements=st.sampled_from([*range(19), 255])),
    hnp.arrays(U8, (6, 7), elements=st.sampled_from([*range(20), 255])),
)
def test_matches_naive_reference_numpy_and_torch(target, pred):
    expected = naive_cm(pred, target)
    np.testing.assert_array_equal(M.confusion_matrix(pred, target), expected)
    got = M.confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target))
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), expected)
    got64 = M.confusion_matrix(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
    np.testing.assert_array_equal(got64.numpy(), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.integers(1, 12))
def test_blocky_masks_run_length_path(seed, bh, bw):
    """Piecewise-constant masks take the run-length path of the numpy histogram."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice([*range(19), 255], size=(rng.integers(1, 6), rng.integers(1, 6)))
    target = np.kron(blocks, np.ones((bh, bw), np.int64)).astype(U8)
    pred = target.copy()
    pred[rng.random(pred.shape) < 0.01] = rng.choice([*range(20), 255])
    np.testing.assert_array_equal(M.confusion_matrix(pred, target), naive_cm(pred, target))


@pytest.mark.parametrize("bad", [19, 20, 254])
def test_invalid_truth_values_raise(bad):
    with pytest.raises(BddsegError, match=f"ground truth has invalid values {bad}"):
        cm_of([[0, 0]], [[0, bad]])


def test_invalid_prediction_values():
    with pytest.raises(BddsegError, match="prediction has invalid values 20, 200"):
        cm_of([[20, 200, 1]], [[0, 0, 1]])
    cm = cm_of([[20, 200, 1]], [[0, 0, 1]], strict_pred=False)  # the official tool's rule
    assert cm[0, 19] == 2 and cm[1, 1] == 1
    with pytest.raises(BddsegError, match="outside 0..255"):
        M.confusion_matrix(torch.tensor([[300]]), torch.tensor([[0]]))
    with pytest.raises(BddsegError, match="shape"):
        cm_of([[0, 0]], [[0]])
    with pytest.raises(TypeError):
        M.confusion_matrix(torch.zeros(2), torch.zeros(2, dtype=torch.uint8))


def test_counts_do_not_wrap_past_int32():
    """3,000 full 1280x720 frames in one cell: the official tool's int32 sum wraps there."""
    frame = 1280 * 720
    one = np.zeros((20, 20), np.int64)
    one[0, 0], one[0, 1], one[1, 1] = frame, frame // 4, frame // 4  # synthetic counts
    total = np.zeros((20, 20), np.int64)
    for _ in range(3000):
        total += one  # the same int64 accumulation the evaluators use
    assert total[0, 0] == 3000 * frame > 2**31
    assert (total.astype(np.int32) < 0).any()  # what int32 would have stored
    off_big, off_one = M.official_metrics(total), M.official_metrics(one)
    assert off_big["miou"] == pytest.approx(off_one["miou"], abs=1e-12)
    assert off_big["iou"]["road"] == pytest.approx(1 / 1.25, abs=1e-12)
    assert off_big["pixel_accuracy"] == pytest.approx(1.25 / 1.5, abs=1e-12)
    t = torch.from_numpy(total)  # torch matrices (the checkpoint path) too
    assert M.with_unknown_metrics(t)["iou"] == M.with_unknown_metrics(total)["iou"]


# ---------------------------------------------------------------- image level
def test_image_presence_and_min_pixels():
    mask = np.array([[0, 0, 0, 5, 255, 19]], U8)
    p = M.image_presence(mask)
    assert p.shape == (20,) and p.dtype == bool
    assert np.flatnonzero(p).tolist() == [0, 5, 19]
    assert np.flatnonzero(M.image_presence(mask, min_pixels=2)).tolist() == [0, 19]
    assert np.flatnonzero(M.image_presence(mask, num_classes=19)).tolist() == [0, 5]
    assert M.image_presence(torch.from_numpy(mask)).tolist() == p.tolist()
    with pytest.raises(BddsegError):
        M.image_presence(np.array([[20]], U8))
    # the same presence from one image's confusion matrix
    target = np.array([[0, 0, 3, 255]], U8)
    pred = np.array([[0, 7, 7, 255]], U8)
    t, q = M.presence_from_confusion(cm_of(pred, target))
    assert t.tolist() == M.image_presence(target).tolist()
    assert q.tolist() == M.image_presence(pred).tolist()


def _presence(rows: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(rows), 20), bool)
    for i, r in enumerate(rows):
        out[i, r] = True
    return out


def test_image_level_metrics_hand_computed():
    t = _presence([[0, 1], [0], [0, 2], []])
    p = _presence([[0, 1, 3], [1], [0], []])
    r = M.image_level_metrics(t, p)
    # road: TP 2, FN 1, FP 0; sidewalk: TP 1, FP 1; building: FN 1; wall: FP 1
    assert r["precision"]["road"] == 1.0 and r["recall"]["road"] == pytest.approx(2 / 3)
    assert r["f1"]["road"] == pytest.approx(0.8)
    assert r["precision"]["sidewalk"] == 0.5 and r["recall"]["sidewalk"] == 1.0
    assert r["precision"]["building"] is None and r["recall"]["building"] == 0.0
    assert r["f1"]["building"] == 0.0 and r["recall"]["wall"] is None
    assert r["support"]["road"] == 3 and r["support"]["unknown"] == 0
    # micro: TP 3, FP 2, FN 2
    assert r["micro"] == pytest.approx({"precision": 0.6, "recall": 0.6, "f1": 0.6, "support": 5})
    # macro: undefined counts as 0, over all 20 classes (sklearn)
    assert r["macro"]["precision"] == pytest.approx((1 + 0.5 + 0 + 0) / 20)
    assert r["weighted"]["recall"] == pytest.approx((3 * 2 / 3 + 1 * 1 + 1 * 0) / 5)
    # samples: image 1 P 2/3 R 1; image 2 P 0 R 0; image 3 P 1 R 1/2; image 4 (empty) 0
    assert r["samples"]["precision"] == pytest.approx((2 / 3 + 0 + 1 + 0) / 4)
    assert r["samples"]["recall"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)


def test_image_level_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    t = rng.random((40, 20)) < 0.4
    p = rng.random((40, 20)) < 0.4
    t[:, 16], p[:, 17] = False, False  # a class never in the truth, one never predicted
    p[3] = t[5] = False  # an image with no prediction, one with no truth
    t[7] = p[7] = False  # and one with neither
    r = M.image_level_metrics(t, p)
    report = sk.classification_report(
        t, p, output_dict=True, zero_division=0, target_names=CLASS_NAMES_20
    )
    for name in CLASS_NAMES_20:
        for k in ("precision", "recall", "f1"):
            assert (r[k][name] or 0.0) == pytest.approx(report[name][k.replace("f1", "f1-score")])
        assert r["support"][name] == report[name]["support"]
    for avg in M.AVERAGES:
        ref = report[f"{avg} avg"]
        got = r[avg]
        assert [got["precision"], got["recall"], got["f1"], got["support"]] == pytest.approx(
            [ref["precision"], ref["recall"], ref["f1-score"], ref["support"]]
        )


def test_image_level_matrix_matches_the_original_meaning():
    t = _presence([[0, 1], [0, 2], [0, 2], [3]])
    p = _presence([[0], [0, 2, 4], [1], [0]])
    m = M.image_level_matrix(t, p)
    assert m.dtype == np.int64 and m.shape == (20, 20)
    # diagonal: images where the class is predicted (hit or not)
    assert [m[i, i] for i in range(5)] == [3, 1, 1, 0, 1]
    # off the diagonal: the class missed, and what was predicted in those images
    assert m[1].tolist() == [1, 1] + [0] * 18  # sidewalk missed in image 0 (road predicted)
    assert m[0].tolist() == [3, 1] + [0] * 18  # road missed in image 2 (sidewalk predicted)
    assert m[2].tolist() == [0, 1, 1] + [0] * 17  # building missed in image 2 as well
    assert m[3].tolist() == [1] + [0] * 19  # wall missed in image 3 (road predicted)
    assert m[4:].sum() == 1  # fence: predicted once (a false positive), never missed


def test_to_contract_exact_keys():
    target = np.array([[0, 1, 255]], U8)
    cm = cm_of(target, target)
    t, p = M.presence_from_confusion(cm)
    c = M.to_contract(cm, t[None], p[None])
    assert list(c) == ["num_images", "official", "with_unknown", "image_level"]
    assert c["num_images"] == 1
    assert set(c["official"]) == {"miou", "pixel_accuracy", "fwiou", "iou", "precision"}
    assert list(c["official"]["iou"]) == list(CLASS_NAMES)
    assert set(c["with_unknown"]) == {
        "miou_19", "miou_20", "pixel_accuracy", "iou", "precision", "recall", "f1", "pixel_share",
    }  # fmt: skip
    assert list(c["with_unknown"]["pixel_share"]) == list(CLASS_NAMES_20)
    assert set(c["image_level"]) == {"precision", "recall", "f1", "support", *M.AVERAGES}
    assert "traffic light" in c["official"]["iou"] and "unknown" in c["image_level"]["support"]
    assert isinstance(c["image_level"]["support"]["road"], int)


# ---------------------------------------------------------------- any number of classes
FOUR = ("background", "road", "car", "person")


def test_four_classes_hand_computed():
    # pixels (truth, prediction): (0,0) (0,1) (1,1) (255,0) / (2,2) (2,4) (1,255) (255,255)
    target = [[0, 0, 1, 255], [2, 2, 1, 255]]
    pred = [[0, 1, 1, 0], [2, 4, 255, 255]]
    cm = cm_of(pred, target, num_classes=4)
    assert cm.shape == (5, 5) and cm.sum() == 8
    assert cm[4, 0] == 1 and cm[4, 4] == 1 and cm[1, 4] == 1 and cm[2, 4] == 1
    off = M.official_metrics(cm, names=FOUR)
    assert list(off["iou"]) == list(FOUR)
    # background 1/(2+1-1), road 1/(2+2-1), car 1/(2+1-1); person: empty union, left out
    assert off["iou"]["person"] is None
    iou = {n: v for n, v in off["iou"].items() if v is not None}
    assert iou == pytest.approx({"background": 0.5, "road": 1 / 3, "car": 0.5})
    assert off["miou"] == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert off["pixel_accuracy"] == pytest.approx(3 / 6)
    assert off["precision"]["person"] is None and off["precision"]["road"] == 0.5
    wu = M.with_unknown_metrics(cm, names=FOUR)
    assert M.with_unknown_keys(4) == ("miou_4", "miou_5")
    # here the unlabelled truth predicted as background counts against it: 1/(2+2-1)
    assert wu["iou"]["background"] == pytest.approx(1 / 3)
    assert wu["miou_4"] == pytest.approx((1 / 3 + 1 / 3 + 0.5) / 3)
    assert wu["iou"]["unknown"] == pytest.approx(1 / (2 + 3 - 1))  # 2 truths, 3 predictions
    assert wu["miou_5"] == pytest.approx((1 / 3 + 1 / 3 + 0.5 + 0.25) / 4)
    assert list(wu["pixel_share"]) == [*FOUR, "unknown"]
    # without names: class_0..class_3
    assert list(M.official_metrics(cm)["iou"]) == ["class_0", "class_1", "class_2", "class_3"]
    with pytest.raises(ValueError):
        M.official_metrics(cm, names=FOUR[:3])


def test_four_classes_ranges_and_presence():
    with pytest.raises(BddsegError, match=r"valid: 0\.\.3 and 255"):
        cm_of([[0]], [[4]], num_classes=4)
    with pytest.raises(BddsegError, match=r"valid: 0\.\.4 and 255"):
        cm_of([[5]], [[0]], num_classes=4)
    assert cm_of([[9]], [[0]], num_classes=4, strict_pred=False)[0, 4] == 1  # a miss
    # the same histogram folds to BDD100K's 20x20 by default
    assert cm_of([[9]], [[0]], strict_pred=False).shape == (20, 20)
    mask = np.array([[0, 3, 255, 4]], U8)
    assert M.image_presence(mask, num_classes=5, evaluated=4).tolist() == [1, 0, 0, 1, 1]
    assert M.image_presence(mask, num_classes=4, evaluated=4).tolist() == [1, 0, 0, 1]
    with pytest.raises(BddsegError):
        M.image_presence(np.array([[5]], U8), num_classes=5, evaluated=4)
    target = np.array([[0, 1, 255, 2]], U8)
    pred = np.array([[0, 2, 4, 2]], U8)
    cm = cm_of(pred, target, num_classes=4)
    t, p = M.presence_from_confusion(cm)
    c = M.to_contract(cm, t[None], p[None], names=FOUR)
    assert list(c["image_level"]["support"]) == [*FOUR, "unknown"]
    assert c["image_level"]["support"]["road"] == 1 and c["image_level"]["macro"]["support"] == 4
    assert M.image_level_matrix(t[None], p[None]).shape == (5, 5)
    assert set(c["with_unknown"]) >= {"miou_4", "miou_5"}


def test_labels_name_the_number_of_classes():
    assert M.MIOU_LABEL == M.miou_label(19) == "mIoU (official: 19 classes, 255 ignored)"
    assert M.official_label() == M.OFFICIAL_LABEL
    assert M.miou_label(4) == "mIoU (official: 4 classes, 255 ignored)"
