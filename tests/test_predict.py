"""predict_inputs: files, folders, globs and videos in; masks, color maps and overlays out
(bddseg.predict), on a random U-Net at small, odd sizes (CPU, seconds)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import _image, _save

from bddseg.errors import BddsegError
from bddseg.labels import PALETTE
from bddseg.predict import (
    draw_legend,
    legend_classes,
    predict_inputs,
    shard_items,
    unique_names,
)
from bddseg.predictor import load_predictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _no_temp_files(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_writes_mask_color_overlay_at_input_size(ckpt, tmp_path):
    sizes = {"a": (100, 150), "b": (97, 131)}  # not multiples of 32
    for stem, (h, w) in sizes.items():
        _save(tmp_path / "in" / f"{stem}.png", _image(h, w))
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(tmp_path / "in")], out, checkpoint=ckpt, workers=0, progress=False
    )
    assert summary["written"] == 2 and summary["skipped"] == 0
    predictor = load_predictor(ckpt)
    for stem, (h, w) in sizes.items():
        mask = Image.open(out / "masks" / f"{stem}.png")
        color = Image.open(out / "color" / f"{stem}.png")
        overlay = Image.open(out / "overlay" / f"{stem}.jpg")
        assert (mask.mode, mask.size) == ("L", (w, h))
        assert (color.mode, color.size) == ("RGB", (w, h))
        assert (overlay.format, overlay.size) == ("JPEG", (w, h))
        m = np.asarray(mask)
        assert m.max() <= 18  # unknown resolved: a valid official submission
        np.testing.assert_array_equal(m, predictor.predict(tmp_path / "in" / f"{stem}.png"))
        lut = np.array(PALETTE, dtype=np.uint8)
        np.testing.assert_array_equal(np.asarray(color), lut[m])
    _no_temp_files(out)


def test_kept_unknown_is_written_as_255_and_drawn_black(unknown_ckpt, tmp_path):
    _save(tmp_path / "in" / "x.png", _image(64, 96))
    out = tmp_path / "out"
    predict_inputs(
        [str(tmp_path / "in" / "x.png")], out, checkpoint=unknown_ckpt, keep_unknown=True,
        workers=0, progress=False,
    )  # fmt: skip
    assert (np.asarray(Image.open(out / "masks" / "x.png")) == 255).all()
    assert (np.asarray(Image.open(out / "color" / "x.png")) == 0).all()  # 255 is drawn black


def test_folder_glob_and_stem_clashes(ckpt, tmp_path):
    src = tmp_path / "in"
    _save(src / "a" / "x.png", _image(40, 60))
    _save(src / "b" / "x.jpg", _image(40, 60))
    _save(src / "b" / "deep" / "y.png", _image(48, 64))
    _save(tmp_path / "other" / "z.png", _image(40, 60))
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(src), str(tmp_path / "other" / "*.png"), str(src / "a" / "x.png")],  # x.png twice
        out, checkpoint=ckpt, formats=["mask"], batch_size=2, workers=2, progress=False,
    )  # fmt: skip
    assert summary["written"] == 4 and summary["skipped"] == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "a__x.png",
        "b__x.png",
        "y.png",
        "z.png",
    ]
    assert not (out / "color").exists() and not (out / "overlay").exists()


def test_unique_names_same_folder_two_extensions(tmp_path):
    paths = [tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "y.png"]
    assert unique_names(paths) == ["x_jpg", "x_png", "y"]


def test_unreadable_inputs_are_reported_and_skipped(ckpt, tmp_path, capsys):
    _save(tmp_path / "in" / "good.png", _image(40, 60))
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    missing = str(tmp_path / "nope.jpg")
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(tmp_path / "in"), missing], out, checkpoint=ckpt, workers=0, progress=False
    )
    assert summary["written"] == 1 and summary["skipped"] == 3
    assert set(summary["skipped_files"]) == {
        str(tmp_path / "in" / "broken.jpg"), str(tmp_path / "in" / "empty.png"), missing,
    }  # fmt: skip
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all("skipped" in w for w in warnings)
    assert "broken.jpg" in err
    _no_temp_files(out)


def test_cli_predict(ckpt, tmp_path, capsys):
    from bddseg.cli import main

    _save(tmp_path / "in" / "f.png", _image(40, 60))
    out = tmp_path / "out"
    rc = main(["predict", str(tmp_path / "in"), "--checkpoint", str(ckpt), "--out", str(out),
               "--format", "mask,color", "--tta", "flip", "--workers", "0", "--legend"])  # fmt: skip
    assert rc == 0
    assert (out / "masks" / "f.png").is_file() and (out / "color" / "f.png").is_file()
    assert (np.asarray(Image.open(out / "color" / "f.png"))[1, 1] == 0).all()  # the legend's box
    assert "wrote 1 prediction(s)" in capsys.readouterr().out


def test_cli_predict_keeps_going_then_exits_2_naming_the_bad_input(ckpt, tmp_path, capsys):
    """Two good photos and a JPEG cut short: both masks written, the bad one named in a
    warning and in the last line, exit 2 (a script must see that an input failed)."""
    from bddseg.cli import EXIT_BAD_INPUT, main

    folder = tmp_path / "in"
    good = [_save(folder / "a.jpg", _image(40, 60, 1)), _save(folder / "c.jpg", _image(40, 60, 2))]
    bad = _save(folder / "b.jpg", _image(40, 60, 3))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(out)]
    assert main([*argv, "--format", "mask", "--workers", "0"]) == EXIT_BAD_INPUT
    predictor = load_predictor(ckpt)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "c.png"]
    for image in good:
        mask = np.asarray(Image.open(out / "masks" / f"{image.stem}.png"))
        np.testing.assert_array_equal(mask, predictor.predict(image))
    captured = capsys.readouterr()
    assert "wrote 2 prediction(s)" in captured.out and "skipped 1" in captured.out
    lines = captured.err.splitlines()
    why = "cannot decode image: the file is truncated or corrupt"
    assert f"warning: {bad}: {why}; skipped" in lines
    assert lines[-1] == f"error: predict: 1 of 3 inputs failed: {bad} ({why})"
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]


def test_cli_predict_names_every_failed_input_up_to_ten(ckpt, tmp_path, capsys):
    from bddseg.cli import EXIT_BAD_INPUT, main

    missing = [str(tmp_path / f"nope{i:02d}.jpg") for i in range(12)]
    argv = ["predict", *missing, "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]
    assert main(argv) == EXIT_BAD_INPUT
    last = capsys.readouterr().err.splitlines()[-1]
    named = "; ".join(f"{m} (no such file or folder)" for m in missing[:10])
    more = "and 2 more (see the warnings above)"
    assert last == f"error: predict: 12 of 12 inputs failed: {named}; {more}"


def test_bad_arguments(ckpt, tmp_path):
    with pytest.raises(BddsegError, match="format"):
        predict_inputs([str(tmp_path)], tmp_path / "o", checkpoint=ckpt, formats=["svg"])


def test_video_without_backend_says_what_to_install(ckpt, tmp_path, monkeypatch):
    video = tmp_path / "drive.mp4"
    video.write_bytes(b"\0" * 16)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("av", "cv2") else real(name, *a),
    )
    with pytest.raises(BddsegError, match="pip install av"):
        predict_inputs([str(video)], tmp_path / "out", checkpoint=ckpt, progress=False)


needs_av = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV not installed")


def _write_video(path: Path, frames: int, rate: int) -> None:
    """A 96x64 MPEG-4 video of ``frames`` gray frames, each lighter than the last."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.full((64, 96, 3), i * 8, np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@needs_av
