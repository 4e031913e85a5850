"""Bad input for every command that reads user files: one clear line, exit 2, no traceback.

Each case copies the tiny synthetic dataset (``synth_root``), breaks one thing, runs
``bddseg.cli.main`` in-process and checks the contract of :func:`problems_with`:

- ``error``: exit 2; exactly one stderr line starting ``error:``, the last one, naming the
  file and the problem; no traceback;
- ``check``: ``data check`` lists every problem (one ``error:`` line each), exit 2;
- ``predict``: predict skips what it cannot read with a ``warning: FILE: PROBLEM`` line and,
  when nothing could be predicted, ends with one ``error:`` line and exit 2;
- ``ok``: must work (exit 0): a path with spaces and non-ASCII characters;
- ``degrade``: ``report`` draws what it can; a broken optional input becomes a "not
  available" note naming the file and the problem in the page, exit 0.

Unreadable files: ``chmod 000`` blocks nobody under root, so as root those cases run in one
child process without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (root then obeys file modes).

The cases are plain data (:data:`CASES`, built on :class:`World`) so that
``benchmarks/reliability.py`` runs the same matrix.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from bddseg.cli import main
from bddseg.config import Config, ModelConfig, from_dict, load_config, to_dict
from bddseg.errors import BddsegError

REPO = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = (
    "--max-steps", "1", "--no-pretrained", "--crop", "32x64", "--batch-size", "2",
    "--workers", "0", "--accelerator", "cpu", "--seed", "0",
)  # fmt: skip
UNICODE_DIR = "dätä sét/ünï cødé ✓"  # spaces, accents, a non-Latin-1 character


# ====================================================================== running a case
@dataclass
class Setup:
    """What a case runs and what must happen.

    ``needles`` must all appear in the line that reports the problem (the file, the problem);
    ``unreadable`` is made unreadable (mode 000) just for the run; ``html`` is the report a
    ``degrade`` case reads the needles from.
    """

    argv: list[str]
    needles: tuple[str, ...] = ()
    expect: str = "error"  # error | check | predict | ok | degrade
    unreadable: Path | None = None
    html: Path | None = None


@dataclass
class Outcome:
    rc: int | str | None
    out: str
    err: str


def run_cli(argv: list[str]) -> Outcome:
    """``bddseg.cli.main(argv)`` in this process; an escaping exception becomes rc
    ``"exception"`` with its traceback in ``err``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code
        except BaseException:  # noqa: BLE001 - the point is to see what escapes
            traceback.print_exc()
            rc = "exception"
    return Outcome(rc, out.getvalue(), err.getvalue())


