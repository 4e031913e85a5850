"""The error type and the warning channel (bddseg.errors)."""

from __future__ import annotations

import pickle

from bddseg.errors import BddsegError, first_line, warn


def test_error_names_the_file_and_survives_pickling():
    e = BddsegError("cannot read", "a/b.png")
    assert str(e) == "a/b.png: cannot read"
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
    assert str(BddsegError("no path")) == "no path"


def test_first_line_quotes_type_and_first_line():
    assert first_line(ValueError("bad\nmore")) == "ValueError: bad"
    assert first_line(RuntimeError("x" * 300), limit=10) == "RuntimeError: " + "x" * 10
    assert first_line(KeyError()) == "KeyError"


def test_warn_writes_one_line_on_stderr(capsys):
    warn("a.jpg: cannot read\nsecond line; skipped")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "warning: a.jpg: cannot read second line; skipped\n"
