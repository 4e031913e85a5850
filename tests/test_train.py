"""The training loop: run directory contents, exact resume, NaN stop, following the schedule,
sampler, missing hub weights, DDP on 2 CPU processes, and overfitting the real pairs.
(The schedules themselves: tests/test_schedule.py; configs: tests/test_config.py.)"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bddseg.checkpoints import load_checkpoint
from bddseg.colors import colorize
from bddseg.config import Config, from_dict, load_config, load_yaml, override
from bddseg.errors import BddsegError
from bddseg.masks import read_mask
from bddseg.metrics import official_arrays, official_metrics
from bddseg.model import model_from_checkpoint
from bddseg.sampling import EpochSampler, SeededSamples, mix
from bddseg.schedule import lr_at
from bddseg.train import train
from bddseg.trainlog import LOG_COLUMNS

REPO = Path(__file__).resolve().parents[1]
HEADER = "step,epoch,lr,train_loss,val_loss,val_miou,val_pixel_accuracy,images_per_s,time_s,train_s"


def tiny(root: Path, out: Path, **dotted) -> Config:
    """A few-step CPU run on the synthetic fixture: 64x96 crops, batch 4 (3 steps per epoch)."""
    cfg = from_dict(
        {
            "data": {"root": str(root), "crop": [64, 96], "workers": 0},
            "model": {"pretrained": False},
            "optim": {"batch_size": 4, "max_steps": 5, "lr": 1e-3},
            "run": {"out": str(out), "accelerator": "cpu", "log_every": 1},
        }
    )
    return override(cfg, **dotted)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def read_log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the run directory
def test_train_writes_the_run_directory(synth_root, tmp_path):
    cfg = tiny(synth_root, tmp_path / "run", **{"optim.max_steps": 4, "run.val_every": 2})
    result = train(cfg)
    run = tmp_path / "run"
    assert result.run_dir == run and result.last_step == 4
    assert result.best_miou is not None and 0.0 <= result.best_miou <= 1.0
    for name in ("best.pt", "last.pt", "config.yaml", "log.csv", "loss_curves.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert not list(run.glob(".*.tmp"))

    assert (run / "log.csv").read_text().splitlines()[0] == HEADER
    assert ",".join(LOG_COLUMNS) == HEADER
    rows = read_log(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [r["val_miou"] != "" for r in rows] == [False, True, False, True]
    assert all(float(r["train_loss"]) > 0 and float(r["lr"]) > 0 for r in rows)

    assert load_config(run / "config.yaml") == cfg
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert (
        last["step"] == 4
        and "optimizer" in last
        and last["config"] == load_yaml(run / "config.yaml")
    )
    assert "optimizer" not in best and best["best_metric"] == pytest.approx(result.best_miou)
    model, loaded_cfg = model_from_checkpoint(run / "best.pt")
    assert loaded_cfg == cfg
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 20, 64, 96)
    assert_tensorboard_shows_validation(run / "tb", cfg, result)


def assert_tensorboard_shows_validation(tb: Path, cfg: Config, result) -> None:
    """At each validation (steps 2 and 4): each class's official IoU (the classes present in
    the val truth) and the first 4 val images in stem order as photo | truth | prediction,
    320 px each, colored with the official palette."""
    events = EventAccumulator(str(tb), size_guidance={"images": 0, "scalars": 0}).Reload()
    iou = official_metrics(result.last_confusion)["iou"]  # the last validation's (step 4)
    in_truth = official_arrays(result.last_confusion)["present"]
    present = {f"val_iou/{name}" for name, p in zip(iou, in_truth, strict=True) if p}
    assert present and {t for t in events.Tags()["scalars"] if t.startswith("val_iou/")} == present
    for tag in present:
        values = events.Scalars(tag)
        assert [e.step for e in values] == [2, 4]
        assert values[-1].value == pytest.approx(iou[tag.removeprefix("val_iou/")])
    stems = sorted(p.stem for p in (Path(cfg.data.root) / "images" / "10k" / "val").iterdir())
    assert events.Tags()["images"] == [f"val_images/{stem}" for stem in stems[:4]]
    for tag in events.Tags()["images"]:
        shown = events.Images(tag)
        assert [e.step for e in shown] == [2, 4]
        assert (shown[-1].width, shown[-1].height) == (3 * 320, 192)  # 160x96 photos, scaled
    png = events.Images(f"val_images/{stems[0]}")[-1].encoded_image_string
    first = np.asarray(Image.open(io.BytesIO(png)))
    truth = read_mask(Path(cfg.data.root) / "labels/sem_seg/masks/val" / f"{stems[0]}.png")
    small = np.asarray(Image.fromarray(truth).resize((320, 192), Image.NEAREST))
    np.testing.assert_array_equal(first[:, 320:640], colorize(small))  # PNG: lossless


def test_a_finished_run_is_not_overwritten(synth_root, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"x")
    with pytest.raises(BddsegError, match="--resume"):
        train(tiny(synth_root, tmp_path / "run"))


# ---------------------------------------------------------------- exact resume
class SigintAt:
    """A loss wrapper that sends this process SIGINT during the n-th training step."""

    def __init__(self, loss_fn, n: int):
        self.loss_fn, self.n, self.calls = loss_fn, n, 0

    def __call__(self, logits, target):
        self.calls += torch.is_grad_enabled()  # validation runs under no_grad
        if self.calls == self.n and torch.is_grad_enabled():
            os.kill(os.getpid(), signal.SIGINT)
        return self.loss_fn(logits, target)

    def to(self, device):
        self.loss_fn = self.loss_fn.to(device)
        return self


@pytest.mark.slow
def test_resume_is_bit_identical(synth_root, tmp_path, monkeypatch):
    """6 steps straight == 2 + 4 (run.stop_at) == 4 + 2 (Ctrl-C during step 5, then --resume).

    4 images per step, 12 images: 3 steps per epoch, so both interruptions fall mid-epoch.
    """
    steps = {"optim.max_steps": 6, "run.val_every": 3, "data.jitter": 0.3}
    train(tiny(synth_root, tmp_path / "a", **steps))

    b = tiny(synth_root, tmp_path / "b", **steps, **{"run.stop_at": 2})
    assert train(b).last_step == 2
    assert load_checkpoint(tmp_path / "b" / "last.pt")["position"]["step_in_epoch"] == 2
    train(dataclasses.replace(b, run=dataclasses.replace(b.run, stop_at=None, resume=True)))
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")

    import bddseg.train as train_module

    build_loss = train_module.build_loss
    monkeypatch.setattr(
        train_module, "build_loss", lambda *a, **k: SigintAt(build_loss(*a, **k), 5)
    )
    c = tiny(synth_root, tmp_path / "c", **steps)
    with pytest.raises(KeyboardInterrupt):
        train(c)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["step"] == 5  # finished the step, saved
    monkeypatch.setattr(train_module, "build_loss", build_loss)
    train(override(c, **{"run.resume": True}))
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "c" / "last.pt")
    assert_same_weights(tmp_path / "a" / "best.pt", tmp_path / "c" / "best.pt")

    # the logs agree too: resumed rows replace nothing and repeat nothing
    for run in ("b", "c"):
        a_rows, rows = read_log(tmp_path / "a"), read_log(tmp_path / run)
        assert [r["step"] for r in rows] == [str(s) for s in range(1, 7)]
        for key in ("lr", "train_loss", "val_miou"):
            assert [r[key] for r in rows] == [r[key] for r in a_rows], key


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it in the step runs (not an Exception subclass,
    so no handler in the loop catches it)."""


