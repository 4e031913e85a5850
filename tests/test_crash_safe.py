"""Nothing is lost on a failed write, a killed training or Ctrl-C.

- Writes: ``predict``, ``evaluate`` and ``report`` write through a temporary file and a
  rename (:func:`bddseg.files.atomic_path`). A write that fails part-way (disk full), an
  fsync that fails or a rename that fails ends in one ``error:`` line and exit 2, leaves no
  ``.tmp`` file and no half-written file under a final name, and a good file already there
  survives a failed rewrite.
- Kills (slow): a CPU training is SIGKILLed at several points, including while ``last.pt`` is
  being written, and resumed with ``--resume`` each time. ``last.pt`` is loadable after every
  kill, its step never goes back, and the finished weights, optimizer state and log equal those
  of an uninterrupted run with the same seed, bit for bit (no tolerance: CPU, one thread).
- SIGINT (slow): Ctrl-C saves ``last.pt`` at a step boundary, prints "interrupted", exits 130,
  and the run resumes to the same bit-for-bit result.

The kill loop is a function (:func:`kill_and_resume`) so that ``benchmarks/reliability.py``
runs it too.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from bddseg.checkpoints import load_checkpoint
from bddseg.cli import main

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EIO = OSError(errno.EIO, os.strerror(errno.EIO))


# ====================================================================== failing writes
class FailingDisk:
    """Make the ``nth`` write of a temporary file fail at ``where``:

    - ``write``: half the bytes reach the temporary file, then ENOSPC (PIL saves, and
      ``Path.write_bytes`` as used by :func:`bddseg.files.atomic_write_bytes` and the plots);
    - ``fsync``: ENOSPC from ``os.fsync`` (delayed allocation reports a full disk there);
    - ``rename``: EIO from ``os.replace``.
    Only files named ``*.tmp`` are affected: the test's own files are written normally.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, where: str, nth: int = 1):
        self.where, self.nth, self.calls, self.failed = where, nth, 0, None
        if where == "write":
            save, write_bytes = Image.Image.save, Path.write_bytes

            def failing_save(im, fp, format=None, **params):
                if not self._hit(fp):
                    return save(im, fp, format, **params)
                buf = io.BytesIO()
                save(im, buf, format or Path(str(fp)).suffix.lstrip(".").upper(), **params)
                Path(fp).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
                raise ENOSPC

            def failing_write_bytes(path, data):
                if not self._hit(path):
                    return write_bytes(path, data)
                write_bytes(path, bytes(data)[: len(data) // 2])
                raise ENOSPC

            monkeypatch.setattr(Image.Image, "save", failing_save)
            monkeypatch.setattr(Path, "write_bytes", failing_write_bytes)
        elif where == "fsync":
            fsync = os.fsync

            def failing_fsync(fd):
                if self._hit(os.readlink(f"/proc/self/fd/{fd}")):
                    raise ENOSPC
                return fsync(fd)

            monkeypatch.setattr(os, "fsync", failing_fsync)
        elif where == "rename":
            replace = os.replace

            def failing_replace(src, dst, **kw):
                if self._hit(src):
                    raise EIO
                return replace(src, dst, **kw)

            monkeypatch.setattr(os, "replace", failing_replace)
        else:
            raise ValueError(where)

    def _hit(self, path) -> bool:
        if not str(path).endswith(".tmp"):
            return False
        self.calls += 1
        if self.calls == self.nth:
            self.failed = str(path)
            return True
        return False


def _complete(path: Path) -> bool:
    """Whether ``path`` holds a whole file of its kind (not a prefix of one)."""
    data = path.read_bytes()
    try:
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".csv":
            assert data.endswith(b"\n")
            list(csv.reader(io.StringIO(data.decode())))
        elif path.suffix in (".png", ".jpg"):
            with Image.open(path) as im:
                im.load()
        elif path.suffix == ".html":
            assert data.rstrip().endswith(b"</html>")
    except Exception:  # noqa: BLE001 - any failure to parse means incomplete
        return False
    return True


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv: list) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synth_root) -> dict:
    return make_inputs(tmp_path_factory.mktemp("inputs"), synth_root)


def make_inputs(base: Path, synth_root: Path) -> dict:
    """A small checkpoint, two input images, a ground-truth folder, a run directory."""
    from bddseg.checkpoints import make_checkpoint, save_checkpoint
    from bddseg.config import Config, ModelConfig
    from bddseg.model import build_model

    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(encoder="resnet18", pretrained=False))
    ckpt = base / "model.pt"
    save_checkpoint(ckpt, make_checkpoint(build_model(cfg.model, cfg.num_classes), cfg))
    images = base / "images"
    images.mkdir()
    for p in sorted((synth_root / "images" / "10k" / "test").glob("*.jpg"))[:2]:
        shutil.copy(p, images / p.name)
    gt = synth_root / "labels" / "sem_seg" / "masks" / "val"
    run = base / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  root: {synth_root}\n")
    return {"ckpt": ckpt, "images": images, "gt": gt, "root": synth_root, "run": run}


