"""Tests for bddseg.trainlog: log.csv across resumes, the stop flag, the timer, the progress
lines. (The loop writing them is tested in tests/test_train.py.)"""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest
from rich.console import Console

from bddseg import trainlog
from bddseg.errors import BddsegError
from bddseg.trainlog import LOG_COLUMNS, CsvLog, Progress, StopFlag, Timer, read_log, read_log_rows

HEADER = ",".join(LOG_COLUMNS)


def _row(step: int, **values) -> dict:
    return {"step": step, "epoch": 0, "lr": 0.001, "train_loss": 1.0 / step, **values}


def test_csv_log_writes_the_header_once_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    log = CsvLog(path, resume_step=None)
    assert path.read_text() == HEADER + "\n"
    log.append(_row(1))
    log.append(_row(2, val_miou=0.25, val_loss=float("nan")))
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 3
    assert lines[1] == "1,0,0.001,1,,,,,,"  # no validation: empty val_* cells
    assert lines[2].split(",")[:6] == ["2", "0", "0.001", "0.5", "nan", "0.25"]


def test_resuming_keeps_the_rows_up_to_the_step_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    log = CsvLog(path, resume_step=None)
    for step in (1, 2, 3, 4):
        log.append(_row(step))
    with open(path, "a") as f:
        f.write("5,0,0.0")  # a partial line from a killed run
    resumed = CsvLog(path, resume_step=2)  # last.pt was at step 2
    resumed.append(_row(3, val_miou=0.5))
    lines = path.read_text().splitlines()
    assert lines.count(HEADER) == 1 and lines[0] == HEADER
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[3].split(",")[5] == "0.5"  # the new step 3, not the old one


def test_a_new_run_starts_a_fresh_log(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "\n1,0,0.1,1,,,,,,\n")
    CsvLog(path, resume_step=None)
    assert path.read_text() == HEADER + "\n"
    path.write_text("garbage\nnot,a,log\n")  # unreadable rows are dropped, not fatal
    CsvLog(path, resume_step=10)
    assert path.read_text() == HEADER + "\n"


def test_read_log_keeps_the_complete_rows(tmp_path):
    """The one log.csv reader: rows as text, or columns of floats; a killed run's partial last
    line and rows without an integer step are dropped in both."""
    path = tmp_path / "log.csv"
    log = CsvLog(path, resume_step=None)
    log.append(_row(1))
    log.append(_row(2, val_miou=0.25, val_loss=float("nan")))
    with open(path, "a") as f:
        f.write("oops,,,\n3,0,0.001,0.3")  # a bad row, then a partial line (0.3 of 0.33?)
    rows = read_log_rows(path)
    assert [r["step"] for r in rows] == ["1", "2"] and list(rows[0]) == list(LOG_COLUMNS)
    assert rows[0]["val_miou"] == "" and rows[1]["val_miou"] == "0.25"
    cols = read_log(path)
    assert list(cols) == list(LOG_COLUMNS)
    assert cols["step"] == [1.0, 2.0] and cols["train_loss"] == [1.0, 0.5]
    assert cols["val_miou"] == [None, 0.25] and cols["val_loss"][1] != cols["val_loss"][1]  # nan
    path.write_text(",".join(LOG_COLUMNS) + "\n")
    assert read_log(path) == {k: [] for k in LOG_COLUMNS} and read_log_rows(path) == []
    with pytest.raises(BddsegError, match="training log not found"):
        read_log(tmp_path / "nope.csv")
    path.write_text("epoch,lr\n0,0.1\n")
    with pytest.raises(BddsegError, match="no 'step' column"):
        read_log_rows(path)


def test_plots_and_report_read_the_log_through_trainlog():
    """One reader: the loss curves and the report use trainlog's, not copies of their own."""
    from bddseg import plots, report

    assert plots.read_log is trainlog.read_log and report.read_log is trainlog.read_log
    assert not hasattr(CsvLog, "_read_rows")


