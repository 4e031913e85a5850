"""The original project's recipe, run for real: fastai ``unet_learner`` (ResNet34 U-Net),
its default loss for masks (``CrossEntropyLossFlat``), 255 remapped to class 19 (20 classes),
``aug_transforms`` + ImageNet normalisation, ``fit_one_cycle``.

Runs in its own virtual environment (``make .venv-fastai``: fastai from PyPI, our torch) and
imports nothing from bddseg. ``benchmarks/real_sample.py`` calls it with a JSON file of the
pairs and the settings every contestant shares, and reads back one JSON line per epoch: the
training seconds so far (validation excluded) and the 20x20 confusion matrix of the val
split scored at the masks' full resolution (logits upsampled bilinearly; rows are the truth,
19 = raw 255; columns the prediction). bddseg turns the matrices into the official metrics,
so every contestant is scored by the same code.

The model answers with the best of the 19 real classes (never ``unknown``), which is what the
official metric rewards: this is the kinder reading of the original's predictions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastai.vision.all import (
    Callback,
    CancelFitException,
    CancelValidException,
    DataBlock,
    ImageBlock,
    MaskBlock,
    Normalize,
    PILMask,
    ProgressCallback,
    Resize,
    aug_transforms,
    imagenet_stats,
    resnet34,
    set_seed,
    unet_learner,
)
from PIL import Image

CODES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle", "unknown",
]  # fmt: skip
MEAN = torch.tensor(imagenet_stats[0]).view(1, 3, 1, 1)
STD = torch.tensor(imagenet_stats[1]).view(1, 3, 1, 1)


def read_mask(path: str) -> PILMask:
    m = np.array(Image.open(path))
    m[m == 255] = 19  # the original: unknown is class 19
    return PILMask.create(m)


def build_dls(train_pairs: list[list[str]], size: tuple[int, int], batch: int, seed: int):
    masks = {img: mask for img, mask in train_pairs}
    block = DataBlock(
        blocks=(ImageBlock, MaskBlock(CODES)),
        get_y=lambda img: read_mask(masks[str(img)]),
        splitter=lambda items: (list(range(len(items))), []),  # we validate ourselves
        item_tfms=Resize(size),
        batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)],
    )
    set_seed(seed)
    return block.dataloaders([img for img, _ in train_pairs], bs=batch, num_workers=0)


def new_learner(dls, seed: int):
    set_seed(seed)
    learn = unet_learner(dls, resnet34, pretrained=False, n_out=len(CODES))
    learn.remove_cb(ProgressCallback)  # no bars or tables on stdout: it carries our JSON lines
    learn.logger = lambda *_: None
    return learn


class SkipValidation(Callback):
    """fastai validates after every epoch; we score at full resolution instead (below)."""

    def before_validate(self):
        raise CancelValidException


class StopAfter(Callback):
    """Time ``n`` training batches after ``warm`` warm-up ones, then stop (the probe)."""

    def __init__(self, warm: int, n: int):
        self.warm, self.n, self.seen, self.start = warm, n, 0, None
        self.seconds_per_batch = None

    def after_batch(self):
        self.seen += 1
        if self.seen == self.warm:
            self.start = time.perf_counter()
        if self.seen == self.warm + self.n:
            self.seconds_per_batch = (time.perf_counter() - self.start) / self.n
            raise CancelFitException


@torch.no_grad()
def val_confusion(model, val_pairs: list[list[str]], size: tuple[int, int]) -> np.ndarray:
    was_training = model.training
    model.eval()
    cm = np.zeros((20, 20), dtype=np.int64)
    for img_path, mask_path in val_pairs:
        img = Image.open(img_path).convert("RGB").resize(size[::-1], Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255
        raw = np.array(Image.open(mask_path))
        logits = model((x - MEAN) / STD)
        logits = F.interpolate(logits, size=raw.shape, mode="bilinear", align_corners=False)
        pred = logits[0, :19].argmax(0).numpy()
        truth = np.where(raw == 255, 19, raw).astype(np.int64)
        cm += np.bincount(truth.ravel() * 20 + pred.ravel(), minlength=400).reshape(20, 20)
    model.train(was_training)
    return cm


class ScoreEachEpoch(Callback):
    """After each epoch: the training seconds so far and the val confusion, as a JSON line."""

    order = 99

    def __init__(self, val_pairs, size, out, batch: int):
        self.val_pairs, self.size, self.out, self.batch = val_pairs, size, out, batch
        self.train_s, self.mark, self.images = 0.0, None, 0

    def before_epoch(self):
        self.mark = time.perf_counter()

    def after_batch(self):
        if self.training:
            self.images += self.xb[0].shape[0]

    def after_epoch(self):
        self.train_s += time.perf_counter() - self.mark
        cm = val_confusion(self.learn.model, self.val_pairs, self.size)
        row = {
            "epoch": self.epoch + 1,
            "train_s": round(self.train_s, 2),
            "images_seen": self.images,
            "confusion": cm.tolist(),
        }
        print(json.dumps(row), file=self.out, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True, help="JSON {train: [[img, mask]...], val: [...]}")
    p.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--lr", type=float, default=1e-3, help="fit_one_cycle's lr_max (fastai's default)"
    )
    p.add_argument("--budget", type=float, help="seconds of training: sets the epoch count")
    p.add_argument("--epochs", type=int, help="a fixed epoch count instead of --budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = json.loads(Path(args.pairs).read_text())
    size = tuple(args.size)
    dls = build_dls(pairs["train"], size, args.batch, args.seed)
    steps_per_epoch = len(dls.train)
    epochs = args.epochs
    if epochs is None:  # probe: the seconds per batch of this model on these cores
        learn = new_learner(dls, args.seed)
        probe = StopAfter(warm=2, n=5)
        learn.fit(1000, 1e-4, cbs=[probe, SkipValidation()])  # stopped by the probe
        epoch_s = probe.seconds_per_batch * steps_per_epoch
        epochs = max(1, math.floor(args.budget / epoch_s + 0.5))
        print(
            json.dumps({"probe_s_per_batch": probe.seconds_per_batch, "epochs": epochs}), flush=True
        )
    learn = new_learner(dls, args.seed)
    score = ScoreEachEpoch(pairs["val"], size, sys.stdout, args.batch)
    learn.fit_one_cycle(epochs, args.lr, cbs=[SkipValidation(), score])
    return 0


if __name__ == "__main__":
    sys.exit(main())