def problems_with(setup: Setup, o: Outcome) -> list[str]:
    """What is wrong with outcome ``o`` of ``setup`` (empty: it ended as it should)."""
    lines = [line for line in o.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    bad = []
    if "Traceback" in o.err or o.rc == "exception":
        bad.append("a traceback on stderr")
    if setup.expect in ("ok", "degrade"):
        if o.rc != 0:
            bad.append(f"exit code {o.rc!r}, expected 0")
        if errors:
            bad.append(f"error lines {errors}")
        if setup.expect == "degrade":
            text = setup.html.read_text(encoding="utf-8") if setup.html.is_file() else ""
            bad += [f"the report does not say {n!r}" for n in setup.needles if n not in text]
        return bad
    if o.rc != 2:
        bad.append(f"exit code {o.rc!r}, expected 2")
    if setup.expect == "check" and lines and lines[-1].endswith("problem(s) found"):
        where = errors  # the list of every problem; else a fatal one, on one line
    else:
        where = (
            [ln for ln in lines if ln.startswith("warning:")]
            if setup.expect == "predict"
            else errors
        )
        if len(errors) != 1:
            bad.append(f"{len(errors)} error lines, expected exactly 1")
        elif lines[-1] != errors[0]:
            bad.append(f"the error line is not the last stderr line ({lines[-1]!r})")
    if not any(all(n in line for n in setup.needles) for line in where):
        bad.append(f"no {setup.expect} line names all of {setup.needles}")
    return bad


def run_case(setup: Setup) -> Outcome:
    """Run one case in this process (unreadable cases need :func:`run_unreadable`)."""
    assert setup.unreadable is None, "use run_unreadable"
    return run_cli(setup.argv)


DRIVER = """
import contextlib, io, json, sys, traceback
from bddseg.cli import main
cases, targets = json.load(open(sys.argv[1]))
readable = []
for t in targets:
    try:
        open(t, "rb").close()
        readable.append(t)
    except PermissionError:
        pass
results = []
for argv in cases if not readable else []:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException:
            traceback.print_exc()
            rc = "exception"
    results.append([rc, out.getvalue(), err.getvalue()])
json.dump({"readable": readable, "results": results}, open(sys.argv[2], "w"))
"""


def _drop_dac_capabilities() -> None:
    """In the child, before exec: drop the capabilities that let root ignore file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH; prctl PR_CAPBSET_DROP = 24
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class CannotBlockReads(Exception):
    """This machine cannot make a file unreadable for the test (root without CAP_SETPCAP)."""


def run_unreadable(setups: dict[str, Setup], work: Path) -> dict[str, Outcome]:
    """Run cases whose ``unreadable`` file gets mode 000: in-process as a normal user; as root
    in one child process without the capabilities that bypass file modes."""
    for s in setups.values():
        s.unreadable.chmod(0)
    # a fresh statistics cache: a cached count of the same masks would hide the unreadable one
    cache = os.environ.get("BDDSEG_CACHE")
    os.environ["BDDSEG_CACHE"] = str(work / "stats-cache")
    try:
        if os.geteuid() != 0:
            return {name: run_cli(s.argv) for name, s in setups.items()}
        todo = work / "unreadable-cases.json"
        done = work / "unreadable-results.json"
        todo.write_text(
            json.dumps(
                [
                    [[str(a) for a in s.argv] for s in setups.values()],
                    [str(s.unreadable) for s in setups.values()],
                ]
            )  # fmt: skip
        )
        try:
            subprocess.run(
                [sys.executable, "-c", DRIVER, str(todo), str(done)],
                preexec_fn=_drop_dac_capabilities,
                timeout=300,
                check=True,
                cwd=work,
            )
        except subprocess.SubprocessError as e:
            raise CannotBlockReads(f"cannot drop CAP_DAC_OVERRIDE as root ({e})") from None
        answer = json.loads(done.read_text())
        if answer["readable"]:
            raise CannotBlockReads(f"mode 000 files stay readable: {answer['readable']}")
        return {name: Outcome(*r) for name, r in zip(setups, answer["results"], strict=True)}
    finally:
        for s in setups.values():
            s.unreadable.chmod(0o644)
        if cache is None:
            del os.environ["BDDSEG_CACHE"]
        else:
            os.environ["BDDSEG_CACHE"] = cache


# ====================================================================== the world a case starts from
@dataclass
class World:
    """Where a case starts: its own folder ``tmp`` and shared, read-only inputs (copy them
    before changing anything)."""

    tmp: Path
    synth: Path  # the synthetic dataset's bdd100k folder (12 train, 6 val, 4 test, 96x160)
    ckpts: dict[str, Path]  # good, arch, classes, truncated, zero, text, plain
    run: Path  # a finished 1-step training run on trim(synth)
    small_yaml: Path  # train config: the ResNet18 encoder, faster than the default ResNet34
    _n: int = field(default=0)

    def dataset(self, where: str = "data", trim: bool = False) -> Path:
        """A fresh copy of the synthetic dataset at ``tmp/where`` (returned: the root).

        ``trim``: 2 train pairs and 1 val pair, no test split: one training step of batch 2
        reads every train sample, so a broken one is always hit."""
        self._n += 1
        root = self.tmp / where if where != "data" else self.tmp / f"data{self._n}"
        shutil.copytree(self.synth, root / "bdd100k")
        if trim:
            trim_dataset(root)
        return root


def images_dir(root: Path, split: str) -> Path:
    return root / "bdd100k" / "images" / "10k" / split


def masks_dir(root: Path, split: str) -> Path:
    return root / "bdd100k" / "labels" / "sem_seg" / "masks" / split


def pair(root: Path, split: str, i: int = 0) -> tuple[Path, Path]:
    image = sorted(images_dir(root, split).glob("*.jpg"))[i]
    return image, masks_dir(root, split) / f"{image.stem}.png"


def trim_dataset(root: Path) -> None:
    for split, keep in (("train", 2), ("val", 1)):
        for image in sorted(images_dir(root, split).glob("*.jpg"))[keep:]:
            image.unlink()
            (masks_dir(root, split) / f"{image.stem}.png").unlink()
    shutil.rmtree(images_dir(root, "test"))


def _save_checkpoint(path: Path, model: torch.nn.Module, cfg: Config, **extra) -> Path:
    from bddseg.checkpoints import make_checkpoint, save_checkpoint

    save_checkpoint(path, make_checkpoint(model, cfg, **extra))
    return path


def make_shared(base: Path, synth: Path) -> dict:
    """The read-only inputs of :class:`World`: checkpoints, a config, a finished run."""
    from bddseg.model import build_model

    base.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(encoder="resnet18", pretrained=False))
    model = build_model(cfg.model, 20)
    d = base / "ckpts"
    d.mkdir(exist_ok=True)
    good = _save_checkpoint(d / "good.pt", model, cfg)
    arch = replace(cfg, model=replace(cfg.model, arch="fpn"))
    ckpts = {
        "good": good,
        "arch": _save_checkpoint(d / "arch.pt", model, arch),  # U-Net weights, FPN config
        "classes": _save_checkpoint(d / "classes.pt", model, cfg, num_classes=19),
    }
    torch.save(model.state_dict(), d / "plain.pt")
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "zero.pt").write_bytes(b"")
    (d / "text.pt").write_text("this is a text file, not a checkpoint\n")
    for name in ("plain", "truncated", "zero", "text"):
        ckpts[name] = d / f"{name}.pt"
    small = base / "small.yaml"
    small.write_text("model:\n  encoder: resnet18\n")
    root = base / "train-data"
    shutil.copytree(synth, root / "bdd100k")
    trim_dataset(root)
    run = base / "run"
    o = run_cli(["train", "--data", root, "--out", run, "--config", small, *TRAIN_FLAGS])
    assert o.rc == 0, o.err
    return {"synth": synth, "ckpts": ckpts, "run": run, "small_yaml": small}


# ====================================================================== faults
def _array(p: Path) -> np.ndarray:
    with Image.open(p) as im:
        return np.array(im)


def truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def zero_bytes(p: Path) -> None:
    p.write_bytes(b"")


def text_file(p: Path) -> None:
    p.write_text("this is a text file, not an image\n")


def rgb_mask(p: Path) -> None:
    a = _array(p)
    Image.fromarray(np.stack([a, a, a], axis=-1)).save(p)


def mask_16bit(p: Path) -> None:
    Image.fromarray(_array(p).astype(np.uint16)).save(p)  # mode I;16: a 16-bit PNG


def half_size(p: Path) -> None:
    a = _array(p)
    Image.fromarray(a[: a.shape[0] // 2, : a.shape[1] // 2]).save(p)


def values_19_to_254(p: Path) -> None:
    a = _array(p)
    a.flat[:236] = np.arange(19, 255)
    Image.fromarray(a).save(p)


IMAGE_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated JPEG": (truncate, "truncated or corrupt"),
    "zero-byte image": (zero_bytes, "empty (0 bytes)"),
    "text file named .jpg": (text_file, "not a JPEG or PNG"),
}
MASK_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero-byte mask": (zero_bytes, "empty (0 bytes)"),
    "truncated mask": (truncate, "the file is truncated"),
    "RGB mask": (rgb_mask, "mask is RGB"),
    "16-bit mask": (mask_16bit, "16-bit"),
    "mask of the wrong size": (half_size, "mask is 80x48 but its image is 160x96"),
    "mask values 19..254": (values_19_to_254, "invalid values 19, 20, 21"),
}
# the same masks read by folder evaluation in --pred/--gt mode (the same decoder, bddseg.masks)
FOLDER_FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero-byte mask": (zero_bytes, "empty (0 bytes)"),
    "truncated mask": (truncate, "the file is truncated"),
    "text file named .png": (text_file, "is not a PNG file"),
    "RGB mask": (rgb_mask, "is RGB; masks must be single-channel"),
    "16-bit mask": (mask_16bit, "16-bit; masks must be single-channel 8-bit"),
    "mask values 19..254": (values_19_to_254, "19"),
}


# ====================================================================== the cases
CASES: dict[str, Callable[[World], Setup]] = {}


def case(command: str, fault: str):
    def register(fn: Callable[[World], Setup]) -> Callable[[World], Setup]:
        name = f"{command} | {fault}"
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return register


def _check_argv(w: World, root: Path) -> list:
    return ["data", "check", root, "--workers", "1"]


def _stats_argv(w: World, root: Path) -> list:
    return ["data", "stats", root, "--split", "train", "--workers", "1"]


def _train_argv(w: World, root: Path) -> list:
    return ["train", "--data", root, "--out", w.tmp / "rün öut", "--config", w.small_yaml,
            *TRAIN_FLAGS]  # fmt: skip


def _eval_argv(w: World, root: Path) -> list:
    return ["evaluate", "--checkpoint", w.ckpts["good"], "--data", root,
            "--out", w.tmp / "eval öut", "--workers", "0"]  # fmt: skip


# command -> (the split it reads, argv, expectation, trimmed dataset, reads images)
DATASET_COMMANDS = {
    "data check": ("train", _check_argv, "check", False, True),
    "data stats": ("train", _stats_argv, "error", False, False),
    "train": ("train", _train_argv, "error", True, True),
    "evaluate --checkpoint": ("val", _eval_argv, "error", False, True),
}
EMPTY_SPLIT = {
    "data check": "the train split is empty",
    "data stats": "no image/mask pairs in the train split",
    "train": "the train split has 0 images",
    "evaluate --checkpoint": "no image/mask pairs in the val split",
}


def _file_fault(command: str, which: str, fault: str, extra: tuple = ()) -> None:
    split, argv, expect, trim, _ = DATASET_COMMANDS[command]
    corrupt, problem = (IMAGE_FAULTS if which == "image" else MASK_FAULTS)[fault]

    def setup(w: World) -> Setup:
        root = w.dataset(trim=trim)
        image, mask = pair(root, split)
        target = image if which == "image" else mask
        corrupt(target)
        return Setup([*argv(w, root), *extra], (str(target), problem), expect)

    label = fault if not extra else f"{fault} ({' '.join(extra)})"
    case(command, label)(setup)


def _unpaired(command: str, missing: str) -> None:
    split, argv, expect, trim, _ = DATASET_COMMANDS[command]
    fault = "image without a mask" if missing == "mask" else "mask without an image"

    def setup(w: World) -> Setup:
        root = w.dataset(trim=trim)
        image, mask = pair(root, split)
        gone, left = (mask, image) if missing == "mask" else (image, mask)
        gone.unlink()
        return Setup(argv(w, root), (str(left), fault), expect)

    case(command, fault)(setup)


def _dataset_cases(command: str) -> None:
    split, argv, expect, trim, reads_images = DATASET_COMMANDS[command]
    for fault in IMAGE_FAULTS if reads_images else ():
        _file_fault(command, "image", fault)
    for fault in MASK_FAULTS:
        if reads_images or fault != "mask of the wrong size":  # stats never opens images
            _file_fault(command, "mask", fault)
    if reads_images:  # stats counts complete pairs only: an unpaired file is not its business
        _unpaired(command, "mask")
        _unpaired(command, "image")

    @case(command, "empty split")
    def empty(w: World) -> Setup:
        root = w.dataset(trim=trim)
        for folder in (images_dir(root, split), masks_dir(root, split)):
            for p in folder.iterdir():
                p.unlink()
        return Setup(argv(w, root), (str(root), EMPTY_SPLIT[command]), expect)

    @case(command, "missing root")
    def missing(w: World) -> Setup:
        root = w.tmp / "no such dataset"
        return Setup(argv(w, root), (str(root), "not found"), expect)

    @case(command, "unreadable file")
    def unreadable(w: World) -> Setup:
        root = w.dataset(trim=trim)
        target = pair(root, split)[0 if reads_images else 1]
        return Setup(argv(w, root), (str(target), "Permission denied"), expect, target)

    @case(command, "path with spaces and non-ASCII characters")
    def unicode(w: World) -> Setup:
        return Setup(argv(w, w.dataset(UNICODE_DIR, trim=trim)), expect="ok")


for _command in DATASET_COMMANDS:
    _dataset_cases(_command)
# DataLoader workers re-raise a worker's error from its formatted traceback
_file_fault("train", "image", "truncated JPEG", ("--workers", "2"))
_file_fault("train", "image", "truncated JPEG", ("--on-bad-sample", "error"))
_file_fault("evaluate --checkpoint", "image", "truncated JPEG", ("--workers", "2"))


# ---------------------------------------------------------------- checkpoints
CKPT_FAULTS = {  # name in World.ckpts -> (fault, problem)
    "truncated": ("truncated checkpoint", "not a readable checkpoint"),
    "zero": ("zero-byte checkpoint", "not a readable checkpoint"),
    "text": ("text file as checkpoint", "not a readable checkpoint"),
    "arch": ("checkpoint of another architecture", "do not fit fpn/resnet18"),
    "classes": ("checkpoint of another class count", "with 19 classes"),
    "plain": ("state dict, not a bddseg checkpoint", "not a bddseg checkpoint"),
    "missing": ("missing checkpoint", "not found"),
}


def _ckpt(w: World, name: str) -> Path:
    return w.tmp / "no such model.pt" if name == "missing" else w.ckpts[name]


def _ckpt_cases(command: str, argv: Callable[[World, Path], list]) -> None:
    for name, (fault, problem) in CKPT_FAULTS.items():

        def setup(w: World, name=name, problem=problem) -> Setup:
            ckpt = _ckpt(w, name)
            return Setup(argv(w, ckpt), (str(ckpt), problem))

        case(command, fault)(setup)


def _eval_ckpt_argv(w: World, ckpt: Path) -> list:
    return ["evaluate", "--checkpoint", ckpt, "--data", w.dataset(), "--out", w.tmp / "ev",
            "--workers", "0"]  # fmt: skip


def _predict_argv(w: World, ckpt: Path, *inputs: Path) -> list:
    inputs = inputs or (pair(w.synth.parent, "test")[0],)
    return ["predict", *inputs, "--checkpoint", ckpt, "--out", w.tmp / "préd", "--workers", "0"]


def _export_argv(w: World, ckpt: Path) -> list:
    return ["export", "--checkpoint", ckpt, "--out", w.tmp / "model.onnx"]


_ckpt_cases("evaluate --checkpoint", _eval_ckpt_argv)
_ckpt_cases("predict", _predict_argv)
_ckpt_cases("export", _export_argv)


# ---------------------------------------------------------------- train: config and resume
def _yaml_case(fault: str, text: str, problem: str) -> None:
    @case("train", fault)
    def setup(w: World) -> Setup:
        cfg = w.tmp / "bad config.yaml"
        cfg.write_text(text)
        root = w.dataset(trim=True)
        argv = [a if a != w.small_yaml else cfg for a in _train_argv(w, root)]
        return Setup(argv, (str(cfg), problem))


_yaml_case("YAML with an unknown key", "model:\n  encoder: resnet18\n  colour: red\n",
           "unknown config key model.colour")  # fmt: skip
_yaml_case("YAML with a wrong type", "optim:\n  lr: fast\n", "optim.lr: expected a number")
_yaml_case("YAML with a Python tag", "model: !!python/object/apply:os.getcwd []\n",
           "Python tags are refused")  # fmt: skip
_yaml_case("YAML syntax error", "model: [resnet18\n", "invalid YAML")
_yaml_case("YAML that is a list", "- model\n- optim\n", "must be a mapping")
_yaml_case("YAML value out of range", "data:\n  crop: [0, 64]\n", "data.crop")
_yaml_case("YAML nested too deeply", "model: " + "[" * 5000 + "\n", "invalid YAML")


@case("train", "missing YAML config")
def _missing_yaml(w: World) -> Setup:
    cfg = w.tmp / "nö config.yaml"
    argv = [a if a != w.small_yaml else cfg for a in _train_argv(w, w.dataset(trim=True))]
    return Setup(argv, (str(cfg), "config file not found"))


@case("train", "flag out of range (--batch-size 0)")
def _batch_zero(w: World) -> Setup:
    return Setup([*_train_argv(w, w.dataset(trim=True)), "--batch-size", "0"],
                 ("optim.batch_size", "out of range"))  # fmt: skip


def _resume_argv(run: Path, *extra: str) -> list:
    return ["train", "--out", run, "--resume", "--max-steps", "2", "--workers", "0",
            "--accelerator", "cpu", *extra]  # fmt: skip


def _resume_case(fault: str, problem: str, change: Callable[[Path], Path], *extra: str):
    """Resume a copy of the finished run after ``change(run)`` (returns the file to name)."""

    @case("train --resume", fault)
    def setup(w: World) -> Setup:
        run = w.tmp / "rün"
        shutil.copytree(w.run, run)
        named = change(run)
        return Setup(_resume_argv(run, *extra), (str(named), problem))


def _truncate_last(run: Path) -> Path:
    truncate(run / "last.pt")
    return run / "last.pt"


def _zero_last(run: Path) -> Path:
    zero_bytes(run / "last.pt")
    return run / "last.pt"


def _best_as_last(run: Path) -> Path:
    shutil.copy(run / "best.pt", run / "last.pt")
    return run / "last.pt"


def _bad_saved_config(run: Path) -> Path:
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["optim"]["learning_rate"] = 0.1
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    return run / "config.yaml"


_resume_case("truncated last.pt", "not a readable checkpoint", _truncate_last)
_resume_case("zero-byte last.pt", "not a readable checkpoint", _zero_last)
_resume_case("last.pt without optimizer state", "not a training checkpoint", _best_as_last)
_resume_case("saved config.yaml with an unknown key", "optim.learning_rate", _bad_saved_config)
# the run was trained with unknown: class (20 classes); --unknown ignore asks for 19
_resume_case("last.pt of another class count", "last.pt", lambda r: r / "last.pt",
             "--unknown", "ignore")  # fmt: skip


@case("train --resume", "last.pt of another architecture")
def _resume_other_arch(w: World) -> Setup:
    run = w.tmp / "rün"
    shutil.copytree(w.run, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["model"]["encoder"] = "resnet34"  # the weights in last.pt are ResNet18's
    other = w.tmp / "other.yaml"
    other.write_text(yaml.safe_dump(saved))
    return Setup([*_resume_argv(run), "--config", other], (str(run / "last.pt"), "fit"))


# ---------------------------------------------------------------- evaluate --pred --gt
def _folders(w: World, where: str = "") -> tuple[Path, Path]:
    """A ground-truth folder (the val masks) and perfect predictions (a copy of it)."""
    base = w.tmp / where if where else w.tmp
    gt, pred = base / "gt", base / "pred"
    shutil.copytree(masks_dir(w.synth.parent, "val"), gt)
    shutil.copytree(gt, pred)
    return gt, pred


def _folders_argv(w: World, gt: Path, pred: Path, *extra: str) -> list:
    return ["evaluate", "--pred", pred, "--gt", gt, "--out", w.tmp / "ev", "--workers", "1", *extra]


FOLDERS = "evaluate --pred --gt"
for _fault, (_corrupt, _problem) in FOLDER_FAULTS.items():

    def _gt_fault(w: World, corrupt=_corrupt, problem=_problem) -> Setup:
        gt, pred = _folders(w)
        target = sorted(gt.iterdir())[0]
        corrupt(target)
        return Setup(_folders_argv(w, gt, pred), (str(target), problem))

    case(FOLDERS, f"ground truth: {_fault}")(_gt_fault)

for _fault, (_corrupt, _problem) in {
    "mask of the wrong size": (half_size, "prediction is 80x48 but its ground truth"),
    "RGB mask": (rgb_mask, "prediction is RGB"),
    "truncated mask": (truncate, "cannot decode prediction: the file is truncated"),
}.items():

    def _pred_fault(w: World, corrupt=_corrupt, problem=_problem) -> Setup:
        gt, pred = _folders(w)
        target = sorted(pred.iterdir())[0]
        corrupt(target)
        return Setup(_folders_argv(w, gt, pred), (str(target), problem))

    case(FOLDERS, f"prediction: {_fault}")(_pred_fault)


@case(FOLDERS, "ground truth: truncated mask (--workers 2)")
def _folders_workers(w: World) -> Setup:
    gt, pred = _folders(w)
    target = sorted(gt.iterdir())[-1]
    truncate(target)
    return Setup([*_folders_argv(w, gt, pred), "--workers", "2"], (str(target), "cannot decode"))


@case(FOLDERS, "empty ground-truth folder")
def _folders_empty(w: World) -> Setup:
    gt, pred = _folders(w)
    for p in gt.iterdir():
        p.unlink()
    return Setup(_folders_argv(w, gt, pred), (str(gt), "no .png masks"))


@case(FOLDERS, "missing ground-truth folder")
def _folders_missing_gt(w: World) -> Setup:
    gt, pred = _folders(w)
    shutil.rmtree(gt)
    return Setup(_folders_argv(w, gt, pred), (str(gt), "not found"))


@case(FOLDERS, "missing prediction folder")
def _folders_missing_pred(w: World) -> Setup:
    gt, pred = _folders(w)
    shutil.rmtree(pred)
    return Setup(_folders_argv(w, gt, pred), (str(pred), "not found"))


@case(FOLDERS, "unreadable file")
def _folders_unreadable(w: World) -> Setup:
    gt, pred = _folders(w)
    target = sorted(gt.iterdir())[0]
    return Setup(_folders_argv(w, gt, pred), (str(target), "Permission denied"), unreadable=target)


@case(FOLDERS, "path with spaces and non-ASCII characters")
def _folders_unicode(w: World) -> Setup:
    gt, pred = _folders(w, UNICODE_DIR)
    return Setup(_folders_argv(w, gt, pred), expect="ok")


# ---------------------------------------------------------------- predict
def _input_image(w: World, where: str = "in") -> Path:
    src = pair(w.synth.parent, "test")[0]
    dst = w.tmp / where / src.name
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    return dst


for _fault, (_corrupt, _problem) in IMAGE_FAULTS.items():

    def _predict_fault(w: World, corrupt=_corrupt, problem=_problem) -> Setup:
        image = _input_image(w)
        corrupt(image)
        argv = _predict_argv(w, w.ckpts["good"], image)
        return Setup(argv, (str(image), problem), "predict")

    case("predict", _fault)(_predict_fault)


@case("predict", "truncated JPEG in a folder (2 decode workers)")
def _predict_workers(w: World) -> Setup:
    image = _input_image(w)
    truncate(image)
    argv = [*_predict_argv(w, w.ckpts["good"], image.parent), "--workers", "2"]
    return Setup(argv, (str(image), "truncated or corrupt"), "predict")


@case("predict", "missing input")
def _predict_missing(w: World) -> Setup:
    missing = w.tmp / "nö image.jpg"
    return Setup(_predict_argv(w, w.ckpts["good"], missing), (str(missing), "no such file"),
                 "predict")  # fmt: skip


@case("predict", "empty folder")
def _predict_empty(w: World) -> Setup:
    folder = w.tmp / "empty folder"
    folder.mkdir()
    return Setup(_predict_argv(w, w.ckpts["good"], folder), (str(folder), "no .jpg"), "predict")


@case("predict", "unreadable file")
def _predict_unreadable(w: World) -> Setup:
    image = _input_image(w)
    argv = _predict_argv(w, w.ckpts["good"], image)
    return Setup(argv, (str(image), "Permission denied"), "predict", unreadable=image)


@case("predict", "text file as ONNX model")
def _predict_onnx(w: World) -> Setup:
    model = w.tmp / "model.onnx"
    text_file(model)
    argv = ["predict", _input_image(w), "--onnx", model, "--out", w.tmp / "p", "--workers", "0"]
    return Setup(argv, (str(model), "not a loadable ONNX model"))


@case("predict", "path with spaces and non-ASCII characters")
def _predict_unicode(w: World) -> Setup:
    ckpt = w.tmp / UNICODE_DIR / "mödel ✓.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(w.ckpts["good"], ckpt)
    return Setup(_predict_argv(w, ckpt, _input_image(w, UNICODE_DIR + "/in")), expect="ok")


# ---------------------------------------------------------------- export
@case("export", "output not ending in .onnx")
def _export_suffix(w: World) -> Setup:
    out = w.tmp / "model.bin"
    return Setup(["export", "--checkpoint", w.ckpts["good"], "--out", out], (str(out), ".onnx"))


@case("export", "unreadable file")
def _export_unreadable(w: World) -> Setup:
    ckpt = w.tmp / "model.pt"
    shutil.copy(w.ckpts["truncated"], ckpt)  # never read: refused before torch.load
    return Setup(_export_argv(w, ckpt), (str(ckpt), "Permission denied"), unreadable=ckpt)


@case("export", "path with spaces and non-ASCII characters")
def _export_unicode(w: World) -> Setup:
    ckpt = w.tmp / UNICODE_DIR / "mödel ✓.pt"
    ckpt.parent.mkdir(parents=True)
    shutil.copy(w.ckpts["good"], ckpt)
    out = ckpt.with_suffix(".onnx")  # a random checkpoint records no trained size: --size
    return Setup(["export", "--checkpoint", ckpt, "--out", out, "--size", "64x96"], expect="ok")


# ---------------------------------------------------------------- report
def _run_copy(w: World, where: str = "rün") -> Path:
    run = w.tmp / where
    shutil.copytree(w.run, run)
    return run


def _report_argv(w: World, run: Path) -> list:
    return ["report", run, "--out", w.tmp / "report.html"]


def _report_case(fault: str, change: Callable[[Path], Path], problem: str) -> None:
    @case("report", fault)
    def setup(w: World) -> Setup:
        run = _run_copy(w)
        named = change(run)
        return Setup(_report_argv(w, run), (str(named), problem))


_report_case("missing run directory", lambda r: shutil.rmtree(r) or r, "run directory not found")
_report_case("no config.yaml", lambda r: (r / "config.yaml").unlink() or r, "no config.yaml")
for _fault, (_text, _problem) in {
    "config.yaml with a YAML syntax error": ("data: [x\n", "invalid YAML"),
    "config.yaml with a Python tag": ("data: !!python/object/apply:os.getcwd []\n",
                                      "Python tags are refused"),
    "config.yaml that is a list": ("- a\n", "must be a mapping"),
    "config.yaml that is binary": ("\udcff", "cannot read config file"),
}.items():  # fmt: skip

    def _write(run: Path, text=_text) -> Path:
        (run / "config.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))
        return run / "config.yaml"

    _report_case(_fault, _write, _problem)


@case("report", "unreadable file")
def _report_unreadable(w: World) -> Setup:
    run = _run_copy(w)
    cfg = run / "config.yaml"
    return Setup(_report_argv(w, run), (str(cfg), "Permission denied"), unreadable=cfg)


@case("report", "zero-byte metrics.json (drawn without it)")
def _report_zero_metrics(w: World) -> Setup:
    run = _run_copy(w)
    metrics = run / "eval" / "val" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    zero_bytes(metrics)
    html = w.tmp / "report.html"
    return Setup(_report_argv(w, run), (str(metrics), "cannot read"), "degrade", html=html)


@case("report", "truncated JPEG among the samples (drawn without it)")
def _report_truncated_sample(w: World) -> Setup:
    run = _run_copy(w)
    root = w.dataset(trim=True)
    truncate(pair(root, "train")[0])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["data"]["root"] = str(root)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    html = w.tmp / "report.html"
    return Setup(_report_argv(w, run), ("truncated or corrupt",), "degrade", html=html)


@case("report", "path with spaces and non-ASCII characters")
def _report_unicode(w: World) -> Setup:
    run = _run_copy(w, UNICODE_DIR + "/rün ✓")
    return Setup(["report", run, "--out", run.parent / "répört ✓.html"], expect="ok")


UNREADABLE = sorted(n for n in CASES if n.endswith("| unreadable file"))


# ====================================================================== the tests
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, synth_root) -> dict:
    return make_shared(tmp_path_factory.mktemp("shared"), synth_root)


@pytest.fixture()
def world(tmp_path, shared, monkeypatch) -> World:
    monkeypatch.setenv("BDDSEG_CACHE", str(tmp_path / "cache"))  # no stale class statistics
    return World(tmp_path, **shared)


def _params(names):
    for name in names:
        yield pytest.param(name, id=name)


@pytest.mark.parametrize("name", list(_params(n for n in CASES if n not in UNREADABLE)))
def test_bad_input_ends_in_one_clear_line(world, name):
    setup = CASES[name](world)
    outcome = run_case(setup)
    assert not problems_with(setup, outcome), (problems_with(setup, outcome), outcome.err)


@pytest.fixture(scope="module")
def unreadable_outcomes(tmp_path_factory, shared) -> dict[str, tuple[Setup, Outcome]]:
    base = tmp_path_factory.mktemp("unreadable")
    setups = {}
    for i, name in enumerate(UNREADABLE):
        (base / str(i)).mkdir()
        setups[name] = CASES[name](World(base / str(i), **shared))
    try:
        outcomes = run_unreadable(setups, base)
    except CannotBlockReads as e:
        pytest.skip(str(e))
    return {n: (setups[n], outcomes[n]) for n in setups}


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_file(unreadable_outcomes, name):
    setup, outcome = unreadable_outcomes[name]
    assert not problems_with(setup, outcome), (problems_with(setup, outcome), outcome.err)


def test_the_matrix_covers_every_command_and_fault():
    commands = {n.split(" | ")[0] for n in CASES}
    assert commands >= {"data check", "data stats", "train", "train --resume",
                        "evaluate --checkpoint", FOLDERS, "predict", "export", "report"}  # fmt: skip
    faults = " ".join(CASES)
    for fault in ("truncated JPEG", "zero-byte", "text file named .jpg", "RGB mask", "16-bit mask",
                  "wrong size", "19..254", "image without a mask", "mask without an image",
                  "empty split", "missing root", "unreadable file", "non-ASCII", "unknown key",
                  "wrong type", "another architecture", "another class count",
                  "truncated checkpoint"):  # fmt: skip
        assert fault in faults, fault


# ---------------------------------------------------------------- data check lists everything
def _every_fault(w: World) -> tuple[Path, list[tuple[str, str]]]:
    """A dataset with every file fault on its own train pair, an unpaired image and mask,
    and an empty val split; returns the root and the (file, problem) pairs expected."""
    root = w.dataset()
    expected = []
    faults = [*IMAGE_FAULTS.items(), *MASK_FAULTS.items()]
    for i, (fault, (corrupt, problem)) in enumerate(faults):
        image, mask = pair(root, "train", i)
        target = image if fault in IMAGE_FAULTS else mask
        corrupt(target)
        expected.append((str(target), problem))
    image, mask = pair(root, "train", len(faults))
    mask.unlink()
    expected.append((str(image), "image without a mask"))
    image, mask = pair(root, "train", len(faults) + 1)
    image.unlink()
    expected.append((str(mask), "mask without an image"))
    for folder in (images_dir(root, "val"), masks_dir(root, "val")):
        for p in folder.iterdir():
            p.unlink()
    expected.append((str(images_dir(root, "val")), "the val split is empty"))
    return root, expected


def test_data_check_lists_every_problem_at_once(world):
    root, expected = _every_fault(world)
    o = run_cli(["data", "check", root, "--workers", "1"])
    errors = [line for line in o.err.splitlines() if line.startswith("error:")]
    assert o.rc == 2 and "Traceback" not in o.err
    assert len(errors) == len(expected), o.err
    for path, problem in expected:
        assert any(path in e and problem in e for e in errors), (path, problem, o.err)
    assert o.err.strip().splitlines()[-1] == f"{len(expected)} problem(s) found"


# ---------------------------------------------------------------- train --on-bad-sample skip
@pytest.mark.parametrize(
    "which, fault",
    [
        ("image", "truncated JPEG"),
        ("mask", "RGB mask"),
        ("mask", "mask of the wrong size"),
        ("mask", "mask values 19..254"),
    ],  # fmt: skip
)
def test_train_skips_and_counts_bad_samples(world, which, fault):
    root = world.dataset(trim=True)
    image, mask = pair(root, "train")
    corrupt, problem = (IMAGE_FAULTS if which == "image" else MASK_FAULTS)[fault]
    corrupt(image if which == "image" else mask)
    o = run_cli([*_train_argv(world, root), "--on-bad-sample", "skip"])
    assert o.rc == 0 and "Traceback" not in o.err, o.err
    assert "skipped 1 sample(s) that failed to load" in o.out
    assert (world.tmp / "rün öut" / "last.pt").is_file()


# ---------------------------------------------------------------- through a real process
def _cli_process(*argv, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bddseg.cli", *map(str, argv)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_process_data_check_no_traceback_no_hang(world):
    root, expected = _every_fault(world)
    p = _cli_process("data", "check", root, "--workers", "2")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert len([ln for ln in p.stderr.splitlines() if ln.startswith("error:")]) == len(expected)


def test_process_train_with_loader_workers_no_traceback_no_hang(world):
    root = world.dataset(trim=True)
    image = pair(root, "train")[0]
    truncate(image)
    p = _cli_process(*_train_argv(world, root), "--workers", "2")
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert lines[-1] == f"error: {image}: cannot decode image: the file is truncated or corrupt"


# ====================================================================== properties
def _png_bytes(mode: str, h: int, w: int, seed: int, valid: bool) -> bytes:
    rng = np.random.default_rng(seed)
    values = np.array([*range(19), 255]) if valid else np.arange(256)
    a = rng.choice(values, size=(h, w)).astype(np.uint8)
    if mode == "I;16":
        im = Image.fromarray(a.astype(np.uint16) * 257)
    elif mode in ("RGB", "RGBA", "LA"):
        im = Image.fromarray(np.stack([a] * len(mode), axis=-1), mode)
    elif mode == "1":
        im = Image.fromarray(a > 127)
    else:
        im = Image.fromarray(a, mode)
        if mode == "P":
            im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    mode=st.sampled_from(["L", "P", "1", "LA", "RGB", "RGBA", "I;16"]),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    valid=st.booleans(),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3),
)
def test_mask_decoding_raises_only_bddseg_error(tmp_path, mode, h, w, seed, valid, cut, flips):
    """Random PNGs of every mode, truncated and bit-flipped: the strict decoder (data) and the
    folder evaluator's decoder (evaluate) return a valid mask or raise BddsegError."""
    from bddseg.data import read_image, read_mask
    from bddseg.masks import read_mask as read_any_mask

    data = bytearray(_png_bytes(mode, h, w, seed, valid))
    pristine = bytes(data)
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "m.png"
    path.write_bytes(bytes(data))
    try:
        mask = read_mask(path)
    except BddsegError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert mask.dtype == torch.uint8 and mask.ndim == 2
        values = set(mask.unique().tolist())
        assert values <= {*range(19), 255}
    if bytes(data) == pristine and mode in ("L", "P") and valid:
        assert read_mask(path).shape == (h, w)  # a good mask always decodes
    for decode in (lambda p: read_any_mask(p, "mask", check_values=False), read_image):
        with contextlib.suppress(BddsegError):
            decode(path)


def _jpeg_bytes(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    seed=st.integers(0, 2**32 - 1),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
)
def test_image_decoding_raises_only_bddseg_error(tmp_path, h, w, seed, cut, flips):
    """Truncated and bit-flipped JPEGs: an RGB image (libjpeg may repair) or BddsegError."""
    from bddseg.data import read_image

    data = bytearray(_jpeg_bytes(h, w, seed))
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "i.jpg"
    path.write_bytes(bytes(data))
    try:
        image = read_image(path)
    except BddsegError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    else:
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3


SECTION_KEYS = {s: list(v) for s, v in to_dict(Config()).items()}
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
    st.sampled_from(["class", "ignore", "ce", "adamw", "auto", "cpu", "unet"]),
)  # fmt: skip
values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
)  # fmt: skip
sections = st.fixed_dictionaries(
    {},
    optional={
        s: st.one_of(
            values,
            st.dictionaries(st.sampled_from(keys) | st.text(max_size=5), values, max_size=4),
        )
        for s, keys in SECTION_KEYS.items()
    },
)
config_dicts = st.one_of(sections, st.dictionaries(st.text(max_size=6), values, max_size=3), values)


