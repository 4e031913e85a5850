"""Data order and randomness for training, as pure functions of the seed.

The order of epoch ``e`` is a permutation seeded by ``(seed, e)``; the augmentation of the
sample at position ``p`` of that order is seeded by ``(seed, e, p)``; the global RNGs are
reseeded from ``(seed, rank, step)`` before every step. Nothing random depends on what ran
before, so a run resumed mid-epoch sees exactly the batches of an uninterrupted one, with any
number of loader workers, and nothing but the step needs saving.
"""

from __future__ import annotations

import math
import random
import signal
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bddseg.data import collate_skip


class EpochSampler(Sampler):
    """This rank's share of epoch ``epoch``, from micro-batch ``start`` on.

    The epoch's order is a permutation seeded by ``(seed, epoch)``; global micro-batch ``j``
    is ``perm[j*G:(j+1)*G]`` (G the global batch) and rank r takes its r-th slice, so the
    ranks see disjoint samples and the global batches do not depend on the number of
    processes. Yields ``(index, sample_seed)``: the seed of that sample's augmentation.

    With ``weights`` (one per sample, e.g. :func:`rare_class_weights`), the epoch's order is
    ``n`` draws with replacement in proportion to them, seeded the same way.
    """

    def __init__(
        self,
        n: int,
        local_batch: int,
        world: int,
        rank: int,
        micro_batches: int,
        seed: int,
        weights: torch.Tensor | None = None,
    ):
        self.n, self.local, self.world, self.rank = n, local_batch, world, rank
        self.micro_batches, self.seed, self.weights = micro_batches, seed, weights
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        g = torch.Generator().manual_seed(mix(self.seed, self.epoch))
        if self.weights is None:
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = torch.multinomial(self.weights, self.n, True, generator=g).tolist()
        glob = self.local * self.world
        for j in range(self.start, self.micro_batches):
            for k in range(self.local):
                pos = j * glob + self.rank * self.local + k
                yield perm[pos], mix(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return (self.micro_batches - self.start) * self.local


class SeededSamples(Dataset):
    """Reseeds the dataset's augmentation generator for every ``(index, seed)`` key, so a
    sample's augmentation does not depend on the worker, the rank or an interruption."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, sample_seed = key
        self.dataset.generator.manual_seed(sample_seed)
        return self.dataset[index]


def train_loader(
    dataset: Dataset,
    local_batch: int,
    world: int,
    rank: int,
    micro_batches: int,
    seed: int,
    epoch: int,
    start: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    trace: Path | None = None,
    weights: torch.Tensor | None = None,
) -> DataLoader:
    """This rank's loader for ``epoch`` from micro-batch ``start`` on, yielding
    :class:`bddseg.data.Batch`. ``trace``: append ``epoch index`` lines for every sample (a
    test hook). ``weights``: sample in proportion to them (see :class:`EpochSampler`)."""
    sampler = EpochSampler(len(dataset), local_batch, world, rank, micro_batches, seed, weights)
    sampler.set_epoch(epoch, start)
    if trace is not None:
        with open(trace, "a") as f:
            f.writelines(f"{epoch} {index}\n" for index, _ in sampler)
    return DataLoader(
        SeededSamples(dataset),
        batch_size=local_batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip,
        pin_memory=pin_memory,
        worker_init_fn=_one_thread if workers > 0 else None,
    )


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode and augment; the main process owns the cores
    # Ctrl-C / SIGTERM are for the main process, which stops at a step boundary and saves
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def rare_class_weights(
    presence: torch.Tensor, pixel_share: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-image sampling weights of DAFormer's rare-class sampling (Hoyer et al., 2022).

    A class ``c`` is drawn with probability ``P(c) = softmax((1 - f_c) / T)`` over the classes
    present in the split (``f_c`` its pixel frequency), then an image holding ``c``
    uniformly; an image's weight is its total probability ``sum_c P(c) [c in i] / n_c``.

    Args:
        presence: ``bool (N, C)``, whether image ``i`` holds a pixel of class ``c``.
        pixel_share: ``float (C,)``, each class's share of the pixels (any scale; normalised).
        temperature: ``T``; small values favour the rarest classes (DAFormer: 0.01).

    Returns:
        ``float64 (N,)`` weights summing to 1 (uniform for images holding no counted class).
    """
    presence = presence.to(torch.float64)
    counts = presence.sum(0)
    freq = pixel_share.to(torch.float64) / pixel_share.sum()
    logits = ((1 - freq) / temperature).masked_fill(counts == 0, -math.inf)
    p_class = torch.softmax(logits, 0)
    w = presence @ (p_class / counts.clamp(min=1))
    return w / w.sum() if w.sum() > 0 else torch.full_like(w, 1 / len(w))


def mix(*values: int) -> int:
    """A 63-bit seed from a few integers (stable across runs and platforms)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def step_seed(seed: int, rank: int, step: int) -> int:
    return mix(seed, 1_000_003 + rank, step)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = [
    "EpochSampler",
    "SeededSamples",
    "mix",
    "rare_class_weights",
    "seed_everything",
    "step_seed",
    "train_loader",
]
