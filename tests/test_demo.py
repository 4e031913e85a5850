"""``bddseg demo --quick``: the whole pipeline end to end, one experiment after the other and
side by side in two processes (what the full demo does on two or more cores)."""

from __future__ import annotations

import json

import pytest

from bddseg.config import load_config
from bddseg.demo import EXPERIMENTS, _Prefixed, demo_config, run_demo

pytestmark = pytest.mark.slow


def _check_outputs(out, results):
    assert set(results) == {loss for loss, _ in EXPERIMENTS}
    for loss, _ in EXPERIMENTS:
        run = out / "runs" / loss
        metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())
        assert metrics["official"]["miou"] == results[loss]["official"]["miou"]
        assert sorted((run / "predictions" / "test" / "masks").glob("*.png"))
        # the run trained exactly the bundled recipe (plus --quick's sizes)
        cfg = load_config(run / "config.yaml")
        assert cfg == demo_config(cfg.data.root, run, loss=loss, quick=True)
    assert (out / "report.html").stat().st_size > 10_000


def test_demo_quick_in_one_process(tmp_path, capsys):
    results = run_demo(tmp_path, quick=True, workers=1)
    _check_outputs(tmp_path, results)
    assert "side by side" not in capsys.readouterr().out


def test_demo_quick_side_by_side_then_resumed(tmp_path, capfd):
    results = run_demo(tmp_path, quick=True, workers=2, parallel=True)
    _check_outputs(tmp_path, results)
    printed = capfd.readouterr().out
    assert "side by side (1 thread(s) each)" in printed
    assert "[ce] training unet/resnet34" in printed and "[focal] training" in printed
    again = run_demo(tmp_path, quick=True, workers=2, parallel=True)  # reuses, finishes at once
    assert again["ce"]["official"] == results["ce"]["official"]
    assert "reusing the synthetic dataset" in capfd.readouterr().out


def test_prefixed_stream_prefixes_every_line():
    import io

    buf = io.StringIO()
    stream = _Prefixed(buf, "[x] ")
    stream.write("a\nb")
    stream.write("c\n\nd\n")
    assert buf.getvalue() == "[x] a\n[x] bc\n[x] \n[x] d\n" and not stream.isatty()
