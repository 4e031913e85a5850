"""``bddseg view``: the files it writes for an evaluated run, its numbers (the same as
per_image.csv), the error for a run without an evaluation, --serve, and the page in headless
Chromium (Debian's ``chromium``, driven as tests/test_report_browser.py drives it: a probe
script in a copy of the page clicks, sorts and presses keys, and writes what it saw into the
DOM that ``--dump-dom`` prints).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_report import cityscapes_run

from bddseg import cli, runs
from bddseg.view import _top_cells, build_view, serve


def _data(site: Path) -> dict:
    text = (site / "data.js").read_text(encoding="utf-8")
    return json.loads(text.removeprefix("window.BDDSEG_VIEW = ").rstrip().removesuffix(";"))


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory, one_torch_thread) -> Path:
    """A run folder (config.yaml of a trained run) evaluated on the synthetic val split."""
    from bddseg.evaluate import evaluate_checkpoint

    best = trained()
    run = tmp_path_factory.mktemp("view") / "ce"
    run.mkdir()
    shutil.copy(best.parent / runs.CONFIG, run / runs.CONFIG)
    root = yaml.safe_load((run / runs.CONFIG).read_text())["data"]["root"]
    evaluate_checkpoint(best, root, runs.eval_dir(run), plots=False, progress=False)
    return run


@pytest.fixture(scope="module")
def second(evaluated) -> Path:
    """A second run: the first one's predictions with a band relabelled car, re-scored."""
    from bddseg.evaluate import evaluate_folders

    run = evaluated.parent / "focal"
    run.mkdir()
    shutil.copy(evaluated / runs.CONFIG, run / runs.CONFIG)
    pred = runs.eval_dir(run) / runs.PRED_DIR
    pred.mkdir(parents=True)
    for p in sorted((runs.eval_dir(evaluated) / runs.PRED_DIR).glob("*.png")):
        m = np.array(Image.open(p))
        m[: m.shape[0] // 3] = 13
        Image.fromarray(m).save(pred / p.name)
    root = yaml.safe_load((run / runs.CONFIG).read_text())["data"]["root"]
    evaluate_folders(pred, Path(root) / "labels/sem_seg/masks/val", runs.eval_dir(run), plots=False)
    return run


@pytest.fixture(scope="module")
def site(evaluated) -> Path:
    return build_view([evaluated]).parent


def test_the_site_files_and_numbers(site, evaluated):
    assert site == evaluated / "view"
    for name in ("index.html", "data.js", "viewer.js", "viewer.css"):
        assert (site / name).is_file()
    data = _data(site)
    with open(runs.eval_dir(evaluated) / runs.PER_IMAGE, newline="") as f:
        per_image = {r["stem"]: r for r in csv.DictReader(f)}
    assert [im["s"] for im in data["images"]] == list(per_image) and len(per_image) == 6
    for im in data["images"]:  # counted again from the masks: per_image.csv's numbers
        row = per_image[im["s"]]
        assert im["miou"][0] == pytest.approx(float(row["miou"]), abs=1e-4)
        assert im["acc"][0] == pytest.approx(float(row["pixel_accuracy"]), abs=1e-4)
        present = [c for c, v in enumerate(im["iou"][0]) if v is not None and c in im["c"]]
        assert np.mean([im["iou"][0][c] for c in present]) == pytest.approx(im["miou"][0], abs=2e-3)
        for kind in ("truth", "pred/0"):
            assert (site / kind / f"{im['s']}.png").is_file()
        assert (site / im["t"]).is_file() and (site / im["p"]).is_file()
        truth = np.array(Image.open(site / "truth" / f"{im['s']}.png"))
        assert truth.ndim == 2  # class ids, coloured in the browser
    assert not (site / "error").exists()  # drawn in the browser from truth and prediction
    assert (
        data["confusion"][0]
        == json.loads((runs.eval_dir(evaluated) / runs.CONFUSION).read_text())["matrix"]
    )
    html = (site / "index.html").read_text()
    assert html.count("data-run=") == 1 and "http" not in html.replace("http-equiv", "")


def test_top_cells_keeps_the_most_pixels_first():
    cms = np.zeros((4, 20, 20), np.int64)
    cms[:, 0, 13] = [5, 0, 9, 7]
    cms[:, 2, 2] = [1, 1, 1, 1]
    cells = _top_cells(cms, n=2)
    assert cells["0,13"] == [[2, 9], [3, 7]]
    assert cells["2,2"] == [[0, 1], [1, 1]]
    assert set(cells) == {"0,13", "2,2"}


def test_without_photos(evaluated, tmp_path):
    """Only the masks (the official val masks have no photos): no photo view, still a site."""
    root = Path(yaml.safe_load((evaluated / runs.CONFIG).read_text())["data"]["root"])
    masks = tmp_path / "bdd100k"
    shutil.copytree(root / "labels", masks / "labels")
    (masks / "images" / "10k" / "val").mkdir(parents=True)
    index = build_view([evaluated], tmp_path / "site", data_root=masks, workers=1)
    data = _data(index.parent)
    assert not data["photos"] and all(im["p"] is None for im in data["images"])
    assert not (index.parent / "photo").exists()
    assert all(im["t"].endswith(".png") for im in data["images"])  # coloured truth thumbnails


def test_missing_evaluation_is_one_line(evaluated, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(evaluated / runs.CONFIG, run / runs.CONFIG)
    assert cli.main(["view", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bddseg evaluate --checkpoint" in err, err
    assert f"--out {run / 'eval' / 'val'}" in err


def test_serve(site):
    server, url = serve(site, port=0)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"data.js" in r.read()
    finally:
        server.shutdown()
        server.server_close()
    assert url.startswith("http://127.0.0.1:")


# ---------------------------------------------------------------- in Chromium
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--hide-scrollbars"]  # fmt: skip

# Runs after viewer.js: sorts, presses keys, clicks a confusion cell, then writes what it saw.
PROBE = """<script>
(async function () {
  var D = window.BDDSEG_VIEW, out = {problems: window.__problems};
  var wait = function (ms) { return new Promise(function (r) { setTimeout(r, ms); }); };
  var visible = function () {
    return Array.from(document.querySelectorAll("#list [data-image]:not([hidden])"))
      .map(function (e) { return e.dataset.image; });
  };
  var shown = function () { return document.body.dataset.current; };
  var change = function (id, v) {
    var s = document.getElementById(id); s.value = v; s.dispatchEvent(new Event("change"));
  };
  var key = function (k) { document.dispatchEvent(new KeyboardEvent("keydown", {key: k, bubbles: true})); };
  out.images = document.querySelectorAll("[data-image]").length;
  out.runs = Array.from(document.querySelectorAll("[data-run]")).map(function (e) { return e.dataset.run; });
  change("sort", "best");
  out.bestFirst = visible()[0];
  change("sort", "worst");
  out.worstFirst = visible()[0];
  out.lowest = D.images.slice().sort(function (a, b) { return a.miou[0] - b.miou[0]; })[0].s;
  out.firstShown = shown();
  key("ArrowRight");
  out.afterRight = shown();
  out.second = visible()[1];
  key("ArrowLeft");
  out.afterLeft = shown();
  var loaded = function (i) { return i.complete && i.naturalWidth > 0; };
  var panels = Array.from(document.querySelectorAll("#panels img:not([hidden])"));
  for (var i = 0; i < 200 && !panels.every(loaded); i++) await wait(50);
  panels = Array.from(document.querySelectorAll("#panels img:not([hidden])"));
  out.panelImages = panels.length;
  out.broken = panels.filter(function (i) { return !loaded(i); }).length;
  var cells = Object.keys(D.cells[0]).filter(function (k) { var ab = k.split(","); return ab[0] !== ab[1]; });
  var cell = cells.sort(function (x, y) { return D.cells[0][y].length - D.cells[0][x].length; })[0];
  document.querySelector('#confusion td[data-cell="' + cell + '"]').click();
  out.cellVisible = visible();
  out.cellExpected = D.cells[0][cell].map(function (t) { return D.images[t[0]].s; });
  var pre = document.createElement("pre");
  pre.id = "__probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""
CATCH = """<script>
window.__problems = [];
window.addEventListener("error", function (e) {
  window.__problems.push("error: " + (e.message || (e.target && (e.target.src || e.target.href))));
}, true);
["error", "warn"].forEach(function (level) {
  var orig = console[level];
  console[level] = function () { window.__problems.push(level + ": " + Array.from(arguments).join(" ")); orig.apply(console, arguments); };
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI is set: the browser test must run in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _probe(chromium: str, index: Path, profile: Path) -> tuple[dict, list[str]]:
    probed = index.with_name("probed.html")
    html = index.read_text(encoding="utf-8")
    html = html.replace("<head>", "<head>\n" + CATCH, 1).replace("</body>", PROBE + "</body>", 1)
    probed.write_text(html, encoding="utf-8")
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=20000", "--dump-dom", probed.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no probe output (rc={proc.returncode}): {proc.stderr[-2000:]}"
    text = m.group(1)
    for entity, char in (("&quot;", '"'), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        text = text.replace(entity, char)
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return json.loads(text), console


@pytest.mark.browser
def test_one_run_in_chromium(chromium, site, tmp_path):
    data, console = _probe(chromium, site / "index.html", tmp_path / "profile")
    assert data["problems"] == [] and console == [], (data["problems"], console)
    assert data["images"] == 6 and len(data["runs"]) == 1
    assert data["worstFirst"] == data["lowest"] != data["bestFirst"]
    assert data["firstShown"] == data["worstFirst"] == data["afterLeft"], data
    assert data["afterRight"] == data["second"] != data["worstFirst"]
    # the photo under each mask; the error view: photo, truth, prediction, unlabelled truth
    assert data["panelImages"] == 9 and data["broken"] == 0
    assert data["cellVisible"] == data["cellExpected"] and data["cellVisible"]


@pytest.mark.browser
def test_two_runs_in_chromium(chromium, evaluated, second, tmp_path):
    index = build_view([evaluated, second], tmp_path / "both")
    data, console = _probe(chromium, index, tmp_path / "profile")
    assert data["problems"] == [] and console == [], (data["problems"], console)
    assert data["images"] == 6
    assert [r.split(" ")[0] for r in data["runs"]] == ["ce", "focal"]
    assert data["panelImages"] == 15 and data["broken"] == 0  # + B's prediction and errors
    both = _data(index.parent)["images"][0]
    assert len(both["miou"]) == 2 and both["miou"][0] != both["miou"][1]


def test_a_four_class_run_is_viewed_with_its_classes(tmp_path):
    """Names, colours and K come from metrics.json's classes; the matrices are 5x5."""
    names, colors = (
        ["background", "road", "car", "person"],
        [[0, 0, 0], [1, 2, 3], [4, 5, 6], [7, 8, 9]],
    )
    root, run = tmp_path / "data", tmp_path / "run"
    rng = np.random.default_rng(0)
    (root / "images/10k/val").mkdir(parents=True)
    (root / "labels/sem_seg/masks/val").mkdir(parents=True)
    ev = run / "eval" / "val"
    (ev / "pred").mkdir(parents=True)
    for stem in ("a", "b"):
        truth = rng.choice([0, 1, 2, 255], size=(16, 32)).astype(np.uint8)
        Image.fromarray(truth).save(root / "labels/sem_seg/masks/val" / f"{stem}.png")
        Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(
            root / "images/10k/val" / f"{stem}.jpg"
        )
        Image.fromarray(rng.integers(0, 5, (16, 32), dtype=np.uint8)).save(
            ev / "pred" / f"{stem}.png"
        )
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(root)}}))
    (ev / "per_image.csv").write_text("stem,miou,pixel_accuracy\na,0.5,0.5\nb,0.5,0.5\n")
    (ev / "confusion.json").write_text(json.dumps({"matrix": np.ones((5, 5), int).tolist()}))
    classes = {"name": "toy", "names": names, "colors": colors, "ignore": 255}
    (ev / "metrics.json").write_text(json.dumps({"official": {"miou": 0.5}, "classes": classes}))
    data = _data(build_view([run], tmp_path / "site").parent)
    assert data["classes"] == [*names, "unknown"] and data["official"] == 4
    assert data["palette"][:4] == colors and len(data["palette"]) == 5
    assert all(len(im["iou"][0]) == 4 for im in data["images"])
    assert {int(a) for key in data["cells"][0] for a in key.split(",")} <= set(range(5))


def test_a_cityscapes_run_is_viewed_in_train_ids(synth_root, tmp_path):
    """A run evaluated on a Cityscapes-layout folder (labelIds only): the truth is written in
    train ids (the viewer's colours), each image's numbers are per_image.csv's (the union
    rule), and the cities are the group filter's."""
    from bddseg.classes import CITYSCAPES_LABEL_IDS
    from bddseg.layout import list_pairs
    from bddseg.masks import read_mask

    run, cs = cityscapes_run(synth_root, tmp_path)
    index = build_view([run], tmp_path / "site")
    site, data = index.parent, _data(index.parent)
    with open(runs.eval_dir(run) / runs.PER_IMAGE, newline="") as f:
        per_image = {r["stem"]: r for r in csv.DictReader(f)}
    assert [im["s"] for im in data["images"]] == list(per_image) and len(per_image) == 6
    pairs = {p.stem: p for p in list_pairs(cs, "val")}
    assert data["groups"] == sorted({p.group for p in pairs.values()}) and len(data["groups"]) == 2
    for im in data["images"]:
        row = per_image[im["s"]]
        assert im["miou"][0] == pytest.approx(float(row["miou"]), abs=1e-4)
        assert im["acc"][0] == pytest.approx(float(row["pixel_accuracy"]), abs=1e-4)
        assert data["groups"][im["g"]] == row["group"] == pairs[im["s"]].group
        shown = np.array(Image.open(site / "truth" / f"{im['s']}.png"))
        expected = read_mask(pairs[im["s"]].mask, classes=CITYSCAPES_LABEL_IDS)
        assert np.array_equal(shown, expected)  # train ids, not label ids (26: car -> 13)
        raw = np.array(Image.open(pairs[im["s"]].mask))
        assert not np.array_equal(raw, expected)
    html = index.read_text()
    assert 'id="filter-group"' in html