def _argv(command: str, inputs: dict, out: Path) -> list:
    if command == "predict":
        return ["predict", inputs["images"], "--checkpoint", inputs["ckpt"], "--out", out,
                "--workers", "0"]  # fmt: skip
    if command == "evaluate --pred --gt":
        return ["evaluate", "--pred", inputs["gt"], "--gt", inputs["gt"], "--out", out,
                "--workers", "1"]  # fmt: skip
    if command == "evaluate --checkpoint":
        return ["evaluate", "--checkpoint", inputs["ckpt"], "--data", inputs["root"],
                "--out", out, "--workers", "0"]  # fmt: skip
    if command == "report":
        return ["report", inputs["run"], "--out", out / "report.html"]
    raise ValueError(command)


WRITERS = ["predict", "evaluate --pred --gt", "evaluate --checkpoint", "report"]
FAILURES = [("write", 1), ("fsync", 2), ("rename", 3)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _assert_failed_cleanly(rc: int, err: str, out: Path, disk: FailingDisk) -> Path:
    """One error line naming the file that failed; returns that file's final name."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert rc == 2 and "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    reason = "No space left on device" if disk.where != "rename" else "Input/output error"
    assert "cannot write" in errors[0] and reason in errors[0], errors[0]
    assert disk.failed is not None
    tmp = Path(disk.failed)
    final = tmp.parent / tmp.name[1:].rsplit(".", 2)[0]  # .NAME.RANDOM.tmp -> NAME
    assert f"{final}:" in errors[0], (final, errors[0])
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a temporary file is left"
    incomplete = [p for p in out.rglob("*") if p.is_file() and not _complete(p)]
    assert not incomplete, f"half-written files under final names: {incomplete}"
    return final


@pytest.mark.parametrize("where, nth", FAILURES, ids=[f"{w}-{n}" for w, n in FAILURES])
@pytest.mark.parametrize("command", WRITERS)
def test_failed_write_leaves_nothing_half_written(inputs, tmp_path, monkeypatch, command,
                                                 where, nth):  # fmt: skip
    if command == "report":
        nth = 1  # the report is a single file
    out = tmp_path / "out"
    disk = FailingDisk(monkeypatch, where, nth)
    rc, err = _run(_argv(command, inputs, out))
    final = _assert_failed_cleanly(rc, err, out, disk)
    assert not final.exists(), f"{final} exists after its write failed"


@pytest.mark.parametrize("command", WRITERS)
def test_good_file_survives_a_failed_rewrite(inputs, tmp_path, monkeypatch, command):
    out = tmp_path / "out"
    rc, err = _run(_argv(command, inputs, out))
    assert rc == 0, err
    before = _files(out)
    disk = FailingDisk(monkeypatch, "write", nth=1 if command == "report" else 2)
    again = ["--overwrite"] if command == "predict" else []  # predict resumes by default
    rc, err = _run([*_argv(command, inputs, out), *again])
    final = _assert_failed_cleanly(rc, err, out, disk)
    assert final.read_bytes() == before[final], f"{final} lost its good content"
    assert set(_files(out)) == set(before)


# ====================================================================== kill and resume
CONFIG = """\
data: {crop: [32, 64], workers: 0, jitter: 0.3}
model: {encoder: tu-mobilenetv3_small_050, pretrained: false}
optim: {batch_size: 2, max_steps: %(steps)d, lr: 0.002}
run: {accelerator: cpu, seed: 0, log_every: 1, checkpoint_every: 1}
"""
STEPS = 24  # 12 train images, batch 2: four epochs of 6 steps, validation after each
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def train_command(config: Path, data: Path, out: Path) -> list[str]:
    """``bddseg train ... --resume``: the first start finds no last.pt and starts afresh."""
    return [sys.executable, "-m", "bddseg.cli", "train", "--config", str(config),
            "--data", str(data), "--out", str(out), "--resume"]  # fmt: skip


def logged_step(run: Path) -> int:
    """The last step with a complete row in log.csv (0 when none)."""
    try:
        lines = (run / "log.csv").read_text().splitlines(keepends=True)
    except (FileNotFoundError, UnicodeDecodeError):
        return 0
    rows = [ln for ln in lines[1:] if ln.endswith("\n") and ln[:1].isdigit()]
    return int(rows[-1].split(",")[0]) if rows else 0


def temp_checkpoints(run: Path) -> list[Path]:
    return sorted(run.glob(".*.pt.*.tmp")) if run.is_dir() else []


@dataclass
class Kill:
    """One SIGKILL: what it aimed at, where it landed, what was on disk after it."""

    plan: str
    landed: str  # "mid-write (N of M bytes)", "after step N", "during start-up"
    step_before: int | None  # last.pt's step before this attempt (None: no last.pt)
    step_after: int | None
    loadable: bool  # last.pt and best.pt, those that exist
    tmp_left: bool


def _checkpoint_step(run: Path) -> tuple[int | None, bool]:
    """last.pt's step (None: no last.pt) and whether last.pt and best.pt (those present)
    load."""
    steps, loadable = {}, True
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            try:
                steps[name] = int(load_checkpoint(run / name)["step"])
            except Exception:  # noqa: BLE001 - exactly what must never happen
                loadable = False
    return steps.get("last.pt"), loadable


def _watch(proc: subprocess.Popen, run: Path, plan: str, rng: random.Random,
           timeout: float = 300) -> str | None:  # fmt: skip
    """SIGKILL ``proc`` when ``plan`` says; return where it landed, None if it finished.
    Temporary files left by the previous kill are not this run's (it deletes them)."""
    start, target, first = time.monotonic(), None, logged_step(run)
    stale = set(temp_checkpoints(run))
    if plan.startswith("after "):
        target = first + int(plan.split()[1])
    delay = rng.uniform(0.5, 5.0) if plan == "random" else None
    while proc.poll() is None:
        if time.monotonic() - start > timeout:
            proc.kill()
            raise TimeoutError(f"training did not finish or reach {plan!r} in {timeout} s")
        tmps = [t for t in temp_checkpoints(run) if t not in stale]
        fire = (
            (plan == "mid-write" and any(t.exists() and t.stat().st_size > 0 for t in tmps))
            or (target is not None and logged_step(run) >= target)
            or (delay is not None and time.monotonic() - start >= delay)
        )
        if fire:
            proc.kill()
            proc.wait()
            left = [t for t in temp_checkpoints(run) if t not in stale]
            if left:
                name = left[0].name.split(".")[1] + ".pt"
                full = (run / name).stat().st_size if (run / name).exists() else "?"
                return f"mid-write of {name} ({left[0].stat().st_size} of ~{full} bytes)"
            step = logged_step(run)
            return f"after step {step}" if step > first else "during start-up"
        time.sleep(0.002)
    return None


PLANS = ["mid-write", "after 2", "mid-write", "random", "after 3", "mid-write", "random",
         "mid-write", "after 4", "random"]  # fmt: skip


def kill_and_resume(config: Path, data: Path, run: Path, plans=PLANS, seed: int = 0,
                    log=print) -> tuple[list[Kill], subprocess.CompletedProcess]:  # fmt: skip
    """Start the training, SIGKILL it as each plan says, restart with --resume, until it
    finishes; check last.pt after every kill. Returns the kills and the finishing run."""
    rng = random.Random(seed)
    kills: list[Kill] = []
    for plan in plans:
        before, _ = _checkpoint_step(run)
        with open(run.parent / f"{run.name}.stderr", "ab") as err:
            proc = subprocess.Popen(train_command(config, data, run), env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
            landed = _watch(proc, run, plan, rng)
        if landed is None:  # finished before the plan could fire
            break
        after, loadable = _checkpoint_step(run)
        kills.append(Kill(plan, landed, before, after, loadable, bool(temp_checkpoints(run))))
        log(f"kill {len(kills)} ({plan}): {landed}; last.pt step {before} -> {after}, "
            f"loadable {loadable}")  # fmt: skip
    done = subprocess.run(train_command(config, data, run), env=ENV, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    return kills, done


def _log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "time_s", "train_s")}
                for r in csv.DictReader(f)]  # fmt: skip


