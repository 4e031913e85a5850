"""The layout of a run folder, named once: what train writes, what evaluate and predict add
(``bddseg demo`` puts them in the run), and what the report reads back::

    RUN/
      config.yaml           the resolved config (train)
      log.csv               one row per logged step (bddseg.trainlog.CsvLog)
      tb/                   TensorBoard events
      last.pt               everything needed to resume
      best.pt               the weights with the best val mIoU
      loss_curves.png
      eval/val/             evaluate --checkpoint on val: metrics.json, per_class.csv,
        pred/STEM.png         confusion.json, per_image.csv, plots; the predicted masks
      predictions/test/     predict on the test images

Names only (and the two folders the demo and the report share); the modules that write or
read these files join them to a folder.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
LOG = "log.csv"
TENSORBOARD_DIR = "tb"
LAST = "last.pt"
BEST = "best.pt"
LOSS_CURVES = "loss_curves.png"

EVAL_DIR = "eval"  # RUN/eval/SPLIT/
EVAL_SPLIT = "val"  # the split the demo evaluates and the report reads
PREDICTIONS_DIR = "predictions"  # RUN/predictions/SPLIT/
PREDICT_SPLIT = "test"  # the split the demo predicts and the report shows

# what an evaluation writes into its folder
METRICS = "metrics.json"
PER_CLASS = "per_class.csv"
CONFUSION = "confusion.json"
PER_IMAGE = "per_image.csv"
PRED_DIR = "pred"  # evaluate --checkpoint's masks: RUN/eval/SPLIT/pred/STEM.png


def eval_dir(run_dir: str | Path, split: str = EVAL_SPLIT) -> Path:
    """``RUN/eval/SPLIT``: where the demo evaluates a run and the report looks."""
    return Path(run_dir) / EVAL_DIR / split


def predictions_dir(run_dir: str | Path, split: str = PREDICT_SPLIT) -> Path:
    """``RUN/predictions/SPLIT``: where the demo predicts and the report looks."""
    return Path(run_dir) / PREDICTIONS_DIR / split
