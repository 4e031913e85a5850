"""Cityscapes evaluation parity: ``bddseg evaluate --pred --data`` on a Cityscapes-layout
dataset against cityscapesScripts' own evaluator (``evalPixelLevelSemanticLabeling``) on the
same predictions.

cityscapesScripts runs in its own venv (``make .venv-cityscapes``, built by ``make test``;
or ``BDDSEG_CITYSCAPES_PYTHON``) through ``tests/cityscapes_eval_runner.py``. Without it these
tests skip, and fail when ``CI=true``, as the BDD100K evaluator's parity test does.

bddseg predicts train ids (0..18); cityscapesScripts reads label ids, so its copy of each
prediction goes through :func:`bddseg.classes.train_to_label_ids`. Its definitions, which
bddseg must match on a Cityscapes dataset: one confusion matrix over all pairs; a ground-truth
pixel whose label is ``ignoreInEval`` counts for nothing; a class's
``IoU = TP / (TP + FP + FN)`` with FP counted on evaluated pixels only, NaN when that is 0/0;
the mean ("Score Average") over the classes whose IoU is not NaN, so a class absent from the
truth but predicted on evaluated pixels counts with IoU 0 (BDD100K's toolkit averages over
the classes present in the truth only).

The dataset is built here, not by ``bddseg.synth_layouts.write_layout``: that writes only
label 0 and the 19 evaluated ids (the inverse table), and this test needs other ignored ids
(1, 4, 9, 14, 29, ...) in the truth and chosen classes absent or only predicted.

Not compared: an image without a prediction. cityscapesScripts stops with
``ERROR: Unable to load ...`` (exit 255); bddseg counts the image as all misses
(``test_cityscapes_scripts_stops_on_a_missing_prediction`` pins the former).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bddseg.classes import CITYSCAPES_LABEL_IDS, CITYSCAPES_LABELS, train_to_label_ids
from bddseg.labels import CLASS_NAMES, IGNORE_VALUE

REPO = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("cityscapes_eval_runner.py")
pytestmark = pytest.mark.cityscapes

H, W = 64, 128
CITIES = ("aachen", "bochum")
FRAMES = (19, 42, 77)
IGNORED_IDS = (0, 1, 4, 9, 14, 29)  # unlabeled, ego vehicle, static, parking, guard rail, caravan
ABSENT = "train"  # in no truth and never predicted: empty union, NaN / None
PHANTOM = "motorcycle"  # in no truth but predicted: IoU 0, and in cityscapesScripts' mean
LABEL_ID = {name: label_id for name, label_id, _ in CITYSCAPES_LABELS}


# ---------------------------------------------------------------- the evaluator's venv
def cityscapes_python() -> Path | None:
    env = os.environ.get("BDDSEG_CITYSCAPES_PYTHON")
    if env:
        return Path(env)
    p = REPO / ".venv-cityscapes" / "bin" / "python"
    return p if p.exists() else None


@pytest.fixture(scope="module")
def cs_python() -> Path:
    python = cityscapes_python()
    if python is None or not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "cityscapesScripts not installed: run `make .venv-cityscapes` "
                "or set BDDSEG_CITYSCAPES_PYTHON"
            )
        pytest.skip("cityscapesScripts not installed (make .venv-cityscapes)")
    return python


def run_cityscapes(python: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(python), str(RUNNER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def run_cityscapes_pairs(
    python: Path, pairs: list[tuple[Path, Path]], tmp: Path
) -> subprocess.CompletedProcess:
    listing = tmp / "pairs.json"
    listing.write_text(json.dumps([[str(p), str(g)] for p, g in pairs]))
    return run_cityscapes(python, str(listing))


def cityscapes_scores(python: Path, pairs: list[tuple[Path, Path]], tmp: Path) -> dict:
    """cityscapesScripts' scores of ``(label-id prediction, gtFine labelIds)`` pairs."""
    done = run_cityscapes_pairs(python, pairs, tmp)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    return json.loads(done.stdout)


