"""``bddseg predict``: files, folders, globs and videos in; masks, color maps and overlays out.

:func:`predict_inputs` finds the inputs (:func:`expand_inputs`, :func:`unique_names`),
decodes images and sampled video frames (:func:`read_video_frames`) in DataLoader workers,
runs them through the one model runner (:class:`bddseg.predictor.Predictor`) and writes
what :func:`write_outputs` writes, atomically.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bddseg.colors import colorize, overlay
from bddseg.config import INFERENCE_PRECISION
from bddseg.data import read_image
from bddseg.errors import BddsegError, first_line, warn
from bddseg.files import atomic_path
from bddseg.layout import IMAGE_SUFFIXES
from bddseg.masks import write_mask
from bddseg.predictor import load_predictor, same_size_batches
from bddseg.progress import progress_bar

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi")
FORMATS = {"mask": ("masks", ".png"), "color": ("color", ".png"), "overlay": ("overlay", ".jpg")}


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output names (file stems), made unique where several inputs share a stem.

    Each clashing file is named by its path relative to the deepest folder the clashing
    files share, ``/`` becoming ``__`` (``a/x.jpg``, ``b/x.jpg`` -> ``a__x``, ``b__x``); files
    that still clash (``x.jpg``, ``x.png`` in one folder) get their extension appended
    (``x_jpg``, ``x_png``).
    """
    names = [p.stem for p in paths]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n, []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        full = [paths[i].resolve() for i in idx]
        common = Path(os.path.commonpath([str(f.parent) for f in full]))
        rel = ["__".join(f.relative_to(common).with_suffix("").parts) for f in full]
        for i, r, f in zip(idx, rel, full, strict=True):
            names[i] = r if rel.count(r) == 1 else f"{r}_{f.suffix.lstrip('.').lower()}"
    return names