def assert_same_run(a: Path, b: Path) -> None:
    """Same weights, optimizer state and step in last.pt, same per-step log, bit for bit."""
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["step"] == cb["step"] == STEPS
    diff = [k for k in ca["model"] if not torch.equal(ca["model"][k], cb["model"][k])]
    assert not diff, f"{len(diff)} weight tensors differ, e.g. {diff[:3]}"
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name, value in sa[k].items():
            assert torch.equal(value, sb[k][name]), f"optimizer state {k}.{name} differs"
    assert _log_rows(a) == _log_rows(b)


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory, synth_root) -> dict:
    base = tmp_path_factory.mktemp("crash")
    config = base / "config.yaml"
    config.write_text(CONFIG % {"steps": STEPS})
    reference = base / "reference"
    p = subprocess.run(train_command(config, synth_root, reference), env=ENV,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr
    return {"config": config, "data": synth_root, "reference": reference}


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_loses_nothing(crash_setup, tmp_path):
    run = tmp_path / "killed"
    kills, done = kill_and_resume(crash_setup["config"], crash_setup["data"], run)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(kills) >= 6, kills
    assert any(k.landed.startswith("mid-write") for k in kills), "no kill landed mid-write"
    for k in kills:
        assert k.loadable, f"last.pt unreadable after {k}"
        if k.step_before is not None:  # nothing saved is ever lost
            assert k.step_after is not None and k.step_after >= k.step_before, k
    assert not temp_checkpoints(run), "the finished run left temporary checkpoints"
    assert_same_run(crash_setup["reference"], run)


@pytest.mark.slow
def test_sigint_saves_last_pt_and_resumes(crash_setup, tmp_path):
    run = tmp_path / "interrupted"
    cmd = train_command(crash_setup["config"], crash_setup["data"], run)
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while logged_step(run) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted" in err and "Traceback" not in err, err
    step = load_checkpoint(run / "last.pt")["step"]
    assert 3 <= step < STEPS and step == logged_step(run)  # saved at the step boundary
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert_same_run(crash_setup["reference"], run)
