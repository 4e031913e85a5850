"""What a training run writes besides checkpoints: ``log.csv``, TensorBoard events (scalars,
per-class IoU and val triplets), the progress display, and the Ctrl-C / SIGTERM flag. Used by :mod:`bddseg.train` on rank 0.

:func:`read_log_rows` is the one ``log.csv`` reader: resuming (:class:`CsvLog`), the loss
curves (:mod:`bddseg.plots`) and the report (:mod:`bddseg.report`) all read through it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from bddseg.classes import BDD100K, Classes
from bddseg.colors import colorize
from bddseg.errors import BddsegError
from bddseg.files import atomic_write_text
from bddseg.masks import read_mask
from bddseg.progress import progress_bar

VAL_IMAGES = 4  # val triplets shown in TensorBoard at each validation
VAL_IMAGE_WIDTH = 320  # pixels, each of photo, truth and prediction

LOG_COLUMNS = (
    "step",
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_miou",
    "val_pixel_accuracy",
    "images_per_s",
    "time_s",
    "train_s",  # time_s less validation and checkpoints
)


def read_log_rows(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a ``log.csv``, each ``{column: text}`` for the file's header
    columns (a column a row lacks is ``""``).

    A partial last line (a run killed mid-write) and rows whose ``step`` is not an integer
    are dropped. Bytes that are not UTF-8 become U+FFFD, so one bad cell costs its value,
    not the file.

    Raises:
        BddsegError: the file is missing or unreadable, or has no ``step`` column.
    """
    return _read_table(Path(path))[1]


def _read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(header, complete rows)`` of a ``log.csv``: see :func:`read_log_rows`."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise BddsegError("training log not found", path) from None
    except OSError as e:
        raise BddsegError(f"cannot read training log ({e.strerror or e})", path) from None
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames or []
        if header and "step" not in header:
            raise BddsegError("training log has no 'step' column", path)
        rows = []
        for row in reader:
            with contextlib.suppress(TypeError, ValueError):
                int(row["step"])
                rows.append({k: row.get(k) or "" for k in header})
    except csv.Error as e:
        raise BddsegError(f"cannot read training log ({e})", path) from None
    return header, rows


def read_log(path: str | Path) -> dict[str, list[float | None]]:
    """A ``log.csv`` as columns of floats, ``{column: [value per row]}`` (always a ``step``
    column); empty or non-numeric cells are None. Rows as :func:`read_log_rows` keeps them.

    Raises:
        BddsegError: as :func:`read_log_rows`.
    """
    header, rows = _read_table(Path(path))
    return {"step": [], **{k: [_num(r[k]) for r in rows] for k in header}}