def expand_inputs(inputs: Sequence[str]) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """Files, folders (recursive images), globs -> ``[(path, output name)]`` plus the inputs
    that gave nothing, ``{input: reason}``. A file named twice is used once."""
    found: list[Path] = []
    seen: set[Path] = set()
    empty: dict[str, str] = {}

    def add(p: Path) -> None:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            found.append(p)

    def folder(d: Path) -> int:
        files = sorted(
            f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        )
        for f in files:
            add(f)
        return len(files)

    for s in inputs:
        p = Path(s)
        if p.is_dir():
            if not folder(p):
                empty[s] = "no .jpg/.jpeg/.png images in this folder"
        elif p.is_file():
            add(p)
        elif any(c in s for c in "*?["):
            n = 0
            for m in sorted(glob.glob(s, recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    n += folder(mp)
                elif mp.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                    add(mp)
                    n += 1
            if not n:
                empty[s] = "no image or video matches this pattern"
        else:
            empty[s] = "no such file or folder"
    return list(zip(found, unique_names(found), strict=True)), empty


def _video_backend(path: Path) -> str:
    for name in ("av", "cv2"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise BddsegError(
        "cannot decode videos: no video backend installed; pip install av "
        "(or opencv-python-headless)",
        path,
    )


def read_video_frames(path: Path, fps: float) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(frame index, uint8 RGB (3, H, W))`` for frames sampled ``fps`` times a second
    (the first frame at or after each multiple of ``1 / fps`` s), with PyAV or else OpenCV."""
    backend = _video_backend(path)
    frames = _frames_av(path) if backend == "av" else _frames_cv2(path)
    next_t = 0.0
    try:
        for idx, t, get in frames:
            if t + 1e-6 >= next_t:
                yield idx, get()
                next_t = (math.floor((t + 1e-6) * fps) + 1) / fps
    except BddsegError:
        raise
    except Exception as e:  # decoders raise many types for corrupt streams
        raise BddsegError(f"cannot decode video ({first_line(e, 160)})", path) from None


def _frames_av(path: Path) -> Iterator[tuple[int, float, Callable[[], torch.Tensor]]]:
    import av

    try:
        container = av.open(str(path))
    except Exception as e:
        raise BddsegError(f"cannot open video ({first_line(e, 160)})", path) from None
    with container:
        if not container.streams.video:
            raise BddsegError("no video stream in this file", path)
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 30)
        t0 = None
        for idx, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else idx / rate
            t0 = t if t0 is None else t0
            rgb = frame.to_ndarray  # decode to RGB only for the frames kept
            yield (
                idx,
                t - t0,
                lambda rgb=rgb: torch.from_numpy(rgb(format="rgb24")).permute(2, 0, 1),
            )


def _frames_cv2(path: Path) -> Iterator[tuple[int, float, Callable[[], torch.Tensor]]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BddsegError("cannot open video (OpenCV)", path)
    rate = cap.get(cv2.CAP_PROP_FPS) or 30.0
    try:
        idx = 0
        while cap.grab():
            yield idx, idx / rate, functools.partial(_retrieve_cv2, cap, idx, path)
            idx += 1
    finally:
        cap.release()


def _retrieve_cv2(cap, idx: int, path: Path) -> torch.Tensor:
    ok, bgr = cap.retrieve()
    if not ok:
        raise BddsegError(f"cannot decode frame {idx}", path)
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1)


class _Decoded(torch.utils.data.IterableDataset):
    """Decodes inputs in DataLoader workers; yields ``(name, source, image | None, problem)``."""

    def __init__(self, items: list[tuple[Path, str]], video_fps: float):
        self.items = items
        self.video_fps = video_fps

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        for path, name in self.items[wid::n]:
            try:
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    for idx, frame in read_video_frames(path, self.video_fps):
                        yield f"{name}_{idx:06d}", str(path), frame, None
                else:
                    yield name, str(path), read_image(path), None
            except BddsegError as e:
                yield name, str(path), None, e.problem


def _readable(samples, skip: Callable[[str, str], None]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, image)`` of the decoded ``(name, source, image, problem)`` samples; failed
    samples go to ``skip`` as they come."""
    for name, source, image, problem in samples:
        if image is None:
            skip(source, problem)
        else:
            yield name, image


def _identity(x):
    return x


def write_outputs(
    out_dir: Path, name: str, image: np.ndarray, mask: np.ndarray, formats: Sequence[str]
) -> None:
    """Write ``masks/NAME.png`` (L, train ids), ``color/NAME.png`` (RGB, official palette) and
    ``overlay/NAME.jpg`` (image and colors half and half; 255 shows the image), atomically
    (:func:`bddseg.masks.write_mask`, :func:`bddseg.colors.colorize`,
    :func:`bddseg.colors.overlay`).

    Args:
        image: uint8 ``(H, W, 3)`` RGB. mask: uint8 ``(H, W)``.
    """

    def path(fmt: str) -> Path:
        sub, suffix = FORMATS[fmt]
        return out_dir / sub / f"{name}{suffix}"

    def save(array: np.ndarray, fmt: str, **kw: Any) -> None:
        target = path(fmt)
        with atomic_path(target) as tmp:
            kind = "JPEG" if target.suffix == ".jpg" else "PNG"
            Image.fromarray(array).save(tmp, format=kind, **kw)

    if "mask" in formats:
        write_mask(path("mask"), mask)
    if "color" in formats:
        save(colorize(mask), "color")
    if "overlay" in formats:
        save(overlay(image, mask), "overlay", quality=90)


def predict_inputs(
    inputs: Sequence[str],
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    formats: Sequence[str] = ("mask", "color", "overlay"),
    tta: str = "none",
    batch_size: int = 1,
    device: str = "cpu",
    precision: str = INFERENCE_PRECISION,
    keep_unknown: bool = False,
    video_fps: float = 1.0,
    workers: int = 2,
    progress: bool = True,
    window: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Predict every image, folder (recursive .jpg/.jpeg/.png), glob and video in ``inputs``.

    Writes, per image or sampled video frame (``STEM_000123``, the source frame index),
    the files of :func:`write_outputs` under ``out_dir``, at the input's size. Masks are
    official submissions (0..18; 255 only with ``keep_unknown``, which the official
    evaluator counts as a miss). DataLoader workers decode ahead; same-size images are
    batched; ``window`` (h, w) predicts in overlapping tiles (see :class:`bddseg.predictor.Predictor`).
    A checkpoint runs at ``precision``, fp32 unless asked (see
    :meth:`bddseg.predictor.Predictor.from_checkpoint`); an ONNX file runs as exported.
    An input that cannot be read is reported on stderr (one line) and skipped; the others
    are still written (``bddseg predict`` then exits 2). Stem clashes are resolved by
    :func:`unique_names`.

    Returns:
        ``{"inputs": n, "written": n, "skipped": n, "skipped_files": [...],
        "problems": {path: reason}, "seconds": s}``: ``inputs`` counts the files found and the
        inputs that gave none (a missing file, an empty folder); ``written`` the images and
        video frames predicted; ``skipped`` the inputs that failed.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise BddsegError(f"unknown output format(s) {bad} (valid: {', '.join(FORMATS)})")
    if batch_size < 1 or video_fps <= 0 or workers < 0:
        raise BddsegError("batch_size must be >= 1, video_fps > 0 and workers >= 0")
    if (checkpoint is None) == (onnx is None):
        raise BddsegError("give exactly one of checkpoint or onnx")
    items, empty = expand_inputs(inputs)
    problems = dict(empty)
    if not items and not problems:
        raise BddsegError("no inputs given")
    videos = [p for p, _ in items if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        _video_backend(videos[0])  # fail before loading the model
    predictor = load_predictor(
        checkpoint if checkpoint is not None else onnx,
        device,
        tta=tta,
        precision=precision,
        keep_unknown=keep_unknown,
        window=window,
    )
    out_dir = Path(out_dir)
    start = time.perf_counter()
    workers = min(workers, len(items))
    loader = torch.utils.data.DataLoader(
        _Decoded(items, video_fps),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 * batch_size if workers else None,
    )

    def report_skipped(source: str, problem: str) -> None:
        problems[source] = problem
        warn(f"{source}: {problem}; skipped")

    for source, problem in list(problems.items()):
        report_skipped(source, problem)
    written = 0
    bar = progress_bar("predict", enabled=progress)
    with bar, ThreadPoolExecutor(max_workers=2) as pool:  # PNG/JPEG encoding overlaps the model
        task = bar.add_task("predict", total=None if videos else len(items))

        def skip(source: str, problem: str) -> None:
            report_skipped(source, problem)
            bar.advance(task)

        futures: deque = deque()
        readable = _readable(loader, skip)
        for group in same_size_batches(readable, batch_size, lambda s: s[1].shape[-2:]):
            maps = predictor.class_map(torch.stack([image for _, image in group])).cpu().numpy()
            for (name, image), mask in zip(group, maps, strict=True):
                hwc = image.permute(1, 2, 0).numpy()
                futures.append(pool.submit(write_outputs, out_dir, name, hwc, mask, formats))
            written += len(group)
            bar.advance(task, len(group))
            while len(futures) > 2 * batch_size + 2:  # bounds memory; raises write errors
                futures.popleft().result()
        for f in futures:
            f.result()
    return {
        "inputs": len(items) + len(empty),
        "written": written,
        "skipped": len(problems),
        "skipped_files": list(problems),
        "problems": problems,
        "seconds": time.perf_counter() - start,
    }


__all__ = [
    "FORMATS",
    "VIDEO_SUFFIXES",
    "expand_inputs",
    "predict_inputs",
    "read_video_frames",
    "unique_names",
    "write_outputs",
]