def test_video_frames_sampled_and_named(ckpt, tmp_path):
    video = tmp_path / "drive.mp4"
    _write_video(video, frames=30, rate=10)  # 3 s at 10 fps
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(video)], out, checkpoint=ckpt, formats=["mask"], video_fps=2.0, workers=0,
        progress=False,
    )  # fmt: skip
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"drive_{i:06d}.png" for i in (0, 5, 10, 15, 20, 25)]
    assert summary["written"] == 6
    assert Image.open(out / "masks" / names[0]).size == (96, 64)
    assert not (out / "overlay").exists()  # no overlay asked for: no overlay video


@needs_av
def test_a_video_gives_an_overlay_video_at_the_sampled_rate(ckpt, tmp_path):
    """overlay/VIDEO.mp4 beside the frames: H.264, one frame per sampled frame, at the sampled
    rate (or the video's own rate where --video-fps asks for more than it has)."""
    import av

    _write_video(tmp_path / "drive.mp4", frames=20, rate=10)  # 2 s at 10 fps
    _write_video(tmp_path / "slow.mp4", frames=4, rate=2)  # 2 s at 2 fps
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(tmp_path / "drive.mp4"), str(tmp_path / "slow.mp4")], out, checkpoint=ckpt,
        formats=["overlay"], video_fps=5.0, workers=0, progress=False,
    )  # fmt: skip
    assert summary["written"] == 10 + 4
    for name, frames, rate in (("drive", 10, 5), ("slow", 4, 2)):
        assert len(list((out / "overlay").glob(f"{name}_*.jpg"))) == frames
        with av.open(str(out / "overlay" / f"{name}.mp4")) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.average_rate == rate
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(decoded) == frames and decoded[0].shape == (64, 96, 3)
        first = np.asarray(Image.open(out / "overlay" / f"{name}_000000.jpg"), np.int16)
        assert np.abs(decoded[0] - first).mean() < 8  # the overlay, through two lossy codecs
    _no_temp_files(out)


