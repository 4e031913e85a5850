"""Training: ``train(cfg)`` runs one explicit loop on Lightning Fabric and fills a run directory.

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` (everything needed to
resume), ``best.pt`` (weights with the best val mIoU), ``log.csv``, ``tb/`` (TensorBoard) and
``loss_curves.png``. Read top to bottom: :func:`train` sets things up and calls
:func:`train_one_epoch` until the step budget is spent; :func:`after_step` logs, validates
(:func:`validate`, through :func:`bddseg.evaluate.score_split`) and checkpoints when due.

Resuming is exact. The learning rate is a pure function of the step (:mod:`bddseg.schedule`),
the sample order a pure function of ``(seed, epoch)``, each sample's augmentation a pure
function of ``(seed, epoch, position)``, and the global RNGs are reseeded from ``(seed, rank,
step)`` before every step. So ``last.pt`` needs only the model, the optimizer and the step,
and a resumed run reproduces an uninterrupted one bit for bit on CPU (any ``data.workers``).

Several GPUs and machines (``optim.batch_size`` is the global batch, split over all processes)::

    # one machine, 4 GPUs: Fabric starts the processes itself
    bddseg train --config configs/bdd100k_unet_r34_ce.yaml --data ROOT --out RUN --devices 4

    # 2 machines x 8 GPUs with torchrun (Fabric reads its environment); run on every machine,
    # NODE_RANK 0 and 1, MASTER the first machine's address; RUN on a shared filesystem
    torchrun --nnodes 2 --nproc-per-node 8 --node-rank $NODE_RANK \\
        --master-addr $MASTER --master-port 29500 --no-python \\
        bddseg train --config configs/bdd100k_unet_r34_ce.yaml --data ROOT --out RUN \\
        --devices 8 --num-nodes 2

Under SLURM, ``srun bddseg train ... --devices 8 --num-nodes 2`` works the same way.
Validation and checkpoints happen on rank 0 while the other ranks wait.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from bddseg import runs
from bddseg.checkpoints import load_checkpoint, make_checkpoint, save_checkpoint
from bddseg.classes import BDD100K, Classes
from bddseg.config import INFERENCE_PRECISION, Config, RunConfig, save_yaml, to_dict
from bddseg.data import build_dataset, normalize_image
from bddseg.errors import BddsegError, first_line, warn
from bddseg.evaluate import eval_dataset, score_split
from bddseg.finetune import init_from
from bddseg.labels import IGNORE_VALUE
from bddseg.losses import build_loss
from bddseg.metrics import official_arrays, official_metrics
from bddseg.model import NEEDS_TWO_PER_BATCH, build_model, check_input_size, load_weights
from bddseg.optim import build_optimizer
from bddseg.precision import precision_note, resolve_precision
from bddseg.predictor import Predictor
from bddseg.sampling import rare_class_weights, seed_everything, step_seed, train_loader
from bddseg.schedule import lr_at, momentum_at, set_optimizer_hparams
from bddseg.stats import class_weights, dataset_stats
from bddseg.trainlog import CsvLog, Progress, StopFlag, TensorBoard, Timer, ValImages


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_miou: float | None
    last_step: int
    last_val: dict | None = None  # metrics of the last validation of this invocation
    last_confusion: torch.Tensor | None = None  # its int64 (20, 20) confusion matrix


@dataclass
class State:
    """Everything that changes during training, besides model and optimizer."""

    step: int = 0
    best_miou: float | None = None
    elapsed: float = 0.0
    last_val: dict | None = None
    last_confusion: torch.Tensor | None = None
    loss_sum: float = 0.0  # train loss since the last log row...
    loss_count: int = 0  # ...over this many steps
    skipped: int = 0  # samples that failed to load (on_bad_sample: skip)
    stopped: bool = False  # Ctrl-C / SIGTERM (agreed by all ranks) or run.stop_at reached


@dataclass
class Run:
    """What the loop needs, gathered once by :func:`train`."""

    cfg: Config
    fabric: object
    model: nn.Module  # as set up by Fabric (DDP, precision)
    raw: nn.Module  # the plain module: its weights go into checkpoints
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    train_data: Dataset
    val_data: Dataset | None  # rank 0 only
    run_dir: Path
    total_steps: int
    steps_per_epoch: int
    local_batch: int
    stop: StopFlag
    timer: Timer
    ema: nn.Module | None = None  # timm ModelEmaV3 of ``raw`` (run.ema_decay)
    sample_weights: torch.Tensor | None = None  # rare-class sampling (data.rare_class_temp)
    log: CsvLog | None = None
    tb: TensorBoard | None = None
    progress: Progress | None = None
    val_images: ValImages | None = None  # the val triplets TensorBoard shows (rank 0)
    trace_samples: bool = False  # each rank appends its samples to RUN/samples.rankN.txt
    image_size: list[int] | None = None  # (H, W) of the val images: the export's default
    classes: Classes = BDD100K  # the run's K classes (the train data's); checkpoints carry them


# ---------------------------------------------------------------- the loop
def train(cfg: Config, *, trace_samples: bool = False) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` into the run directory ``cfg.run.out``.

    With ``cfg.run.resume``, continues from ``RUN/last.pt`` (starts afresh if there is none).
    ``trace_samples`` (``bddseg train --trace-samples``): each rank appends an ``epoch index``
    line per sample it trains on to ``RUN/samples.rankN.txt`` (a check of the sampling: the
    ranks' shares are disjoint, rare classes are drawn more often).
    Sets the process-wide torch flags of ``cfg.run`` first (:func:`set_torch_flags`).

    Returns:
        The run directory, the best val mIoU (official definition: mean over the classes
        present in the val truth) and the last step.

    Raises:
        BddsegError: bad data or config, a run directory that already holds another run, or a
            NaN / infinite loss (the message gives the step and what to try).
        KeyboardInterrupt: after Ctrl-C (or SIGTERM), once ``last.pt`` is saved.
    """
    set_torch_flags(cfg.run)
    run_dir = Path(cfg.run.out)
    check_run_dir(run_dir, cfg)
    # the data, then the model (it may fetch ImageNet weights), then devices and RUN/: a
    # wrong path or encoder is named before any download, Fabric's banner or a new folder
    train_data, val_data = build_data(cfg)
    classes = train_data.classes
    outputs = len(classes.model_names(cfg.data.unknown))
    image_size = frame_size(val_data)
    seed_everything(cfg.run.seed)  # the same initial weights on every rank
    model = build_model(cfg.model, outputs)
    check_input_size(model, cfg.model, cfg.data.crop, "data.crop")
    resuming = cfg.run.resume and (run_dir / runs.LAST).is_file()
    if cfg.model.init_from and not resuming:  # a resumed run has its own weights
        names = classes.model_names(cfg.data.unknown)
        arch = f"{cfg.model.arch}/{cfg.model.encoder}"
        report = init_from(model, cfg.model.init_from, names, arch=arch)
        print(report)
        for line in report.warnings:
            warn(line)
    fabric = setup_fabric(cfg)
    fabric.launch()  # with devices > 1 outside torchrun, this starts the other processes
    steps_per_epoch, local_batch = epoch_size(len(train_data), cfg, fabric.world_size)
    if local_batch < 2 and cfg.model.arch in NEEDS_TWO_PER_BATCH:
        raise BddsegError(
            f"optim.batch_size {cfg.optim.batch_size} over {fabric.world_size} process(es) "
            f"gives each 1 image a step; {cfg.model.arch} normalises a globally pooled map "
            "with BatchNorm, which needs 2 or more in training (set optim.batch_size to "
            f"{2 * fabric.world_size} or more)"
        )
    class_weights = load_class_weights(cfg, fabric, classes)
    loss_fn = build_loss(cfg.loss, outputs, class_weights, IGNORE_VALUE)
    sample_weights = rare_class_sampling(cfg, fabric, classes)
    fresh = not run_dir.exists()
    ckpt = prepare_run_dir(run_dir, cfg, fabric)
    try:
        if ckpt is not None:
            name = f"{cfg.model.arch}/{cfg.model.encoder}"
            load_weights(model, ckpt["model"], run_dir / runs.LAST, name, outputs)
        if cfg.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        raw = model
        if cfg.run.compile:
            model = torch.compile(model)
        optimizer = build_optimizer(raw, cfg.optim)
        model, optimizer = fabric.setup(model, optimizer)
        if ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        ema = build_ema(raw, cfg, ckpt)
    except Exception:
        if fresh and fabric.global_rank == 0:  # leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if fabric.global_rank != 0:
        val_data = None  # validation runs on rank 0
    total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    state = State()
    timer = Timer()
    if ckpt is not None:
        state = State(
            step=ckpt["step"], best_miou=ckpt.get("best_metric"), elapsed=ckpt.get("elapsed_s", 0.0)
        )
        timer = Timer(state.elapsed, ckpt.get("train_s", state.elapsed))
    run = Run(
        cfg, fabric, model, raw, optimizer, loss_fn.to(fabric.device), train_data, val_data,
        run_dir, total, steps_per_epoch, local_batch, StopFlag(), timer,
        ema, sample_weights, trace_samples=trace_samples, image_size=image_size,
        classes=classes,
    )  # fmt: skip
    if fabric.global_rank == 0:
        resume_step = state.step if ckpt is not None else None
        run.log = CsvLog(run_dir / runs.LOG, resume_step)
        run.tb = TensorBoard(run_dir / runs.TENSORBOARD_DIR, resume_step)
        run.progress = Progress(total, state.step)
        run.progress.print(describe(run))
        if ckpt is not None:
            run.progress.print(f"resuming from step {state.step} of {total}")
        run.val_images = ValImages(val_data)
    try:
        with run.stop.installed():
            while state.step < total and not state.stopped:
                train_one_epoch(run, state)
    finally:
        finish(run, state)
    if state.stopped and run.stop:
        raise KeyboardInterrupt
    return TrainResult(run_dir, state.best_miou, state.step, state.last_val, state.last_confusion)


