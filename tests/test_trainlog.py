"""Tests for bddseg.trainlog: log.csv across resumes, the stop flag, the timer, the progress
lines. (The loop writing them is tested in tests/test_train.py.)"""

from __future__ import annotations

import os
import signal

import pytest

from bddseg import trainlog
from bddseg.trainlog import LOG_COLUMNS, CsvLog, Progress, StopFlag, Timer

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
