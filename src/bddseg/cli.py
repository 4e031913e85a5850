"""``bddseg`` command line: the only reader of argv.

Each subcommand turns flags into arguments (or a config) and calls one library function.
Bad input raises :class:`BddsegError`; :func:`main` prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import traceback
from pathlib import Path

from bddseg.config import INFERENCE_PRECISION, TTA_MODES, Config, choices
from bddseg.errors import BddsegError

EXIT_BAD_INPUT = 2
NAMED_FAILURES = 10  # inputs a failed predict names in its last line (the warnings name all)
PRECISION_HELP = "auto: bf16-mixed on a GPU and on a CPU with AMX or AVX-512 BF16, else 32-true"
INFERENCE_PRECISION_HELP = (
    "32-true (fp32) gives the same masks on every machine and matches the ONNX export; "
    "bf16-mixed, or auto (bf16 on a GPU and on a CPU with AMX or AVX-512 BF16), is faster "
    "where the hardware computes bf16 natively but may change a few pixels"
)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _hw(value: str) -> tuple[int, int]:
    try:
        h, w = value.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 512x1024, got {value!r}") from None


# ---------------------------------------------------------------- synth / data / download
def _dataset_flags(p: argparse.ArgumentParser, config: bool = False) -> None:
    """``--dataset`` and ``--classes``: which layout a root has and which classes its masks
    hold (:mod:`bddseg.layout`, :mod:`bddseg.classes`)."""
    p.add_argument(
        "--dataset",
        choices=choices("data.dataset"),
        default=None if config else "auto",
        help="the dataset's layout (auto: detected from the folders) "
        + (_from_config("data.dataset") if config else "(default: auto)"),
    )
    p.add_argument(
        "--classes",
        metavar="FILE",
        help="a class file (names, colours, ignore value, raw-value mapping); default: "
        "ROOT/classes.yaml if there is one, else the layout's own classes",
    )


def _cmd_synth(args: argparse.Namespace) -> int:
    import tempfile

    from bddseg.synth import make_dataset
    from bddseg.synth_layouts import write_layout

    out = Path(args.out)
    sizes = {
        "train": args.train, "val": args.val, "test": args.test, "height": args.height,
        "width": args.width, "seed": args.seed, "workers": args.workers,
    }  # fmt: skip
    if args.layout == "bdd100k":
        root = make_dataset(out, **sizes)
    else:  # the same scenes, rewritten in the other layout (its file names and mask values)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".synth-") as tmp:
            root = write_layout(make_dataset(Path(tmp), **sizes), out, args.layout)
    print(f"wrote the synthetic dataset ({args.layout} layout) to {root}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from bddseg.check import check_dataset

    report = check_dataset(
        Path(args.root), workers=args.workers, dataset=args.dataset, classes_file=args.classes
    )
    for split, s in report.summary.items():
        print(
            f"{split:>5}: {s['images']} images, {s['masks']} masks, {s['bad']} bad "
            f"({s['seconds']:.1f} s, {s['pairs_per_s']:.0f} pairs/s)"
        )
    for path, reason in report.problems:
        print(f"error: {path}: {reason}", file=sys.stderr)
    if report.problems:
        print(f"{len(report.problems)} problem(s) found", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("all pairs OK")
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from bddseg.files import atomic_write_text
    from bddseg.stats import compute_stats

    stats = compute_stats(
        Path(args.root), split=args.split, workers=args.workers, cache_dir=args.cache_dir,
        dataset=args.dataset, classes_file=args.classes,
    )  # fmt: skip
    width = max(len(n) for n in stats["pixel_share"])
    print(f"{args.split}: {stats['num_images']} images")
    print(
        f"{'class':<{width}}  {'pixels %':>9}  {'images':>6}  "
        + "  ".join(f"{m:>9}" for m in stats["weights"])
    )
    absent = [name for name, count in stats["image_count"].items() if count == 0]
    for name, share in stats["pixel_share"].items():
        weights = "  ".join(
            f"{'absent':>9}" if name in absent else f"{stats['weights'][m][name]:>9.3f}"
            for m in stats["weights"]
        )
        print(f"{name:<{width}}  {share:>9.3f}  {stats['image_count'][name]:>6}  {weights}")
    if absent:
        print(
            f"absent: no pixels in this split ({', '.join(absent)}): weight 0, so they add "
            "nothing to a class-weighted loss"
        )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(stats, indent=2))
        print(f"wrote {args.json}")
    if args.chart:
        from bddseg.plots import plot_class_stats

        plot_class_stats(stats, Path(args.chart))
        print(f"wrote {args.chart}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from bddseg.download import download

    download(Path(args.root), base_url=args.base_url, what=_csv(args.what))
    return 0


# ---------------------------------------------------------------- train
def _train_overrides(args: argparse.Namespace) -> dict:
    roots = args.data or []
    o = {
        "data.root": roots[0] if roots else None,
        "data.extra_roots": roots[1:] or None,
        "data.dataset": args.dataset,
        "data.classes": args.classes,
        "model.init_from": args.init_from,
        "data.workers": args.workers,
        "data.unknown": args.unknown,
        "data.on_bad_sample": args.on_bad_sample,
        "data.crop": list(args.crop) if args.crop else None,
        "loss.name": args.loss,
        "loss.class_weights": args.class_weights,
        "optim.epochs": args.epochs,
        "optim.max_steps": args.max_steps,
        "optim.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "model.arch": args.arch,
        "model.encoder": args.encoder,
        "model.encoder_weights": args.encoder_weights,
        "run.out": args.out,
        "run.seed": args.seed,
        "run.devices": args.devices,
        "run.num_nodes": args.num_nodes,
        "run.accelerator": args.accelerator,
        "run.precision": args.precision,
    }
    if args.no_pretrained:
        o["model.pretrained"] = False
    if args.resume:
        o["run.resume"] = True
    if args.compile:
        o["run.compile"] = True
    return o


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _set_value(text: str) -> tuple[str, object]:
    """``--set section.key=VALUE``: the key and the value read as a YAML scalar or list
    (``data.crop=[256,512]``, ``optim.max_steps=null``); ``3e-4``, which YAML 1.1 leaves a
    string, is a number (quote it, ``'3e-4'``, for the string)."""
    import yaml

    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or "." not in key:
        raise BddsegError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. optim.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        what = getattr(e, "problem", None) or "not YAML"
        raise BddsegError(f"--set {key}: cannot read {raw!r} ({what})") from None
    if isinstance(value, str) and _NUMBER.fullmatch(raw.strip()):
        value = float(value)
    return key, value


def _train_config(args: argparse.Namespace):
    """The training config: defaults (or a resumed run's config.yaml), the YAML file, then
    the ``--set`` items (a key set twice: the last wins), then the explicit flags (which win
    over ``--set``). The ``--set`` items are applied at once, so that one error names every
    unknown key among them."""
    from bddseg.config import from_dict, load_config
    from bddseg.runs import CONFIG

    saved = Path(args.out or "") / CONFIG
    base = None
    if args.resume and args.out and not args.config and saved.is_file():
        base = load_config(saved)  # `bddseg train --out RUN --resume` continues RUN as it was
    cfg = load_config(args.config, base=base)
    sets: dict[str, dict[str, object]] = {}
    for item in args.set or []:
        key, value = _set_value(item)
        section, _, name = key.partition(".")
        sets.setdefault(section, {})[name] = value
    cfg = from_dict(sets, cfg, source="--set")
    return load_config(None, overrides=_train_overrides(args), base=cfg)


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _cmd_train(args: argparse.Namespace) -> int:
    from bddseg.train import train

    cfg = _train_config(args)
    if not cfg.data.root:
        raise BddsegError("no dataset: give --data ROOT (or data.root in the config)")
    result = train(cfg, trace_samples=args.trace_samples)
    print(f"run directory: {result.run_dir}")
    if result.best_miou is not None:
        print(f"best val mIoU: {result.best_miou:.4f}")
    return 0


# ---------------------------------------------------------------- evaluate / predict / export / report
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bddseg import evaluate
    from bddseg.classes import BDD100K, load_classes
    from bddseg.metrics import WITH_UNKNOWN_LABEL, miou_label, with_unknown_keys

    if args.pred and args.data:  # predictions against a dataset's truth, in any layout
        result = evaluate.evaluate_dataset_predictions(
            Path(args.pred), Path(args.data), args.split, Path(args.out),
            dataset=args.dataset, classes_file=args.classes, workers=args.workers,
            min_pixels=args.min_pixels, plots=not args.no_plots,
        )  # fmt: skip
    elif args.pred:
        if not args.gt:
            raise BddsegError("--pred needs --gt GT_DIR (a folder of masks) or --data ROOT")
        result = evaluate.evaluate_folders(
            Path(args.pred),
            Path(args.gt),
            Path(args.out),
            workers=args.workers,
            min_pixels=args.min_pixels,
            plots=not args.no_plots,
            classes=load_classes(args.classes) if args.classes else BDD100K,
        )
    elif args.checkpoint:
        if not args.data:
            raise BddsegError("--checkpoint needs --data ROOT")
        result = evaluate.evaluate_checkpoint(
            Path(args.checkpoint),
            Path(args.data),
            Path(args.out),
            split=args.split,
            dataset=args.dataset,
            classes_file=args.classes,
            tta=args.tta,
            device=args.device,
            precision=args.precision,
            keep_unknown=args.keep_unknown,
            batch_size=args.batch_size,
            workers=args.workers,
            min_pixels=args.min_pixels,
            plots=not args.no_plots,
        )
    else:
        raise BddsegError(
            "give --checkpoint CKPT --data ROOT, or --pred PRED_DIR with --gt GT_DIR or --data ROOT"
        )
    off = result["official"]
    k = len(result["classes"]["names"])

    def num(v: float | None) -> str:  # None: nothing labelled to score
        return "n/a" if v is None else f"{v:.4f}"

    precision = f" ({result['precision']})" if "precision" in result else ""
    print(
        f"{result['num_images']} images{precision}: {miou_label(k)} {num(off['miou'])}, "
        f"pixel accuracy {num(off['pixel_accuracy'])}; other view, mIoU over {k} classes with "
        f"{WITH_UNKNOWN_LABEL}: {num(result['with_unknown'][with_unknown_keys(k)[0]])}"
    )
    for group, g in result.get("groups", {}).items():
        print(f"  {group}: mIoU {num(g['miou'])} over {g['images']} images")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from bddseg.predict import predict_inputs

    if bool(args.checkpoint) == bool(args.onnx):
        raise BddsegError("give exactly one of --checkpoint CKPT or --onnx MODEL")
    shard = _launcher_shard()
    summary = predict_inputs(
        args.inputs,
        Path(args.out),
        checkpoint=args.checkpoint,
        onnx=args.onnx,
        formats=_csv(args.format),
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        keep_unknown=args.keep_unknown,
        video_fps=args.video_fps,
        workers=args.workers,
        window=args.window,
        legend=args.legend,
        runtime=args.runtime,
        shard=shard,
        overwrite=args.overwrite,
    )
    # each process reports its own share (no process group needed): RANK/WORLD_SIZE prefix
    prefix = f"[rank {shard[0]}/{shard[1]}] " if shard[1] > 1 else ""
    print(
        f"{prefix}wrote {summary['written']} prediction(s) to {args.out}; "
        f"skipped {summary['skipped']}"
    )
    if summary["skipped"]:
        raise BddsegError(prefix + _failed_inputs(summary))
    return 0


def _launcher_shard() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as torchrun (or another launcher) sets them; ``(0, 1)`` alone."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise BddsegError("RANK and WORLD_SIZE must be whole numbers") from None


def _failed_inputs(summary: dict) -> str:
    """``predict: 1 of 3 inputs failed: PATH (PROBLEM)``, the first :data:`NAMED_FAILURES`
    named: keep going, then say what failed, so that a script sees exit 2 while every good
    input is written."""
    problems = summary["problems"]
    named = [f"{path} ({why})" for path, why in list(problems.items())[:NAMED_FAILURES]]
    if len(problems) > len(named):
        named.append(f"and {len(problems) - len(named)} more (see the warnings above)")
    return f"predict: {len(problems)} of {summary['inputs']} inputs failed: " + "; ".join(named)


def _cmd_export(args: argparse.Namespace) -> int:
    from bddseg.export import export_onnx, parity_line

    done = export_onnx(
        Path(args.checkpoint), Path(args.out), opset=args.opset, dynamic=args.dynamic,
        size=args.size, check=not args.no_check, quantize=args.quantize,
        calibration=args.calibration, calibration_images=args.calibration_images,
        eval_images=args.eval_images, keep_fp32=_csv(args.keep_fp32 or ""),
    )  # fmt: skip
    shape = "x".join(map(str, done.input_shape)) if done.input_shape else "N x 3 x H x W"
    if done.fp32 is not None:
        print(f"wrote {done.fp32} (fp32, input {shape})")
    if done.parity is not None:
        print(f"parity with the checkpoint (fp32): {parity_line(done.parity)}")
    if done.int8 is not None:
        from bddseg.errors import warn
        from bddseg.quantize import drop_warning, int8_line

        print(f"wrote {done.path} (INT8, input {shape})")
        print(f"INT8: {int8_line(done.int8)}")
        if (text := drop_warning(done.int8)) is not None:
            warn(text)
    else:
        print(f"wrote {done.path} (input {shape})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bddseg.report import write_report

    path = write_report([Path(r) for r in args.runs], Path(args.out))
    print(f"wrote {path}")
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from bddseg.view import build_view, serve

    index = build_view(
        [Path(r) for r in args.runs], Path(args.out) if args.out else None, split=args.split,
        data_root=args.data, workers=args.workers,
    )  # fmt: skip
    print(f"wrote {index}")
    if not args.serve:
        return 0
    server, url = serve(index.parent, args.port)
    print(f"serving {url} (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bddseg.bench import run_inference_bench

    run_inference_bench(
        device=args.device,
        batch_sizes=[int(b) for b in _csv(args.batch_sizes)] if args.batch_sizes else None,
        out=args.out,
        variants=_csv(args.variants) if args.variants else None,
        iters=args.iters,
        warmup=args.warmup,
        checkpoint=args.checkpoint,
        threads=args.threads,
    )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from bddseg.catalog import markdown_table, model_table, resolve_pairs, to_json
    from bddseg.files import atomic_write_text

    pairs = resolve_pairs(args.arch, args.encoder)
    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if args.measure else None
    old_threads = _torch_threads(args.threads)
    try:
        result = model_table(
            pairs, args.classes, measured=args.measure, size=args.size, runs=args.runs, echo=echo
        )
    finally:
        _torch_threads(old_threads)
    print(markdown_table(result))
    if args.json:
        atomic_write_text(Path(args.json), to_json(result))
        print(f"wrote {args.json}")
    return 0


def _torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (unless None); return the previous count."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    return old


def _cmd_demo(args: argparse.Namespace) -> int:
    from bddseg.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


# ---------------------------------------------------------------- parser
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: VALUE)`` to a flag's help unless the help already says its default
    or there is none to show (``None``: the flag is optional; ``False``: a switch is off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults; its subparsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _from_config(key: str) -> str:
    """``(default: KEY of --config, else VALUE)``: the default of a train flag that sets a
    config key, read from the config's own defaults."""
    section, name = key.split(".")
    value = getattr(getattr(Config(), section), name)
    if isinstance(value, tuple):
        value = "x".join(map(str, value))
    shown = "none" if value in (None, "") else value
    return f"(default: {key} of --config, else {shown})"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bddseg", description=__doc__.splitlines()[0])
    from bddseg._version import __version__

    p.add_argument("--version", action="version", version=f"bddseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    cores = os.cpu_count() or 1

    s = sub.add_parser(
        "synth", help="write the built-in synthetic dataset (BDD100K's layout, or another)"
    )
    s.add_argument(
        "out", help="output folder (BDD100K: the dataset lands in OUT/bdd100k; others: in OUT)"
    )
    s.add_argument(
        "--layout",
        choices=[k for k in choices("data.dataset") if k != "auto"],
        default="bdd100k",
        help="the dataset layout to write: BDD100K's official one, Cityscapes (labelIds), "
        "ACDC, Mapillary Vistas v1.2, or a folder of 4 classes with its classes.yaml",
    )
    s.add_argument("--train", type=int, default=200, help="training pairs")
    s.add_argument("--val", type=int, default=50, help="validation pairs")
    s.add_argument("--test", type=int, default=50, help="test images")
    s.add_argument("--height", type=int, default=256, help="image height in pixels")
    s.add_argument("--width", type=int, default=448, help="image width in pixels")
    s.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed, the same dataset"
    )
    s.add_argument("--workers", type=int, default=cores, help="processes (default: the CPUs)")
    s.set_defaults(func=_cmd_synth)

    d = sub.add_parser("data", help="check a dataset or compute its class statistics")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="check every image/mask pair; exit 2 if anything is wrong")
    c.add_argument("root", help="dataset root (BDD100K, Cityscapes, ACDC, Vistas or a folder)")
    _dataset_flags(c)
    c.add_argument("--workers", type=int, default=cores, help="processes (default: the CPUs)")
    c.set_defaults(func=_cmd_data_check)
    st = dsub.add_parser("stats", help="per-class pixel share, image counts and class weights")
    st.add_argument("root", help="dataset root (BDD100K, Cityscapes, ACDC, Vistas or a folder)")
    _dataset_flags(st)
    st.add_argument("--split", default="train", help="the split to count")
    st.add_argument("--json", help="also write the statistics to this JSON file (default: none)")
    st.add_argument("--chart", help="also write a bar chart PNG (default: none)")
    st.add_argument("--workers", type=int, default=cores, help="processes (default: the CPUs)")
    st.add_argument(
        "--cache-dir",
        type=Path,
        help="where the statistics are cached (default: $BDDSEG_CACHE, else ~/.cache/bddseg)",
    )
    st.set_defaults(func=_cmd_data_stats)

    dl = sub.add_parser("download", help="fetch and safely extract the official BDD100K 10K zips")
    dl.add_argument("root", help="where the dataset goes (ROOT/bdd100k/...)")
    dl.add_argument(
        "--base-url",
        default=None,
        help="mirror serving the official zip names (default: the official BDD100K server)",
    )
    dl.add_argument("--what", default="images,labels", help="comma list of images,labels")
    dl.set_defaults(func=_cmd_download)

    t = sub.add_parser(
        "train",
        help="train a model, U-Net/ResNet34 by default (flags override --set, which overrides "
        "the YAML config)",
    )
    t.add_argument(
        "--data",
        nargs="+",
        metavar="ROOT",
        help="dataset root; several roots with the same classes train on their union "
        f"{_from_config('data.root')}",
    )
    _dataset_flags(t, config=True)
    t.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from a segmentation checkpoint (bddseg's or a plain smp state dict): "
        "the body loads in full, the head's rows by class name "
        f"{_from_config('model.init_from')}",
    )
    t.add_argument("--out", help=f"run directory {_from_config('run.out')}")
    t.add_argument("--config", help="YAML config, a file or a recipe of configs/ (default: none)")
    t.add_argument(
        "--arch", choices=choices("model.arch"), help=f"architecture {_from_config('model.arch')}"
    )
    t.add_argument(
        "--encoder",
        help=f"smp encoder name or tu-TIMM_NAME {_from_config('model.encoder')}",
    )
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any config key, e.g. optim.lr=3e-4 or data.crop=[256,512] (YAML values; "
        "repeatable; explicit flags win over it; default: none)",
    )
    t.add_argument("--loss", choices=choices("loss.name"), help=f"loss {_from_config('loss.name')}")
    t.add_argument(
        "--class-weights",
        choices=choices("loss.class_weights"),
        help=f"per-class loss weights from the train split {_from_config('loss.class_weights')}",
    )
    t.add_argument(
        "--unknown",
        choices=choices("data.unknown"),
        help=f"255 as class 19, or ignored {_from_config('data.unknown')}",
    )
    t.add_argument("--epochs", type=int, help=f"epochs {_from_config('optim.epochs')}")
    t.add_argument(
        "--max-steps",
        type=int,
        help=f"optimizer steps, instead of epochs {_from_config('optim.max_steps')}",
    )
    t.add_argument(
        "--batch-size", type=int, help=f"images per step {_from_config('optim.batch_size')}"
    )
    t.add_argument(
        "--crop", type=_hw, help=f"training crop HxW, e.g. 512x1024 {_from_config('data.crop')}"
    )
    t.add_argument("--lr", type=float, help=f"peak learning rate {_from_config('optim.lr')}")
    t.add_argument("--no-pretrained", action="store_true", help="random encoder weights")
    t.add_argument(
        "--encoder-weights",
        help=f"local encoder state dict instead of the hub {_from_config('model.encoder_weights')}",
    )
    t.add_argument("--seed", type=int, help=f"random seed {_from_config('run.seed')}")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument(
        "--devices", type=_devices, help=f"devices per node {_from_config('run.devices')}"
    )
    t.add_argument("--num-nodes", type=int, help=f"machines {_from_config('run.num_nodes')}")
    t.add_argument(
        "--accelerator",
        choices=choices("run.accelerator"),
        help=f"cpu, a GPU kind, or auto {_from_config('run.accelerator')}",
    )
    t.add_argument(
        "--precision",
        choices=choices("run.precision"),
        help=f"{PRECISION_HELP} {_from_config('run.precision')}",
    )
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument(
        "--workers", type=int, help=f"data loader processes {_from_config('data.workers')}"
    )
    t.add_argument(
        "--on-bad-sample",
        choices=choices("data.on_bad_sample"),
        help=f"stop on an unreadable pair, or skip and count it "
        f"{_from_config('data.on_bad_sample')}",
    )
    t.add_argument(
        "--trace-samples",
        action="store_true",
        help="each process appends the samples it trains on to RUN/samples.rankN.txt",
    )
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser(
        "evaluate", help="metrics.json, per_class.csv and plots for a model or mask folders"
    )
    e.add_argument("--checkpoint", help="a .pt checkpoint to score, with --data (default: none)")
    e.add_argument(
        "--data",
        help="dataset root in any layout, with --checkpoint or --pred (default: none)",
    )
    _dataset_flags(e)
    e.add_argument("--split", default="val", help="the split to score, with --data")
    e.add_argument(
        "--pred", help="folder of predicted PNG masks, with --gt or --data (default: none)"
    )
    e.add_argument("--gt", help="folder of ground-truth PNG masks (default: none)")
    e.add_argument("--out", required=True, help="folder for metrics.json and the rest")
    e.add_argument("--tta", choices=list(TTA_MODES), default="none", help="test-time augmentation")
    e.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    e.add_argument(
        "--precision",
        choices=choices("run.precision"),
        default=INFERENCE_PRECISION,
        help=INFERENCE_PRECISION_HELP,
    )
    e.add_argument(
        "--keep-unknown",
        action="store_true",
        help="--checkpoint: a 20-class model's unknown counts where it wins (a miss officially)",
    )
    e.add_argument("--batch-size", type=int, default=1, help="images per forward")
    e.add_argument("--workers", type=int, default=cores, help="processes (default: the CPUs)")
    e.add_argument(
        "--min-pixels", type=int, default=1, help="image-level: pixels for a class 'present'"
    )
    e.add_argument(
        "--no-plots", action="store_true", help="skip the PNG charts (about 0.7 s of matplotlib)"
    )
    e.set_defaults(func=_cmd_evaluate)

    pr = sub.add_parser("predict", help="full-resolution masks, color maps and overlays")
    pr.add_argument("inputs", nargs="+", help="images, folders, globs or video files")
    pr.add_argument("--checkpoint", help="a .pt checkpoint (or --onnx; default: none)")
    pr.add_argument("--onnx", help="an exported .onnx model (or --checkpoint; default: none)")
    pr.add_argument(
        "--runtime", choices=["onnxruntime", "openvino"], default="onnxruntime",
        help="what runs --onnx (fp32 or INT8 alike); openvino: the `openvino` extra, CPU",
    )  # fmt: skip
    pr.add_argument(
        "--out",
        required=True,
        help="output folder (masks/, color/, overlay/; a video also gives overlay/VIDEO.mp4)",
    )
    pr.add_argument(
        "--format", default="mask,color,overlay", help="comma list of mask,color,overlay"
    )
    pr.add_argument(
        "--legend",
        action="store_true",
        help="draw the classes present (official colors and names) onto color maps and "
        "overlays (default: off)",
    )
    pr.add_argument("--tta", choices=list(TTA_MODES), default="none", help="test-time augmentation")
    pr.add_argument("--batch-size", type=int, default=1, help="same-size images per forward")
    pr.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    pr.add_argument(
        "--precision",
        choices=choices("run.precision"),
        default=INFERENCE_PRECISION,
        help=INFERENCE_PRECISION_HELP,
    )
    pr.add_argument(
        "--keep-unknown", action="store_true", help="write 255 where the model says unknown"
    )
    pr.add_argument(
        "--video-fps", type=float, default=1.0, help="frames per second sampled from videos"
    )
    pr.add_argument("--workers", type=int, default=2, help="image decoding processes")
    pr.add_argument(
        "--window",
        type=_hw,
        help="predict in overlapping HxW tiles (default: the whole image in one pass)",
    )
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="predict every input again (default: keep the inputs whose every --format file "
        "exists in --out, so a stopped run resumes). Under torchrun, or any launcher that sets "
        "RANK and WORLD_SIZE, each process predicts its share of the inputs",
    )
    pr.set_defaults(func=_cmd_predict)

    ex = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, checked against PyTorch",
        description="Export a checkpoint to ONNX. By default the input is fixed at the size the "
        "model was trained at (data.base_size, else its val images' size), and the file is "
        "written only if onnxruntime predicts what PyTorch predicts on one frame (printed).",
    )
    ex.add_argument("--checkpoint", required=True, help="a bddseg .pt checkpoint")
    ex.add_argument("--out", required=True, help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=18, help="ONNX opset version (default: 18)")
    ex.add_argument(
        "--dynamic", action="store_true",
        help="dynamic batch, height and width (default: fixed at the trained size)",
    )  # fmt: skip
    ex.add_argument(
        "--size", type=_hw, default=None, metavar="HxW",
        help="a fixed input of this frame size instead of the trained size (default: none)",
    )  # fmt: skip
    ex.add_argument(
        "--no-check", action="store_true",
        help="write the file even if the parity check fails (default: refuse, exit 2)",
    )  # fmt: skip
    ex.add_argument(
        "--quantize", choices=["int8"],
        help="static INT8 (QDQ, onnxruntime) into --out, the fp32 model beside it as "
        "STEM.fp32.onnx; needs --calibration (default: none, fp32)",
    )  # fmt: skip
    ex.add_argument(
        "--calibration", metavar="ROOT",
        help="dataset whose train photos calibrate INT8 and whose val photos score it "
        "against fp32 (default: none)",
    )  # fmt: skip
    ex.add_argument(
        "--calibration-images", type=int, default=16, metavar="N",
        help="train photos to calibrate on",
    )  # fmt: skip
    ex.add_argument(
        "--eval-images", type=int, default=8, metavar="N",
        help="val photos to score INT8 against fp32 on (0: no scoring)",
    )  # fmt: skip
    ex.add_argument(
        "--keep-fp32", metavar="LIST",
        help="comma list of layers left in fp32: first-conv, head or ONNX node names "
        "(default: none)",
    )  # fmt: skip
    ex.set_defaults(func=_cmd_export)

    r = sub.add_parser("report", help="one self-contained HTML report for one or more runs")
    r.add_argument("runs", nargs="+", help="run directories (compared side by side)")
    r.add_argument("--out", required=True, help="the .html file to write")
    r.set_defaults(func=_cmd_report)

    v = sub.add_parser(
        "view",
        help="a static site to browse every evaluated image of one or more runs (opens from "
        "file://, no network)",
    )
    v.add_argument(
        "runs", nargs="+", help="run directories, each evaluated into RUN/eval/SPLIT (compared)"
    )
    v.add_argument("--split", default="val", help="the evaluated split to show")
    v.add_argument(
        "--out", help="output folder (default: RUN/view; several runs: view/ beside the first)"
    )
    v.add_argument("--data", help="dataset root (default: data.root of the first run's config)")
    v.add_argument(
        "--workers", type=int, default=min(cores, 4), help="processes writing the images"
    )
    v.add_argument(
        "--serve", action="store_true", help="also serve the site on 127.0.0.1 and print its URL"
    )
    v.add_argument("--port", type=int, default=8000, help="the port of --serve (0: any free one)")
    v.set_defaults(func=_cmd_view)

    b = sub.add_parser("bench", help="inference speed at 720x1280 (see benchmarks/)")
    b.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1")
    b.add_argument("--batch-sizes", help="comma list (default: 1 on CPU, 1,8 on CUDA)")
    b.add_argument(
        "--variants",
        help="comma list of fp32,channels_last,bf16,compile,onnxruntime,cl+bf16+compile,"
        "int8,openvino,openvino-int8 (int8: onnxruntime on a static INT8 copy; openvino: "
        "the `openvino` extra) (default: the first six on CUDA; on CPU all but "
        "cl+bf16+compile, the openvino rows where installed)",
    )
    b.add_argument("--iters", type=int, help="timed calls per row (default: 3 on CPU, 20 on CUDA)")
    b.add_argument("--warmup", type=int, help="untimed calls first (default: 1 on CPU, 5 on CUDA)")
    b.add_argument(
        "--checkpoint",
        help="time this model (default: a random U-Net/ResNet34)",
    )
    b.add_argument(
        "--threads", type=int, help="CPU threads for torch and the runtimes (default: theirs)"
    )
    b.add_argument("--out", help="also write the results as JSON (default: none)")
    b.set_defaults(func=_cmd_bench)

    m = sub.add_parser(
        "models",
        help="the architectures and encoders bddseg supports: parameters, GFLOPs at 720x1280, "
        "ONNX export, and with --measure CPU latency and ONNX parity",
        description="GFLOPs are multiply-adds (FLOPs/2, the convention of papers, fvcore and "
        "mmseg's get_flops) of one 720x1280 frame padded to the model's input multiple, counted "
        "on PyTorch's meta device. 'ONNX export' says whether `bddseg export --dynamic` works "
        "(else a fixed 720x1280 input); every architecture's ONNX parity is checked by "
        "tests/test_archs.py, and --measure checks each listed pair's.",
    )
    m.add_argument(
        "--arch",
        action="append",
        choices=choices("model.arch"),
        help="only this architecture's rows; with --encoder, this pair (repeatable; default: all)",
    )
    m.add_argument(
        "--encoder",
        action="append",
        help="only this encoder's rows; with --arch, this pair (repeatable; smp name or "
        "tu-NAME; default: all)",
    )
    m.add_argument(
        "--measure",
        action="store_true",
        help="also time one 720x1280 image on the CPU (fp32 and precision auto) and export "
        "each model to ONNX to check its parity with PyTorch (minutes per large model)",
    )
    m.add_argument("--classes", type=int, choices=(19, 20), default=19, help="output classes")
    m.add_argument("--threads", type=int, help="torch threads for --measure (default: torch's)")
    m.add_argument("--json", help="also write the rows to this JSON file (default: none)")
    m.add_argument("--size", type=_hw, default=(720, 1280), help=argparse.SUPPRESS)  # tests
    m.add_argument("--runs", type=int, default=3, help=argparse.SUPPRESS)  # timed calls
    m.set_defaults(func=_cmd_models)

    dm = sub.add_parser("demo", help="the whole pipeline on the built-in dataset")
    dm.add_argument("--out", default="demo_out", help="output folder (data, runs, report)")
    dm.add_argument("--quick", action="store_true", help="tiny sizes, for tests")
    dm.set_defaults(func=_cmd_demo)
    return p


def _one_line(message: str) -> str:
    """An error message on one line. A BddsegError raised in a DataLoader worker reaches the
    main process re-created from its formatted traceback (torch keeps only the type and the
    text); the last line of that text is the original ``...BddsegError: PATH: PROBLEM``."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught BddsegError"):
        return lines[-1].partition("BddsegError: ")[2] or lines[-1]
    return " ".join(lines)


def _release(e: BaseException) -> None:
    """Free what the failed command's frames still hold. torch re-raises a DataLoader worker's
    error from a frame that keeps it, a cycle that holds the loader until exit; there
    multiprocessing terminates and joins the workers, which ignore SIGTERM during training
    (bddseg.sampling), so the process hung forever after printing the error."""
    traceback.clear_frames(e.__traceback__)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BddsegError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        _release(e)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        _release(e)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as e:
        print("interrupted", file=sys.stderr)
        _release(e)
        return 130


if __name__ == "__main__":
    sys.exit(main())
