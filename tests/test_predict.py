"""predict_inputs: files, folders, globs and videos in; masks, color maps and overlays out
(bddseg.predict), on a random U-Net at small, odd sizes (CPU, seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predictor import _image, _save

from bddseg.errors import BddsegError
from bddseg.labels import PALETTE
from bddseg.predict import predict_inputs, unique_names
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
               "--format", "mask,color", "--tta", "flip", "--workers", "0"])  # fmt: skip
    assert rc == 0
    assert (out / "masks" / "f.png").is_file() and (out / "color" / "f.png").is_file()
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


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV not installed")
def test_video_frames_sampled_and_named(ckpt, tmp_path):
    import av

    video = tmp_path / "drive.mp4"
    with av.open(str(video), "w") as container:  # 3 s at 10 fps
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(
                np.full((64, 96, 3), i * 8, np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    summary = predict_inputs(
        [str(video)], out, checkpoint=ckpt, formats=["mask"], video_fps=2.0, workers=0,
        progress=False,
    )  # fmt: skip
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"drive_{i:06d}.png" for i in (0, 5, 10, 15, 20, 25)]
    assert summary["written"] == 6
    assert Image.open(out / "masks" / names[0]).size == (96, 64)


@pytest.mark.slow
@pytest.mark.real
def test_real_val_images_full_resolution(ckpt, real_root, tmp_path):
    images = sorted((real_root / "images" / "10k" / "val").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    summary = predict_inputs([str(p) for p in images], out, checkpoint=ckpt, progress=False)
    assert summary["written"] == 2
    for img in images:
        mask = Image.open(out / "masks" / f"{img.stem}.png")
        assert (mask.mode, mask.size) == ("L", (1280, 720))
        assert np.asarray(mask).max() <= 18


def test_written_masks_evaluate_like_the_model(ckpt, synth_root, tmp_path):
    """Masks from predict, scored by ``evaluate --pred --gt``, give the numbers that
    ``evaluate --checkpoint`` gives with the same ``keep_unknown`` (255 where unknown wins)."""
    from bddseg.evaluate import evaluate_checkpoint, evaluate_folders

    images = synth_root / "images" / "10k" / "val"
    pred = tmp_path / "pred"
    predict_inputs(
        [str(images)], pred, checkpoint=ckpt, formats=["mask"], keep_unknown=True, workers=0,
        progress=False,
    )  # fmt: skip
    for mask in (pred / "masks").iterdir():  # official format rules: L, 8-bit, 0..18 or 255
        m = Image.open(mask)
        assert m.mode == "L" and m.size == Image.open(images / f"{mask.stem}.jpg").size
        assert set(np.unique(np.asarray(m))) <= set(range(19)) | {255}
    gt = synth_root / "labels" / "sem_seg" / "masks" / "val"
    from_files = evaluate_folders(pred / "masks", gt, tmp_path / "ev1", plots=False)
    direct = evaluate_checkpoint(ckpt, synth_root, tmp_path / "ev2", workers=0, plots=False,
                                 keep_unknown=True)  # fmt: skip
    assert from_files["num_images"] == direct["num_images"] == len(list(images.iterdir()))
    assert from_files["official"] == direct["official"]  # same confusion matrix, exactly
    assert from_files["with_unknown"] == direct["with_unknown"]
