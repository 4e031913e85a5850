"""Tests for bddseg.cli: every subcommand's help, the version, flags over the YAML config, and
how errors end (one ``error:`` line and exit 2; Ctrl-C: 130)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import bddseg.synth
from bddseg._version import __version__
from bddseg.cli import EXIT_BAD_INPUT, build_parser, main
from bddseg.errors import BddsegError

REPO = Path(__file__).resolve().parents[1]


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every command line that names a (sub)command, e.g. ``("data", "stats")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


COMMANDS = list(_subcommands(build_parser()))


def test_every_command_is_listed():
    names = {c[0] for c in COMMANDS}
    assert {"synth", "data", "download", "train", "evaluate", "predict", "export"} <= names
    assert {"report", "bench", "demo"} <= names and ("data", "stats") in COMMANDS


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "bddseg")
def test_help_of_every_command_exits_0(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bddseg" + "".join(f" {c}" for c in command))


def _arguments(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """``(command, action, its parser)`` for every argument of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arguments(sub, (*prefix, name))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield prefix, action, parser


SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction)


def test_every_argument_has_help_and_every_flag_shows_its_default():
    """Every argument says what it is; every flag that takes a value says what happens
    without it: ``(default: VALUE)`` from argparse, or in words (a config key's default,
    "none", "the CPUs"). Switches are off by default; hidden test-only flags are exempt."""
    missing_help, no_default = [], []
    for command, action, parser in _arguments(build_parser()):
        if action.help == argparse.SUPPRESS:
            continue
        flag = action.option_strings[-1] if action.option_strings else action.dest
        name = " ".join([*command, flag])
        text = parser._get_formatter()._expand_help(action) if action.help else ""
        takes_value = action.option_strings and not isinstance(action, SWITCHES)
        if not text.strip():
            missing_help.append(name)
        elif takes_value and not action.required and "default" not in text:
            no_default.append(name)
    assert not missing_help, f"arguments without help: {missing_help}"
    assert not no_default, f"flags whose help does not say their default: {no_default}"


def test_help_shows_defaults_and_the_config_keys_of_train_flags(capsys):
    from bddseg.config import Config

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "may change a few pixels (default: 32-true)" in text
    assert "matches the ONNX export" in text and "(default: mask,color,overlay)" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: optim.lr of --config, else {Config().optim.lr})" in text
    assert "(default: run.precision of --config, else auto)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"bddseg {__version__}\n"
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__  # one version, not two that drift apart
    assert bddseg.__version__ == __version__


def test_bad_usage_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--loss", "hinge"])
    assert done.value.code == 2
    assert "invalid choice: 'hinge'" in capsys.readouterr().err


# ---------------------------------------------------------------- errors
def _synth_raising(monkeypatch, exc: BaseException) -> None:
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(bddseg.synth, "make_dataset", fail)


def test_a_bddseg_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    _synth_raising(monkeypatch, BddsegError("bad value\n  on two lines", tmp_path / "m.png"))
    assert main(["synth", str(tmp_path)]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.err == f"error: {tmp_path / 'm.png'}: bad value on two lines\n"
    assert captured.out == ""


def test_an_error_from_a_loader_worker_keeps_its_last_line(tmp_path, monkeypatch, capsys):
    """torch re-creates a worker's exception from its formatted traceback."""
    text = (
        "Caught BddsegError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\nbddseg.errors.BddsegError: a.png: not a PNG'
    )
    _synth_raising(monkeypatch, BddsegError(text))
    assert main(["synth", str(tmp_path)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: a.png: not a PNG\n"


def test_a_real_command_on_a_missing_folder(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope"), "--workers", "1"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'nope'}: ")
    assert "not found" in err and "Traceback" not in err


def test_os_errors_and_ctrl_c(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "gone")
    _synth_raising(monkeypatch, FileNotFoundError(2, "No such file or directory", missing))
    assert main(["synth", str(tmp_path)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: {missing}: No such file or directory\n"
    _synth_raising(monkeypatch, KeyboardInterrupt())
    assert main(["synth", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    _synth_raising(monkeypatch, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):  # a bug is not bad input: it shows
        main(["synth", str(tmp_path)])


# ---------------------------------------------------------------- flags and the config
def test_train_flags_override_the_yaml():
    from bddseg.cli import _train_overrides, build_parser
    from bddseg.config import load_config

    argv = ["train", "--config", str(REPO / "configs" / "demo_ce.yaml"), "--data", "d"]
    argv += [
        "--precision",
        "bf16-mixed",
        "--accelerator",
        "cuda",
        "--lr",
        "0.01",
        "--crop",
        "64x96",
    ]
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, _train_overrides(args))
    assert cfg.run.precision == "bf16-mixed" and cfg.run.accelerator == "cuda"
    assert cfg.optim.lr == 0.01 and cfg.data.crop == (64, 96) and cfg.data.root == "d"
    assert cfg.optim.max_steps == load_config(args.config).optim.max_steps  # flag not given


def test_set_overrides_the_yaml_and_flags_override_set():
    from bddseg.cli import _train_config, build_parser

    argv = ["train", "--config", str(REPO / "configs" / "demo_ce.yaml"), "--data", "d"]
    argv += ["--set", "optim.lr=3e-4", "--set", "data.crop=[64, 128]", "--set", "model.arch=fpn"]
    argv += ["--set", "optim.max_steps=null", "--set", "run.out='1e5'", "--encoder", "resnet18"]
    cfg = _train_config(build_parser().parse_args(argv))
    assert cfg.optim.lr == 3e-4 and cfg.data.crop == (64, 128) and cfg.optim.max_steps is None
    assert (cfg.model.arch, cfg.model.encoder, cfg.run.out) == ("fpn", "resnet18", "1e5")
    argv += ["--lr", "0.01", "--arch", "pspnet", "--set", "optim.lr=0.5"]
    cfg = _train_config(build_parser().parse_args(argv))
    assert cfg.optim.lr == 0.01 and cfg.model.arch == "pspnet"  # explicit flags win


def test_set_typos_are_named_together_with_suggestions(capsys):
    argv = ["train", "--data", "d", "--set", "optim.lrr=0.1", "--set", "modle.arch=fpn"]
    assert main([*argv, "--set", "run.seed=1"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (
        "error: --set: unknown config keys: optim.lrr (did you mean optim.lr?), "
        "modle (did you mean model?)\n"
    )


def test_set_the_same_key_twice_the_last_wins():
    from bddseg.cli import _train_config, build_parser

    argv = ["train", "--set", "optim.lr=-1", "--set", "optim.lr=0.5"]
    assert _train_config(build_parser().parse_args(argv)).optim.lr == 0.5


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("optim.nope=1", "--set: unknown config key optim.nope \\(valid: name, lr,"),
        ("lr=0.1", "--set 'lr=0.1': expected SECTION.KEY=VALUE"),
        ("optim.lr=[1,", "--set optim.lr: cannot read '\\[1,'"),
        ("model.arch=segformer2", "--set: model.arch: 'segformer2' is not one of 'unet'"),
        ("optim.lr=fast", "--set: optim.lr: expected a number, got 'fast'"),
    ],
)
def test_bad_set_is_one_line(item, message, capsys):
    assert main(["train", "--data", "d", "--set", item]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(message, err), err