# ---------------------------------------------------------------- a tiny Cityscapes dataset
def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def _truth(rng: np.random.Generator, index: int) -> np.ndarray:
    """uint8 ``(H, W)`` label ids: 8x8 blocks of 8x16 pixels, every evaluated class but
    ``ABSENT`` and ``PHANTOM`` (and the ignored ids) in every image, then speckle."""
    present = [LABEL_ID[n] for n in CLASS_NAMES if n not in (ABSENT, PHANTOM)]
    ids = np.array(present * 3 + list(IGNORED_IDS) * 2 + [2, 3, 5, 6, 10, 15, 16, 18, 30])
    blocks = rng.permutation(np.resize(ids, 64)).reshape(8, 8).astype(np.uint8)
    gt = np.kron(blocks, np.ones((8, 16), dtype=np.uint8))
    speckle = rng.random((H, W)) < 0.05
    gt[speckle] = rng.choice(np.array(present + list(IGNORED_IDS), dtype=np.uint8), speckle.sum())
    gt[: 2 + index, :3] = LABEL_ID["road"]  # sizes of classes vary by image
    return gt


def _prediction(rng: np.random.Generator, gt: np.ndarray, index: int) -> np.ndarray:
    """uint8 ``(H, W)`` train ids 0..18: the truth, perturbed (never ``ABSENT``)."""
    lut = CITYSCAPES_LABEL_IDS.lut()
    pred = lut[gt].astype(np.int16)
    allowed = np.array([i for i, n in enumerate(CLASS_NAMES) if n != ABSENT], dtype=np.int16)
    unlabelled = pred == IGNORE_VALUE  # any guess there; it must count for nothing
    pred[unlabelled] = rng.choice(allowed, unlabelled.sum())
    noise = rng.random((H, W)) < 0.08 + 0.04 * index
    pred[noise] = rng.choice(allowed, noise.sum())
    car, truck = CLASS_NAMES.index("car"), CLASS_NAMES.index("truck")
    pred[(pred == car) & (rng.random((H, W)) < 0.3)] = truck  # a systematic confusion
    pred[: H // 2, : W // 4][pred[: H // 2, : W // 4] == CLASS_NAMES.index(PHANTOM)] = 0
    if index == 0:
        pred[40:48, 64:80] = CLASS_NAMES.index(PHANTOM)
    pred[pred == CLASS_NAMES.index(ABSENT)] = 0
    return pred.astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path, list[tuple[str, Path]]]:
    """``(root, pred_dir, [(stem, gt_path)])``: ``root/leftImg8bit/val/CITY/..._leftImg8bit.png``
    and ``root/gtFine/val/CITY/..._gtFine_labelIds.png`` (and ``_color.png``, to be ignored)
    for 2 cities x 3 frames;
    ``pred_dir/STEM.png`` train-id predictions, ``STEM`` = ``CITY_000000_FFFFFF``."""
    base = tmp_path_factory.mktemp("cityscapes")
    root, pred_dir = base / "cityscapes", base / "pred"
    rng = np.random.default_rng(23)
    pairs = []
    for c, city in enumerate(CITIES):
        for f, frame in enumerate(FRAMES):
            stem = f"{city}_000000_{frame:06d}"
            index = c * len(FRAMES) + f
            gt = _truth(rng, index)
            photo = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            _save(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", photo)
            gt_path = root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"
            _save(gt_path, gt)
            _save(gt_path.with_name(f"{stem}_gtFine_color.png"), np.zeros((H, W, 3), np.uint8))
            _save(pred_dir / f"{stem}.png", _prediction(rng, gt, index))
            pairs.append((stem, gt_path))
    return root, pred_dir, pairs


def label_id_predictions(pred_dir: Path, stems: list[str], out: Path) -> list[Path]:
    """cityscapesScripts' copy of the predictions: ``out/STEM_pred.png`` in label ids."""
    table = train_to_label_ids()
    paths = []
    for stem in stems:
        pred = np.asarray(Image.open(pred_dir / f"{stem}.png"))
        paths.append(out / f"{stem}_pred.png")
        _save(paths[-1], table[pred])
    return paths


@pytest.fixture(scope="module")
def reference(dataset, cs_python, tmp_path_factory) -> dict:
    """cityscapesScripts' scores of the dataset's predictions."""
    _, pred_dir, pairs = dataset
    tmp = tmp_path_factory.mktemp("cs_pred")
    preds = label_id_predictions(pred_dir, [s for s, _ in pairs], tmp)
    return cityscapes_scores(cs_python, list(zip(preds, [g for _, g in pairs], strict=True)), tmp)


def _same(ours: float | None, theirs: float | None, what: str) -> None:
    if theirs is None:
        assert ours is None or np.isnan(ours), f"{what}: cityscapesScripts NaN, bddseg {ours}"
    else:
        assert ours == pytest.approx(theirs, abs=1e-9), what


# ---------------------------------------------------------------- tests
def test_label_table_is_cityscapes_scripts_own(cs_python):
    done = run_cityscapes(cs_python, "--labels")
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout)["labels"]
    # license plate (id -1) is never drawn into a labelIds file; bddseg's table leaves it out
    assert [(n, i, t) for n, i, t, _ in theirs if i >= 0] == list(CITYSCAPES_LABELS)
    evaluated = sorted((t, n) for n, i, t, ignored in theirs if not ignored)
    assert tuple(n for _, n in evaluated) == CLASS_NAMES
    assert [t for t, _ in evaluated] == list(range(len(CLASS_NAMES)))
    assert all(t in (255, -1) for _, _, t, ignored in theirs if ignored)