def test_killed_right_after_a_checkpoint_the_log_keeps_every_row(
    synth_root, tmp_path, monkeypatch, capsys
):
    """A kill that lands just after last.pt is written loses no row of log.csv: each step's
    row is written before its checkpoint, so the resumed run's log has every step."""
    import bddseg.train as train_module

    steps = {"optim.max_steps": 4, "run.val_every": 100, "run.checkpoint_every": 1}
    save = train_module.save_checkpoint

    def save_then_die(path, ckpt):
        save(path, ckpt)
        if ckpt["step"] == 2:
            raise Killed

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    run = tiny(synth_root, tmp_path / "run", **steps)
    with pytest.raises(Killed):
        train(run)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    capsys.readouterr()
    train(override(run, **{"run.resume": True}))
    assert [r["step"] for r in read_log(tmp_path / "run")] == ["1", "2", "3", "4"]
    assert "resuming from step 2 of 4\n" in capsys.readouterr().out


@pytest.mark.slow
def test_zoo_options_resume_bit_identically(synth_root, tmp_path):
    """The zoo's levers (aux head, layer-wise lr decay, drop path, SGD + poly with warm-up
    and a floor) keep resuming exact: 4 steps straight == 2 (run.stop_at) + 2 resumed."""
    zoo = {
        "model.arch": "upernet", "model.encoder": "tu-convnext_atto", "model.aux_weight": 0.4,
        "model.drop_path": 0.2, "optim.layer_decay": 0.8, "optim.name": "sgd", "optim.lr": 0.01,
        "optim.schedule": "poly", "optim.warmup_steps": 2, "optim.min_lr": 1e-4,
        "optim.max_steps": 4, "run.val_every": 2, "data.crop": [64, 96],
    }  # fmt: skip
    train(tiny(synth_root, tmp_path / "a", **zoo))
    b = tiny(synth_root, tmp_path / "b", **zoo, **{"run.stop_at": 2})
    assert train(b).last_step == 2
    train(dataclasses.replace(b, run=dataclasses.replace(b.run, stop_at=None, resume=True)))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 4
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    assert any(k.startswith("aux_head.") for k in weights(tmp_path / "a" / "last.pt"))
    lrs = [float(r["lr"]) for r in read_log(tmp_path / "a")]
    assert lrs[0] == pytest.approx(0.01 * 1e-3)  # warm-up from lr x warmup_ratio