def train_one_epoch(run: Run, state: State) -> None:
    """Train from ``state.step`` to the end of its epoch (or of training, or a stop)."""
    cfg, fabric, model = run.cfg, run.fabric, run.model
    epoch, start = divmod(state.step, run.steps_per_epoch)
    micro = cfg.optim.accumulate
    batches = iter(
        train_loader(
            run.train_data, run.local_batch, fabric.world_size, fabric.global_rank,
            run.steps_per_epoch * micro, cfg.run.seed, epoch, start * micro,
            cfg.data.workers, pin_memory=fabric.device.type == "cuda",
            trace=run.run_dir / f"samples.rank{fabric.global_rank}.txt" if run.trace_samples else None,
            weights=run.sample_weights,
        )
    )  # fmt: skip
    model.train()
    for _ in range(start, run.steps_per_epoch):
        seed_everything(step_seed(cfg.run.seed, fabric.global_rank, state.step))
        lr = lr_at(state.step, run.total_steps, cfg.optim)
        set_optimizer_hparams(
            run.optimizer, lr, momentum_at(state.step, run.total_steps, cfg.optim)
        )
        loss_sum = torch.zeros((), device=fabric.device)
        for k in range(micro):
            images, masks, skipped = next(batches)
            state.skipped += skipped
            images, masks = to_device(run, images, masks)
            with fabric.no_backward_sync(model, enabled=k < micro - 1):
                output = model(images)  # (logits, aux logits) with an auxiliary head
                loss = loss_with_aux(run.loss_fn, output, masks, cfg.model.aux_weight) / micro
                fabric.backward(loss)
            loss_sum += loss.detach()
        loss_value = check_finite(run, state, loss_sum)
        if cfg.optim.clip_grad:
            fabric.clip_gradients(model, run.optimizer, max_norm=cfg.optim.clip_grad)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if run.ema is not None:
            run.ema.update(run.raw, step=state.step)
        run.timer.add_images(run.local_batch * micro * fabric.world_size)
        after_step(run, state, loss_value, lr)
        if state.step >= run.total_steps or state.stopped:
            return


