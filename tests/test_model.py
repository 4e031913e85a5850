"""Tests for bddseg.model: building, padding to 32, the model rebuilt from a checkpoint.

The checkpoint format, save and load are tests/test_checkpoints.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bddseg.checkpoints import make_checkpoint, save_checkpoint
from bddseg.config import Config, DataConfig, ModelConfig
from bddseg.errors import BddsegError
from bddseg.model import (
    build_model,
    forward_padded,
    load_weights,
    model_from_checkpoint,
    pad_to_multiple,
)


# ---------------------------------------------------------------- building
def test_encoder_weights_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet34().state_dict()
    torch.save(state, tmp_path / "resnet34.pth")
    cfg = Config().model
    cfg = dataclasses.replace(cfg, pretrained=True, encoder_weights=str(tmp_path / "resnet34.pth"))
    model = build_model(cfg, 20)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.encoder.layer4[2].bn2.running_var, state["layer4.2.bn2.running_var"])


def test_unknown_architecture_and_encoder_are_named():
    with pytest.raises(BddsegError, match="unknown architecture 'bogusnet' \\(valid: unet,"):
        build_model(ModelConfig(arch="bogusnet", pretrained=False), 20)  # type: ignore[arg-type]
    with pytest.raises(BddsegError, match="unknown encoder 'resnet9000'"):
        build_model(ModelConfig(encoder="resnet9000", pretrained=False), 20)


# ---------------------------------------------------------------- padding
def test_pad_to_multiple_pads_bottom_right_only():
    x = torch.arange(2 * 3 * 33 * 70, dtype=torch.float32).reshape(2, 3, 33, 70)
    p = pad_to_multiple(x, value=-1.0)
    assert p.shape == (2, 3, 64, 96)
    assert torch.equal(p[..., :33, :70], x)  # the image stays at the top left
    assert (p[..., 33:, :] == -1).all() and (p[..., :, 70:] == -1).all()
    assert pad_to_multiple(x, multiple=11).shape == (2, 3, 33, 77)
    same = torch.zeros(1, 3, 64, 32)
    assert pad_to_multiple(same) is same  # already a multiple: no copy


class Recorder(nn.Module):
    """A 1x1 convolution (so padding cannot leak into the image) that records input sizes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_forward_padded_runs_at_a_multiple_of_32_and_crops_back():
    model = Recorder()
    x = torch.randn(2, 3, 45, 81)
    with torch.no_grad():
        out = forward_padded(model, x)
        assert out.shape == (2, 4, 45, 81) and model.sizes == [(64, 96)]
        torch.testing.assert_close(out, model.conv(x))


# ---------------------------------------------------------------- from a checkpoint
@pytest.fixture(scope="module")
def small() -> tuple[nn.Module, Config]:
    model_cfg = ModelConfig(encoder="resnet18", pretrained=False)
    cfg = dataclasses.replace(Config(), data=DataConfig(unknown="ignore"), model=model_cfg)
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.num_classes), cfg


def test_model_from_checkpoint_round_trip(small, tmp_path):
    model, cfg = small
    path = tmp_path / "best.pt"
    # as torch.compile and DDP save them: the prefixes are dropped on load
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(path, make_checkpoint(state, cfg, step=7))
    loaded, loaded_cfg = model_from_checkpoint(path)
    assert loaded_cfg == cfg and not loaded.training
    assert loaded.segmentation_head[0].out_channels == 19
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_weights_that_do_not_fit_name_the_file(small, tmp_path):
    model, _ = small
    other = build_model(ModelConfig(encoder="resnet18", pretrained=False), 20)
    with pytest.raises(BddsegError, match="do not fit unet/resnet18 with 19 classes: ") as e:
        load_weights(model, other.state_dict(), tmp_path / "w.pt", "unet/resnet18", 19)
    assert e.value.path == str(tmp_path / "w.pt") and "\n" not in str(e.value)
