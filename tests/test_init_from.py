"""Tests for bddseg.finetune.init_from: a run started from a segmentation checkpoint, the head's
rows matched by class name (issue 23)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bddseg.checkpoints import make_checkpoint, save_checkpoint
from bddseg.config import Config, DataConfig, ModelConfig
from bddseg.errors import BddsegError
from bddseg.finetune import init_from
from bddseg.labels import CLASS_NAMES, CLASS_NAMES_20
from bddseg.model import build_model

HEAD = ("segmentation_head.0.weight", "segmentation_head.0.bias")
AUX = ("aux_head.4.weight", "aux_head.4.bias")
RUN = ("background", "road", "car", "person")  # a user's 4 classes


def small(num_classes: int, seed: int, **model) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelConfig(**{"encoder": "resnet18", "pretrained": False, **model}), num_classes
    )


def config(unknown: str = "ignore", **model) -> Config:
    model_cfg = ModelConfig(**{"encoder": "resnet18", "pretrained": False, **model})
    return dataclasses.replace(Config(), data=DataConfig(unknown=unknown), model=model_cfg)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def bdd19(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A 19-class BDD100K checkpoint (with an auxiliary head) and its weights."""
    model = small(19, seed=0, aux_weight=0.4)
    path = tmp_path_factory.mktemp("ckpt") / "bdd19.pt"
    save_checkpoint(path, make_checkpoint(model, config(aux_weight=0.4)))
    return str(path), snapshot(model)


# ---------------------------------------------------------------- by name
@pytest.mark.parametrize("aux", [True, False])
def test_a_bdd100k_checkpoint_starts_a_four_class_run(bdd19, aux):
    path, source = bdd19
    model = small(4, seed=1, aux_weight=0.4 if aux else 0.0)
    fresh = snapshot(model)
    report = init_from(model, path, RUN, arch="unet/resnet18")
    after = model.state_dict()
    heads = HEAD + AUX if aux else HEAD
    for key, value in after.items():
        if key not in heads:
            assert torch.equal(value, source[key]), key  # encoder and decoder in full
    for key in heads:
        assert torch.equal(after[key][0], fresh[key][0]), key  # background: no such class
        for row, name in enumerate(RUN[1:], start=1):
            assert torch.equal(after[key][row], source[key][CLASS_NAMES.index(name)]), key
    assert [CLASS_NAMES.index(n) for n in RUN[1:]] == [0, 13, 11]
    assert report.copied == ("road", "car", "person") and report.new == ("background",)
    assert report.loaded == len(after) - len(heads) and report.kind == "bddseg checkpoint"
    aux_keys = tuple(k for k in source if k.startswith("aux_head."))
    assert len(aux_keys) == 8 and report.fresh == () and not report.warnings
    assert report.skipped == (() if aux else aux_keys)
    line = str(report)
    assert line.startswith(f"init from {path}: {report.loaded} tensors loaded in full, head: ")
    assert "3 of 4 classes copied (road, car, person), 1 new (background); " in line
    assert line.endswith(
        "; 0 skipped" if aux else "; 8 skipped (its auxiliary head: this run has none)"
    )


def test_twenty_classes_into_nineteen_and_back(tmp_path):
    source = small(20, seed=2)
    path = tmp_path / "bdd20.pt"
    ckpt = make_checkpoint(source, config(unknown="class"))
    del ckpt["classes"]  # as written before checkpoints recorded them: BDD100K's, + unknown
    save_checkpoint(path, ckpt)
    model = small(19, seed=3)
    report = init_from(model, path, CLASS_NAMES)
    for key in HEAD:  # unknown, the last row, is left out
        assert torch.equal(model.state_dict()[key], source.state_dict()[key][:19])
    assert report.copied == CLASS_NAMES and report.new == ()
    assert "19 of 19 classes copied (road, sidewalk, " in str(report)

    back = small(20, seed=4)
    fresh = snapshot(back)
    report = init_from(back, path, CLASS_NAMES_20)  # unknown matches unknown
    for key in HEAD:
        assert torch.equal(back.state_dict()[key], source.state_dict()[key])
    assert report.new == () and report.copied[-1] == "unknown"
    assert not torch.equal(back.state_dict()[HEAD[0]], fresh[HEAD[0]])


def test_a_checkpoint_with_its_own_classes_matches_by_its_names(tmp_path):
    source = small(4, seed=5)
    ckpt = make_checkpoint(source, config())
    ckpt["classes"] = {"name": "custom", "names": ["person", "car", "background", "road"]}
    ckpt["num_classes"] = 4
    save_checkpoint(tmp_path / "four.pt", ckpt)
    model = small(19, seed=6)
    fresh = snapshot(model)
    report = init_from(model, tmp_path / "four.pt", CLASS_NAMES)
    weight = model.state_dict()[HEAD[0]]
    assert torch.equal(weight[CLASS_NAMES.index("person")], source.state_dict()[HEAD[0]][0])
    assert torch.equal(weight[CLASS_NAMES.index("road")], source.state_dict()[HEAD[0]][3])
    assert torch.equal(weight[1], fresh[HEAD[0]][1])  # sidewalk: new
    assert report.copied == ("road", "person", "car") and len(report.new) == 16

    ckpt["classes"]["names"] = ["person", "car"]  # 4 rows for 2 classes
    ckpt["num_classes"] = 2
    save_checkpoint(tmp_path / "damaged.pt", ckpt)
    with pytest.raises(BddsegError, match="damaged bddseg checkpoint: 4 head rows for 2 outputs"):
        init_from(small(19, seed=6), tmp_path / "damaged.pt", CLASS_NAMES)