@settings(max_examples=300, deadline=None)
@given(d=config_dicts)
@example(d={"optim": {"lr": 10**400}})
@example(d={"optim": {"batch_size": 0}})
@example(d={"data": {"crop": [64, float("nan")]}})
@example(d={"run": {"log_every": 0}})
def test_config_from_dict_raises_only_bddseg_error(d):
    try:
        cfg = from_dict(d, source="fuzz.yaml")
    except BddsegError as e:
        assert "\n" not in str(e)
    else:
        assert from_dict(to_dict(cfg)) == cfg  # what is accepted survives a round trip


yaml_texts = st.one_of(
    st.text(max_size=120),
    config_dicts.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.sampled_from([
        "optim: !!python/object/apply:os.system ['touch MARKER']\n",
        "!!python/object/new:pathlib.Path ['MARKER']\n",
        "data: !!binary aGVsbG8=\n", "optim: {lr: !!float abc}\n", "run: {seed: !!int 0xzz}\n",
        "a: &x [*x]\n", "data: {crop: &c [*c, *c]}\n", "[" * 3000, "{" * 3000,
        "optim: {lr: 1.0e400}\n", "run: {seed: 99999999999999999999999999999}\n",
        "model: {arch: unet}\nmodel: {arch: fpn}\n", "\x00", "%YAML 9.9\n---\na: 1\n",
    ]),
)  # fmt: skip


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(text=yaml_texts)
def test_config_file_raises_only_bddseg_error_and_runs_nothing(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except BddsegError as e:
        assert str(path) in str(e) and "\n" not in str(e)
    assert not (tmp_path / "MARKER").exists()