def test_stop_flag_catches_the_first_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGINT)
    flag = StopFlag()
    assert not flag
    with flag.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag and flag.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_timer_excludes_pauses_from_speed_and_train_time(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(trainlog.time, "perf_counter", clock)
    timer = Timer(elapsed=50.0, train_s=40.0)  # resumed: 10 s of earlier pauses
    clock.now += 4
    timer.add_images(8)
    with timer.pause():  # validation
        clock.now += 6
    assert timer.elapsed == pytest.approx(60.0)
    assert timer.train_s == pytest.approx(44.0)
    assert timer.images_per_s() == pytest.approx(2.0)  # 8 images in 4 s of training
    clock.now += 1
    assert timer.images_per_s() == 0.0  # a new window: nothing yet


def test_progress_prints_plain_lines_off_a_terminal(capsys):
    progress = Progress(total=10, start=0)
    assert not progress.live  # pytest's captured stderr is not a terminal
    progress.update(3, "loss 0.5")
    progress.print("validation")
    Progress(total=10, start=0, enabled=False).update(4, "silent")
    assert capsys.readouterr().out == "step 3/10  loss 0.5\nvalidation\n"


def test_progress_on_a_terminal_draws_a_bar_and_keeps_the_validation_lines(capsys):
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)
    progress = Progress(total=10, start=2, console=console)  # resumed at step 2
    assert progress.live
    progress.update(3, "loss 0.5  lr 1.00e-03  8.0 img/s")
    progress.update(4, "loss 0.4  val mIoU 0.1234", force_line=True)
    progress.print("resuming from step 2 of 10")
    progress.close()
    drawn = console.file.getvalue()
    assert "train ━" in drawn and " 4/10 " in drawn  # the bar, redrawn on stop
    assert "step 4/10  loss 0.4  val mIoU 0.1234\n" in drawn  # a line of its own, kept
    assert "resuming from step 2 of 10\n" in drawn
    assert "step 3/10" not in drawn  # ordinary steps move the bar, print no line
    assert capsys.readouterr().out == ""


def test_val_images_read_the_truth_through_the_dataset_classes(synth_root, tmp_path):
    """Cityscapes labelIds are mapped to train ids (read as BDD100K they would be refused and
    the image left out); truth and prediction take the run's palette."""
    from types import SimpleNamespace

    from bddseg.classes import CITYSCAPES_LABEL_IDS, Classes
    from bddseg.colors import colorize
    from bddseg.layout import list_pairs
    from bddseg.masks import read_mask
    from bddseg.synth_layouts import write_layout
    from bddseg.trainlog import ValImages

    cs = write_layout(synth_root, tmp_path / "cs", "cityscapes")
    pairs = list_pairs(cs, "val")
    dataset = SimpleNamespace(pairs=pairs, classes=CITYSCAPES_LABEL_IDS, mask_classes=None)
    shown = ValImages(dataset, n=2, width=160)
    shown.load()
    first = sorted(pairs, key=lambda p: p.stem)[:2]
    assert sorted(shown.sources) == [p.stem for p in first]
    truth = read_mask(first[0].mask, classes=CITYSCAPES_LABEL_IDS)  # 160 wide: no resize
    assert np.array_equal(shown.sources[first[0].stem][1], colorize(truth))
    assert ValImages(pairs, n=2, width=160).sources is None  # nothing read before load()
    plain = ValImages(pairs, n=2, width=160)
    plain.load()
    assert plain.sources == {}  # label ids (26, 33, ...) are not BDD100K's train ids
    # a 4-class run: its own colours
    four = Classes(("a", "b", "c", "d"), ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)))
    toy = ValImages([], width=2, classes=four)
    toy.sources = {"x": (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8))}
    toy.on_mask("x", np.array([[0, 1], [3, 255]], np.uint8))
    triplet = toy.triplets()["x"]
    assert triplet[:, 4:].tolist() == [[[1, 2, 3], [4, 5, 6]], [[10, 11, 12], [0, 0, 0]]]
