"""The one progress bar (bddseg.progress)."""

from __future__ import annotations

from rich.progress import TimeElapsedColumn, TimeRemainingColumn

from bddseg.progress import progress_bar


def test_bar_is_on_stderr_and_can_be_disabled(capsys):
    bar = progress_bar("predict", enabled=False)
    assert bar.console.stderr and bar.disable
    with bar:
        bar.advance(bar.add_task("predict", total=3), 3)
    assert capsys.readouterr().out == ""


def test_columns_elapsed_or_remaining_and_info():
    plain = progress_bar("evaluate")
    assert isinstance(plain.columns[-1], TimeElapsedColumn)
    train = progress_bar("train", eta=True, info=True)
    assert isinstance(train.columns[3], TimeRemainingColumn) and len(train.columns) == 5
    task = train.add_task("train", total=10, info="loss 0.5")
    assert train.tasks[task].fields["info"] == "loss 0.5"
