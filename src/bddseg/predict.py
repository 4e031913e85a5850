"""``bddseg predict``: files, folders, globs and videos in; masks, color maps and overlays out.

:func:`predict_inputs` finds the inputs (:func:`expand_inputs`, :func:`unique_names`),
decodes images and sampled video frames (:func:`read_video_frames`) in DataLoader workers,
runs them through the one model runner (:class:`bddseg.predictor.Predictor`) and writes
what :func:`write_outputs` writes, atomically; each video also gives an overlay video
(:class:`OverlayVideos`). Under a launcher (``shard``) each process takes its share of the
inputs (:func:`shard_items`); a run that was stopped resumes (:func:`predicted`).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from bddseg.classes import BDD100K, Classes
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


def shard_items(items: list[tuple[Path, str]], rank: int, world: int) -> list[tuple[Path, str]]:
    """Process ``rank`` of ``world``'s share: every ``world``-th item of ``items`` sorted by
    output name, from ``rank`` on (a video is one item). Names are unique, so the shares of
    processes given the same inputs never overlap and together hold every item."""
    return sorted(items, key=lambda item: item[1])[rank::world]


def output_paths(out_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    """The files :func:`write_outputs` writes for ``name``, one per format."""
    return [out_dir / FORMATS[f][0] / f"{name}{FORMATS[f][1]}" for f in formats]


def predicted(out_dir: Path, name: str, formats: Sequence[str]) -> bool:
    """Whether ``name`` was predicted already: every format's file exists. Writes are atomic,
    so a file that exists is complete (a stopped run leaves at most a ``.*.tmp``)."""
    return all(p.is_file() for p in output_paths(out_dir, name, formats))


def remove_stale_temps(out_dir: Path, owner: Callable[[str], bool]) -> int:
    """Remove the ``.NAME.SUFFIX.XXXX.tmp`` files a stopped run left under the format folders
    whose output name ``owner`` claims; returns how many. Only this process's own names, so
    that it never removes a file another process is writing right now."""
    removed = 0
    for sub, _ in FORMATS.values():
        for tmp in (out_dir / sub).glob(".*.tmp"):
            final = tmp.name[1:].rsplit(".", 2)[0]  # mkstemp's random part has no dot
            if owner(final.rsplit(".", 1)[0]):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def _name_owner(items: list[tuple[Path, str]], share: list[tuple[Path, str]], rank: int):
    """``owner(output name) -> bool``: the name is of ``share`` (a video's frames ``V_000123``
    are its video's), or of no input at all and this is rank 0."""
    everyone = {name for _, name in items}
    mine = {name for _, name in share}

    def owner(name: str) -> bool:
        frame = re.fullmatch(r"(.+)_\d{6}", name)
        base = frame.group(1) if frame and frame.group(1) in everyone else name
        return base in mine or (base not in everyone and rank == 0)

    return owner


def _video_backend(path: Path) -> str:
    for name in ("av", "cv2"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise BddsegError(
        "cannot decode videos: no video backend installed; pip install av "
        "(or opencv-python-headless)",
        path,
    )


def read_video_frames(
    path: Path, fps: float, done: Callable[[int], bool] | None = None
) -> Iterator[tuple[int, torch.Tensor | None]]:
    """Yield ``(frame index, uint8 RGB (3, H, W))`` for frames sampled ``fps`` times a second
    (the first frame at or after each multiple of ``1 / fps`` s), with PyAV or else OpenCV;
    ``(frame index, None)``, not converted to RGB, for the sampled frames that ``done`` says
    are predicted already."""
    backend = _video_backend(path)
    frames = _frames_av(path) if backend == "av" else _frames_cv2(path)
    next_t = 0.0
    try:
        for idx, t, get in frames:
            if t + 1e-6 >= next_t:
                yield idx, None if done is not None and done(idx) else get()
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
    """Decodes inputs in DataLoader workers; yields ``(name, source, image | None, problem,
    video)``, ``video`` the output name of the video a frame comes from (None for images).
    A frame of a video in ``resume`` whose outputs exist (:func:`predicted`) comes as
    ``(name, source, None, None, video)``: not decoded to RGB, not predicted."""

    def __init__(
        self,
        items: list[tuple[Path, str]],
        video_fps: float,
        resume: tuple[Path, Sequence[str], set[str]] | None = None,
    ):
        self.items = items
        self.video_fps = video_fps
        self.resume = resume  # (out_dir, formats, names of the videos whose frames may skip)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        for path, name in self.items[wid::n]:
            try:
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    for idx, frame in read_video_frames(path, self.video_fps, self._done(name)):
                        yield f"{name}_{idx:06d}", str(path), frame, None, name
                else:
                    yield name, str(path), read_image(path), None, None
            except BddsegError as e:
                yield name, str(path), None, e.problem, None

    def _done(self, video: str) -> Callable[[int], bool] | None:
        if self.resume is None or video not in self.resume[2]:
            return None
        out_dir, formats, _ = self.resume
        return lambda idx: predicted(out_dir, f"{video}_{idx:06d}", formats)


def _readable(
    samples, skip: Callable[[str, str | None], None]
) -> Iterator[tuple[str, torch.Tensor, str | None]]:
    """``(name, image, video)`` of the decoded ``(name, source, image, problem, video)``
    samples; failed samples go to ``skip`` as they come (``(source, problem)``), and so do
    frames predicted already (``(name, None)``)."""
    for name, source, image, problem, video in samples:
        if image is None and problem is None:
            skip(name, None)  # a video frame predicted already
        elif image is None:
            skip(source, problem)
        else:
            yield name, image, video


def _identity(x):
    return x


def legend_classes(mask: np.ndarray, classes: Classes = BDD100K) -> list[int]:
    """The classes (0..K-1) present in ``mask``, in train-id order: what a legend lists."""
    return [int(c) for c in np.unique(mask) if c < classes.num]


def draw_legend(rgb: np.ndarray, present: Sequence[int], classes: Classes = BDD100K) -> np.ndarray:
    """``rgb`` (uint8 ``(H, W, 3)``) with a legend in its top-left corner: on black, one line
    per class of ``present`` (train ids of ``classes``), a square in its color and its name in
    white (PIL's
    built-in default font: nothing is fetched). A legend taller or wider than the image is
    cut at its edges."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if not present:
        return np.asarray(img)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    pad, swatch = 4, 10
    names = classes.names
    boxes = [draw.textbbox((0, 0), names[c], font=font) for c in present]
    line = max(swatch, *(b[3] for b in boxes)) + 2
    right = 3 * pad + swatch + max(b[2] for b in boxes)
    draw.rectangle((0, 0, right - 1, 2 * pad + len(present) * line - 3), fill=(0, 0, 0))
    for i, c in enumerate(present):
        y = pad + i * line
        draw.rectangle((pad, y, pad + swatch - 1, y + swatch - 1), fill=classes.palette[c])
        draw.text((2 * pad + swatch, y), names[c], fill=(255, 255, 255), font=font)
    return np.asarray(img)


def overlay_image(
    image: np.ndarray,
    mask: np.ndarray,
    legend: bool = False,
    classes: Classes = BDD100K,
    color: np.ndarray | None = None,
) -> np.ndarray:
    """The overlay that ``overlay/NAME.jpg`` and the overlay videos hold: :func:`bddseg.colors.overlay`
    in the colours of ``classes``, with the legend of the classes present
    (:func:`draw_legend`) if asked."""
    out = overlay(image, mask, palette=classes.palette, color=color)
    return draw_legend(out, legend_classes(mask, classes), classes) if legend else out


def write_outputs(
    out_dir: Path,
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    formats: Sequence[str],
    legend: bool = False,
    classes: Classes = BDD100K,
) -> None:
    """Write ``masks/NAME.png`` (L, train ids), ``color/NAME.png`` (RGB, the colours of
    ``classes``: BDD100K's official palette by default) and
    ``overlay/NAME.jpg`` (image and colors half and half; 255 shows the image), atomically
    (:func:`bddseg.masks.write_mask`, :func:`bddseg.colors.colorize`,
    :func:`bddseg.colors.overlay`). ``legend`` draws the classes present onto the color map
    and the overlay (:func:`draw_legend`).

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
    color = colorize(mask, classes.palette) if {"color", "overlay"} & set(formats) else None
    if "color" in formats:
        present = legend_classes(mask, classes)
        save(draw_legend(color, present, classes) if legend else color, "color")
    if "overlay" in formats:
        save(overlay_image(image, mask, legend, classes, color), "overlay", quality=90)


class OverlayVideos:
    """``overlay/VIDEO.mp4`` for each input video: the overlays of its sampled frames
    (:func:`overlay_image`), H.264 (PyAV's libx264, yuv420p) at the rate they were sampled.

    A context manager: each video is written to a temporary file and renamed into place when
    the block ends without an error (removed otherwise). Frames must be added in order; odd
    sizes are padded to even ones by repeating the last row or column (yuv420p needs even).
    Every video stays open until the end (a few MB of encoder state each).

    Args:
        rates: frames per second of each video's output, by the video's output name.
    """

    def __init__(
        self,
        out_dir: Path,
        rates: dict[str, float],
        legend: bool = False,
        classes: Classes = BDD100K,
    ):
        self.out_dir, self.rates, self.legend = out_dir, rates, legend
        self.classes = classes
        self.streams: dict[str, Any] = {}
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> OverlayVideos:
        return self

    def __exit__(self, *exc) -> bool:
        return self.stack.__exit__(*exc)

    def add(self, video: str, image: np.ndarray, mask: np.ndarray) -> None:
        import av

        rgb = overlay_image(image, mask, self.legend, self.classes)
        h, w = rgb.shape[:2]
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if video not in self.streams:
            tmp = self.stack.enter_context(atomic_path(self.out_dir / "overlay" / f"{video}.mp4"))
            container = av.open(str(tmp), "w", format="mp4")
            stream = container.add_stream(
                "libx264", rate=Fraction(self.rates[video]).limit_denominator(1001)
            )
            stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
            self.stack.callback(_finish_video, container, stream)  # before the rename
            self.streams[video] = (container, stream)
        container, stream = self.streams[video]
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)


def _finish_video(container, stream) -> None:
    try:
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    finally:
        container.close()


def video_rate(path: Path, fps: float) -> float:
    """Frames per second that :func:`read_video_frames` yields from ``path`` sampled at
    ``fps``: ``fps``, or the video's own rate where that is lower (every frame is kept)."""
    import av

    try:
        with av.open(str(path)) as container:
            native = container.streams.video[0].average_rate
    except Exception:  # unreadable: decoding names the problem; the rate is moot
        native = None
    return min(fps, float(native)) if native else fps


def _rank_prefix(shard: tuple[int, int]) -> str:
    """``[rank R/W] `` before a process's own lines when there are several; else nothing."""
    return f"[rank {shard[0]}/{shard[1]}] " if shard[1] > 1 else ""


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
    legend: bool = False,
    runtime: str = "onnxruntime",
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Predict every image, folder (recursive .jpg/.jpeg/.png), glob and video in ``inputs``.

    Writes, per image or sampled video frame (``STEM_000123``, the source frame index),
    the files of :func:`write_outputs` under ``out_dir``, at the input's size (``legend``:
    color maps and overlays list the classes present), and with ``overlay`` among the
    ``formats``, ``overlay/VIDEO.mp4`` for each video (:class:`OverlayVideos`; needs PyAV,
    skipped with a warning where only OpenCV decodes). Masks are
    official submissions (0..18; 255 only with ``keep_unknown``, which the official
    evaluator counts as a miss). DataLoader workers decode ahead; same-size images are
    batched; ``window`` (h, w) predicts in overlapping tiles (see :class:`bddseg.predictor.Predictor`).
    A checkpoint runs at ``precision``, fp32 unless asked (see
    :meth:`bddseg.predictor.Predictor.from_checkpoint`); an ONNX file runs as exported, on
    ``runtime`` (``onnxruntime`` or ``openvino``).
    An input that cannot be read is reported on stderr (one line) and skipped; the others
    are still written (``bddseg predict`` then exits 2). Stem clashes are resolved by
    :func:`unique_names`.

    ``shard`` ``(rank, world)``: this process predicts its share of the inputs only
    (:func:`shard_items`; a launcher's ``RANK`` and ``WORLD_SIZE``), into the same ``out_dir``
    as the others; inputs that give no file are reported by rank 0. Unless ``overwrite``, an
    image whose every format's file exists is not predicted again (one line says how many),
    nor is a video frame whose files exist where no overlay video is due (a video whose
    ``overlay/VIDEO.mp4`` is missing is predicted whole, to write it); temporary files that
    a stopped run left for this share's outputs are removed first.

    Returns:
        ``{"inputs": n, "written": n, "already": n, "skipped": n, "skipped_files": [...],
        "problems": {path: reason}, "seconds": s}``: ``inputs`` counts the files found and the
        inputs that gave none (a missing file, an empty folder), of this share; ``written``
        the images and video frames predicted; ``already`` those kept from an earlier run;
        ``skipped`` the inputs that failed.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise BddsegError(f"unknown output format(s) {bad} (valid: {', '.join(FORMATS)})")
    if batch_size < 1 or video_fps <= 0 or workers < 0:
        raise BddsegError("batch_size must be >= 1, video_fps > 0 and workers >= 0")
    if (checkpoint is None) == (onnx is None):
        raise BddsegError("give exactly one of checkpoint or onnx")
    rank, world = shard
    if not 0 <= rank < world:
        raise BddsegError(f"rank {rank} is not in 0..{world - 1} (RANK and WORLD_SIZE)")
    all_items, empty = expand_inputs(inputs)
    if not all_items and not empty:
        raise BddsegError("no inputs given")
    items = shard_items(all_items, rank, world)
    empty = empty if rank == 0 else {}
    problems = dict(empty)
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir, _name_owner(all_items, items, rank))
    share = len(items)
    if not overwrite:
        todo = [
            (p, n)
            for p, n in items
            if p.suffix.lower() in VIDEO_SUFFIXES or not predicted(out_dir, n, formats)
        ]
        already = len(items) - len(todo)
        if already:
            print(f"{_rank_prefix(shard)}skipping {already} inputs already predicted")
        items = todo
    else:
        already = 0
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
        runtime=runtime,
    )
    start = time.perf_counter()

    def report_skipped(source: str, problem: str) -> None:
        problems[source] = problem
        warn(f"{source}: {problem}; skipped")

    for source, problem in list(problems.items()):
        report_skipped(source, problem)
    rates = {}
    if videos and "overlay" in formats:
        if importlib.util.find_spec("av") is None:
            warn("no overlay video: writing one needs PyAV (pip install av); frames only")
        else:
            rates = {
                n: video_rate(p, video_fps)
                for p, n in items
                if p in videos and (overwrite or not (out_dir / "overlay" / f"{n}.mp4").is_file())
            }
    # frames of the other videos whose files exist are not predicted (rates: written whole)
    kept_videos = {n for p, n in items if p in videos} - set(rates)
    resume = None if overwrite else (out_dir, formats, kept_videos)
    workers = min(workers, len(items))
    loader = torch.utils.data.DataLoader(
        _Decoded(items, video_fps, resume),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=2 * batch_size if workers else None,
    )
    written = 0
    bar = progress_bar("predict", enabled=progress, rate="img")
    with (
        bar,
        OverlayVideos(
            out_dir, rates, legend, predictor.classes
        ) as overlay_videos,  # closed after the pools
        ThreadPoolExecutor(max_workers=2) as pool,  # PNG/JPEG encoding overlaps the model
        ThreadPoolExecutor(max_workers=1) as video_pool,  # one thread: frames stay in order
    ):
        task = bar.add_task("predict", total=None if videos else len(items))
        frames_kept = 0

        def skip(source: str, problem: str | None) -> None:
            nonlocal frames_kept
            if problem is None:
                frames_kept += 1
            else:
                report_skipped(source, problem)
            bar.advance(task)

        futures: deque = deque()
        readable = _readable(loader, skip)
        for group in same_size_batches(readable, batch_size, lambda s: s[1].shape[-2:]):
            maps = predictor.class_map(torch.stack([s[1] for s in group])).cpu().numpy()
            for (name, image, video), mask in zip(group, maps, strict=True):
                hwc = image.permute(1, 2, 0).numpy()
                futures.append(
                    pool.submit(
                        write_outputs,
                        out_dir,
                        name,
                        hwc,
                        mask,
                        formats,
                        legend,
                        predictor.classes,
                    )  # fmt: skip
                )
                if video in rates:
                    futures.append(video_pool.submit(overlay_videos.add, video, hwc, mask))
            written += len(group)
            bar.advance(task, len(group))
            while len(futures) > 2 * batch_size + 2:  # bounds memory; raises write errors
                futures.popleft().result()
        for f in futures:
            f.result()
        bar.stop_task(task)  # its last line gives the whole run's images/s
    return {
        "inputs": share + len(empty),
        "written": written,
        "already": already + frames_kept,
        "skipped": len(problems),
        "skipped_files": list(problems),
        "problems": problems,
        "seconds": time.perf_counter() - start,
    }


__all__ = [
    "FORMATS",
    "VIDEO_SUFFIXES",
    "OverlayVideos",
    "draw_legend",
    "expand_inputs",
    "legend_classes",
    "output_paths",
    "overlay_image",
    "predict_inputs",
    "predicted",
    "read_video_frames",
    "remove_stale_temps",
    "shard_items",
    "unique_names",
    "video_rate",
    "write_outputs",
]
