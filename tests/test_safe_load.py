"""Nothing in a checkpoint or a config file can run code.

Checkpoints load with ``torch.load(..., weights_only=True)``
(:func:`bddseg.checkpoints.safe_torch_load`), YAML with ``yaml.safe_load``
(:func:`bddseg.config.load_yaml`). Each payload below creates a marker file when unpickled or
constructed; a control proves it does so under the unsafe loaders, then every command that
reads such a file must refuse it with one ``error:`` line and exit 2 while the marker stays
absent. (The download's extraction refusing entries outside
the root and links is tested in tests/test_download.py.)
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import shlex
import shutil

import pytest
import torch
import yaml

from bddseg.checkpoints import load_checkpoint
from bddseg.cli import main
from bddseg.config import load_yaml
from bddseg.errors import BddsegError


class SystemCall:
    """Unpickling runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class TouchCall:
    """Unpickling runs ``pathlib.Path(MARKER).touch()`` (no shell involved)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


class ExecCall:
    """Unpickling runs arbitrary Python source with ``exec``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


def _payloads(marker: pathlib.Path) -> dict[str, object]:
    """Where the code hides: the whole file, a 'tensor' of the state dict, the config."""
    base = {"format": "bddseg", "version": 1, "num_classes": 20, "step": 0}
    return {
        "whole file (os.system)": SystemCall(marker),
        "in the state dict (Path.touch)": {**base, "model": {"conv.weight": TouchCall(marker)}},
        "in the config (exec)": {**base, "model": {}, "config": {"run": ExecCall(marker)}},
        "legacy format (os.system)": ("legacy", {**base, "model": {"w": SystemCall(marker)}}),
    }


def _save(obj, path: pathlib.Path) -> pathlib.Path:
    if isinstance(obj, tuple) and obj[0] == "legacy":
        torch.save(obj[1], path, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, path)
    return path


PAYLOADS = list(_payloads(pathlib.Path("x")))


@pytest.fixture()
def marker(tmp_path) -> pathlib.Path:
    return tmp_path / "MARKER-code-ran"


@pytest.fixture()
def evil(tmp_path, marker, request) -> pathlib.Path:
    """A checkpoint file carrying the payload named by the test's ``payload`` parameter."""
    return _save(_payloads(marker)[request.param], tmp_path / "evil checkpoint.pt")


@pytest.mark.parametrize("evil", PAYLOADS, indirect=True)
def test_the_payload_is_live_under_an_unsafe_load(evil, marker):
    """The control: torch.load without weights_only does run the code."""
    with contextlib.suppress(Exception):
        torch.load(evil, weights_only=False)
    assert marker.exists(), "the payload did not run: this test file would prove nothing"


@pytest.mark.parametrize("evil", PAYLOADS, indirect=True)
def test_load_checkpoint_refuses_code(evil, marker):
    with pytest.raises(BddsegError, match="refused to load checkpoint") as err:
        load_checkpoint(evil)
    assert str(evil) in str(err.value) and "only load files you trust" in str(err.value)
    assert not marker.exists()


def _cli(argv: list) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def _commands(evil: pathlib.Path, tmp: pathlib.Path, root: pathlib.Path) -> dict[str, list]:
    image = next((root / "images" / "10k" / "test").glob("*.jpg"))
    run = tmp / "run"
    run.mkdir()
    shutil.copy(evil, run / "last.pt")
    train = ["--data", root, "--max-steps", "1", "--no-pretrained", "--crop", "32x64",
             "--batch-size", "2", "--workers", "0", "--accelerator", "cpu"]  # fmt: skip
    return {
        "evaluate --checkpoint": ["evaluate", "--checkpoint", evil, "--data", root,
                                  "--out", tmp / "ev", "--workers", "0"],
        "predict --checkpoint": ["predict", image, "--checkpoint", evil, "--out", tmp / "p",
                                 "--workers", "0"],
        "export": ["export", "--checkpoint", evil, "--out", tmp / "m.onnx"],
        "train --resume": ["train", "--out", run, "--resume", *train],
        "train --encoder-weights": ["train", "--out", tmp / "r2", "--encoder-weights", evil,
                                    *train],
    }  # fmt: skip


COMMANDS = ["evaluate --checkpoint", "predict --checkpoint", "export", "train --resume",
            "train --encoder-weights"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("evil", PAYLOADS[:2], indirect=True)
def test_every_command_refuses_a_checkpoint_with_code(evil, marker, tmp_path, synth_root,
                                                     command):  # fmt: skip
    argv = _commands(evil, tmp_path, synth_root)[command]
    named = tmp_path / "run" / "last.pt" if command == "train --resume" else evil
    rc, err = _cli(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and "Traceback" not in err, err
    assert lines[-1].startswith(f"error: {named}: refused to load"), err
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert not marker.exists()


# ---------------------------------------------------------------- YAML
def _yaml_payloads(marker: pathlib.Path) -> dict[str, str]:
    m = str(marker)
    code = f"import pathlib; pathlib.Path({m!r}).touch()"
    return {
        "python/object/apply": f"run: !!python/object/apply:os.system [{'touch ' + shlex.quote(m)!r}]\n",
        "python/object/new": f"run: !!python/object/new:pathlib.Path [{m!r}]\n",
        "python/name": "run: !!python/name:os.system\n",
        "python/module": "run: !!python/module:os\n",
        "top-level exec": f"!!python/object/apply:builtins.exec [{code!r}]\n",
    }  # fmt: skip


YAML_PAYLOADS = list(_yaml_payloads(pathlib.Path("x")))


@pytest.mark.parametrize("name", ["python/object/apply", "top-level exec"])
def test_the_yaml_payload_is_live_under_an_unsafe_load(marker, name):
    yaml.unsafe_load(_yaml_payloads(marker)[name])
    assert marker.exists(), "the YAML payload did not run: this test would prove nothing"


@pytest.mark.parametrize("name", YAML_PAYLOADS)
def test_yaml_python_tags_are_refused(tmp_path, marker, name):
    path = tmp_path / "evil.yaml"
    path.write_text(_yaml_payloads(marker)[name])
    with pytest.raises(BddsegError, match="Python tags are refused") as err:
        load_yaml(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["train --config", "train --resume (saved config)", "report"])
def test_commands_refuse_a_yaml_with_python_tags(tmp_path, marker, synth_root, command):
    evil = _yaml_payloads(marker)["python/object/apply"]
    run = tmp_path / "rün"
    run.mkdir()
    (run / "config.yaml").write_text(evil)
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(evil)
    train = ["--data", synth_root, "--max-steps", "1", "--no-pretrained", "--workers", "0"]
    argv, named = {
        "train --config": (["train", "--config", cfg, "--out", tmp_path / "r", *train], cfg),
        "train --resume (saved config)": (["train", "--out", run, "--resume", *train],
                                          run / "config.yaml"),
        "report": (["report", run, "--out", tmp_path / "r.html"], run / "config.yaml"),
    }[command]  # fmt: skip
    rc, err = _cli(argv)
    assert rc == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"error: {named}: invalid YAML"), err
    assert "Python tags are refused" in err
    assert not marker.exists()
