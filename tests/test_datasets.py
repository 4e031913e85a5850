"""Issue 23 end to end, through the command line as a user runs it: a Cityscapes-layout folder
with only ``labelIds`` files and a folder of a user's own 4 classes with a class file each go
through train, evaluate, predict, export and report; a BDD100K model starts a 4-class run
(``--init-from``), is scored on the Cityscapes folder, and the report crosses the two."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from bddseg.classes import CITYSCAPES_LABELS, load_classes
from bddseg.cli import main
from bddseg.synth_layouts import write_layout

TINY = [
    "--set", "data.crop=[64,96]", "--set", "optim.batch_size=4", "--set", "optim.max_steps=3",
    "--set", "run.val_every=3", "--no-pretrained", "--accelerator", "cpu", "--workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def cityscapes(synth_root, tmp_path_factory):
    """The synthetic scenes in the Cityscapes layout, label ids only (no labelTrainIds)."""
    return write_layout(synth_root, tmp_path_factory.mktemp("cs") / "cityscapes", "cityscapes")


@pytest.fixture(scope="module")
def user_folder(synth_root, tmp_path_factory):
    """A user's own 4 classes: ROOT/images|masks/{train,val} and ROOT/classes.yaml, with raw
    mask values mapped by the class file."""
    return write_layout(synth_root, tmp_path_factory.mktemp("user") / "mine", "folder", raw=True)


def _run(args, capsys) -> str:
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_cityscapes_folder_with_label_ids_only(cityscapes, tmp_path, capsys):
    assert not list(cityscapes.rglob("*labelTrainIds.png"))
    assert list(cityscapes.rglob("*_gtFine_labelIds.png"))
    raw = np.asarray(Image.open(next((cityscapes / "gtFine" / "val").rglob("*_labelIds.png"))))
    assert raw.max() > 18  # label ids (road is 7, car 26), not train ids
    run = tmp_path / "run"
    out = _run(["train", "--data", cityscapes, "--out", run, *TINY], capsys)
    assert "best val mIoU" in out
    ckpt = json.loads(json.dumps(_classes_of(run / "best.pt")))
    assert ckpt["name"] == "cityscapes" and ckpt["mean_over"] == "union"

    ev = run / "eval" / "val"
    out = _run(["evaluate", "--checkpoint", run / "best.pt", "--data", cityscapes, "--out", ev,
                "--workers", "1"], capsys)  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["data"]["kind"] == "cityscapes" and set(metrics["groups"]) == {
        "shelbyville",
        "springfield",
    }
    assert "shelbyville: mIoU" in out
    # the validation of training and evaluate score the same masks
    assert metrics["official"]["miou"] == pytest.approx(_best_val(run), abs=1e-9)

    images = cityscapes / "leftImg8bit" / "val"
    pred = tmp_path / "pred"
    _run(["predict", images, "--checkpoint", run / "best.pt", "--out", pred], capsys)
    masks = sorted((pred / "masks").rglob("*.png"))
    assert len(masks) == metrics["num_images"]
    assert max(int(np.asarray(Image.open(m)).max()) for m in masks) <= 18  # train ids
    onnx = tmp_path / "model.onnx"
    assert "same class on" in _run(
        ["export", "--checkpoint", run / "best.pt", "--out", onnx], capsys
    )
    _run(["predict", images, "--onnx", onnx, "--out", tmp_path / "pred_onnx"], capsys)
    html = tmp_path / "report.html"
    _run(["report", run, "--out", html], capsys)
    assert "road" in html.read_text(encoding="utf-8")


def test_a_users_four_classes(user_folder, trained, tmp_path, capsys):
    classes = load_classes(user_folder / "classes.yaml")
    assert classes.names == ("background", "road", "vehicle", "person") and classes.mapping
    run = tmp_path / "run"
    # start from a 19-class BDD100K checkpoint: the body in full, the head rows by name
    out = _run(["train", "--data", user_folder, "--out", run, "--init-from", trained("ignore"),
                *TINY], capsys)  # fmt: skip
    assert "head: 2 of 5 classes copied (road, person), 3 new (background, vehicle, unknown)" in out
    assert "5 classes: background, road, vehicle, person, unknown" in out

    ev = run / "eval" / "val"
    _run(["evaluate", "--checkpoint", run / "best.pt", "--data", user_folder, "--out", ev,
          "--workers", "1"], capsys)  # fmt: skip
    metrics = json.loads((ev / "metrics.json").read_text())
    assert list(metrics["official"]["iou"]) == list(classes.names)
    assert metrics["classes"]["colors"] == [list(c) for c in classes.palette]
    per_class = (ev / "per_class.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in per_class[1:]] == [*classes.names, "unknown"]

    pred = tmp_path / "pred"
    _run(["predict", user_folder / "images" / "val", "--checkpoint", run / "best.pt",
          "--out", pred], capsys)  # fmt: skip
    mask = np.asarray(Image.open(sorted((pred / "masks").glob("*.png"))[0]))
    color = np.asarray(Image.open(sorted((pred / "color").glob("*.png"))[0]).convert("RGB"))
    assert mask.max() <= 3
    for c in np.unique(mask):  # colour maps in the class file's colours
        assert (color[mask == c] == classes.palette[c]).all()

    onnx = tmp_path / "mine.onnx"
    _run(["export", "--checkpoint", run / "best.pt", "--out", onnx], capsys)
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(onnx)).metadata_props}
    assert json.loads(meta["bddseg.classes"])["names"] == list(classes.names)
    from bddseg.predictor import load_predictor

    assert load_predictor(onnx).classes.names == classes.names
    html = tmp_path / "report.html"
    _run(["report", run, "--out", html], capsys)
    text = html.read_text(encoding="utf-8")
    assert "vehicle" in text and "4 classes" in text


def test_bdd100k_model_on_cityscapes_and_the_domain_shift_table(
    trained, synth_root, cityscapes, tmp_path, capsys
):
    ckpt = trained("ignore")
    run = ckpt.parent
    own = tmp_path / "own"
    shift = tmp_path / "cityscapes-val"
    _run(["evaluate", "--checkpoint", ckpt, "--data", synth_root, "--out", own, "--workers", "1",
          "--no-plots"], capsys)  # fmt: skip
    _run(["evaluate", "--checkpoint", ckpt, "--data", cityscapes, "--out", shift,
          "--workers", "1", "--no-plots"], capsys)  # fmt: skip
    a = json.loads((own / "metrics.json").read_text())
    b = json.loads((shift / "metrics.json").read_text())
    # the same scenes, the same model: per class the same IoU through either layout
    assert a["official"]["iou"] == pytest.approx(b["official"]["iou"], abs=1e-12)
    assert b["classes"]["mean_over"] == "union" and a["classes"]["mean_over"] == "truth"
    # cross-dataset: the evaluations go into a copy of the run, as RUN/eval/NAME
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "config.yaml").write_text((run / "config.yaml").read_text())
    (copy / "log.csv").write_text((run / "log.csv").read_text())
    for src, name in ((own, "val"), (shift, "cityscapes-val")):
        dst = copy / "eval" / name
        dst.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file():
                (dst / f.name).write_bytes(f.read_bytes())
    html = tmp_path / "report.html"
    _run(["report", copy, "--out", html], capsys)
    text = html.read_text(encoding="utf-8")
    table = text[text.index('id="shift-table"') :]
    table = table[: table.index("</table>")]
    heads = re.findall(r"<th>([^<]*)</th>", table)
    assert any("cityscapes" in h for h in heads) and len(heads) >= 3


def test_predictions_against_any_layout_and_errors(cityscapes, tmp_path, capsys):
    """``evaluate --pred DIR --data ROOT`` reads the truth through the layout's classes; a
    folder without a class file, and a forced layout that is not there, are one line, exit 2."""
    stems = sorted(p.name.removesuffix("_gtFine_labelIds.png")
                   for p in (cityscapes / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))  # fmt: skip
    to_train = np.full(256, 255, np.uint8)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        to_train[label_id] = train_id
    pred = tmp_path / "pred"
    pred.mkdir()
    for stem in stems:  # the truth itself, as train ids: a perfect prediction
        gt = next((cityscapes / "gtFine" / "val").rglob(f"{stem}_gtFine_labelIds.png"))
        Image.fromarray(to_train[np.asarray(Image.open(gt))]).save(pred / f"{stem}.png")
    _run(["evaluate", "--pred", pred, "--data", cityscapes, "--out", tmp_path / "e",
          "--workers", "1", "--no-plots"], capsys)  # fmt: skip
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["official"]["miou"] == 1.0 and m["missing_predictions"] == []

    empty = tmp_path / "mine"
    for sub in ("images/train", "images/val", "masks/train", "masks/val"):
        (empty / sub).mkdir(parents=True)
    assert main(["data", "check", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "classes.yaml" in err and len(err.strip().splitlines()) == 1
    assert main(["data", "check", str(cityscapes), "--dataset", "acdc"]) == 2
    err = capsys.readouterr().err
    assert "not a acdc dataset root" in err or "acdc" in err.splitlines()[0]


def _classes_of(path):
    from bddseg.checkpoints import load_checkpoint

    return load_checkpoint(path)["classes"]


def _best_val(run) -> float:
    from bddseg.checkpoints import load_checkpoint

    return load_checkpoint(run / "best.pt")["val_metrics"]["miou"]


def test_class_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "classes.yaml"
    bad.write_text(yaml.safe_dump({"names": ["a", "a"]}))
    with pytest.raises(Exception) as e:
        load_classes(bad)
    assert "repeated: a" in str(e.value) and str(bad) in str(e.value)
    bad.write_text(yaml.safe_dump({"names": ["a", "b"], "mapping": {3: "c"}}))
    with pytest.raises(Exception) as e:
        load_classes(bad)
    assert "no class of that name" in str(e.value)


def test_several_roots_train_on_their_union(synth_root, cityscapes, tmp_path):
    """``train --data A B``: data.root A, data.extra_roots (B,); the train split is the
    union (each root read through its own classes), stems kept apart."""
    import argparse

    from bddseg.cli import _train_config, build_parser
    from bddseg.data import build_dataset

    args = build_parser().parse_args(
        ["train", "--data", str(synth_root), str(cityscapes), "--out", str(tmp_path / "r")]
    )
    assert isinstance(args, argparse.Namespace)
    cfg = _train_config(args)
    assert cfg.data.root == str(synth_root) and cfg.data.extra_roots == (str(cityscapes),)
    both = build_dataset(cfg.data, "train", train=False)
    one = build_dataset(dataclasses.replace(cfg.data, extra_roots=()), "train", train=False)
    assert len(both) == 2 * len(one)
    assert len({p.stem for p in both.pairs}) == len(both)
    # the same scenes through either layout: the same class counts once mapped

    def counts(indices):
        return sum(np.bincount(both.load(i)[1].numpy().ravel(), minlength=256) for i in indices)

    assert (counts(range(len(one))) == counts(range(len(one), len(both)))).all()