def loss_with_aux(loss_fn, output, masks: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """``loss_fn`` of the model's ``output``: its logits, or with an auxiliary head
    (``model.aux_weight``) ``(logits, aux_logits)``, whose loss (the aux logits upsampled
    to the masks) joins weighted by ``aux_weight``, as the zoo's recipes do (0.4)."""
    if not isinstance(output, tuple):
        return loss_fn(output, masks)
    logits, aux = output
    aux = F.interpolate(aux, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    return loss_fn(logits, masks) + aux_weight * loss_fn(aux, masks)


def after_step(run: Run, state: State, loss_value: float, lr: float) -> None:
    """Log, validate and checkpoint when due (validation and files on rank 0 only)."""
    cfg, step = run.cfg, state.step
    state.loss_sum += loss_value
    state.loss_count += 1
    end = step >= run.total_steps
    val_due = end or (
        step % cfg.run.val_every == 0 if cfg.run.val_every else step % run.steps_per_epoch == 0
    )
    if cfg.run.stop_at is not None and step >= cfg.run.stop_at and not end:
        state.stopped = True
    ckpt_due = (
        val_due
        or state.stopped
        or (cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0)
    )
    if not (ckpt_due or step % cfg.run.log_every == 0):
        return
    row = {
        "step": step,
        "epoch": round(step / run.steps_per_epoch, 4),
        "lr": lr,
        "train_loss": state.loss_sum / max(state.loss_count, 1),
        "images_per_s": run.timer.images_per_s(),
    }
    state.loss_sum, state.loss_count = 0.0, 0
    if val_due and run.fabric.global_rank == 0:
        with run.timer.pause():
            validate(run, state, row)
    row["time_s"] = round(run.timer.elapsed, 2)
    row["train_s"] = round(run.timer.train_s, 2)
    if run.log is not None:
        # the row before last.pt: killed between the two, the run resumes from the previous
        # last.pt and writes this row again (CsvLog keeps the rows up to the resumed step);
        # the other way round, this step's row would be lost for good
        run.log.append(row)
        run.tb.log(row)
        info = f"loss {row['train_loss']:.4f}  lr {lr:.2e}  {row['images_per_s']:.1f} img/s"
        if "val_miou" in row:
            info += (
                f"  val mIoU {_num(row['val_miou'])}  pixel acc {_num(row['val_pixel_accuracy'])}"
            )
        run.progress.update(step, info, force_line="val_miou" in row)
    if ckpt_due:
        with run.timer.pause():
            if run.fabric.global_rank == 0:
                save_checkpoint(run.run_dir / runs.LAST, checkpoint(run, state, training=True))
            run.fabric.barrier()  # the other ranks wait for validation and the checkpoint


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def validate(run: Run, state: State, row: dict) -> None:
    """Score the val split, fill ``row``'s ``val_*`` and keep ``best.pt`` up to date.

    The model scored is rebuilt from the checkpoint dict that ``best.pt`` would hold and run
    through :func:`bddseg.evaluate.score_split` at fp32, one image at a time: the function,
    the precision and the batch size of ``bddseg evaluate --checkpoint`` and ``bddseg
    predict``, so the three give the same numbers by construction, on every machine
    (training steps may run in bf16; validation never does). Even in fp32, a convolution's
    result can depend on the batch it is computed in: batches of 4 changed one pixel in
    46,080 of a base_size model's val masks here. TensorBoard gets each
    class's IoU and the val triplets (:class:`bddseg.trainlog.ValImages`), whose predictions
    are taken from this scoring pass.
    """
    if run.val_data is None:
        return
    run.val_images.load()
    predictor = Predictor.from_checkpoint(
        checkpoint(run, state, training=False), run.fabric.device,
        precision=INFERENCE_PRECISION, input_size=None,
    )  # fmt: skip
    scored = score_split(
        predictor, run.val_data, batch_size=1, workers=run.cfg.data.workers,
        loss_fn=val_loss(run), on_mask=run.val_images.on_mask,
    )  # fmt: skip
    classes = run.val_data.classes  # the val truth's benchmark rule: BDD100K's or the union
    metrics = official_metrics(scored.tally.cm, classes.names, classes.mean_over)
    present = official_arrays(scored.tally.cm, classes.mean_over)["averaged"]
    iou = {name: v for (name, v), p in zip(metrics["iou"].items(), present, strict=True) if p}
    run.tb.log_validation(state.step, iou, run.val_images.triplets())
    row.update(
        val_loss=scored.loss,
        val_miou=metrics["miou"],
        val_pixel_accuracy=metrics["pixel_accuracy"],
    )
    state.last_val = {
        "val_loss": scored.loss,
        "miou": metrics["miou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "precision": INFERENCE_PRECISION,
    }
    state.last_confusion = torch.from_numpy(scored.tally.cm)
    miou = metrics["miou"]
    if miou is not None and (state.best_miou is None or miou > state.best_miou):
        state.best_miou = miou
        save_checkpoint(run.run_dir / runs.BEST, checkpoint(run, state, training=False))


def val_loss(run: Run):
    """The val loss of scores against the truth (0..K-1/255): the run's loss, with 255 as
    class K where ``data.unknown`` is ``class`` (as training sees it)."""
    unknown = run.cfg.data.unknown == "class"
    unknown_id = run.classes.num

    def loss(scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        if unknown:
            truth = torch.where(truth == IGNORE_VALUE, unknown_id, truth)
        return run.loss_fn(scores, truth)

    return loss


def finish(run: Run, state: State) -> None:
    """Close the logs and draw the loss curves (rank 0)."""
    if run.progress is None:
        return
    run.progress.close()
    run.tb.close()
    if state.skipped:
        print(f"skipped {state.skipped} sample(s) that failed to load")
    from bddseg.plots import plot_loss_curves

    try:
        plot_loss_curves(run.run_dir / runs.LOG, run.run_dir / runs.LOSS_CURVES)
    except Exception as e:  # a failed plot must not turn a finished training into an error
        warn(f"could not draw loss_curves.png ({first_line(e)})")


# ---------------------------------------------------------------- setup
def set_torch_flags(r: RunConfig) -> None:
    """Set the process-wide torch flags a run asks for (they stay set after it).

    ``run.deterministic``: deterministic algorithms only (and the cuBLAS workspace setting
    they need, unless ``CUBLAS_WORKSPACE_CONFIG`` is set already); otherwise, where CUDA is
    available, cuDNN benchmarking (fixed crop sizes: cuDNN picks its kernels once).
    """
    if r.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def setup_fabric(cfg: Config):
    """A Fabric for ``cfg.run``: DDP when more than one process; ``precision: auto`` as
    :func:`bddseg.precision.resolve_precision` decides (bf16 on a GPU or a CPU with native bf16).
    Sets no global flags (see :func:`set_torch_flags`)."""
    from lightning_fabric import Fabric

    r = cfg.run
    many = (isinstance(r.devices, int) and r.devices > 1) or r.num_nodes > 1 or r.devices == -1
    try:
        return Fabric(
            accelerator=r.accelerator,
            devices=r.devices,
            num_nodes=r.num_nodes,
            strategy="ddp" if many else "auto",
            precision=resolve_precision(r.precision, r.accelerator),
        )
    except (ValueError, RuntimeError, TypeError) as e:  # Fabric's own config errors
        raise BddsegError(f"cannot set up devices: {str(e).splitlines()[0]}") from None


def check_run_dir(run_dir: Path, cfg: Config) -> None:
    """Refuse a run directory that holds another run (``last.pt``) unless resuming."""
    if (run_dir / runs.LAST).exists() and not cfg.run.resume:
        raise BddsegError(
            "this run directory already holds a run (last.pt): add --resume to continue it, or choose another --out",
            run_dir,
        )


def prepare_run_dir(run_dir: Path, cfg: Config, fabric) -> dict | None:
    """Create the run directory, write ``config.yaml``; return ``last.pt`` when resuming."""
    last = run_dir / runs.LAST
    check_run_dir(run_dir, cfg)
    ckpt = load_checkpoint(last) if cfg.run.resume and last.exists() else None
    if ckpt is not None and "optimizer" not in ckpt:
        raise BddsegError("not a training checkpoint (no optimizer state)", last)
    if fabric.global_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in run_dir.glob(".*.pt.*.tmp"):  # left by a run killed while saving
            tmp.unlink(missing_ok=True)
        if ckpt is not None:
            changed = _changed_keys(load_config_dict(ckpt), cfg)
            if changed:
                print(f"resuming with changed settings: {', '.join(changed)}")
        save_yaml(cfg, run_dir / runs.CONFIG)
    fabric.barrier()
    return ckpt


def load_config_dict(ckpt: dict) -> dict:
    return ckpt.get("config") or {}


def _changed_keys(saved: dict, cfg: Config) -> list[str]:
    now = to_dict(cfg)
    return [
        f"{s}.{k}"
        for s in ("data", "model", "loss", "optim")
        for k, v in now.get(s, {}).items()
        if s in saved and k in saved[s] and saved[s][k] != v
    ]


def build_data(cfg: Config) -> tuple[Dataset, Dataset]:
    """The train dataset (its loader is made per epoch) and the val dataset
    (:func:`bddseg.evaluate.eval_dataset`: what ``bddseg evaluate`` scores). Called before
    anything else touches the disk or the network, so a wrong ``--data`` is named first."""
    # uint8 batches, normalised on the device (see to_device): 5x fewer bytes per batch; on
    # an H200 the real recipe with 8 loader workers went from 168 to 196 images/s
    train_data = build_dataset(cfg.data, cfg.data.train_split, train=True, normalize=False)
    val_data = eval_dataset(cfg.data, cfg.data.val_split, cfg.data.on_bad_sample)
    if len(val_data) == 0:
        raise BddsegError(f"the {cfg.data.val_split} split is empty", cfg.data.root)
    return train_data, val_data


def frame_size(dataset: Dataset) -> list[int] | None:
    """``[H, W]`` of the first image of ``dataset`` (from its header): the size the model is
    validated at, recorded in checkpoints as ``image_size`` for a fixed-size ONNX export."""
    try:
        with Image.open(dataset.pairs[0].image) as im:
            return [im.height, im.width]
    except OSError:  # a bad first image: validation names it; the export asks for --size
        return None


def build_ema(raw: nn.Module, cfg: Config, ckpt: dict | None) -> nn.Module | None:
    """timm's ``ModelEmaV3`` of the weights and buffers when ``run.ema_decay`` is set.

    Its decay warms up as ``1 - (1 + step) ** -0.75`` to ``ema_decay`` (timm's schedule for
    short runs), so the average follows the fast early changes and smooths the late ones.
    """
    if cfg.run.ema_decay is None:
        return None
    from timm.utils.model_ema import ModelEmaV3

    ema = ModelEmaV3(raw, decay=cfg.run.ema_decay, use_warmup=True, warmup_power=0.75)
    if ckpt is not None:
        if "ema" not in ckpt:
            raise BddsegError(
                "last.pt has no averaged weights (run.ema_decay was off)", cfg.run.out
            )
        ema.module.load_state_dict(ckpt["ema"])
    return ema


def eval_model(run: Run) -> nn.Module:
    """The weights that validation scores and ``best.pt`` keeps: the average, if any."""
    return run.ema.module if run.ema is not None else run.raw


def rare_class_sampling(cfg: Config, fabric, classes: Classes) -> torch.Tensor | None:
    """Per-image sampling weights for ``data.rare_class_temp`` (None when it is off)."""
    if cfg.data.rare_class_temp is None:
        return None
    d = cfg.data
    with fabric.rank_zero_first():  # the statistics are cached by the first rank
        stats, presence = dataset_stats(d, d.train_split, workers=max(1, d.workers))
    share = torch.tensor([stats["pixel_share"][name] for name in classes.names])
    # unknown (255) takes no part in the choice: it is in nearly every image
    return rare_class_weights(presence[:, : classes.num], share, d.rare_class_temp)


def epoch_size(n: int, cfg: Config, world_size: int) -> tuple[int, int]:
    """``(optimizer steps per epoch, per-process batch)``; incomplete steps are dropped."""
    batch = cfg.optim.batch_size
    if batch % world_size:
        raise BddsegError(f"batch size {batch} is not divisible by the {world_size} processes")
    steps = n // (batch * cfg.optim.accumulate)
    if steps == 0:
        raise BddsegError(
            f"the train split has {n} images, fewer than one step of "
            f"{batch} x {cfg.optim.accumulate} (batch size x accumulation)",
            cfg.data.root,
        )
    return steps, batch // world_size


def load_class_weights(cfg: Config, fabric, classes: Classes) -> torch.Tensor | None:
    """Class weights from the train split's statistics, printed on rank 0. The statistics
    are cached in :func:`bddseg.stats.default_cache_dir` (``$BDDSEG_CACHE``)."""
    if cfg.loss.class_weights == "none":
        return None
    with fabric.rank_zero_first():
        stats, _ = dataset_stats(cfg.data, cfg.data.train_split, workers=max(1, cfg.data.workers))
    w = class_weights(stats, cfg.loss.class_weights, cfg.data.unknown, classes)
    if cfg.loss.class_weight_power != 1.0:
        w = w**cfg.loss.class_weight_power
        w = w / w[w > 0].mean()  # mean 1 over the classes present (absent ones weigh 0)
    if fabric.global_rank == 0:
        names = classes.model_names("class")
        pairs = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, w.tolist(), strict=False))
        power = f" ** {cfg.loss.class_weight_power:g}" if cfg.loss.class_weight_power != 1.0 else ""
        print(f"class weights ({cfg.loss.class_weights}{power}): {pairs}")
    return w


# ---------------------------------------------------------------- step helpers
def to_device(run: Run, images: torch.Tensor, masks: torch.Tensor):
    if images.shape[0] == 0:  # every sample of this batch failed to load (on_bad_sample: skip)
        h, w = run.cfg.data.crop
        images, masks = torch.zeros(1, 3, h, w), torch.full((1, h, w), IGNORE_VALUE)  # loss 0
    return batch_to_device(run.fabric, images, masks, run.cfg.run.channels_last)


def batch_to_device(fabric, images: torch.Tensor, masks: torch.Tensor, channels_last: bool):
    """A loader batch on the device: uint8 images normalised there (float32), masks int64."""
    images = normalize_image(fabric.to_device(images))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, fabric.to_device(masks).long()


def check_finite(run: Run, state: State, loss: torch.Tensor) -> float:
    """The step's loss as a float; stop on NaN / inf (on every rank) before the update.

    Also agrees on Ctrl-C across ranks: one small all-reduce per step, so that all ranks stop
    at the same step.
    """
    value = float(loss)
    flags = torch.tensor(
        [float(not math.isfinite(value)), float(bool(run.stop))], device=run.fabric.device
    )
    if run.fabric.world_size > 1:
        flags = run.fabric.all_reduce(flags, reduce_op="sum")
    if flags[1] > 0:
        state.stopped = True  # finish this step, save last.pt, then stop
        if not run.stop:
            run.stop.signal = 2  # another rank got the signal
    if flags[0] > 0:
        raise BddsegError(
            f"the training loss became {value if not math.isfinite(value) else 'non-finite on another rank'} "
            f"at step {state.step + 1} (epoch {state.step // run.steps_per_epoch}); stopped before "
            f"updating the weights. Try a lower learning rate (now {run.cfg.optim.lr:g}), gradient "
            "clipping (optim.clip_grad: 1.0), precision 32-true, or check the data with "
            "`bddseg data check`; last.pt (if any) holds the last saved good state"
        )
    return value


def checkpoint(run: Run, state: State, training: bool) -> dict:
    """The checkpoint dict (see :mod:`bddseg.checkpoints`); ``training`` adds what resuming
    needs."""
    ckpt = make_checkpoint(
        run.raw if training else eval_model(run),
        run.cfg,
        step=state.step,
        epoch=state.step // run.steps_per_epoch,
        best_metric=state.best_miou,
        val_metrics=state.last_val,
        image_size=run.image_size,
        classes=run.classes,
    )
    if training:
        epoch, in_epoch = divmod(state.step, run.steps_per_epoch)
        ckpt.update(
            optimizer=run.optimizer.state_dict(),
            scheduler={
                "name": run.cfg.optim.schedule,
                "step": state.step,
                "total_steps": run.total_steps,
            },
            position={
                "epoch": epoch,
                "step_in_epoch": in_epoch,
                "steps_per_epoch": run.steps_per_epoch,
            },
            rng={
                "scheme": "reseeded from (seed, rank, step) each step; samples from (seed, epoch, position)",
                "seed": run.cfg.run.seed,
            },
            elapsed_s=run.timer.elapsed,
            train_s=run.timer.train_s,
        )
        if run.ema is not None:
            ckpt["ema"] = run.ema.module.state_dict()
    return ckpt


def describe(run: Run) -> str:
    c = run.cfg
    extras = [
        f"{what} {value:g}"
        for what, value, off in (
            ("aux head", c.model.aux_weight, 0.0),
            ("drop path", c.model.drop_path, None),
            ("layer decay", c.optim.layer_decay, 1.0),
            ("head lr x", c.optim.head_lr_mult, 1.0),
        )
        if value != off
    ]
    return (
        f"training {c.model.arch}/{c.model.encoder} ({_classes_note(run)}, loss {c.loss.name}, "
        f"class weights {c.loss.class_weights}{''.join(', ' + e for e in extras)}) on "
        f"{len(run.train_data)} images: "
        f"{run.total_steps} steps of {c.optim.batch_size} x {c.optim.accumulate} "
        f"({run.steps_per_epoch} steps/epoch), {c.optim.name} lr {c.optim.lr:g} {c.optim.schedule}, "
        f"{run.fabric.world_size} process(es) on {run.fabric.device}, precision "
        f"{precision_note(c.run.precision, c.run.accelerator)}, into {run.run_dir}"
    )


def _classes_note(run: Run) -> str:
    """``20 classes``, or with few classes their names: ``5 classes: background, road, ...``."""
    names = run.classes.model_names(run.cfg.data.unknown)
    return f"{len(names)} classes" + (f": {', '.join(names)}" if run.classes.num <= 6 else "")


__all__ = ["TrainResult", "set_torch_flags", "train", "train_one_epoch", "validate"]