def test_the_dataset_exercises_every_case(dataset, reference):
    """Guards the fixture: varied nonzero IoUs, an empty union, a predicted-only class."""
    iou = reference["iou"]
    assert list(iou) == list(CLASS_NAMES)
    assert iou[ABSENT] is None and iou[PHANTOM] == 0.0
    in_truth = [v for n, v in iou.items() if n not in (ABSENT, PHANTOM)]
    assert all(0.3 < v < 1 for v in in_truth) and len(set(in_truth)) == len(in_truth)
    assert abs(np.mean(in_truth) - reference["miou"]) > 0.01  # BDD100K's mean would differ
    cm = np.array(reference["confusion"])
    assert cm[list(IGNORED_IDS)].sum() > 0  # ignored truth, predicted as something
    assert cm.sum() == len(dataset[2]) * H * W


def test_confusion_matches_bddseg_metrics(dataset, reference):
    """Pixel counts: cityscapesScripts' (34, 34) label-id matrix folded onto train ids equals
    bddseg's confusion matrix of the same masks read through the Cityscapes table."""
    from bddseg import metrics

    _, pred_dir, pairs = dataset
    lut = CITYSCAPES_LABEL_IDS.lut()
    ours = sum(
        metrics.confusion_matrix(
            np.asarray(Image.open(pred_dir / f"{stem}.png")),
            lut[np.asarray(Image.open(gt))].astype(np.uint8),
        )
        for stem, gt in pairs
    )
    k = len(CLASS_NAMES)
    to_train = np.array([k] * 34)  # label id -> row/column of bddseg's matrix (K: ignored)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        to_train[label_id] = k if train_id == IGNORE_VALUE else train_id
    theirs = np.zeros((k + 1, k + 1), dtype=np.int64)
    np.add.at(theirs, (to_train[:, None], to_train[None, :]), np.array(reference["confusion"]))
    assert np.array_equal(np.asarray(ours), theirs)
    official = metrics.official_metrics(ours)
    for name in CLASS_NAMES:
        _same(official["iou"][name], reference["iou"][name], name)


def _same_as_reference(metrics_json: Path, reference: dict) -> None:
    official = json.loads(metrics_json.read_text())["official"]
    assert set(official["iou"]) == set(CLASS_NAMES)
    for name in CLASS_NAMES:
        _same(official["iou"][name], reference["iou"][name], name)
    _same(official["miou"], reference["miou"], "mIoU")


def test_evaluate_dataset_predictions_matches_cityscapes_scripts(dataset, reference, tmp_path):
    """The library call: every class's IoU and the mean as cityscapesScripts gives them."""
    from bddseg.evaluate import evaluate_dataset_predictions

    root, pred_dir, _ = dataset
    out = tmp_path / "eval"
    evaluate_dataset_predictions(pred_dir, root, "val", out, dataset="auto", plots=False)
    _same_as_reference(out / "metrics.json", reference)


def test_cli_evaluate_matches_cityscapes_scripts(dataset, reference, tmp_path):
    """``bddseg evaluate --pred DIR --data ROOT --split val --dataset cityscapes --out OUT``."""
    from bddseg.cli import main

    root, pred_dir, _ = dataset
    out = tmp_path / "eval"
    argv = ["evaluate", "--pred", str(pred_dir), "--data", str(root), "--split", "val",
            "--dataset", "cityscapes", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    _same_as_reference(out / "metrics.json", reference)


def test_cityscapes_scripts_stops_on_a_missing_prediction(dataset, cs_python, tmp_path):
    """The case not compared: cityscapesScripts has no answer without every prediction."""
    _, _, pairs = dataset
    done = run_cityscapes_pairs(cs_python, [(tmp_path / "none_pred.png", pairs[0][1])], tmp_path)
    assert done.returncode == 255 and "ERROR: Unable to load" in done.stderr
