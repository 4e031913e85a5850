"""The report: the HTML is self-contained and complete (the plots: test_plots.py).

Run directories are faked in tmp_path from the file contracts (config.yaml, log.csv,
eval/val/*, predictions/test/*), with a tiny dataset in the official layout.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bddseg import colors, report
from bddseg.errors import BddsegError
from bddseg.labels import CLASS_NAMES, CLASS_NAMES_20
from bddseg.metrics import MIOU_LABEL, OFFICIAL_LABEL, WITH_UNKNOWN_LABEL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
H, W = 36, 64
STEMS = {"train": ["t0", "t1", "t2"], "val": ["v0", "v1", "v2"], "test": ["s0", "s1"]}


def _mask(rng: np.random.Generator) -> np.ndarray:
    """Horizontal bands of classes, with a block of 255 (unknown)."""
    m = np.zeros((H, W), np.uint8)
    for i, c in enumerate(rng.choice(19, size=4, replace=False)):
        m[i * H // 4 : (i + 1) * H // 4] = c
    m[: H // 4, : W // 3] = 255
    return m


def make_dataset(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, stems in STEMS.items():
        (root / "images" / "10k" / split).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "images" / "10k" / split / f"{stem}.jpg")
            if split != "test":
                d = root / "labels" / "sem_seg" / "masks" / split
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_mask(rng)).save(d / f"{stem}.png")
    return root


def _metrics(rng: np.random.Generator) -> dict:
    def per_class(lo=0.0, hi=1.0, none=("train",), names=CLASS_NAMES_20):
        return {n: (None if n in none else round(float(rng.uniform(lo, hi)), 4)) for n in names}

    share = rng.dirichlet(np.ones(20))
    official_iou = per_class(names=CLASS_NAMES)  # the official view: 19 classes, no unknown
    avg = {"precision": 0.8, "recall": 0.7, "f1": 0.75, "support": 40}
    return {
        "num_images": 3,
        "official": {
            "miou": 0.41 + rng.uniform(0, 0.1),
            "pixel_accuracy": 0.88,
            "fwiou": 0.8,
            "iou": official_iou,
            "precision": per_class(names=CLASS_NAMES),
        },
        "with_unknown": {
            "miou_19": 0.4,
            "miou_20": 0.42,
            "pixel_accuracy": 0.87,
            "iou": per_class(),
            "precision": per_class(none=("train", "rider")),
            "recall": per_class(),
            "f1": per_class(),
            "pixel_share": {n: float(s) for n, s in zip(CLASS_NAMES_20, share, strict=True)},
        },
        "image_level": {
            "precision": per_class(),
            "recall": per_class(),
            "f1": per_class(),
            "support": {n: int(rng.integers(0, 4)) for n in CLASS_NAMES_20},
            "micro": avg,
            "macro": avg,
            "weighted": avg,
            "samples": avg,
        },
    }


def make_run(
    parent: Path,
    name: str,
    root: Path,
    loss: str = "ce",
    weights: str = "none",
    seed: int = 0,
    evaluated: bool = True,
    predicted: bool = True,
) -> Path:
    """A run directory following the file contracts of train / evaluate / predict."""
    rng = np.random.default_rng(seed)
    run = parent / name
    run.mkdir(parents=True)
    cfg = {
        "data": {"root": str(root), "unknown": "class", "crop": [32, 64]},
        "model": {"arch": "unet", "encoder": "resnet34"},
        "loss": {"name": loss, "class_weights": weights},
        "optim": {"lr": 0.001, "epochs": 2},
        "run": {"out": str(run), "seed": seed},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cols = "step,epoch,lr,train_loss,val_loss,val_miou,val_pixel_accuracy,images_per_s,time_s"
    lines = [cols]
    for step in range(0, 60, 2):
        val = f"{1.2 - step / 100:.3f},{0.1 + step / 200:.3f},0.8" if step % 20 == 18 else ",,"
        lines.append(
            f"{step},{step // 30},0.001,{1.5 - step / 80 + rng.normal(0, 0.05):.4f},{val},12.5,{step}"
        )
    (run / "log.csv").write_text("\n".join(lines) + "\n")
    (run / "best.pt").write_bytes(b"")
    if evaluated:
        ev = run / "eval" / "val"
        (ev / "pred").mkdir(parents=True)
        (ev / "metrics.json").write_text(json.dumps(_metrics(rng)))
        m = rng.integers(0, 50, (20, 20)) + np.eye(20, dtype=int) * 500
        m[16] = 0  # a class absent from the truth: an empty row
        conf = {
            "classes": list(CLASS_NAMES_20),
            "matrix": m.tolist(),
            "image_matrix": rng.integers(0, 4, (20, 20)).tolist(),
        }
        (ev / "confusion.json").write_text(json.dumps(conf))
        with open(ev / "per_image.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["stem", "miou", "pixel_accuracy"])
            for stem in STEMS["val"]:
                w.writerow([stem, f"{rng.uniform(0.1, 0.9):.4f}", "0.9"])
        for stem in STEMS["val"]:
            Image.fromarray(rng.integers(0, 20, (H, W), dtype=np.uint8)).save(
                ev / "pred" / f"{stem}.png"
            )
    if predicted:
        base = run / "predictions" / "test"
        for kind in ("masks", "color", "overlay"):
            (base / kind).mkdir(parents=True)
        for stem in STEMS["test"]:
            mask = rng.integers(0, 19, (H, W), dtype=np.uint8)
            Image.fromarray(mask).save(base / "masks" / f"{stem}.png")
            Image.fromarray(colors.colorize(mask)).save(base / "color" / f"{stem}.png")
            img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(colors.overlay(img, mask)).save(base / "overlay" / f"{stem}.jpg")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("runs")
    root = make_dataset(tmp / "bdd100k")
    return (
        make_run(tmp, "ce", root, "ce", "none", seed=1),
        make_run(tmp, "focal", root, "focal", "median", seed=2),
    )


@pytest.fixture(scope="module")
def two_run_html(runs, tmp_path_factory) -> str:
    out = report.write_report(list(runs), tmp_path_factory.mktemp("out") / "report.html")
    return out.read_text(encoding="utf-8")


def _is_png(path: Path) -> bool:
    with Image.open(path) as im:
        im.verify()
    return path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def _table(html: str, marker: str) -> str:
    start = html.index(marker)
    return html[start : html.index("</table>", start)]


# ---------------------------------------------------------------- HTML
def _assert_self_contained(html: str) -> None:
    assert 'src="http' not in html and "src='http" not in html
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert not re.search(r'src="(?!data:)', html), "every src must be a data URI"


def test_one_run_report(runs, tmp_path):
    out = report.write_report([runs[0]], tmp_path / "one.html")
    html = out.read_text(encoding="utf-8")
    _assert_self_contained(html)
    assert "<title>bddseg report: ce</title>" in html
    assert 'id="compare"' not in html
    per_class = _table(html, 'class="data sortable per-class"')
    for name in CLASS_NAMES_20:
        assert f"</span>{name}</td>" in per_class
    assert per_class.count("<tr>") == 21  # header row + 20 classes
    for avg in ("micro avg", "macro avg", "weighted avg", "samples avg"):
        assert avg in html
    # loss, IoU-vs-share, confusion, image matrix, train, val, worst, test
    assert html.count('src="data:image/png;base64,') == 4
    assert html.count('src="data:image/jpeg;base64,') == 4
    assert "not available" not in html
    # the run's architecture and encoder name it (runs of several architectures compared)
    assert f"ce (unet/resnet34, ce, weights=none): {MIOU_LABEL}" in html


def test_two_run_report_compares(two_run_html):
    html = two_run_html
    _assert_self_contained(html)
    assert "<title>bddseg report: ce vs focal</title>" in html
    table = _table(html, 'id="compare-classes"')
    for name in CLASS_NAMES:  # the official view's 19 classes
        assert f"</span>{name}</td>" in table
    assert "</span>unknown</td>" not in table
    assert f"Per-class IoU (%, {OFFICIAL_LABEL})" in html
    assert "Δ focal" in table
    deltas = re.findall(r'<td class="sep (?:pos|neg|)" data-v="([^"]+)">', table)
    assert len(deltas) == 19 and all(re.fullmatch(r"[+-]\d+\.\d|—", d) for d in deltas)
    assert "★" not in table or 'class="best"' in table
    winners = re.findall(r'<td class="sep winner" data-v="([^"]+)">', table)
    assert len(winners) == 19 and set(winners) <= {"ce", "focal", "tie", "—"}
    assert f"wins on {MIOU_LABEL}" in html and "of 19 classes" in html
    assert 'id="compare-headline"' in html
    # overlaid curves and IoU deltas + 2 x (4 PNG figures + 4 JPEG sample grids)
    assert html.count('src="data:image/') == 18
    assert html.count('<section class="run"') == 2


def test_the_official_view_leads_every_table(runs, two_run_html):
    """The official mIoU and per-class IoU come first, labelled as such; the unknown-as-class
    view comes second, labelled as that view (the comparison led with it before)."""
    loaded = [report.load_run(r) for r in runs]
    comp = report._comparison(loaded)
    first = comp["headline"][0]
    assert first["title"] == MIOU_LABEL
    official = [m.metrics["official"] for m in loaded]
    assert [c["text"] for c in first["cells"]["values"]] == [
        report._pct(o["miou"]) for o in official
    ]
    assert [h["title"] for h in comp["headline"][3:5]] == [
        f"mIoU (19 classes, {WITH_UNKNOWN_LABEL})",
        f"mIoU (20 classes, {WITH_UNKNOWN_LABEL})",
    ]
    assert [row["name"] for row in comp["classes"]] == list(CLASS_NAMES)
    for row in comp["classes"]:
        expected = [report._pct(o["iou"][row["name"]]) for o in official]
        assert [c["text"] for c in row["values"]] == expected, row["name"]
    # the per-run table: official IoU is the first column, the 20-class view's after it
    m = loaded[0].metrics
    for row in report._class_rows(m):
        assert row["cells"][0]["text"] == report._pct(m["official"]["iou"].get(row["name"]))
        assert row["cells"][1]["text"] == report._pct(m["with_unknown"]["iou"][row["name"]])
    per_class = _table(two_run_html, 'class="data sortable per-class"')
    assert per_class.index(OFFICIAL_LABEL) < per_class.index(WITH_UNKNOWN_LABEL)
    cards = re.findall(r'<div class="k">([^<]+)</div>', two_run_html)
    assert cards[0] == MIOU_LABEL
    # the summary's best and weakest classes are the official view's
    iou = {n: v for n, v in m["official"]["iou"].items() if v is not None}
    best = max(iou, key=iou.get)
    assert f"Best class {best} ({report._pct(iou[best])}%)" in report._run_summary(loaded[0])


def test_run_label_reads_the_config(tmp_path, monkeypatch):
    """Architecture, encoder, loss and weights come from the run's config; keys it lacks take
    bddseg.config's defaults, not names repeated in the report."""
    import functools

    from bddseg import view
    from bddseg.config import LossConfig, ModelConfig

    run = make_run(tmp_path, "seg", tmp_path / "no-data", evaluated=False, predicted=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"] = {"arch": "upernet", "encoder": "tu-convnext_base"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert report.load_run(run).label == "seg (upernet/tu-convnext_base, ce, weights=none)"
    (run / "config.yaml").write_text(yaml.safe_dump({"data": cfg["data"]}))
    m, loss = ModelConfig(), LossConfig()
    expected = f"seg ({m.arch}/{m.encoder}, {loss.name}, weights={loss.class_weights})"
    assert report.load_run(run).label == expected
    other = functools.partial(ModelConfig, arch="segformer", encoder="mit_b0")
    monkeypatch.setattr(view, "ModelConfig", other)  # as if the defaults changed
    assert report.load_run(run).label.startswith("seg (segformer/mit_b0, ")


def test_missing_sections_say_not_available(runs, tmp_path):
    root = Path(yaml.safe_load((runs[0] / "config.yaml").read_text())["data"]["root"])
    trained = make_run(tmp_path, "trained", root, evaluated=False, predicted=False)
    moved = make_run(tmp_path, "moved", tmp_path / "gone", evaluated=False, predicted=False)
    (moved / "log.csv").unlink()
    html = report.write_report([trained, moved], tmp_path / "r.html").read_text(encoding="utf-8")
    _assert_self_contained(html)
    assert "Fewer than two runs have an evaluation" in html
    first, second = html[html.index('id="run-0"') :], html[html.index('id="run-1"') :]
    first = first[: first.index('id="run-1"')]
    for section in (first, second):
        assert (
            "metrics.json not found" in section and "predictions/test/overlay not found" in section
        )
        assert section.count("<b>not available</b>") >= 6  # eval, 2 matrices, val, worst, test
    assert "log.csv not found" in second and "log.csv not found" not in first
    assert second.count("dataset root") == 3  # train, val and worst samples
    # the overlaid curves (one log); the first run's loss curves and train samples
    assert html.count('src="data:image/') == 3 and first.count('src="data:image/') == 2


def test_run_without_config_is_an_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(BddsegError, match="config.yaml"):
        report.write_report([tmp_path / "run"], tmp_path / "r.html")
    with pytest.raises(BddsegError, match="not found"):
        report.write_report([tmp_path / "nope"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report(tmp_path, capsys):
    from bddseg.cli import main

    run = make_run(tmp_path, "cli", tmp_path / "no-data", evaluated=False, predicted=False)
    out = tmp_path / "cli.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "run directory not found" in capsys.readouterr().err


# ---------------------------------------------------------------- other class sets, datasets
FOUR = ("background", "road", "car", "person")
FOUR_COLORS = [[0, 0, 0], [128, 64, 128], [0, 0, 142], [220, 20, 60]]


def _four_class_eval(ev: Path, seed: int = 0, data: dict | None = None, groups=None) -> None:
    """A 4-class evaluation's metrics.json and confusion.json, computed by bddseg.metrics."""
    from bddseg import metrics as M

    rng = np.random.default_rng(seed)
    target = rng.choice([0, 1, 2, 255], size=(8, 8)).astype(np.uint8)  # person never in truth
    pred = np.where(rng.random((8, 8)) < 0.7, target, rng.integers(0, 5, (8, 8))).astype(np.uint8)
    cm = M.confusion_matrix(pred, target, num_classes=4)
    t, p = M.presence_from_confusion(cm)
    result = M.to_contract(cm, t[None], p[None], names=FOUR)
    result["classes"] = {"name": "toy", "names": list(FOUR), "colors": FOUR_COLORS, "ignore": 255}
    if data:
        result["data"] = data
    if groups:
        result["groups"] = groups
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "metrics.json").write_text(json.dumps(result))
    conf = {"classes": [*FOUR, "unknown"], "matrix": cm.tolist()}
    conf["image_matrix"] = M.image_level_matrix(t[None], p[None]).tolist()
    (ev / "confusion.json").write_text(json.dumps(conf))


def test_a_four_class_report_names_its_classes(tmp_path):
    from bddseg.metrics import miou_label, official_label

    run = make_run(tmp_path, "toy", tmp_path / "nowhere", evaluated=False, predicted=False)
    _four_class_eval(run / "eval" / "val")
    html = report.write_report([run], tmp_path / "toy.html").read_text(encoding="utf-8")
    per_class = _table(html, 'class="data sortable per-class"')
    for name in (*FOUR, "unknown"):
        assert f"</span>{name}</td>" in per_class
    assert per_class.count("<tr>") == 6  # header row + 4 classes + unknown
    assert "traffic light" not in html and "sidewalk" not in html
    assert miou_label(4) in html and f"Per-class IoU (%, {official_label(4)})" not in html
    assert f"mIoU (4 classes, {WITH_UNKNOWN_LABEL})" in html
    assert official_label(4) in html and MIOU_LABEL not in html
    assert "background:rgb(220,20,60)" in html  # person's own colour in the legend
    # the figures drew (IoU vs share, confusion, image matrix) with these names
    assert html.count('src="data:image/png;base64,') == 4


def test_the_domain_shift_table_crosses_runs_and_test_sets(tmp_path):
    bdd = make_run(tmp_path, "on-bdd", tmp_path / "bdd100k", evaluated=False, predicted=False)
    city = make_run(tmp_path, "on-city", tmp_path / "cs", evaluated=False, predicted=False)
    cfg = yaml.safe_load((city / "config.yaml").read_text())
    cfg["data"]["dataset"] = "cityscapes"
    (city / "config.yaml").write_text(yaml.safe_dump(cfg))
    groups = {"aachen": {"miou": 0.5, "images": 3}, "zurich": {"miou": 0.25, "images": 2}}
    cs_val = {"root": "/data/cs", "kind": "cityscapes", "split": "val", "name": "cityscapes"}
    _four_class_eval(bdd / "eval" / "val", 1)  # an older file: no data record (own val)
    _four_class_eval(bdd / "eval" / "cityscapes-val", 2, cs_val, groups)
    _four_class_eval(city / "eval" / "val", 3, cs_val)
    _four_class_eval(city / "eval" / "mapillary-val", 4)  # no data record: the folder's name
    html = report.write_report([bdd, city], tmp_path / "shift.html").read_text(encoding="utf-8")
    table = _table(html, 'id="shift-table"')
    head = re.findall(r"<th>([^<]*)</th>", table)
    assert head[1:] == ["bdd100k val", "cityscapes val", "mapillary val"]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in table.split("<tr>")[2:]]
    assert rows[0][0].startswith("on-bdd") and "(bdd100k)" in rows[0][0]
    assert "(cityscapes)" in rows[1][0]

    def miou(run: Path, name: str) -> str:
        m = json.loads((run / "eval" / name / "metrics.json").read_text())
        return f"{100 * m['official']['miou']:.1f}"

    assert rows[0][1:] == [f"<b>{miou(bdd, 'val')}</b>", miou(bdd, "cityscapes-val"), ""]
    assert rows[1][1:] == ["", f"<b>{miou(city, 'val')}</b>", miou(city, "mapillary-val")]
    # the per-group results of the evaluation that has them
    groups_table = _table(html, 'class="data groups"')
    assert "<caption>cityscapes val</caption>" in groups_table
    assert "aachen" in groups_table and "25.0" in groups_table and "zurich" in groups_table
    assert html.count('class="data groups"') == 1
    # the main evaluation's sections stay those of eval/val
    assert 'id="compare"' in html and 'href="#shift"' in html


def test_one_run_with_only_its_val_has_no_shift_table(runs, tmp_path):
    html = report.write_report([runs[0]], tmp_path / "one.html").read_text(encoding="utf-8")
    assert 'id="shift"' not in html


def cityscapes_run(synth_root: Path, tmp: Path) -> tuple[Path, Path]:
    """A run trained and evaluated on a Cityscapes-layout copy of the synthetic set (its
    ``*_labelIds.png`` only): predictions = the truth, a band of a class absent from the
    truth on top (so the union rule averages more classes than the truth's), scored by
    ``evaluate_dataset_predictions``. Returns ``(run, dataset root)``."""
    from bddseg.classes import CITYSCAPES_LABEL_IDS
    from bddseg.evaluate import evaluate_dataset_predictions
    from bddseg.layout import list_pairs
    from bddseg.masks import read_mask
    from bddseg.synth_layouts import write_layout

    cs = write_layout(synth_root, tmp / "cs", "cityscapes")
    assert not list(cs.rglob("*_labelTrainIds.png"))
    pairs = list_pairs(cs, "val", "cityscapes")
    truths = {p.stem: read_mask(p.mask, classes=CITYSCAPES_LABEL_IDS) for p in pairs}
    present = set(np.unique(np.concatenate([t.ravel() for t in truths.values()]))) - {255}
    absent = next(c for c in range(19) if c not in present)
    run = tmp / "run"
    ev = run / "eval" / "val"
    (ev / "pred").mkdir(parents=True)
    for stem, truth in truths.items():
        pred = np.where(truth == 255, 0, truth).astype(np.uint8)
        pred[: pred.shape[0] // 4] = absent
        Image.fromarray(pred).save(ev / "pred" / f"{stem}.png")
    cfg = {
        "data": {"root": str(cs), "dataset": "cityscapes", "unknown": "ignore"},
        "model": {"arch": "unet", "encoder": "resnet34"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    evaluate_dataset_predictions(ev / "pred", cs, "val", ev, dataset="cityscapes", plots=False)
    return run, cs


def test_a_cityscapes_run_shows_its_truth_and_the_union_rule(synth_root, tmp_path):
    """Truth overlays through the labelIds table (not "not available"); the summary names the
    union rule (mean_over "union") with its count of classes."""
    from bddseg.metrics import official_arrays

    run, _ = cityscapes_run(synth_root, tmp_path)
    metrics = json.loads((run / "eval/val/metrics.json").read_text())
    assert metrics["classes"]["mean_over"] == "union" and metrics["data"]["kind"] == "cityscapes"
    cm = np.array(json.loads((run / "eval/val/confusion.json").read_text())["matrix"])
    union = int(official_arrays(cm, "union")["averaged"].sum())
    truth = int(official_arrays(cm, "truth")["averaged"].sum())
    assert union == truth + 1  # the band's class, absent from the truth
    html = report.write_report([run], tmp_path / "cs.html").read_text(encoding="utf-8")
    section = html[html.index('id="run-0"') :]
    for title in ("Train samples", "Val samples", "Worst val images"):
        block = section[section.index(f"<h4>{title}") :]
        block = block[: block.index("</h4>") + 200]
        assert "data:image/jpeg;base64," in block and "not available" not in block, block
    assert f"over the {union} classes with pixels in the truth or the prediction of 6" in html
    assert "classes present in the truth" not in html
    assert "its mIoU averages the classes with pixels in the truth or the prediction" in html
    # the same run read as before (no data record, the config's root): the same overlays
    del metrics["data"]
    (run / "eval/val/metrics.json").write_text(json.dumps(metrics))
    again = report.write_report([run], tmp_path / "again.html").read_text(encoding="utf-8")
    assert again.count("data:image/jpeg;base64,") == html.count("data:image/jpeg;base64,") == 3


def test_a_bdd100k_summary_keeps_the_truth_rule(runs, tmp_path):
    html = report.write_report([runs[0]], tmp_path / "one.html").read_text(encoding="utf-8")
    assert re.search(r"over the \d+ classes present in the truth of 3 images", html)
    assert "with pixels in the truth or the prediction" not in html
    assert "its mIoU averages the classes present in the truth)" in html


def test_a_four_class_summary_counts_its_own_classes(tmp_path):
    """A 4-class set (a user's: the union rule) is counted over its 4 classes."""
    from bddseg import metrics as M

    run = make_run(tmp_path, "toy", tmp_path / "nowhere", evaluated=False, predicted=False)
    _four_class_eval(run / "eval" / "val")
    cm = np.array(json.loads((run / "eval/val/confusion.json").read_text())["matrix"])
    n = int(M.official_arrays(cm, "union")["averaged"].sum())
    assert n <= 4
    html = report.write_report([run], tmp_path / "toy.html").read_text(encoding="utf-8")
    assert f"{M.miou_label(4)} " in html
    assert f"over the {n} classes with pixels in the truth or the prediction of 1 images" in html
    assert "19 classes" not in html and M.miou_label(19) not in html