@pytest.mark.slow
def test_compiled_training_with_an_aux_head(synth_root, tmp_path):
    """``run.compile`` (torch.compile, inductor on the CPU) with the zoo's auxiliary head,
    whose forward returns two outputs in training: the same first losses as eager, and a
    checkpoint without torch.compile's prefixes that a plain model loads."""
    steps = {"model.aux_weight": 0.4, "optim.max_steps": 2, "run.val_every": 2}
    train(tiny(synth_root, tmp_path / "eager", **steps))
    train(tiny(synth_root, tmp_path / "compiled", **steps, **{"run.compile": True}))
    eager, compiled = read_log(tmp_path / "eager"), read_log(tmp_path / "compiled")
    for a, b in zip(eager, compiled, strict=True):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-3)
    assert float(compiled[-1]["val_miou"]) == pytest.approx(float(eager[-1]["val_miou"]), abs=0.01)
    state = weights(tmp_path / "compiled" / "last.pt")
    assert not any("_orig_mod" in k for k in state)
    assert state.keys() == weights(tmp_path / "eager" / "last.pt").keys()
    assert any(k.startswith("aux_head.") for k in state)


def test_samples_do_not_depend_on_history(synth_root):
    """A sample's augmentation depends only on its key, not on what was drawn before."""
    from bddseg.data import build_dataset

    data = build_dataset(
        tiny(synth_root, Path("unused"), **{"data.jitter": 0.3}).data, "train", train=True
    )
    seeded = SeededSamples(data)
    first = seeded[(3, 1234)]
    for key in [(0, 1), (5, 99), (3, 7)]:
        seeded[key]
    again = seeded[(3, 1234)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], seeded[(3, 1235)][0])


def test_epoch_sampler_shards_and_resumes():
    n, local, world, micro = 23, 2, 3, 3  # 3 micro-batches of 6: 18 of the 23 samples per epoch
    shards = []
    for rank in range(world):
        s = EpochSampler(n, local, world, rank, micro, seed=5)
        s.set_epoch(2)
        shards.append([i for i, _ in s])
        assert len(shards[-1]) == len(s) == micro * local
    flat = [i for shard in shards for i in shard]
    assert len(set(flat)) == len(flat) == micro * local * world  # disjoint, no repeats

    s = EpochSampler(n, local, world, 1, micro, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=1)  # resuming after the first micro-batch
    assert list(s) == full[local:]
    s.set_epoch(3)
    assert [i for i, _ in s] != shards[1]  # a new order each epoch
    assert mix(1, 2, 3) == mix(1, 2, 3) != mix(1, 2, 4)


def test_deterministic_on_cpu(synth_root, tmp_path):
    for name in ("a", "b"):
        train(tiny(synth_root, tmp_path / name, **{"optim.max_steps": 2, "run.val_every": 100}))
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")