def _legend_size(drawn: np.ndarray, plain: np.ndarray) -> tuple[int, int]:
    """``(h, w)`` of the legend: the box of the pixels that differ, which starts at the corner
    and leaves the rest of the image as it was."""
    rows, cols = np.nonzero((drawn != plain).any(axis=2))
    assert rows.min() == cols.min() == 0
    assert rows.max() + 1 < plain.shape[0] and cols.max() + 1 < plain.shape[1]
    return rows.max() + 1, cols.max() + 1


def _swatches(drawn: np.ndarray, h: int) -> list[tuple[int, ...]]:
    """The legend's colored squares from top to bottom, read down a column through them
    (left of the names, on black): the colors of the column's non-black runs."""
    column = [tuple(int(v) for v in px) for px in drawn[:h, 9]]
    runs = [c for i, c in enumerate(column) if i == 0 or c != column[i - 1]]
    return [c for c in runs if c != (0, 0, 0)]


def test_legend_lists_the_classes_given_in_their_colors():
    plain = np.full((120, 200, 3), 128, np.uint8)
    drawn = draw_legend(plain, [0, 13, 18])
    h, w = _legend_size(drawn, plain)
    assert _swatches(drawn, h) == [PALETTE[0], PALETTE[13], PALETTE[18]]
    assert (drawn[:h, 18:w].min(axis=2) > 180).sum() > 30  # the names, in white
    assert (draw_legend(plain, []) == plain).all()


def test_predict_legend_on_color_maps_and_overlays(ckpt, tmp_path):
    _save(tmp_path / "in" / "x.png", _image(160, 240))
    outs = {}
    for legend in (False, True):
        outs[legend] = tmp_path / f"out{legend}"
        predict_inputs(
            [str(tmp_path / "in")], outs[legend], checkpoint=ckpt, formats=["color", "overlay"],
            workers=0, progress=False, legend=legend,
        )  # fmt: skip
    mask = load_predictor(ckpt).predict(tmp_path / "in" / "x.png")
    present = legend_classes(mask)
    assert present == sorted(set(np.unique(mask).tolist()) - {19, 255})
    plain = np.asarray(Image.open(outs[False] / "color" / "x.png"))
    shown = np.asarray(Image.open(outs[True] / "color" / "x.png"))
    assert (shown == draw_legend(plain, present)).all()
    h, w = _legend_size(shown, plain)
    assert _swatches(shown, h) == [PALETTE[c] for c in present]  # exactly those, in order
    overlays = [np.asarray(Image.open(outs[k] / "overlay" / "x.jpg"), np.int16) for k in outs]
    diff = np.abs(overlays[1] - overlays[0])  # JPEG: compared loosely
    assert diff[:h, :w].mean() > 10 and diff[h + 8 :].mean() < 2


def _predict_process(ckpt: Path, inputs: Path, out: Path, rank: int, world: int, *extra: str):
    """``bddseg predict`` in a new process, as a launcher starts it (RANK, WORLD_SIZE)."""
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}
    argv = ["predict", str(inputs), "--checkpoint", str(ckpt), "--out", str(out)]
    code = "import sys; from bddseg.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv, "--format", "mask", "--workers", "0", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_shards_are_disjoint_and_cover_every_input(tmp_path):
    items = [(tmp_path / f"{n}.png", n) for n in "fbdaec"] + [(tmp_path / "v.mp4", "v")]
    shares = [shard_items(items, rank, 3) for rank in range(3)]
    names = [n for share in shares for _, n in share]
    assert sorted(names) == sorted(n for _, n in items) and len(set(names)) == len(items)
    assert shard_items(items, 0, 1) == sorted(items, key=lambda item: item[1])


