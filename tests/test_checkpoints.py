"""Tests for bddseg.checkpoints: the format, atomic save, validated and safe load.

That no checkpoint can run code, through every command that reads one, is
tests/test_safe_load.py; rebuilding a model from a checkpoint is tests/test_model.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bddseg.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    checkpoint_classes,
    checkpoint_output_names,
    load_checkpoint,
    make_checkpoint,
    safe_torch_load,
    save_checkpoint,
)
from bddseg.classes import BDD100K, Classes, default_palette
from bddseg.config import Config, DataConfig, from_dict, to_dict
from bddseg.errors import BddsegError


def test_make_checkpoint_holds_everything_to_rebuild_the_model():
    cfg = dataclasses.replace(Config(), data=DataConfig(unknown="ignore"))
    state = {"w": torch.arange(3.0)}
    ckpt = make_checkpoint(state, cfg, step=7, epoch=2, best_metric=0.5, val_metrics={"miou": 0.5})
    assert ckpt == {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": state,
        "config": to_dict(cfg),
        "num_classes": 19,
        "classes": BDD100K.to_dict(),
        "step": 7,
        "epoch": 2,
        "best_metric": 0.5,
        "val_metrics": {"miou": 0.5},
    }
    assert from_dict(ckpt["config"]) == cfg
    module = torch.nn.Linear(2, 3)
    assert make_checkpoint(module, Config())["model"].keys() == module.state_dict().keys()


def test_checkpoints_carry_their_classes():
    """A run's classes travel in its checkpoint; one written before they did reads as
    BDD100K's 19 (20 outputs with unknown); a record that does not fit the outputs is refused."""
    mine = Classes(("background", "road", "car", "person"), default_palette(4), "mine")
    ckpt = make_checkpoint({"w": torch.ones(1)}, Config(), classes=mine)  # unknown: class
    assert ckpt["num_classes"] == 5 and checkpoint_classes(ckpt) == mine
    assert checkpoint_output_names(ckpt) == (*mine.names, "unknown")
    old = {
        k: v for k, v in make_checkpoint({"w": torch.ones(1)}, Config()).items() if k != "classes"
    }
    assert checkpoint_classes(old) == BDD100K and old["num_classes"] == 20
    assert checkpoint_output_names(old)[-1] == "unknown"
    with pytest.raises(BddsegError, match="7 outputs for 4 classes"):
        checkpoint_classes({**ckpt, "num_classes": 7}, "x.pt")


def test_save_then_load_round_trips_atomically(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, make_checkpoint({"w": torch.ones(4)}, Config(), step=3))
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed into place
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["num_classes"] == 20
    assert torch.equal(loaded["model"]["w"], torch.ones(4))
    assert from_dict(loaded["config"]) == Config()


def test_checkpoints_that_are_not_ours_are_refused(tmp_path):
    cases = {
        "plain.pt": ({"model": {}}, "not a bddseg checkpoint"),
        "classes.pt": (
            {"format": "bddseg", "model": {}, "num_classes": "19"},
            "num_classes is '19'",
        ),
        "config.pt": ({"format": "bddseg", "model": {}, "config": [1]}, "is not a mapping"),
    }
    for name, (ckpt, message) in cases.items():
        torch.save(ckpt, tmp_path / name)
        with pytest.raises(BddsegError, match=message) as e:
            load_checkpoint(tmp_path / name)
        assert e.value.path == str(tmp_path / name)
    with pytest.raises(BddsegError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "bddseg", "model": {"w": torch.zeros(1000)}}, tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BddsegError, match="not a readable checkpoint \\(truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")


def test_safe_torch_load_names_what_the_file_should_be(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(BddsegError, match="not a readable encoder weights") as e:
        safe_torch_load(tmp_path / "empty.pth", what="encoder weights")
    assert e.value.path == str(tmp_path / "empty.pth")
    with pytest.raises(BddsegError, match="encoder weights file not found"):
        safe_torch_load(tmp_path / "missing.pth", what="encoder weights")
