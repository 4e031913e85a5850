"""`bddseg view` on 1,000 evaluated images: the build time, and in headless Chromium from
file:// the time to the first image shown and to the next image after a key press.

The run is made up: the 1,000 official val masks are the truth (no photos: none are public),
each prediction is made from its truth as benchmarks/eval_speed.py --real makes them
(shifted, objects relabelled, stray blobs), scored by ``evaluate_folders`` into a run folder
whose config names a dataset root holding only the masks. Then ``build_view`` is timed, and
Chromium (Debian's, driven through its ``chromedriver`` over plain WebDriver HTTP: no
selenium, no download) opens the page: "first image" is the page's
``performance.mark("bddseg-shown")`` (every view of the selected image decoded and drawn)
since navigation start; "next image" is from the ArrowRight keydown's timestamp to the next
such mark, over ``--keys`` presses.

    .venv/bin/python benchmarks/viewer.py [--workers 2] [--keys 30] [--append]
    .venv/bin/python benchmarks/viewer.py --screenshot docs/viewer.png --site DIR/index.html
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from eval_speed import generate_real, real_masks_dir

from bddseg.bench import cpu_model
from bddseg.evaluate import evaluate_folders
from bddseg.view import build_view

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--hide-scrollbars"]  # fmt: skip
ARROW_RIGHT = "\ue014"


class Browser:
    """Chromium through chromedriver's W3C WebDriver endpoints (a few HTTP calls)."""

    def __init__(self, size: tuple[int, int] = (1400, 1000)):
        driver = shutil.which("chromedriver")
        if driver is None:
            sys.exit("chromedriver not found (apt-get install chromium-driver)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        chrome = shutil.which("chromium") or "/usr/bin/chromium"
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chrome, "args": [*FLAGS, f"--window-size={size[0]},{size[1]}"]}}  # fmt: skip
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})[
            "sessionId"
        ]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["value"]

    def do(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def js(self, script: str):
        return self.do("POST", "/execute/sync", {"script": script, "args": []})

    def key(self, value: str) -> None:
        keys = [{"type": "keyDown", "value": value}, {"type": "keyUp", "value": value}]
        self.do("POST", "/actions", {"actions": [{"type": "key", "id": "k", "actions": keys}]})

    def close(self) -> None:
        try:
            self.do("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(10)


def _marks(b: Browser) -> list[float]:
    return b.js(
        "return performance.getEntriesByName('bddseg-shown').map(function (m) {"
        " return m.startTime; });"
    )


def _wait_marks(b: Browser, n: int, timeout: float = 20.0) -> list[float]:
    end = time.time() + timeout
    while time.time() < end:
        marks = _marks(b)
        if len(marks) >= n:
            return marks
        time.sleep(0.01)
    raise RuntimeError(f"the viewer showed {len(_marks(b))} images, waited for {n}")


def measure(index: Path, keys: int) -> dict:
    b = Browser()
    try:
        b.do("POST", "/url", {"url": index.resolve().as_uri()})
        first = _wait_marks(b, 1)[0]
        b.js(
            "window.__keys = []; document.addEventListener('keydown', function (e) {"
            " window.__keys.push(e.timeStamp); }, true);"
        )
        nexts = []
        for i in range(keys):
            b.key(ARROW_RIGHT)
            mark = _wait_marks(b, i + 2)[i + 1]
            nexts.append(mark - b.js("return window.__keys[window.__keys.length - 1];"))
        count = b.js("return document.querySelectorAll('[data-image]').length;")
    finally:
        b.close()
    return {"first_ms": first, "next_ms": nexts, "images": count}


def screenshot(index: Path, out: Path) -> None:
    b = Browser((1400, 900))
    try:
        b.do("POST", "/url", {"url": index.resolve().as_uri()})
        _wait_marks(b, 1)
        png = base64.b64decode(b.do("GET", "/screenshot"))
    finally:
        b.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    print(f"wrote {out} ({len(png) // 1024} KB)")


def make_run(tmp: Path, workers: int) -> tuple[Path, int]:
    """A run folder evaluated on the 1,000 official val masks (predictions made from them)."""
    masks = real_masks_dir()
    root = tmp / "bdd100k"
    (root / "images" / "10k" / "val").mkdir(parents=True)  # no photos
    (root / "labels" / "sem_seg" / "masks").mkdir(parents=True)
    (root / "labels" / "sem_seg" / "masks" / "val").symlink_to(masks)
    run = tmp / "run"
    ev = run / "eval" / "val"
    n = generate_real(ev, masks, seed=0, workers=workers)  # -> ev/pred/STEM.png
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(root)}}))
    evaluate_folders(ev / "pred", masks, ev, workers=workers, plots=False)
    return run, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    ap.add_argument("--keys", type=int, default=30, help="ArrowRight presses timed (default: 30)")
    ap.add_argument("--append", action="store_true", help="add the figures to RESULTS.md")
    ap.add_argument("--screenshot", type=Path, help="only take a screenshot of --site")
    ap.add_argument("--site", type=Path, help="the index.html to screenshot")
    args = ap.parse_args()
    if args.screenshot:
        screenshot(args.site, args.screenshot)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run, n = make_run(tmp, args.workers)
        load = os.getloadavg()  # the machine is shared: the figures depend on it
        t0 = time.perf_counter()
        index = build_view([run], tmp / "view", workers=args.workers)
        build = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
        data_js = (index.parent / "data.js").stat().st_size
        m = measure(index, args.keys)
    load = (*load, *os.getloadavg())
    nx = m["next_ms"]
    lines = [
        f"build: {build:.1f} s for {n} images ({args.workers} workers); site {size / 1e6:.0f} MB,"
        f" data.js {data_js / 1e3:.0f} KB",
        f"first image shown: {m['first_ms']:.0f} ms after navigation start ({m['images']} "
        f"[data-image] elements)",
        f"next image after ArrowRight: median {statistics.median(nx):.0f} ms, max {max(nx):.0f} "
        f"ms over {len(nx)} presses",
        "load average (1, 5, 15 min) before the build: {:.1f}, {:.1f}, {:.1f}; after the browser: "
        "{:.1f}, {:.1f}, {:.1f}".format(*load),
    ]
    print("\n".join(lines))
    if args.append:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        text = (
            f"\n## `bddseg view` on the 1,000 official val masks (issue 22)\n\n"
            f"`.venv/bin/python benchmarks/viewer.py --workers {args.workers} --keys {args.keys}"
            f"`: a run made from the official val masks (predictions as eval_speed.py --real "
            f"makes them; no photos), the viewer built by `build_view`, opened from file:// in "
            f"headless Chromium {_chromium_version()} (software rendering) through chromedriver."
            f"\n\nMachine: {cpu_model()} (`lscpu` model name), {_cores()} cores shared with "
            f"other work, {when}.\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
        )
        with open(REPO / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(text)


def _chromium_version() -> str:
    out = subprocess.run(
        [shutil.which("chromium") or "chromium", "--version"], capture_output=True, text=True
    )
    return out.stdout.strip().split(" ")[1] if out.stdout.strip() else "?"


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