def test_two_processes_predict_every_input_once_then_resume(ckpt, synth_root, tmp_path, capsys):
    """RANK 0 and 1 of WORLD_SIZE 2, at once, into one folder: each writes its half and says
    so; then a second run keeps all, a deleted mask is the only one predicted again and a
    stopped run's temporary file is removed."""
    from bddseg.cli import main

    val = synth_root / "images" / "10k" / "val"
    stems = sorted(p.stem for p in val.iterdir())
    out = tmp_path / "out"
    procs = [_predict_process(ckpt, val, out, rank, 2) for rank in (0, 1)]
    counts = []
    for rank, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        line = re.fullmatch(
            rf"\[rank {rank}/2\] wrote (\d+) prediction\(s\) to {re.escape(str(out))}; skipped 0",
            stdout.strip(),
        )
        assert line, stdout
        counts.append(int(line.group(1)))
    assert counts == [len(stems) // 2] * 2  # sum == the files written: none twice
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    _no_temp_files(out)

    argv = ["predict", str(val), "--checkpoint", str(ckpt), "--out", str(out), "--format", "mask"]
    assert main([*argv, "--workers", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"skipping {len(stems)} inputs already predicted",
        f"wrote 0 prediction(s) to {out}; skipped 0",
    ]

    (out / "masks" / f"{stems[2]}.png").unlink()
    stale = out / "masks" / f".{stems[4]}.png.k3j9x_2a.tmp"  # as atomic_path names them
    stale.write_bytes(b"half a png")
    before = {s: (out / "masks" / f"{s}.png").stat().st_mtime_ns for s in stems if s != stems[2]}
    summary = predict_inputs(
        [str(val)], out, checkpoint=ckpt, formats=["mask"], workers=0, progress=False
    )
    assert (summary["written"], summary["already"]) == (1, len(stems) - 1)
    assert not stale.exists() and (out / "masks" / f"{stems[2]}.png").is_file()
    assert before == {s: (out / "masks" / f"{s}.png").stat().st_mtime_ns for s in before}

    # a format not written yet makes every input due; --overwrite predicts all again
    summary = predict_inputs(
        [str(val)], out, checkpoint=ckpt, formats=["mask", "color"], workers=0, progress=False
    )
    assert (summary["written"], summary["already"]) == (len(stems), 0)
    assert main([*argv, "--workers", "0", "--overwrite"]) == 0
    assert f"wrote {len(stems)} prediction(s)" in capsys.readouterr().out


@needs_av
def test_video_resume_keeps_frames_and_its_overlay_video(ckpt, tmp_path):
    """A video's frames are kept like images while its overlay video exists; without that
    video (a stopped run renames it only at the end) every frame is predicted again."""
    _write_video(tmp_path / "drive.mp4", frames=20, rate=10)  # 2 s at 10 fps: 4 frames at 2
    out = tmp_path / "out"

    def run() -> tuple[int, int]:
        summary = predict_inputs(
            [str(tmp_path / "drive.mp4")], out, checkpoint=ckpt, formats=["mask", "overlay"],
            video_fps=2.0, workers=0, progress=False,
        )  # fmt: skip
        return summary["written"], summary["already"]

    assert run() == (4, 0)
    video = out / "overlay" / "drive.mp4"
    mtime = video.stat().st_mtime_ns
    assert run() == (0, 4)
    (out / "masks" / "drive_000005.png").unlink()
    assert run() == (1, 3)
    assert video.stat().st_mtime_ns == mtime
    video.unlink()
    assert run() == (4, 0) and video.is_file()


def test_progress_bar_shows_images_per_second(ckpt, tmp_path, capsys):
    for stem in ("a", "b", "c"):
        _save(tmp_path / "in" / f"{stem}.png", _image(40, 60))
    predict_inputs([str(tmp_path / "in")], tmp_path / "out", checkpoint=ckpt, workers=0)
    err = capsys.readouterr().err  # not a terminal: rich prints the last state once
    line = next(x for x in err.splitlines() if x.startswith("predict"))
    assert "3/3" in line and re.search(r"\d+(\.\d+)? img/s$", line.strip()), line


def test_rate_is_the_whole_run_once_stopped():
    from bddseg.progress import progress_bar, rate_text

    bar = progress_bar("predict", enabled=False, rate="img")
    task = bar.add_task("predict", total=None)
    assert rate_text(bar.tasks[task], "img") == "- img/s"
    bar.advance(task, 10)
    time.sleep(0.1)  # under 100 img/s: three significant digits
    bar.stop_task(task)
    t = bar.tasks[task]
    assert rate_text(t, "img") == f"{10 / t.elapsed:.3g} img/s"
