"""evaluate.py: folders of masks (with official-evaluator parity) and checkpoints."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_fastpng import encode

from bddseg import evaluate, parallel
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, CLASS_NAMES_20

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- generated mask folders
def _save(path: Path, mask: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    Image.frombytes(mode, mask.shape[::-1], mask.tobytes()).save(path)  # P: indices = values


def make_folders(
    root: Path, seed: int = 0, n: int = 8, h: int = 36, w: int = 64
) -> tuple[Path, Path]:
    """GT/prediction folders with every case the official tool handles.

    Blocky ground truth from a random subset of classes (never ``train``, id 16) with 255
    areas; predictions = truth with blocks changed to other classes (``train`` included), to
    19, 255 and 200 (out of range: a miss). One truth is all 255, one prediction is missing,
    one prediction is a palette PNG. Deterministic in ``seed``; the golden numbers below
    were produced by the official tool on ``seed=0``.
    """
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = root / "gt", root / "pred"
    classes = np.array([c for c in range(19) if c != 16])
    for i in range(n):
        stem = f"img{i:02d}"
        bh, bw = h // 6, w // 8
        blocks = rng.choice(rng.choice(classes, size=6, replace=False), size=(6, 8))
        blocks[rng.random((6, 8)) < 0.15] = 255
        gt = np.kron(blocks, np.ones((bh, bw), dtype=np.int64))
        if i == 3:
            gt[:] = 255
        pred = gt.copy()
        for _ in range(6):
            y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
            pred[y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = rng.choice(
                [*range(19), 19, 255, 200]
            )
        pred[rng.random(pred.shape) < 0.03] = 16
        _save(gt_dir / f"{stem}.png", gt)
        if i != 5:
            _save(pred_dir / f"{stem}.png", pred, mode="P" if i == 6 else "L")
    return pred_dir, gt_dir


# Produced by `python -m bdd100k.eval.run -t sem_seg -g GT -r PRED --nproc 1` (bdd100k 1.0.1,
# scalabel 0.3.1, pydantic 1.10) on make_folders(seed=0); x100, 0/0 printed as 0, as the tool
# writes them. test_official_live re-checks them whenever the official tool is installed.
OFFICIAL_GOLDEN: dict = {
    "IoU": {
        "road": 93.50490196078431,
        "sidewalk": 23.792123426715385,
        "building": 45.72490706319702,
        "wall": 74.21171171171171,
        "fence": 68.93115942028986,
        "pole": 62.07687894434882,
        "traffic light": 0.0,
        "traffic sign": 93.09895833333334,
        "vegetation": 93.03482587064677,
        "terrain": 92.25206611570248,
        "sky": 58.522167487684726,
        "person": 94.9074074074074,
        "rider": 0.0,
        "car": 45.55555555555556,
        "truck": 68.10431293881645,
        "bus": 89.73717146433042,
        "train": 0.0,
        "motorcycle": 50.55467511885895,
        "bicycle": 0.0,
    },
    "Acc": {
        "road": 100.0,
        "sidewalk": 24.164948453608247,
        "building": 90.44117647058823,
        "wall": 100.0,
        "fence": 100.0,
        "pole": 98.63263445761167,
        "traffic light": 0.0,
        "traffic sign": 100.0,
        "vegetation": 95.40816326530613,
        "terrain": 99.11209766925639,
        "sky": 91.52542372881356,
        "person": 100.0,
        "rider": 0.0,
        "car": 100.0,
        "truck": 94.83240223463687,
        "bus": 95.85561497326202,
        "train": 0.0,
        "motorcycle": 85.29411764705883,
        "bicycle": 0.0,
    },
    "mIoU": 58.55604571218795,
    "mAcc": 76.40369882778568,
    "fIoU": 63.59779767693623,
    "pAcc": 67.73272017837235,
}


def _compare(ours: dict, official: dict, tol: float = 1e-4) -> None:
    """Official JSON (x100; IoU/Acc lists of {class: v} and {"AVERAGE": v}) vs our contract."""
    off = ours["official"]
    assert off["miou"] * 100 == pytest.approx(official["mIoU"], abs=tol)
    assert off["pixel_accuracy"] * 100 == pytest.approx(official["pAcc"], abs=tol)
    assert off["fwiou"] * 100 == pytest.approx(official["fIoU"], abs=tol)
    for name in CLASS_NAMES:
        assert (off["iou"][name] or 0.0) * 100 == pytest.approx(official["IoU"][name], abs=tol), (
            name
        )
        assert (off["precision"][name] or 0.0) * 100 == pytest.approx(
            official["Acc"][name], abs=tol
        ), name
    # its "mAcc": mean precision over the classes in the truth (those with a defined recall)
    present = [n for n in CLASS_NAMES if ours["with_unknown"]["recall"][n] is not None]
    macc = np.mean([off["precision"][n] or 0.0 for n in present])
    assert macc * 100 == pytest.approx(official["mAcc"], abs=tol)


def official_python() -> Path | None:
    env = os.environ.get("BDDSEG_OFFICIAL_PYTHON")
    if env:
        return Path(env)
    p = REPO / ".venv-official" / "bin" / "python"
    return p if p.exists() else None


def run_official(python: Path, gt: Path, pred: Path, out: Path, nproc: int = 1) -> dict:
    """Run the official evaluator; returns its scores flattened like :data:`OFFICIAL_GOLDEN`."""
    cmd = [str(python), "-m", "bdd100k.eval.run", "-t", "sem_seg", "-g", str(gt), "-r", str(pred),
           "--nproc", str(nproc), "--out-file", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = json.loads(out.read_text())
    return {
        "IoU": raw["IoU"][0],
        "Acc": raw["Acc"][0],
        "mIoU": raw["IoU"][1]["AVERAGE"],
        "mAcc": raw["Acc"][1]["AVERAGE"],
        "fIoU": raw["fIoU"],
        "pAcc": raw["pAcc"],
    }


def evaluate_fresh(pred: Path, gt: Path, out: Path, never: str, **kwargs) -> dict:
    """``evaluate_folders(pred, gt, out, **kwargs)`` in a fresh interpreter, with the process
    pool even for a few pairs: its result; fails if that process imported ``never``."""
    code = (
        "import json, sys\n"
        "from bddseg import evaluate, parallel\n"
        "parallel.MIN_PARALLEL = 1\n"
        f"r = evaluate.evaluate_folders({str(pred)!r}, {str(gt)!r}, {str(out)!r}, **{kwargs!r})\n"
        "print(json.dumps(r))\n"
        f"sys.exit({never!r} in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def copy_with(pred: Path, dest: Path, name: str, data: bytes) -> Path:
    """A copy of the prediction folder with ``name`` replaced by ``data``."""
    shutil.copytree(pred, dest)
    (dest / name).write_bytes(data)
    return dest


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return make_folders(tmp_path_factory.mktemp("masks"))


@pytest.fixture(scope="module")
def folder_result(folders, tmp_path_factory) -> tuple[dict, Path]:
    pred, gt = folders
    out = tmp_path_factory.mktemp("eval")
    return evaluate.evaluate_folders(pred, gt, out, workers=1), out


# ---------------------------------------------------------------- folders: parity
def test_matches_official_golden(folder_result):
    assert OFFICIAL_GOLDEN, "golden numbers missing"
    _compare(folder_result[0], OFFICIAL_GOLDEN)


@pytest.mark.official
def test_official_live(folders, folder_result, tmp_path):
    """Runs the official tool when installed (``make .venv-official``); fails without it in CI."""
    python = official_python()
    if python is None or not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(
                "official evaluator not installed: run `make .venv-official` or set BDDSEG_OFFICIAL_PYTHON"
            )
        pytest.skip("official evaluator not installed (make .venv-official)")
    pred, gt = folders
    live = run_official(python, gt, pred, tmp_path / "official.json")
    _compare(folder_result[0], live)
    for key in ("mIoU", "fIoU", "pAcc"):  # the golden numbers are still what the tool says
        assert live[key] == pytest.approx(OFFICIAL_GOLDEN[key], abs=1e-9)


# ---------------------------------------------------------------- folders: outputs and errors
def test_outputs_follow_the_contract(folder_result):
    result, out = folder_result
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == result
    assert saved["num_images"] == 8 and saved["missing_predictions"] == ["img05"]
    assert list(saved)[:4] == ["num_images", "official", "with_unknown", "image_level"]
    assert saved["official"]["iou"]["train"] is not None  # predicted, never true: IoU 0
    assert saved["official"]["iou"]["train"] == 0.0
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(evaluate.PER_CLASS_COLUMNS)
    assert [r["class"] for r in rows] == list(CLASS_NAMES_20)
    assert rows[-1]["official_iou"] == ""  # unknown has no official IoU
    assert float(rows[0]["iou"]) == pytest.approx(saved["with_unknown"]["iou"]["road"], abs=1e-6)
    conf = json.loads((out / "confusion.json").read_text())
    assert conf["classes"] == list(CLASS_NAMES_20)
    m = np.array(conf["matrix"])
    assert m.shape == (20, 20) and m.sum() == 8 * 36 * 64
    assert m[:, 19].sum() >= 36 * 64  # the missing prediction: all misses
    assert np.array(conf["image_matrix"]).shape == (20, 20)
    with open(out / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert [r["stem"] for r in per_image] == [f"img{i:02d}" for i in range(8)]
    assert per_image[3]["miou"] == "" and per_image[3]["pixel_accuracy"] == ""  # all 255
    assert float(per_image[5]["miou"]) == 0.0  # the missing prediction
    if importlib.util.find_spec("bddseg.plots"):  # the plots module is another engineer's
        assert (out / "iou_vs_share.png").exists() and (out / "image_confusion.png").exists()


def test_workers_give_identical_results(folders, folder_result, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)  # the process pool even for 8 pairs
    pred, gt = folders
    result = evaluate.evaluate_folders(pred, gt, tmp_path, workers=2, plots=False)
    assert result == folder_result[0]
    assert (tmp_path / "per_image.csv").read_text() == (
        folder_result[1] / "per_image.csv"
    ).read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_native_kernel_gives_the_decoders_results(
    folders, folder_result, tmp_path, monkeypatch, workers
):
    """Every pair with a prediction goes through bddseg.fastpng (also in worker processes);
    without the kernel, every pair through the general decoder, the outputs are the same."""
    from bddseg import fastpng

    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)
    log = tmp_path / "calls"  # appended to by the worker processes too (forked)

    def counted(a: bytes, b: bytes):
        with open(log, "a") as f:
            f.write("x")
        return real(a, b)

    real = fastpng.joint_histogram
    monkeypatch.setattr(fastpng, "joint_histogram", counted)
    pred, gt = folders
    result = evaluate.evaluate_folders(pred, gt, tmp_path / "out", workers=workers, plots=False)
    assert result == folder_result[0]
    assert log.read_text() == "x" * 7  # the 7 pairs with a prediction went through the kernel
    monkeypatch.setattr(fastpng, "_fastpng", None)  # as where it could not be built
    decoded = evaluate.evaluate_folders(pred, gt, tmp_path / "dec", workers=workers, plots=False)
    assert decoded == result
    for name in ("per_image.csv", "per_class.csv", "confusion.json"):
        assert (tmp_path / "dec" / name).read_text() == (tmp_path / "out" / name).read_text()


def test_with_workers_the_plots_come_from_a_helper(folders, folder_result, tmp_path):
    """workers > 1: a forked helper imports matplotlib while this process scores, then draws;
    this process never imports it. Same outputs as one process."""
    pred, gt = folders
    assert evaluate_fresh(pred, gt, tmp_path, "matplotlib", workers=2) == folder_result[0]
    for name in ("iou_vs_share.png", "confusion.png", "image_confusion.png"):
        assert Image.open(tmp_path / name).size == Image.open(folder_result[1] / name).size


def test_native_kernel_names_a_broken_file(folders, tmp_path):
    """A prediction whose rows use an undefined filter type (CRCs sound): the kernel leaves it
    to the general decoder, which names it."""
    pred, gt = folders
    rows = b"".join(b"\x05" + bytes(64) for _ in range(36))  # filter type 5 does not exist
    broken = encode(np.zeros((36, 64), np.uint8), [0], raw=rows)
    bad = copy_with(pred, tmp_path / "pred", "img02.png", broken)
    with pytest.raises(BddsegError, match="cannot decode prediction") as e:
        evaluate.evaluate_folders(bad, gt, tmp_path / "out", workers=1, plots=False)
    assert e.value.path == str(bad / "img02.png")


def test_wrong_size_prediction_is_named(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL", 1)  # the error comes from a worker
    pred, gt = folders
    small = tmp_path / "small.png"
    _save(small, np.zeros((10, 10), np.uint8))
    bad = copy_with(pred, tmp_path / "pred", "img02.png", small.read_bytes())
    with pytest.raises(BddsegError, match="prediction is 10x10") as e:
        evaluate.evaluate_folders(bad, gt, tmp_path / "out", workers=2)
    assert e.value.path == str(bad / "img02.png")


def test_folder_mode_never_imports_torch(folders, tmp_path):
    """Not even with the process pool: importing torch costs more than scoring 500 pairs."""
    pred, gt = folders
    evaluate_fresh(pred, gt, tmp_path, "torch", workers=2, plots=False)
    assert (tmp_path / "metrics.json").is_file()


def test_bad_ground_truth_values_and_modes_are_named(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _save(gt / "a.png", np.array([[0, 19], [1, 2]]))
    _save(pred / "a.png", np.zeros((2, 2)))
    with pytest.raises(BddsegError, match="invalid values 19") as e:
        evaluate.evaluate_folders(pred, gt, tmp_path / "out")
    assert e.value.path == str(gt / "a.png")
    _save(gt / "a.png", np.zeros((2, 2)))
    Image.new("RGB", (2, 2)).save(pred / "a.png")
    with pytest.raises(BddsegError, match="single-channel 8-bit") as e:
        evaluate.evaluate_folders(pred, gt, tmp_path / "out")
    assert e.value.path == str(pred / "a.png")
    (pred / "a.png").write_bytes(b"not a png")
    with pytest.raises(BddsegError, match="prediction is not a PNG file"):
        evaluate.evaluate_folders(pred, gt, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BddsegError, match="no .png masks"):
        evaluate.evaluate_folders(pred, tmp_path / "empty", tmp_path / "out2")
    with pytest.raises(BddsegError, match="folder not found"):
        evaluate.evaluate_folders(tmp_path / "nope", gt, tmp_path / "out")


def test_cli_evaluate_folders(folders, tmp_path, capsys):
    from bddseg.cli import main

    pred, gt = folders
    code = main(
        ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path), "--workers", "1"]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "8 images: mIoU (official: 19 classes, 255 ignored) " in captured.out
    assert "1 of 8 ground-truth masks have no prediction" in captured.err
    assert len(list(tmp_path.glob("*.png"))) == 3  # the charts
    bare = tmp_path / "bare"
    args = ["--pred", str(pred), "--gt", str(gt), "--out", str(bare), "--workers", "1"]
    assert main(["evaluate", *args, "--no-plots"]) == 0
    assert (bare / "metrics.json").is_file() and not list(bare.glob("*.png"))
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(tmp_path / "x"), "--out", str(tmp_path)])
        == 2
    )


# ---------------------------------------------------------------- a checkpoint over a split
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-image val split in the flat official layout and a random 20-class checkpoint."""
    import torch

    from bddseg.checkpoints import make_checkpoint, save_checkpoint
    from bddseg.config import Config, ModelConfig
    from bddseg.model import build_model

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(
        [(40, 72), (40, 72), (33, 50)]
    ):  # one odd size: not a multiple of 32
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.choice([0, 1, 2, 13, 255], size=(h, w)).astype(np.uint8)
        (root / "images" / "10k" / "val").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / "10k" / "val" / f"v{i}.png")
        _save(root / "labels" / "sem_seg" / "masks" / "val" / f"v{i}.png", mask)
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(encoder="resnet18", pretrained=False))
    model = build_model(cfg.model, cfg.num_classes)
    path = root / "model.pt"
    save_checkpoint(path, make_checkpoint(model, cfg))
    return path, root


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_checkpoint_matches_folder_evaluation_of_its_predictions(tiny_run, tmp_path, tta):
    ckpt, root = tiny_run
    out = tmp_path / "run"
    if tta == "none":  # through the command line
        from bddseg.cli import main

        args = [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(root),
            "--out",
            str(out),
            "--workers",
            "1",
        ]
        assert main([*args, "--batch-size", "2"]) == 0
        result = json.loads((out / "metrics.json").read_text())
    else:
        result = evaluate.evaluate_checkpoint(ckpt, root, out, split="val", tta=tta, batch_size=2)
    assert result["num_images"] == 3
    preds = sorted((out / "pred").glob("*.png"))
    assert [p.stem for p in preds] == ["v0", "v1", "v2"]
    assert all(np.asarray(Image.open(p)).max() <= 19 for p in preds)
    # The saved predictions scored as a folder give the same numbers.
    masks = root / "labels" / "sem_seg" / "masks" / "val"
    again = evaluate.evaluate_folders(out / "pred", masks, tmp_path / "f", plots=False)
    again.pop("missing_predictions")
    assert result.pop("precision") == "32-true"  # the default; folders of masks have none
    data = result.pop("data")  # what it was scored on: folders of masks name no dataset
    assert (data["kind"], data["split"], data["root"]) == ("bdd100k", "val", str(root.resolve()))
    assert again == result


def test_checkpoint_flip_tta_is_flip_equivariant(tiny_run, tmp_path):
    """Flip TTA averages an image and its mirror: mirrored inputs give mirrored masks."""
    import torch

    from bddseg.predictor import Predictor

    ckpt, _ = tiny_run
    flip = Predictor.from_checkpoint(ckpt, precision="32-true", tta="flip")
    scales = Predictor.from_checkpoint(ckpt, precision="32-true", tta="flip+scales")
    x = torch.randn(1, 3, 33, 50)
    a, b = flip.scores(x), flip.scores(x.flip(-1))
    c = scales.scores(x)
    torch.testing.assert_close(a, b.flip(-1), rtol=1e-4, atol=1e-5)
    assert c.shape == (1, 20, 33, 50)
    with pytest.raises(BddsegError, match="unknown tta"):
        evaluate.evaluate_checkpoint(ckpt, tmp_path, tmp_path, tta="rotate")


if __name__ == "__main__":  # print the official numbers for OFFICIAL_GOLDEN
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        pred_dir, gt_dir = make_folders(Path(d))
        python = official_python() or sys.exit("official evaluator not installed")
        print(json.dumps(run_official(python, gt_dir, pred_dir, Path(d) / "o.json"), indent=1))
