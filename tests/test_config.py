"""Tests for bddseg.config: defaults, YAML files and overrides, the checks that name the
offending key, the sets of choices the CLI offers, and the bundled recipes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bddseg.config import (
    Config,
    DataConfig,
    bundled_config,
    choices,
    from_dict,
    load_config,
    override,
    save_yaml,
    to_dict,
)
from bddseg.demo import demo_config
from bddseg.errors import BddsegError

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- files and overrides
def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.5\n  batch_size: 8\ndata:\n  crop: [32, 64]\n")
    cfg = load_config(path, {"optim.lr": 0.25, "optim.epochs": None, "run": {"seed": 3}})
    assert cfg.optim.lr == 0.25  # the override wins over the file
    assert cfg.optim.batch_size == 8 and cfg.data.crop == (32, 64)  # a list becomes a tuple
    assert cfg.optim.epochs == Config().optim.epochs  # None: a flag not given overrides nothing
    assert cfg.run.seed == 3 and cfg.loss == Config().loss
    assert load_config(None) == Config()


def test_override_returns_a_new_config():
    cfg = Config()
    new = override(cfg, **{"optim.lr": 0.1, "data.unknown": "ignore"})
    assert new.optim.lr == 0.1 and new.num_classes == 19
    assert cfg.optim.lr == Config().optim.lr and cfg.num_classes == 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 0.1  # type: ignore[misc]
    with pytest.raises(BddsegError, match="must look like section.key"):
        override(cfg, lr=0.1)


def test_to_dict_and_the_saved_yaml_round_trip(tmp_path):
    cfg = override(Config(), **{"data.base_size": [48, 80], "run.devices": 2})
    plain = to_dict(cfg)
    assert plain["data"]["base_size"] == [48, 80] and plain["data"]["crop"] == [512, 1024]
    assert from_dict(plain) == cfg
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


# ---------------------------------------------------------------- errors name the key
def test_unknown_key_and_section_are_named_with_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(
        BddsegError, match=r"unknown config key optim\.lrr \(did you mean optim\.lr\?\)$"
    ) as e:
        load_config(path)
    assert e.value.path == str(path)
    path.write_text("optim:\n  nope: 0.1\n")  # nothing close: the valid keys
    with pytest.raises(BddsegError, match=r"unknown config key optim\.nope \(valid: name, lr,"):
        load_config(path)
    path.write_text("optimizer:\n  lr: 0.1\n")
    with pytest.raises(
        BddsegError, match=r"unknown config key optimizer \(did you mean optim\?\)$"
    ):
        load_config(path)
    with pytest.raises(
        BddsegError, match=r"unknown config key data\.cropp \(did you mean data\.crop\?\)$"
    ) as e:
        load_config(None, {"data.cropp": [1, 2]})
    assert e.value.path == "command line"


def test_every_unknown_key_is_named_at_once_with_its_closest_valid_key(tmp_path):
    """A config with two typos used to name the first only, with no suggestion."""
    path = tmp_path / "typos.yaml"
    path.write_text("optim:\n  lrr: 0.1\n  epochs: 3\nmodle:\n  arch: fpn\ndata:\n  zzz: 1\n")
    with pytest.raises(BddsegError) as e:
        load_config(path)
    assert e.value.path == str(path)
    valid = ", ".join(f.name for f in dataclasses.fields(DataConfig))
    assert e.value.problem == (
        "unknown config keys: optim.lrr (did you mean optim.lr?), modle (did you mean model?), "
        f"data.zzz (valid: {valid})"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optim": {"batch_size": "16"}}, "optim.batch_size: expected an integer, got '16'"),
        ({"optim": {"batch_size": 2.5}}, "optim.batch_size: expected an integer"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number"),
        ({"data": {"hflip": "yes"}}, "data.hflip: expected true or false"),
        ({"data": {"crop": [512]}}, "data.crop: expected a list of 2 values"),
        ({"loss": {"name": "hinge"}}, "loss.name: 'hinge' is not one of 'ce', 'focal'"),
        ({"optim": {"batch_size": 0}}, "optim.batch_size: 0 is out of range (must be >= 1)"),
        ({"data": {"scale": [2.0, 0.5]}}, "data.scale: [2.0, 0.5] must be [low, high]"),
        ({"optim": {"lr": float("nan")}}, "optim.lr: nan is out of range"),
        ({"data": "big"}, "config section 'data' must be a mapping"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(BddsegError) as e:
        from_dict(values, source="x.yaml")
    assert message in str(e.value) and e.value.path == "x.yaml"


# ---------------------------------------------------------------- choices
def _train_choices() -> dict[str, tuple]:
    """``{flag: choices}`` of ``bddseg train``, read from the real parser."""
    from bddseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    train = sub.choices["train"]
    return {a.option_strings[0]: tuple(a.choices) for a in train._actions if a.choices}


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("--loss", "loss.name"),
        ("--class-weights", "loss.class_weights"),
        ("--unknown", "data.unknown"),
        ("--accelerator", "run.accelerator"),
        ("--precision", "run.precision"),
        ("--on-bad-sample", "data.on_bad_sample"),
    ],
)
def test_the_cli_offers_the_configs_choices(flag, key):
    offered = _train_choices()[flag]
    assert offered == choices(key)
    section, _, name = key.partition(".")
    for value in offered:  # each one is accepted by the config
        assert getattr(getattr(override(Config(), **{key: value}), section), name) == value


def test_choices_of_a_free_setting_is_an_error():
    assert choices("loss.name") == ("ce", "focal", "dice", "ce+dice", "ohem")
    with pytest.raises(KeyError, match="optim.lr has no fixed set of choices"):
        choices("optim.lr")


# ---------------------------------------------------------------- recipes
def test_bundled_config_by_name():
    assert bundled_config("demo_ce") == bundled_config("demo_ce.yaml")
    assert bundled_config("demo_ce").read_text() == (REPO / "configs" / "demo_ce.yaml").read_text()
    with pytest.raises(
        BddsegError, match="bundled: bdd100k_deeplabv3plus_r50, .*bdd100k_unet_r34_ce, "
    ):
        bundled_config("nope")


def test_demo_config_is_the_bundled_yaml(tmp_path):
    for loss in ("ce", "focal"):
        from_file = load_config(
            REPO / "configs" / f"demo_{loss}.yaml", {"data.root": "ROOT", "run.out": "OUT"}
        )
        assert from_file == demo_config("ROOT", "OUT", loss=loss)
        assert load_config(f"demo_{loss}") == load_config(REPO / "configs" / f"demo_{loss}.yaml")
    assert demo_config("R", "O", loss="focal").loss.class_weights == "median"
    with pytest.raises(BddsegError, match="bundled"):
        load_config("no_such_recipe")


@pytest.mark.parametrize("name", ["bdd100k_unet_r34_ce", "bdd100k_unet_r34_focal"])
def test_real_recipes_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert (
        cfg.data.crop == (512, 1024) and cfg.data.scale == (0.5, 2.0) and cfg.optim.batch_size == 16
    )
    assert cfg.loss.name == name.rsplit("_", 1)[1]