def test_torch_flags_are_set_by_set_torch_flags_only(monkeypatch):
    from bddseg.train import set_torch_flags, setup_fabric

    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", calls.append)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # restored afterwards
    cfg = from_dict({"run": {"accelerator": "cpu", "deterministic": True}})
    setup_fabric(cfg)  # builds Fabric, sets nothing global
    assert calls == [] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    set_torch_flags(cfg.run)
    assert calls == [True] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


# ---------------------------------------------------------------- stopping on NaN
def test_nan_loss_stops_with_a_clear_error(synth_root, tmp_path, monkeypatch):
    import bddseg.train as train_module

    class NanAfter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, logits, target):
            self.calls += 1
            loss = logits.float().mean() * 0.0 + 1.0
            return loss * float("nan") if self.calls >= 2 else loss

    monkeypatch.setattr(train_module, "build_loss", lambda *a, **k: NanAfter())
    with pytest.raises(BddsegError) as err:
        train(tiny(synth_root, tmp_path / "run", **{"run.checkpoint_every": 1}))
    message = str(err.value)
    assert "became nan at step 2" in message and "learning rate" in message and "clip" in message
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1  # the last good state


# ---------------------------------------------------------------- schedules
def test_the_optimizer_follows_the_schedule(synth_root, tmp_path):
    cfg = tiny(synth_root, tmp_path / "run", **{"optim.max_steps": 3, "run.val_every": 100})
    train(cfg)
    logged = [float(r["lr"]) for r in read_log(tmp_path / "run")]
    assert logged == pytest.approx([lr_at(s, 3, cfg.optim) for s in range(3)], rel=1e-5)


