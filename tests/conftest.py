"""Shared fixtures: a tiny synthetic dataset (built once per session) and the real pairs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "bdd100k-real"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a busy 2-core machine, two OpenMP threads spin-wait on
    each other and small forwards get 7-40x slower (64x96: 0.05 s vs 0.4-2 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the official layout; returns the ``bdd100k`` root."""
    from bddseg.synth import make_dataset

    out = tmp_path_factory.mktemp("synth")
    return make_dataset(out, train=12, val=6, test=4, height=96, width=160, seed=0, workers=1)


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The 24 real BDD100K pairs. ``BDDSEG_REAL_DATA`` set but missing is a failure, not a skip."""
    env = os.environ.get("BDDSEG_REAL_DATA")
    if env:
        root = Path(env)
        if not root.is_absolute():
            root = (REPO / root).resolve()
        if not (root / "images").is_dir():
            pytest.fail(f"BDDSEG_REAL_DATA={env} is set but {root}/images does not exist")
        return root
    if (DEFAULT_REAL / "images").is_dir():
        return DEFAULT_REAL
    pytest.skip("real BDD100K pairs not available (set BDDSEG_REAL_DATA)")