def test_no_class_in_common_loads_the_body_and_warns(bdd19):
    path, source = bdd19
    model = small(2, seed=7)
    fresh = snapshot(model)
    report = init_from(model, path, ("crop", "weed"))
    assert torch.equal(model.state_dict()[HEAD[0]], fresh[HEAD[0]])
    assert torch.equal(model.encoder.conv1.weight, source["encoder.conv1.weight"])
    assert report.copied == () and report.new == ("crop", "weed")
    assert len(report.warnings) == 1 and "none of its classes" in report.warnings[0]
    assert "0 of 2 classes copied, 2 new (crop, weed)" in str(report)


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("upernet", "resnet18"), ("segformer", "mit_b0"), ("deeplabv3plus", "resnet18")],
)
def test_the_head_of_other_architectures(tmp_path, arch, encoder):
    """The head is found by module (the last convolution of segmentation_head, aux_head): for
    these architectures too, it is exactly the tensors whose size follows the class count."""
    model = dict(arch=arch, encoder=encoder, aux_weight=0.4)
    source = small(19, seed=20, **model)
    run = small(4, seed=21, **model)
    by_shape = {k for k, v in run.state_dict().items() if v.shape != source.state_dict()[k].shape}
    assert by_shape == set(HEAD + AUX)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, make_checkpoint(source, config(**model)))
    report = init_from(run, path, RUN, arch=f"{arch}/{encoder}")
    assert report.copied == RUN[1:] and report.loaded == len(run.state_dict()) - 4
    for key in HEAD + AUX:
        assert torch.equal(run.state_dict()[key][2], source.state_dict()[key][13])  # car


# ---------------------------------------------------------------- a plain state dict
def test_a_plain_state_dict_of_the_same_size_is_copied_by_position(tmp_path):
    source = small(4, seed=8)
    # as torch.compile / DDP save them, wrapped as Lightning does: both taken off
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "smp.pth")
    model = small(4, seed=9)
    report = init_from(model, tmp_path / "smp.pth", RUN)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert report.by_position and report.copied == RUN and report.kind == "state dict"
    assert "4 of 4 classes copied by position (background, road, car, person)" in str(report)


def test_a_plain_state_dict_of_another_size_leaves_the_head_fresh(tmp_path):
    source = small(19, seed=10)
    torch.save(source.state_dict(), tmp_path / "smp.pth")
    model = small(4, seed=11)
    fresh = snapshot(model)
    report = init_from(model, tmp_path / "smp.pth", RUN)
    for key, value in model.state_dict().items():
        expected = fresh[key] if key in HEAD else source.state_dict()[key]
        assert torch.equal(value, expected), key
    assert report.copied == () and report.new == RUN and not report.by_position
    assert "19 rows, this run 4, and no class names" in report.warnings[0]


# ---------------------------------------------------------------- refusals
def test_another_architecture_is_named_in_one_line(tmp_path):
    source = small(19, seed=12, arch="fpn")
    path = tmp_path / "fpn.pt"
    save_checkpoint(path, make_checkpoint(source, config(arch="fpn")))
    model = small(4, seed=13)
    before = snapshot(model)
    with pytest.raises(
        BddsegError, match="checkpoint is fpn/resnet18, this run is unet/resnet18$"
    ) as e:
        init_from(model, path, RUN, arch="unet/resnet18")
    assert e.value.path == str(path) and "\n" not in str(e.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_weights_that_do_not_fit_name_the_file_and_the_first_keys(tmp_path):
    source = small(4, seed=14, arch="fpn")
    torch.save(source.state_dict(), tmp_path / "fpn.pth")
    with pytest.raises(BddsegError, match="weights do not fit this unet/resnet18 model: ") as e:
        init_from(small(4, seed=15), tmp_path / "fpn.pth", RUN, arch="unet/resnet18")
    problem = e.value.problem
    assert "tensors of this model not in the file (decoder." in problem and "\n" not in problem
    assert e.value.path == str(tmp_path / "fpn.pth")


def test_a_missing_or_corrupt_file_is_one_error(tmp_path):
    model = small(4, seed=16)
    with pytest.raises(BddsegError, match="not found") as e:
        init_from(model, tmp_path / "nope.pt", RUN)
    assert e.value.path == str(tmp_path / "nope.pt")
    torch.save(model.state_dict(), tmp_path / "bad.pt")
    data = (tmp_path / "bad.pt").read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(BddsegError, match="not a readable checkpoint \\(truncated or corrupt"):
        init_from(model, tmp_path / "bad.pt", RUN)
    torch.save({"epoch": 3}, tmp_path / "odd.pt")
    with pytest.raises(BddsegError, match="must be a state dict"):
        init_from(model, tmp_path / "odd.pt", RUN)