# ---------------------------------------------------------------- hub weights
@pytest.mark.parametrize("encoder", ["resnet34", "tu-convnext_atto"])  # smp's hub, timm's
def test_missing_hub_names_both_ways_out(tmp_path, synth_root, encoder):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "th"),
    }
    args = [
        "--data",
        str(synth_root),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        "--accelerator",
        "cpu",
        "--encoder",
        encoder,
    ]
    done = _bddseg(["train", *args], env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--no-pretrained" in done.stderr and "--encoder-weights" in done.stderr
    assert "Traceback" not in done.stderr


def _bddseg(
    args: list[str], env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bddseg.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ---------------------------------------------------------------- several processes
@pytest.mark.slow
def test_ddp_on_two_cpu_processes(synth_root, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--data", str(synth_root), "--out", str(run), "--no-pretrained", "--accelerator", "cpu"]
    args += [
        "--trace-samples",
        "--devices",
        "2",
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--crop",
        "64x96",
        "--workers",
        "0",
        # the zoo's levers across processes: an auxiliary head (run outside smp's forward
        # path, so DDP must still see its gradients) and layer-wise lr decay
        "--set",
        "model.aux_weight=0.4",
        "--set",
        "optim.layer_decay=0.9",
    ]
    done = _bddseg(["train", *args], env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best val mIoU" in done.stdout
    seen = {r: (run / f"samples.rank{r}.txt").read_text().split("\n") for r in (0, 1)}
    per_epoch = {r: {} for r in seen}
    for r, lines in seen.items():
        for line in filter(None, lines):
            epoch, index = line.split()
            per_epoch[r].setdefault(epoch, []).append(int(index))
    assert per_epoch[0].keys() == per_epoch[1].keys() == {"0", "1"}  # 3 steps/epoch: 2 epochs
    for epoch in per_epoch[0]:
        assert not set(per_epoch[0][epoch]) & set(per_epoch[1][epoch])  # disjoint
        assert len(per_epoch[0][epoch]) == len(per_epoch[1][epoch])
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"]
    assert not list(run.glob(".*.tmp"))
    assert load_checkpoint(run / "last.pt")["step"] == 4
    # one log, written by rank 0: validation at the end of epoch 0 (step 3) and of training
    assert [r["step"] for r in read_log(run)] == ["3", "4"]


# ---------------------------------------------------------------- real images
@pytest.mark.real
@pytest.mark.slow
def test_overfits_the_real_train_pairs(real_root, tmp_path):
    """The loop learns real images: 16 train pairs at 96x160, scored on themselves (0.8895
    pixel accuracy on a 2-core AMD EPYC, 81 s)."""
    cfg = from_dict(
        {
            "data": {
                "root": str(real_root),
                "base_size": [96, 160],
                "crop": [96, 160],
                "scale": [1.0, 1.0],
                "jitter": 0.0,
                "hflip": False,
                "val_split": "train",
                "workers": 0,
            },
            "model": {"pretrained": False},
            # many small steps: memorising 16 images needs updates more than large batches
            "optim": {"lr": 3e-3, "batch_size": 4, "max_steps": 300, "warmup_pct": 0.1},
            "run": {
                "out": str(tmp_path / "run"),
                "accelerator": "cpu",
                "val_every": 300,
                "log_every": 50,
            },
        }
    )
    result = train(cfg)
    assert result.last_val["pixel_accuracy"] >= 0.85, result.last_val
    assert math.isfinite(result.last_val["val_loss"])


# ---------------------------------------------------------------- validation, EMA, sampling
@pytest.mark.parametrize("unknown", ["ignore", "class"], ids=["19-class", "20-class"])
@pytest.mark.parametrize("base_size", [None, [48, 80]], ids=["full-size", "base_size"])
def test_three_routes_score_identical_masks(
    synth_root, tmp_path, monkeypatch, request, unknown, base_size
):
    """Training's validation, `bddseg evaluate --checkpoint` and `bddseg predict` + `bddseg
    evaluate --pred --gt` give one confusion matrix for one checkpoint, all with their
    defaults (issue 21): 19- and 20-class models, with and without base_size (the model sees
    half-size images; every route scores the 96x160 masks, scores upsampled). Training runs
    on a CPU whose native bf16 is forced on (its steps in bf16, as on AMX / AVX-512 BF16
    machines), evaluate and predict with it forced on and off: inference defaults to fp32
    on every machine, and validation rebuilds the model from the checkpoint dict, so the
    routes agree by construction. No batch size or memory format is pinned here (the model
    trains channels-last in batches of 4; every route scores one image at a time, the
    defaults of evaluate and predict)."""
    import numpy as np
    from PIL import Image

    from bddseg.evaluate import evaluate_checkpoint, evaluate_folders
    from bddseg.precision import cpu_bf16_native
    from bddseg.predict import predict_inputs

    def cpu_bf16(on: str) -> None:
        monkeypatch.setenv("BDDSEG_CPU_BF16", on)
        cpu_bf16_native.cache_clear()

    request.addfinalizer(cpu_bf16_native.cache_clear)  # after monkeypatch restores the env
    cpu_bf16("1")
    size = {"data.base_size": base_size, "data.crop": base_size} if base_size else {}
    cfg = tiny(synth_root, tmp_path / "run", **size, **{"data.unknown": unknown},
               **{"optim.max_steps": 3, "run.val_every": 3})  # fmt: skip
    assert cfg.run.precision == "auto" and cfg.run.channels_last
    result = train(cfg)
    best = tmp_path / "run" / "best.pt"
    assert int(result.last_confusion.sum()) == 6 * 96 * 160  # 6 val masks at full size
    assert result.last_val["precision"] == "32-true"
    images = synth_root / "images" / "10k" / "val"
    gt = synth_root / "labels" / "sem_seg" / "masks" / "val"

    def matrix(out: Path) -> list:
        return json.loads((out / "confusion.json").read_text())["matrix"]

    def routes(keep_unknown: bool, bf16: str = "1") -> tuple[list, float]:
        cpu_bf16(bf16)
        tag = ("keep" if keep_unknown else "default") + bf16
        ev, pred = tmp_path / f"eval_{tag}", tmp_path / f"pred_{tag}"
        out = evaluate_checkpoint(best, synth_root, ev, keep_unknown=keep_unknown, plots=False,
                                  progress=False)  # fmt: skip
        assert out["precision"] == "32-true"
        predict_inputs([str(images)], pred, checkpoint=best, formats=["mask"],
                       keep_unknown=keep_unknown, progress=False)  # fmt: skip
        files = evaluate_folders(pred / "masks", gt, tmp_path / f"files_{tag}", plots=False)
        assert matrix(tmp_path / f"files_{tag}") == matrix(ev)
        assert files["official"]["miou"] == pytest.approx(out["official"]["miou"], abs=1e-9)
        assert out["num_images"] == 6
        for mask in (pred / "masks").iterdir():  # evaluate saves what predict writes
            saved = Image.open(ev / "pred" / mask.name)
            assert np.array_equal(np.asarray(saved), np.asarray(Image.open(mask))), mask.name
        return matrix(ev), out["official"]["miou"]

    default, miou = routes(keep_unknown=False)
    assert routes(keep_unknown=False, bf16="0") == (default, miou)  # another CPU kind
    assert result.last_confusion.tolist() == default  # training validation: the default rule
    assert result.best_miou == pytest.approx(miou, abs=1e-9)
    saved = load_checkpoint(best)
    assert saved["best_metric"] == pytest.approx(miou, abs=1e-9)
    assert not any(row[19] for row in default)  # no mask says unknown (19/255)
    if unknown == "class":  # the 20-class view: unknown counts where it wins, in every route
        assert routes(keep_unknown=True)[0] != default
    rows = read_log(tmp_path / "run")
    assert all(0 < float(r["train_s"]) <= float(r["time_s"]) for r in rows)


def test_ema_weights_are_validated_kept_and_resumed(synth_root, tmp_path):
    """best.pt holds the averaged weights, last.pt both; a resumed run matches a straight one."""
    steps = {"optim.max_steps": 4, "run.val_every": 4, "run.ema_decay": 0.9}
    train(tiny(synth_root, tmp_path / "a", **steps))
    last, best = (
        load_checkpoint(tmp_path / "a" / "last.pt"),
        load_checkpoint(tmp_path / "a" / "best.pt"),
    )
    assert all(torch.equal(best["model"][k], v) for k, v in last["ema"].items())
    assert not all(torch.equal(last["model"][k], v) for k, v in last["ema"].items())

    b = tiny(synth_root, tmp_path / "b", **steps, **{"run.stop_at": 2})
    train(b)
    train(dataclasses.replace(b, run=dataclasses.replace(b.run, stop_at=None, resume=True)))
    resumed = load_checkpoint(tmp_path / "b" / "last.pt")
    assert all(torch.equal(resumed["ema"][k], v) for k, v in last["ema"].items())
    assert_same_weights(tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt")

    c = tiny(synth_root, tmp_path / "c", **{"optim.max_steps": 4, "run.stop_at": 2})
    train(c)  # without EMA: resuming with it on is refused with one line
    with pytest.raises(BddsegError, match="no averaged weights"):
        run = dataclasses.replace(c.run, stop_at=None, resume=True, ema_decay=0.9)
        train(dataclasses.replace(c, run=run))


def test_rare_class_sampling_draws_by_the_weights(synth_root, tmp_path):
    cfg = tiny(synth_root, tmp_path / "run", **{"data.rare_class_temp": 0.01})
    train(cfg, trace_samples=True)
    lines = [line.split() for line in (tmp_path / "run" / "samples.rank0.txt").open()]
    first = [int(i) for e, i in lines if e == "0"]  # the trace lists each epoch's whole order
    assert len(first) == 12 and len(set(first)) < 12  # 12 draws with replacement
    with pytest.raises(BddsegError, match="rare_class_temp"):
        override(cfg, **{"data.rare_class_temp": 0.0})


def test_a_failed_setup_names_the_problem_first_and_leaves_no_run(
    synth_root, tmp_path, capsys, caplog, monkeypatch
):
    """Issue 21: a wrong --data is named before any weight download (pretrained is the
    default here and the hub is unreachable), an unknown encoder before Fabric's precision
    banner, and neither leaves RUN/ behind; nor does a failure after RUN/ was made."""
    from bddseg import train as train_module
    from bddseg.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "not found" in err[0], err
    assert not run.exists()
    tiny_args = ["--data", str(synth_root), "--out", str(run), "--max-steps", "1",
                 "--workers", "0", "--accelerator", "cpu", "--batch-size", "4",
                 "--crop", "64x96"]  # fmt: skip
    assert main(["train", *tiny_args, "--encoder", "resnet35"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet35" in err[0], err
    assert "Automatic Mixed Precision" not in caplog.text + "".join(err)
    assert not run.exists()

    def failing_optimizer(*args, **kwargs):
        raise BddsegError("optimizer setup failed (a test)")

    monkeypatch.setattr(train_module, "build_optimizer", failing_optimizer)
    assert main(["train", *tiny_args, "--no-pretrained"]) == 2
    assert "optimizer setup failed" in capsys.readouterr().err
    assert not run.exists()  # the folder this run made (config.yaml in it) is gone
    run.mkdir()  # a folder the user made is left alone
    assert main(["train", *tiny_args, "--no-pretrained"]) == 2
    assert run.is_dir()