def _num(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


class CsvLog:
    """``RUN/log.csv``: one row per logged step; ``val_*`` empty on rows without validation.

    Rows are appended and flushed one at a time, so a killed run loses at most a partial last
    line. Resuming from step S rewrites the file (atomically) keeping the complete rows with
    ``step <= S``, so the log always matches the weights it continues from.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            # an unreadable log restarts empty: the checkpoint, not the log, is what resumes
            with contextlib.suppress(BddsegError):
                rows = read_log_rows(path)
        kept = [
            {k: r.get(k, "") for k in LOG_COLUMNS} for r in rows if int(r["step"]) <= resume_step
        ]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(path, buf.getvalue())

    def append(self, row: dict) -> None:
        line = ",".join(_fmt(row.get(k)) for k in LOG_COLUMNS) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class TensorBoard:
    """A ``SummaryWriter`` in ``RUN/tb``; on resume, events after the resumed step are purged."""

    def __init__(self, log_dir: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step)

    def log(self, row: dict) -> None:
        step = row["step"]
        for key, tag in (
            ("train_loss", "loss/train"),
            ("val_loss", "loss/val"),
            ("val_miou", "val/miou"),
            ("val_pixel_accuracy", "val/pixel_accuracy"),
            ("lr", "lr"),
            ("images_per_s", "speed/images_per_s"),
        ):
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], step)
        self.writer.flush()

    def log_validation(
        self, step: int, iou: dict[str, float], images: dict[str, np.ndarray]
    ) -> None:
        """Each class's official IoU as ``val_iou/NAME`` (the caller passes the classes
        present in the val truth, those mIoU averages) and each ``uint8 (H, W, 3)`` image as
        ``val_images/STEM``."""
        for name, value in iou.items():
            self.writer.add_scalar(f"val_iou/{name}", value, step)
        for stem, image in images.items():
            self.writer.add_image(f"val_images/{stem}", image, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class ValImages:
    """The val triplets TensorBoard shows at each validation: photo, truth and prediction
    side by side for the first ``n`` val images in stem order, ``width`` pixels wide each,
    colored with the run's palette (:func:`bddseg.colors.colorize`).

    ``pairs``: the val pairs, or the val dataset itself (a
    :class:`~bddseg.data.SegDataset`: its ``pairs``, ``classes`` and per-pair
    ``mask_classes``). ``classes``: the run's class set (default: the dataset's, else
    BDD100K's), whose palette colours truth and prediction and which reads the truth masks
    (raw values mapped to train ids: Cityscapes ``labelIds``, a user's mapping);
    ``mask_classes``: one set per pair where the pairs come from roots with different
    mappings of the same classes.

    Photos and truths are read once, on the first validation; the predictions come from
    :func:`bddseg.evaluate.score_split`'s ``on_mask`` (no second forward pass). An image
    that cannot be read is left out (validation itself names it).
    """

    def __init__(
        self,
        pairs,
        n: int = VAL_IMAGES,
        width: int = VAL_IMAGE_WIDTH,
        classes: Classes | None = None,
        mask_classes=None,
    ):
        if hasattr(pairs, "pairs"):  # a dataset: its pairs and the classes that read them
            dataset = pairs
            classes = classes if classes is not None else getattr(dataset, "classes", None)
            if mask_classes is None:
                mask_classes = getattr(dataset, "mask_classes", None)
            pairs = dataset.pairs
        self.classes = classes if classes is not None else BDD100K
        pairs = list(pairs)
        readers = list(mask_classes) if mask_classes is not None else [self.classes] * len(pairs)
        if len(readers) != len(pairs):
            raise BddsegError(f"{len(pairs)} pairs but {len(readers)} class sets")
        chosen = sorted(zip(pairs, readers, strict=True), key=lambda t: t[0].stem)[:n]
        self.pairs = [p for p, _ in chosen]
        self.readers = {p.stem: r for p, r in chosen}
        self.width = width
        self.sources: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.preds: dict[str, np.ndarray] = {}

    def on_mask(self, stem: str, pred: np.ndarray) -> None:
        if self.sources is not None and stem in self.sources:
            self.preds[stem] = self._small(pred, Image.NEAREST)

    def load(self) -> None:
        """Read the photos and truths (at most once)."""
        if self.sources is not None:
            return
        self.sources = {}
        for pair in self.pairs:
            try:
                with Image.open(pair.image) as im:
                    photo = self._small(np.asarray(im.convert("RGB")), Image.BILINEAR)
                reader = self.readers.get(pair.stem, self.classes)
                truth = read_mask(pair.mask, "ground-truth mask", classes=reader)
                truth = self._small(truth, Image.NEAREST)
            except (OSError, BddsegError):
                continue
            self.sources[pair.stem] = (photo, colorize(truth, self.palette))

    def triplets(self) -> dict[str, np.ndarray]:
        """``{stem: uint8 (h, 3 * width, 3)}`` for the images predicted since the last call."""
        out = {}
        for stem, pred in self.preds.items():
            photo, truth = self.sources[stem]
            out[stem] = np.concatenate([photo, truth, colorize(pred, self.palette)], axis=1)
        self.preds = {}
        return out

    @property
    def palette(self):
        return self.classes.palette

    def _small(self, array: np.ndarray, resample) -> np.ndarray:
        h, w = array.shape[:2]
        size = (self.width, max(1, round(h * self.width / w)))
        return np.asarray(Image.fromarray(array).resize(size, resample))


class Progress:
    """The progress bar (:func:`bddseg.progress.progress_bar`: steps, time left, then loss,
    lr and images/s) when stderr is a terminal, with the validation lines printed above it
    to stay; plain lines on stdout otherwise (logs and captured output stay readable).

    Args:
        console: draw the bar on this rich console (default: stderr, when it is a terminal).
    """

    def __init__(self, total: int, start: int, enabled: bool = True, console=None):
        self.enabled = enabled
        terminal = console.is_terminal if console is not None else sys.stderr.isatty()
        self.live = enabled and terminal
        self.total = total
        if self.live:
            self.bar = progress_bar("train", eta=True, info=True, console=console)
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, info: str, force_line: bool = False) -> None:
        if not self.enabled:
            return
        if self.live:
            self.bar.update(self.task, completed=step, info=info)
            if force_line:
                self.bar.console.print(f"step {step}/{self.total}  {info}")
        else:
            print(f"step {step}/{self.total}  {info}", flush=True)

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        if self.live:
            self.bar.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.live:
            self.bar.stop()


class StopFlag:
    """Set by SIGINT / SIGTERM; the loop checks it between optimizer steps.

    Stopping only at a step boundary keeps ``last.pt`` consistent (the model is never saved
    half-updated). A second Ctrl-C interrupts at once.
    """

    def __init__(self):
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum, frame):
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signum

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no handlers, Ctrl-C behaves as usual
            pass
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class Timer:
    """Training wall time, cumulative across resumes, and images/s per logging window."""

    def __init__(self, elapsed: float = 0.0, train_s: float | None = None):
        self.offset = elapsed
        self.start = time.perf_counter()
        self.window_start = self.start
        self.window_images = 0
        self.paused = 0.0
        # all paused time so far (validation, checkpoints), resumed runs' included
        self.paused_total = 0.0 if train_s is None else elapsed - train_s

    @property
    def elapsed(self) -> float:
        return self.offset + time.perf_counter() - self.start

    @property
    def train_s(self) -> float:
        """Seconds spent training: :attr:`elapsed` less validation and checkpoints."""
        return self.elapsed - self.paused_total

    def add_images(self, n: int) -> None:
        self.window_images += n

    def images_per_s(self) -> float:
        """Images per second of training (validation and checkpoint time excluded) since the
        last call."""
        now = time.perf_counter()
        seconds = now - self.window_start - self.paused
        rate = self.window_images / seconds if seconds > 0 else 0.0
        self.window_start, self.window_images, self.paused = now, 0, 0.0
        return rate

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Exclude the enclosed time from images/s (it still counts in ``elapsed``)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t
            self.paused += seconds
            self.paused_total += seconds
