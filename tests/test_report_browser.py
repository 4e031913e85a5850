"""The report in a real browser: headless Chromium loads it with no console errors, the
tables and every embedded image are there, the sort script works, and a screenshot is kept
as ``test-artifacts/report.png``.

Chromium missing: skipped locally, a failure in CI (``CI`` set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import make_dataset, make_run

from bddseg import report

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# Injected into a copy of the report: records errors, console.error/warn calls, broken
# images, and the effect of clicking a sortable header, then writes them into the DOM.
PROBE = """<script>
(function () {
  var problems = [];
  window.addEventListener("error", function (e) {
    problems.push("error: " + (e.message || (e.target && (e.target.src || e.target.href)) || e.type));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { problems.push("rejection: " + e.reason); });
  ["error", "warn"].forEach(function (level) {
    var orig = console[level];
    console[level] = function () { problems.push(level + ": " + Array.from(arguments).join(" ")); orig.apply(console, arguments); };
  });
  window.addEventListener("load", function () {
    var imgs = Array.from(document.images);
    var th = document.querySelector("#compare-classes thead th[data-sort='num']");
    var sorted = [];
    if (th) {
      th.click();
      var col = Array.from(th.parentNode.children).indexOf(th);
      sorted = Array.from(document.querySelectorAll("#compare-classes tbody tr")).map(function (r) {
        var v = parseFloat(r.cells[col].dataset.v); return isNaN(v) ? null : v;
      });
    }
    var out = document.createElement("pre");
    out.id = "__probe";
    out.textContent = JSON.stringify({
      problems: problems,
      images: imgs.length,
      broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
      tables: document.querySelectorAll("table.data").length,
      classRows: document.querySelectorAll("table.per-class tbody tr").length,
      sortedAfterClick: sorted
    });
    document.body.appendChild(out);
  });
})();
</script>"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI is set: the browser test must run in CI")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        chromium,
        *FLAGS,
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _console_lines(stderr: str) -> list[str]:
    """Console messages and uncaught errors, as Chromium logs them with --enable-logging."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def _probe(chromium: str, html: Path, profile: Path) -> tuple[dict, list[str]]:
    probed = html.with_name("probed.html")
    probed.write_text(
        html.read_text(encoding="utf-8").replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8"
    )
    proc = _run(chromium, profile, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no probe output (rc={proc.returncode}): {proc.stderr[-2000:]}"
    data = json.loads(
        m.group(1)
        .replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )
    return data, _console_lines(proc.stderr)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def test_the_probe_catches_errors(chromium, tmp_path):
    """The checks below can fail: a page with a console.error and an uncaught error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><title>x</title></head><body><img src="missing.png">'
        '<script>console.error("boom"); notAFunction();</script></body></html>'
    )
    data, console = _probe(chromium, bad, tmp_path / "profile")
    assert any("boom" in p for p in data["problems"]) and data["broken"] == 1
    assert any("Uncaught" in line for line in console)


def test_report_in_chromium(chromium, tmp_path):
    root = make_dataset(tmp_path / "bdd100k")
    runs = [
        make_run(tmp_path, "ce", root, "ce", "none", seed=1),
        make_run(tmp_path, "focal", root, "focal", "median", seed=2),
    ]
    html = report.write_report(runs, tmp_path / "report.html")

    data, console = _probe(chromium, html, tmp_path / "profile")
    assert data["problems"] == [] and console == [], (data["problems"], console)
    assert data["images"] == html.read_text(encoding="utf-8").count('src="data:image/') == 18
    assert data["broken"] == 0
    # comparison: per-class IoU + headline; per run: per-class + image-level averages
    assert data["tables"] == 6
    assert data["classRows"] == 2 * 20
    values = [v for v in data["sortedAfterClick"] if v is not None]
    assert len(values) >= 15 and values == sorted(values), data["sortedAfterClick"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    proc = _run(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1400,3000",
        html.as_uri(),
    )
    assert shot.is_file() and shot.stat().st_size > 50_000, proc.stderr[-2000:]
    assert _console_lines(proc.stderr) == []
