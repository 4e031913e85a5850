"""Shared fixtures: a tiny synthetic dataset (built once per session) and the real pairs."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "bdd100k-real"
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "bdd100k-sample"
DEFAULT_VAL_MASKS = REPO.parent / "shared" / "data" / "bdd100k-val-masks"
VAL_MASKS_SUBDIR = Path("labels/sem_seg/masks/val")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a busy 2-core machine, two OpenMP threads spin-wait on
    each other and small forwards get 7-40x slower (64x96: 0.05 s vs 0.4-2 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_checkpoint(path: Path, unknown_bias: float | None = None) -> Path:
    """A checkpoint of a random 20-class U-Net (the default config) at ``path``; with
    ``unknown_bias``, class 19 (unknown) wins everywhere."""
    import torch

    from bddseg.checkpoints import make_checkpoint, save_checkpoint
    from bddseg.config import Config
    from bddseg.model import build_model

    torch.manual_seed(0)
    cfg = Config()
    model = build_model(dataclasses.replace(cfg.model, pretrained=False), cfg.num_classes)
    if unknown_bias is not None:
        with torch.no_grad():
            model.segmentation_head[0].bias[19] = unknown_bias
    save_checkpoint(path, make_checkpoint(model, cfg))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A random 20-class U-Net checkpoint, for the inference tests."""
    return _random_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def unknown_ckpt(tmp_path_factory) -> Path:
    """A random 20-class U-Net checkpoint whose class 19 (unknown) wins everywhere."""
    return _random_checkpoint(tmp_path_factory.mktemp("ckpt") / "unknown.pt", unknown_bias=1e4)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the official layout; returns the ``bdd100k`` root."""
    from bddseg.synth import make_dataset

    out = tmp_path_factory.mktemp("synth")
    return make_dataset(out, train=12, val=6, test=4, height=96, width=160, seed=0, workers=1)


def _shared_data(variable: str, default: Path, what: str) -> Path:
    """``$variable`` (relative to the repo), else ``default``; set but missing is a failure,
    not a skip; neither there skips."""
    env = os.environ.get(variable)
    if env:
        root = Path(env)
        if not root.is_absolute():
            root = (REPO / root).resolve()
        if not (root / "images").is_dir():
            pytest.fail(f"{variable}={env} is set but {root}/images does not exist")
        return root
    if (default / "images").is_dir():
        return default
    pytest.skip(f"{what} not available (set {variable})")


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The 24 real BDD100K pairs (16 train, 8 val)."""
    return _shared_data("BDDSEG_REAL_DATA", DEFAULT_REAL, "real BDD100K pairs")


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The real BDD100K sample: 170 train, 50 val pairs."""
    return _shared_data("BDDSEG_SAMPLE_DATA", DEFAULT_SAMPLE, "the real BDD100K sample")


@pytest.fixture(scope="session")
def val_masks() -> list[Path]:
    """The 1,000 official BDD100K val masks (no photos), sorted: ``$BDDSEG_VAL_MASKS`` (set but
    missing is a failure), else the default place; neither there skips."""
    env = os.environ.get("BDDSEG_VAL_MASKS")
    root = Path(env) if env else DEFAULT_VAL_MASKS
    if env and not root.is_absolute():
        root = (REPO / root).resolve()
    folder = root / VAL_MASKS_SUBDIR
    if not folder.is_dir():
        if env:
            pytest.fail(f"BDDSEG_VAL_MASKS={env} is set but {folder} does not exist")
        pytest.skip("the official val masks are not available (set BDDSEG_VAL_MASKS)")
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="session")
def trained(synth_root, tmp_path_factory):
    """Small trained checkpoints, each trained once per session and shared by the tests
    that need a model which has seen data (3 steps on the synthetic set, validated at the
    end): ``trained(unknown="ignore" | "class", base_size=None | (h, w))`` -> its best.pt."""
    cache: dict[tuple, Path] = {}

    def get(unknown: str = "ignore", base_size: tuple[int, int] | None = None) -> Path:
        key = (unknown, tuple(base_size) if base_size else None)
        if key not in cache:
            from bddseg.config import from_dict
            from bddseg.train import train

            out = tmp_path_factory.mktemp("trained") / "run"
            data = {"root": str(synth_root), "unknown": unknown, "workers": 0, "crop": [64, 96]}
            if base_size:
                data.update(base_size=list(base_size), crop=list(base_size))
            cfg = from_dict(
                {
                    "data": data,
                    "model": {"pretrained": False},
                    "optim": {"batch_size": 4, "max_steps": 3, "lr": 1e-3},
                    "run": {"out": str(out), "accelerator": "cpu", "val_every": 3},
                }
            )
            train(cfg)
            cache[key] = out / "best.pt"
        return cache[key]

    return get
