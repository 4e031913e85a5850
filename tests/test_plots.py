"""The pictures (bddseg.plots): every plot writes a PNG from data in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_report import H, W, _is_png, make_dataset, make_run

from bddseg import plots
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, CLASS_NAMES_20
from bddseg.metrics import MIOU_LABEL, OFFICIAL_LABEL, WITH_UNKNOWN_LABEL
from bddseg.trainlog import read_log


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    root = make_dataset(tmp / "bdd100k")
    return (
        make_run(tmp, "ce", root, "ce", "none", seed=1),
        make_run(tmp, "focal", root, "focal", "median", seed=2),
    )


# ---------------------------------------------------------------- plots
def test_each_plot_writes_a_png(runs, tmp_path):
    ce = runs[0]
    metrics = json.loads((ce / "eval/val/metrics.json").read_text())
    conf = json.loads((ce / "eval/val/confusion.json").read_text())
    stats = {
        "pixel_share": {n: 100 * v for n, v in metrics["with_unknown"]["pixel_share"].items()},
        "image_count": {n: 3 for n in CLASS_NAMES_20},
        "weights": {
            "inverse": dict.fromkeys(CLASS_NAMES_20, 1.0),
            "median": dict.fromkeys(CLASS_NAMES_20, 2.0),
        },
        "num_images": 3,
    }
    written = [
        plots.plot_class_stats(stats, tmp_path / "stats.png"),
        plots.plot_class_stats({**stats, "weights": {}}, tmp_path / "stats_linear.png", log=False),
        plots.plot_loss_curves(ce / "log.csv", tmp_path / "loss.png"),
        plots.plot_loss_curves_multi(
            {"ce": ce / "log.csv", "focal": runs[1] / "log.csv"}, tmp_path / "multi.png"
        ),
        plots.plot_iou_vs_share(metrics, tmp_path / "iou.png"),
        plots.plot_confusion(conf["matrix"], conf["classes"], tmp_path / "conf.png"),
        plots.plot_image_matrix(conf["image_matrix"], conf["classes"], tmp_path / "img.png"),
        plots.plot_sample_grid(
            [[np.zeros((H, W, 3), np.uint8)] * 2], tmp_path / "grid.png", [["a", "b"]]
        ),
    ]
    for path in written:
        assert _is_png(path), path
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_loss_curves_of_an_empty_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(
        "step,epoch,lr,train_loss,val_loss,val_miou,val_pixel_accuracy,images_per_s,time_s\n"
    )
    assert _is_png(plots.plot_loss_curves(log, tmp_path / "loss.png"))
    with pytest.raises(BddsegError, match="not found"):
        plots.plot_loss_curves(tmp_path / "nope.csv", tmp_path / "x.png")


def test_iou_vs_share_leads_with_the_official_view(runs):
    """Bars and the headline line are the official view's (19 classes, 255 ignored), labelled
    so; the unknown-as-class mIoU is a second line labelled as that view."""
    metrics = json.loads((runs[0] / "eval/val/metrics.json").read_text())
    official, other = metrics["official"], metrics["with_unknown"]
    fig = plots.iou_share_figure(metrics)
    ax = fig.axes[0]
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert texts[0].startswith(MIOU_LABEL)  # the official one first
    assert f"{MIOU_LABEL} {official['miou']:.3f}" in texts
    assert f"second view: mIoU (19 classes, {WITH_UNKNOWN_LABEL}) {other['miou_19']:.3f}" in texts
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(names) == sorted(CLASS_NAMES)  # no unknown: the official view has none
    heights = [p.get_height() for p in ax.patches]
    assert heights == [official["iou"][n] or 0.0 for n in names]
    assert heights == sorted(heights)
    assert OFFICIAL_LABEL in ax.get_ylabel()


def test_loss_and_delta_figures_name_the_view(runs):
    loss = plots.loss_figure(read_log(runs[0] / "log.csv"))
    assert loss.axes[1].get_ylabel() == MIOU_LABEL  # val_miou: the official definition
    iou = {"a": {"road": 0.5, "sky": None}, "b": {"road": 0.6, "sky": 0.7}}
    delta = plots.iou_delta_figure(iou)
    assert OFFICIAL_LABEL in delta.axes[0].get_xlabel()


def test_write_eval_plots(runs, tmp_path):
    ev = runs[0] / "eval" / "val"
    metrics = json.loads((ev / "metrics.json").read_text())
    conf = json.loads((ev / "confusion.json").read_text())
    paths = plots.write_eval_plots(tmp_path, metrics, conf)
    assert [p.name for p in paths] == ["iou_vs_share.png", "confusion.png", "image_confusion.png"]
    assert all(p.parent == tmp_path and _is_png(p) for p in paths)
    del conf["image_matrix"]
    assert len(plots.write_eval_plots(tmp_path / "b", metrics, conf)) == 2
    with pytest.raises(BddsegError, match="no 'matrix'"):
        plots.write_eval_plots(tmp_path, metrics, {})


def test_iou_vs_share_takes_the_classes_of_the_metrics():
    from bddseg import metrics as M

    names = ("background", "road", "car", "person")
    target = np.array([[0, 0, 1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 2, 4]], np.uint8)
    cm = M.confusion_matrix(pred, target, num_classes=4)
    t, p = M.presence_from_confusion(cm)
    metrics = M.to_contract(cm, t[None], p[None], names=names)
    metrics["classes"] = {"names": list(names), "colors": [[1, 2, 3]] * 3 + [[250, 0, 0]]}
    fig = plots.iou_share_figure(metrics)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.get_xticklabels()) == sorted(names)
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert texts[0].startswith(M.miou_label(4))
    assert any(f"mIoU (4 classes, {WITH_UNKNOWN_LABEL})" in t for t in texts)
    classes = M.classes_of(metrics)
    assert plots.class_color("person", classes) == "#fa0000"
    assert plots.class_color("unknown", classes) == plots.UNKNOWN_CHART_COLOR
    assert plots.class_color("road") == "#804080"  # BDD100K's by default
