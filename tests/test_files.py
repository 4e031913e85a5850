"""Atomic writes (bddseg.files): whole files or none, with the permissions the umask gives."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from bddseg.errors import BddsegError
from bddseg.files import atomic_path, atomic_write_text, current_umask, read_json


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_honour_the_umask(tmp_path, umask):
    """A checkpoint, a mask, metrics.json and the report get what `open(..., "w")` gives."""
    from bddseg.checkpoints import save_checkpoint
    from bddseg.masks import write_mask

    for mask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask(mask)
        assert current_umask() == mask
        d = tmp_path / f"{mask:o}"
        save_checkpoint(d / "best.pt", {"model": {"w": torch.zeros(2)}})
        write_mask(d / "pred" / "a.png", np.zeros((4, 6), dtype=np.uint8))
        atomic_write_text(d / "metrics.json", "{}\n")
        atomic_write_text(d / "report.html", "<html></html>\n")
        with open(d / "plain.txt", "w") as f:
            f.write("x")
        assert mode(d / "plain.txt") == expected
        for name in ("best.pt", "pred/a.png", "metrics.json", "report.html"):
            assert mode(d / name) == expected, (name, oct(mode(d / name)))


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(BddsegError, match="cannot write"):
        atomic_write_text(tmp_path / "metrics.json" / "x", "{}")  # parent is a file


def test_read_json_names_what_and_the_file(tmp_path):
    good = tmp_path / "metrics.json"
    atomic_write_text(good, '{"miou": 0.5}')
    assert read_json(good, "metrics") == {"miou": 0.5}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(BddsegError, match=r"cannot read metrics: not valid JSON \(JSONDecodeError"):
        read_json(broken, "metrics")
    with pytest.raises(BddsegError) as missing:
        read_json(tmp_path / "nope.json", "confusion matrix")
    assert str(missing.value).startswith(f"{tmp_path / 'nope.json'}: cannot read confusion matrix")
