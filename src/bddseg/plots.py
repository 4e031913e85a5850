"""Figures: class statistics, loss curves, IoU vs pixel share, confusion matrices, sample grids.

The one picture module, and the only one that imports matplotlib: the report, evaluation,
training (loss curves) and the CLI call it directly, handing it data, not paths to re-read. Figures are built on a :class:`~matplotlib.figure.Figure` with the Agg
canvas, never pyplot, so nothing here touches global state and it runs headless. Each
``*_figure`` function returns a figure; each ``plot_*`` function writes one atomically (PNG,
or JPEG by suffix) and returns the path.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from bddseg.classes import BDD100K, Classes
from bddseg.errors import BddsegError
from bddseg.files import atomic_path
from bddseg.metrics import (
    MIOU_LABEL,
    OFFICIAL_LABEL,
    WITH_UNKNOWN_LABEL,
    classes_of,
    miou_label,
    official_label,
    with_unknown_keys,
)
from bddseg.runs import CONFUSION
from bddseg.trainlog import read_log

# A light, seaborn-like look that sits well on the report's white cards.
STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "#F4F5F9",
    "axes.edgecolor": "#F4F5F9",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "white",
    "grid.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10.5,
    "axes.labelcolor": "#333842",
    "xtick.color": "#4A505C",
    "ytick.color": "#4A505C",
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "font.family": "DejaVu Sans",
}
DPI = 110
INK = "#333842"
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
SHARE_COLOR = "#C44E52"
UNKNOWN_CHART_COLOR = "#A0A4AD"  # the palette draws unknown black: too heavy for a bar
LABEL = {"textcoords": "offset points", "fontsize": 7.5, "color": INK}  # small value labels


def class_color(name: str, classes: Classes | None = None) -> str:
    """Hex color of a class of ``classes`` (default BDD100K's) for charts: its palette color,
    gray for ``unknown`` or a name not in the set."""
    classes = BDD100K if classes is None else classes
    if name not in classes.names:
        return UNKNOWN_CHART_COLOR
    return "#{:02x}{:02x}{:02x}".format(*classes.palette[classes.names.index(name)])


def _styled(build):
    """Run a figure builder inside the style (rc params apply when artists are created)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.set_layout_engine("constrained", h_pad=0.08, w_pad=0.08)
    return fig


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """Encode a figure as PNG (``fmt="png"``) or JPEG (``"jpg"``/``"jpeg"``) bytes."""
    buf = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        fig.savefig(buf, format="jpeg", dpi=DPI, pil_kwargs={"quality": 85, "optimize": True})
    else:
        fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` atomically; the suffix (.png, .jpg) picks the format."""
    path = Path(path)
    data = figure_bytes(fig, path.suffix.lower().lstrip(".") or "png")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#777")
    ax.set(xticks=[], yticks=[])


def _class_ticks(ax, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", rotation_mode="anchor")


# ---------------------------------------------------------------- class statistics
@_styled
def class_stats_figure(stats: Mapping, log: bool = True) -> Figure:
    """Pixel share per class (bars labelled with image counts) and class weights per method.

    ``stats``: ``{"pixel_share": {name: percent}, "image_count": {name: int},
    "weights": {method: {name: float}}, "num_images": int}``.
    """
    names = list(stats["pixel_share"])
    share = np.array([max(stats["pixel_share"][n] or 0.0, 1e-6) for n in names])
    counts, weights = stats.get("image_count") or {}, stats.get("weights") or {}
    fig = _figure(12, 7.5 if weights else 4.8)
    axes = fig.subplots(2 if weights else 1, 1, squeeze=False, sharex=True)[:, 0]
    x = np.arange(len(names))
    ax = axes[0]
    ax.bar(x, share, color=[class_color(n) for n in names], edgecolor=INK, linewidth=0.4)
    ax.set_yscale("log" if log else "linear")
    ax.set_ylabel("pixels (%)")
    total = stats.get("num_images")
    images = f" ({total:,} images)" if total else ""
    ax.set_title(f"Pixel share per class{images}; bars labelled with image counts")
    for xi, n, s in zip(x, names, share, strict=True):
        if n in counts:
            ax.annotate(f"{counts[n]:,}", (xi, s), xytext=(0, 2), ha="center", **LABEL)
    ax.margins(y=0.15)
    if weights:
        width = 0.8 / len(weights)
        for k, (method, w) in enumerate(weights.items()):
            vals = [w.get(n) or 0.0 for n in names]
            pos = x - 0.4 + width * (k + 0.5)
            axes[1].bar(pos, vals, width, label=method, color=COLORS[k % len(COLORS)])
        axes[1].set(ylabel="class weight", title="Class weights per method")
        axes[1].legend(ncols=len(weights), loc="upper left")
    _class_ticks(axes[-1], names)
    return fig


def plot_class_stats(stats: Mapping, path: str | Path, log: bool = True) -> Path:
    """Bar chart of the per-class pixel share (log scale by default) with image counts."""
    return save_figure(class_stats_figure(stats, log=log), path)


# ---------------------------------------------------------------- loss curves
def _xy(cols: Mapping, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [
        (s, v) for s, v in zip(cols["step"], cols.get(key, []), strict=False) if None not in (s, v)
    ]
    arr = np.array(pts, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _ema(y: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    out, acc = np.empty_like(y), y[0]
    for i, v in enumerate(y):
        acc = out[i] = alpha * v + (1 - alpha) * acc
    return out


def _draw_run(ax_loss, ax_miou, cols: Mapping, c_train: str, c_val: str, label: str = "") -> None:
    sx, train = _xy(cols, "train_loss")
    vx, val = _xy(cols, "val_loss")
    mx, miou = _xy(cols, "val_miou")
    prefix = f"{label} " if label else ""
    if len(train) > 20:  # noisy per-interval losses: faint raw curve, smoothed on top
        ax_loss.plot(sx, train, color=c_train, lw=0.8, alpha=0.35)
        ax_loss.plot(sx, _ema(train), color=c_train, lw=1.8, label=f"{prefix}train (smoothed)")
    elif len(train):
        ax_loss.plot(sx, train, color=c_train, lw=1.8, marker="o", ms=3, label=f"{prefix}train")
    if len(val):
        ls = "--" if label else "-"
        ax_loss.plot(
            vx, val, color=c_val, lw=1.8, ls=ls, marker="o", ms=3.5, label=f"{prefix}valid"
        )
    if len(miou):
        b = int(np.argmax(miou))
        best = f"{label or 'val'} mIoU (best {miou[b]:.1%} at step {mx[b]:,.0f})"
        ax_miou.plot(mx, miou, color=c_val, lw=1.8, marker="o", ms=3.5, label=best)
        ax_miou.plot(mx[b], miou[b], marker="*", ms=13, color=c_val, mec="white", zorder=3)


def _loss_axes(fig: Figure):
    return fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})


def _finish_loss_axes(ax_loss, ax_miou) -> None:
    ax_loss.set(title="Loss", xlabel="step", ylabel="loss")
    ax_miou.set(title="Validation mIoU", xlabel="step", ylabel=MIOU_LABEL)
    for ax in (ax_loss, ax_miou):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax_loss.lines:
        ax_loss.set_ylim(bottom=0)
        ax_loss.legend(loc="upper right")
    else:
        _note(ax_loss, "no rows in the log")
    if ax_miou.lines:
        ax_miou.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax_miou.margins(y=0.2)
        ax_miou.legend(loc="lower right")
    else:
        _note(ax_miou, "no validation rows")


@_styled
def loss_figure(cols: Mapping) -> Figure:
    """Train (raw and smoothed) and valid loss vs step, and val mIoU vs step, of one run.

    ``cols``: the columns of a ``log.csv`` as :func:`bddseg.trainlog.read_log` returns them.
    """
    fig = _figure(12, 4.2)
    ax_loss, ax_miou = _loss_axes(fig)
    _draw_run(ax_loss, ax_miou, cols, COLORS[0], COLORS[1])
    _finish_loss_axes(ax_loss, ax_miou)
    return fig


@_styled
def loss_multi_figure(runs: Mapping[str, Mapping]) -> Figure:
    """Loss and val mIoU curves of several runs (``{label: columns}``), one color per run."""
    fig = _figure(12, 4.6)
    ax_loss, ax_miou = _loss_axes(fig)
    for k, (label, cols) in enumerate(runs.items()):
        c = COLORS[k % len(COLORS)]
        _draw_run(ax_loss, ax_miou, cols, c, c, label)
    _finish_loss_axes(ax_loss, ax_miou)
    return fig


def plot_loss_curves(log_csv: str | Path, path: str | Path) -> Path:
    """Train and valid loss vs step, with val mIoU in a second panel."""
    return save_figure(loss_figure(read_log(log_csv)), path)


def plot_loss_curves_multi(runs: Mapping[str, str | Path], path: str | Path) -> Path:
    """Overlay the loss and val mIoU curves of several runs: ``{label: log_csv}``."""
    return save_figure(loss_multi_figure({k: read_log(v) for k, v in runs.items()}), path)


# ---------------------------------------------------------------- per-class IoU
def _labelled_share(metrics: Mapping, names: Sequence[str]) -> dict[str, float]:
    """Each of the K classes' share of the labelled pixels (255 left out), in %, from the
    ``with_unknown`` view's share of all pixels."""
    of_all = (metrics.get("with_unknown") or {}).get("pixel_share") or {}
    share = {n: of_all.get(n) or 0.0 for n in names}
    total = sum(share.values())
    return {n: 100 * v / total if total else 0.0 for n, v in share.items()}


@_styled
def iou_share_figure(metrics: Mapping) -> Figure:
    """Per-class IoU bars sorted by IoU, the pixel share (%) drawn over them on a second axis.

    The classes, their names and colours, are the ones ``metrics["classes"]`` records
    (:func:`bddseg.metrics.classes_of`; BDD100K's 19 without it). The official view leads
    (``metrics["official"]``: the K classes, 255 ignored): its
    per-class IoU are the bars, its mIoU the dotted line, and the share is of the labelled
    pixels. The ``with_unknown`` view's 19-class mIoU is the dashed gray line, labelled as
    that view. A class whose IoU is undefined (absent from the truth and never predicted)
    sits at the left, labelled n/a.
    """
    classes = classes_of(metrics)
    k = classes.num
    ious = {n: metrics["official"]["iou"].get(n) for n in classes.names}
    order = sorted(ious, key=lambda n: -1.0 if ious[n] is None else ious[n])
    iou = np.array([ious[n] or 0.0 for n in order])
    labelled = _labelled_share(metrics, classes.names)
    share = np.array([labelled.get(n, 0.0) for n in order])
    fig = _figure(12, 5.6)
    # fixed margins (what constrained layout finds for the 20 class names), at a third of
    # the figure's drawing time: the evaluation draws this figure on every run
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.05, right=0.953, bottom=0.19, top=0.945)
    ax = fig.subplots()
    x = np.arange(len(order))
    colors = [class_color(n, classes) for n in order]
    ax.bar(x, iou, color=colors, alpha=0.88, edgecolor=INK, linewidth=0.4)
    miou = metrics["official"].get("miou")
    if miou is not None:
        ax.axhline(miou, color=INK, lw=1.2, ls=":", label=f"{miou_label(k)} {miou:.3f}")
    other = (metrics.get("with_unknown") or {}).get(with_unknown_keys(k)[0])
    if other is not None:
        text = f"second view: mIoU ({k} classes, {WITH_UNKNOWN_LABEL}) {other:.3f}"
        ax.axhline(other, color=UNKNOWN_CHART_COLOR, lw=1, ls="--", label=text)
    ax.set(ylim=(0, 1.05), ylabel=f"IoU ({official_label(k)}; bars)", xlabel="class")
    ax.set_title("Class IoU vs pixel share (sorted by IoU)")
    _class_ticks(ax, order)
    ax2 = ax.twinx()  # drawn over the bars: the line, then the bar labels on top of it
    ax2.grid(False)
    ax2.plot(x, share, color=SHARE_COLOR, marker="o", ms=4.5, lw=1.6, mec="white")
    top = max(share.max(), 1.0)
    ax2.set_ylim(-0.02 * top, 1.1 * top)
    ax2.set_ylabel("labelled pixels (%, line)", color=SHARE_COLOR)
    ax2.tick_params(axis="y", colors=SHARE_COLOR)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # on the top axes, over the share line; upper left, where the bars are lowest
        frame = {"frameon": True, "facecolor": "white", "edgecolor": "none", "framealpha": 0.85}
        ax2.legend(handles, labels, loc="upper left", **frame)
    box = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7}
    for xi, n, v in zip(x, order, iou, strict=True):
        text = "n/a" if ious[n] is None else f"{v:.2f}"
        lift = 2 if v > 0.05 else 7  # clear the pixel-share markers that sit near zero
        ax2.annotate(
            text, (xi, v), xycoords=ax.transData, xytext=(0, lift), ha="center", bbox=box, **LABEL
        )
    return fig


def plot_iou_vs_share(metrics: Mapping, path: str | Path) -> Path:
    """Per-class IoU bars sorted by IoU with the pixel percentage on a second axis."""
    return save_figure(iou_share_figure(metrics), path)


@_styled
def iou_delta_figure(
    iou: Mapping[str, Mapping[str, float | None]], view: str = OFFICIAL_LABEL
) -> Figure:
    """Per-class IoU of each run minus the first run's, in points: ``{run: {class: iou}}``
    from the metrics view named by ``view`` (the report hands over the official one's,
    ``metrics["official"]["iou"]``).

    With two runs the bars are green where the second run is better, red where worse. A class
    whose IoU is undefined in either run gets no bar and an n/a label.
    """
    runs = list(iou)
    ref, others = runs[0], runs[1:]
    names = list(iou[ref])
    fig = _figure(6.2, 1.1 + 0.27 * len(names))
    ax = fig.subplots()
    y = np.arange(len(names))
    height = 0.8 / max(len(others), 1)
    for k, run in enumerate(others):
        a, b = iou[ref], iou[run]
        d = np.array(
            [np.nan if None in (a.get(n), b.get(n)) else 100 * (b[n] - a[n]) for n in names]
        )
        two = ["#2F9E44" if v >= 0 else "#C92A2A" for v in np.nan_to_num(d)]
        pos = y - 0.4 + height * (k + 0.5)
        color = two if len(others) == 1 else COLORS[(k + 1) % len(COLORS)]
        ax.barh(pos, np.nan_to_num(d), height, color=color, alpha=0.85, label=f"{run} − {ref}")
        for yi, v in zip(pos, d, strict=True):
            text, v = ("n/a", 0.0) if np.isnan(v) else (f"{v:+.1f}", v)
            side = (
                {"xytext": (3, 0), "ha": "left"} if v >= 0 else {"xytext": (-3, 0), "ha": "right"}
            )
            ax.annotate(text, (v, yi), va="center", **side, **LABEL)
    ax.axvline(0, color=INK, lw=0.8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.18)
    ax.set_xlabel(f"IoU difference vs {ref} (points; {view})")
    if len(others) > 1:
        ax.legend(loc="lower right")
    return fig


# ---------------------------------------------------------------- confusion matrices
@_styled
def _matrix_figure(
    values: np.ndarray, text: list[list[str]], classes: Sequence[str], **labels
) -> Figure:
    """A heat map of ``values`` in 0..1 (NaN drawn gray) with ``text`` in the cells."""
    n = len(classes)
    w, h = 3.1 + 0.45 * n, 1.85 + 0.45 * n
    fig = _figure(w, h)
    fig.set_layout_engine(None)  # fixed margins: constrained layout is slow with n * n labels
    fig.subplots_adjust(left=1.25 / w, right=1 - 0.75 / w, bottom=1.35 / h, top=1 - 0.45 / h)
    ax = fig.subplots()
    ax.grid(False)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#ECEDF1")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1)
    for (i, j), t in np.ndenumerate(np.array(text, dtype=object)):
        if t:
            dark = np.isfinite(values[i, j]) and values[i, j] > 0.55
            ax.text(
                j,
                i,
                t,
                ha="center",
                va="center",
                fontsize=7.5,
                color="white" if dark else "#273040",
            )
    _class_ticks(ax, classes)
    ax.set_yticks(range(n), classes)
    ax.set(xlabel=labels["xlabel"], ylabel=labels["ylabel"], title=labels["title"])
    ax.spines[:].set_visible(False)
    cb = fig.colorbar(im, ax=ax, shrink=0.6, pad=0.015, fraction=0.04)
    cb.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    cb.set_label(labels["cbar"])
    cb.outline.set_visible(False)
    return fig


def confusion_figure(matrix, classes: Sequence[str]) -> Figure:
    """Row-normalised pixel confusion matrix, ``matrix`` (n, n) of pixel counts with rows =
    truth and columns = prediction; cells in % of the true class's pixels (blank under 0.5%)."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.full_like(m, np.nan), where=rows > 0)
    text = [[f"{100 * v:.0f}" if v >= 0.005 else "" for v in row] for row in np.nan_to_num(norm)]
    for i in np.flatnonzero(rows[:, 0] == 0):
        text[i][len(classes) // 2] = "no pixels of this class in the truth"
    return _matrix_figure(
        norm,
        text,
        classes,
        title="Pixel confusion matrix (row-normalised, % of true pixels)",
        xlabel="predicted",
        ylabel="truth",
        cbar="share of the true class's pixels",
    )


def image_matrix_figure(
    matrix, classes: Sequence[str], support: Mapping[str, int] | None = None
) -> Figure:
    """The image-level class matrix of ``confusion.json`` (see ``metrics.image_level_matrix``).

    Cells are labelled with image counts (blank for 0) and shaded by count / support of the
    row (images containing class i, capped at 1); without ``support``, by count / the row's
    largest cell.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if support:
        denom = np.array([[support.get(c) or 0] for c in classes], dtype=np.float64)
    else:
        denom = m.max(axis=1, keepdims=True)
    shade = np.minimum(np.divide(m, denom, out=np.full_like(m, np.nan), where=denom > 0), 1.0)
    return _matrix_figure(
        shade,
        [[f"{int(v):,}" if v else "" for v in row] for row in m],
        classes,
        title="Image-level matrix (classification view, image counts)",
        xlabel="predicted present (diagonal: images where the class was predicted)",
        ylabel="present in truth (off-diagonal: missed here)",
        cbar="share of the images containing the true class",
    )


def plot_confusion(matrix, classes: Sequence[str], path: str | Path) -> Path:
    """Row-normalised pixel confusion heat map."""
    return save_figure(confusion_figure(matrix, classes), path)


def plot_image_matrix(
    matrix, classes: Sequence[str], path: str | Path, support: Mapping[str, int] | None = None
) -> Path:
    """Image-level class matrix heat map, labelled with image counts."""
    return save_figure(image_matrix_figure(matrix, classes, support), path)


EVAL_PLOTS = ("iou_vs_share.png", "confusion.png", "image_confusion.png")


def write_eval_plots(
    eval_dir: str | Path, metrics: Mapping, confusion: Mapping, workers: int = 1
) -> list[Path]:
    """Write ``iou_vs_share.png``, ``confusion.png`` and (when ``confusion`` has an
    ``image_matrix``) ``image_confusion.png`` into ``eval_dir``; returns their paths.

    ``metrics`` is the content of ``metrics.json`` and ``confusion`` that of ``confusion.json``
    (as :func:`bddseg.evaluate.write_outputs` has them in memory). With ``workers`` > 1 (and
    ``fork``, i.e. Linux) this process draws the first figure while up to that many forked
    processes draw the others: each takes 0.25-0.3 s of text layout and rasterising.
    """
    eval_dir = Path(eval_dir)
    if "matrix" not in confusion:
        raise BddsegError("no 'matrix' in the confusion data", eval_dir / CONFUSION)
    classes = confusion.get("classes") or list(classes_of(metrics).model_names("class"))
    jobs = [
        (plot_iou_vs_share, (metrics, eval_dir / EVAL_PLOTS[0])),
        (plot_confusion, (confusion["matrix"], classes, eval_dir / EVAL_PLOTS[1])),
    ]
    if "image_matrix" in confusion:
        support = (metrics.get("image_level") or {}).get("support")
        path = eval_dir / EVAL_PLOTS[2]
        jobs.append((plot_image_matrix, (confusion["image_matrix"], classes, path, support)))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [draw(*args) for draw, args in jobs]
    context = multiprocessing.get_context("fork")  # the children inherit matplotlib, imported
    (first, first_args), rest = jobs[0], jobs[1:]
    with ProcessPoolExecutor(min(workers, len(rest)), mp_context=context) as pool:
        futures = [pool.submit(draw, *args) for draw, args in rest]
        return [first(*first_args)] + [f.result() for f in futures]  # this process draws one


# ---------------------------------------------------------------- sample grids
@_styled
def sample_grid_figure(
    tiles: Sequence[Sequence[np.ndarray | None]],
    titles: Sequence[Sequence[str]] | None = None,
    col_titles: Sequence[str] | None = None,
    tile_width: float = 3.0,
) -> Figure:
    """A grid of RGB tiles (uint8 (H, W, 3), rows of them); ``None`` leaves a cell empty.

    ``titles`` go above each tile; ``col_titles`` above the first row.
    """
    rows, cols = len(tiles), max(len(r) for r in tiles)
    first = next(t for r in tiles for t in r if t is not None)
    tile_h = tile_width * first.shape[0] / first.shape[1] + (0.28 if titles else 0.05)
    fig = _figure(cols * tile_width, rows * tile_h + (0.3 if col_titles else 0))
    fig.set_layout_engine("constrained", h_pad=0.02, w_pad=0.02, hspace=0.01, wspace=0.01)
    axes = fig.subplots(rows, cols, squeeze=False)
    for (i, j), ax in np.ndenumerate(axes):
        ax.set_axis_off()
        if j < len(tiles[i]) and tiles[i][j] is not None:
            ax.imshow(tiles[i][j], interpolation="antialiased")
        label = titles[i][j] if titles and j < len(titles[i]) else ""
        if col_titles and i == 0:
            label = f"{col_titles[j]}\n{label}" if label else col_titles[j]
        ax.set_title(label, fontsize=8.5, fontweight="normal", color=INK)
    return fig


def plot_sample_grid(tiles, path: str | Path, titles=None, col_titles=None) -> Path:
    """Write a grid of image tiles (see :func:`sample_grid_figure`); .jpg keeps photos small."""
    return save_figure(sample_grid_figure(tiles, titles, col_titles), path)
