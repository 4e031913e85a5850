"""One frozen configuration for a run: defaults, then a YAML file, then command-line flags.

The resolved config is written as ``config.yaml`` next to every run and stored inside every
checkpoint. Change it with :func:`dataclasses.replace` (or :func:`override`), never in place.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from bddseg.errors import BddsegError
from bddseg.files import atomic_write_text
from bddseg.labels import NUM_CLASSES, NUM_CLASSES_20

# Every set of choices, declared once: the config checks values against these, the CLI offers
# them (``choices``) and the modules that act on them import them.
Unknown = Literal["class", "ignore"]
# the dataset layouts bddseg reads (bddseg.layout); auto: detected from the folder
DatasetKind = Literal["auto", "bdd100k", "cityscapes", "acdc", "mapillary", "folder"]
OnBadSample = Literal["error", "skip"]
LossName = Literal["ce", "focal", "dice", "ce+dice", "ohem"]
ClassWeights = Literal["none", "inverse", "median", "effective"]
OptimName = Literal["adamw", "sgd"]
Schedule = Literal["onecycle", "poly", "constant"]
Accelerator = Literal["auto", "cpu", "cuda", "gpu", "mps"]
# the segmentation_models_pytorch (0.6) architectures, by smp's lower-case class names
# (bddseg.model.ARCHS maps each to its class; see there for what each needs of the encoder)
Arch = Literal[
    "unet", "unetplusplus", "fpn", "pspnet", "deeplabv3", "deeplabv3plus",
    "linknet", "manet", "pan", "upernet", "segformer", "dpt",
]  # fmt: skip
ARCH_NAMES: tuple[str, ...] = typing.get_args(Arch)
# auto: bf16-mixed on a GPU and on a CPU that computes bf16 natively, 32-true elsewhere
# (bddseg.precision.resolve_precision)
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
# Inference (predict, evaluate, Predictor) runs fp32 unless asked: the same checkpoint then
# gives the same masks on every machine and matches the fp32 ONNX export. bf16 (``auto`` on a
# CPU with AMX or AVX-512 BF16) is faster but changed ~1% of the pixels of a real model's masks.
# Training keeps run.precision = auto: bf16 changes its result no more than a seed does.
INFERENCE_PRECISION: Precision = "32-true"
# test-time augmentation of evaluate and predict: name -> (scales, with horizontal flips)
TTA_MODES: dict[str, tuple[tuple[float, ...], bool]] = {
    "none": ((1.0,), False),
    "flip": ((1.0,), True),
    "flip+scales": ((0.75, 1.0, 1.25), True),
}


@dataclass(frozen=True)
class DataConfig:
    root: str = ""
    # more dataset roots with the same classes: training and validation use the union
    extra_roots: tuple[str, ...] = ()
    dataset: DatasetKind = "auto"  # the layout of root (auto: detected; bddseg.layout)
    # a class file (bddseg.classes); "" = ROOT/classes.yaml if there is one, else the
    # layout's own classes (BDD100K's 19 for bdd100k, cityscapes, acdc and mapillary)
    classes: str = ""
    unknown: Unknown = "class"  # unlabelled -> an extra class K (original) or ignored (official)
    train_split: str = "train"
    val_split: str = "val"
    crop: tuple[int, int] = (512, 1024)  # (height, width) of training crops
    scale: tuple[float, float] = (0.5, 2.0)  # random rescale range before the crop
    base_size: tuple[int, int] | None = None  # resize (h, w) before scaling; None keeps the size
    hflip: bool = True
    jitter: float = 0.3  # brightness/contrast/saturation strength; 0 turns it off
    workers: int = 2
    on_bad_sample: OnBadSample = "error"
    max_train_images: int | None = None  # use only the first N (sorted) train pairs
    max_val_images: int | None = None
    # rare-class sampling (DAFormer): draw training images by the rarity of the classes they
    # hold, with this temperature (smaller: rarer classes more often); None: a plain shuffle
    rare_class_temp: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    arch: Arch = "unet"
    encoder: str = "resnet34"  # an smp encoder name or "tu-" + a timm model name
    pretrained: bool = True  # ImageNet weights for the encoder
    # start from a segmentation checkpoint (bddseg's or a plain smp state dict): every weight
    # that fits loads, the head's rows are matched by class name (bddseg.model.init_from)
    init_from: str | None = None
    encoder_weights: str | None = None  # a local state-dict file instead of the hub
    # the architecture's own options (bddseg.model.build_model maps them to smp's arguments);
    # None keeps smp's default
    decoder_channels: int | None = None  # decoder width (U-Net family: its widest stage)
    output_stride: int | None = None  # deeplabv3(plus): 8 or 16 (default 8, 16); pan: 16 or 32
    # stochastic depth of the encoder's blocks, rising linearly to this rate (timm "tu-"
    # encoders and smp's MiT; None: the encoder's default, 0 for timm, 0.1 for MiT)
    drop_path: float | None = None
    # an auxiliary FCN head on the encoder's stage-3 features (the zoo's: 3x3 conv 256 + BN +
    # ReLU, dropout 0.1, 1x1 classifier), its loss weighted by this; 0: no head
    aux_weight: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    name: LossName = "ce"
    class_weights: ClassWeights = "none"
    class_weight_power: float = 1.0  # weights ** power (0.5: square root, a milder balance)
    gamma: float = 2.0  # focal
    ohem_thresh: float = 0.7  # keep pixels whose true-class probability is below this...
    ohem_min_kept: int = 100_000  # ...but at least this many per batch


@dataclass(frozen=True)
class OptimConfig:
    name: OptimName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9  # SGD
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW (fastai's; the zoo's are 0.9, 0.999)
    eps: float = 1e-5  # AdamW (fastai's; PyTorch's default is 1e-8)
    # layer-wise lr decay (ConvNeXt, BEiT, Swin recipes): the lr of an encoder layer is
    # lr * layer_decay ** (how many stride levels it sits below the decoder); 1: off
    layer_decay: float = 1.0
    head_lr_mult: float = 1.0  # the decoder's and heads' lr multiplier (SegFormer's recipe: 10)
    schedule: Schedule = "onecycle"
    warmup_pct: float = 0.25  # share of the steps warming up (one-cycle: fastai's 0.25; poly)
    warmup_steps: int | None = None  # poly: linear warm-up steps (overrides warmup_pct)
    warmup_ratio: float = 1e-3  # poly: the warm-up starts at lr * this (mmseg's warmup_ratio)
    min_lr: float = 0.0  # poly: decays to this lr (mmseg's min_lr)
    cycle_momentum: bool = True  # one-cycle: momentum / AdamW beta1 0.95 -> 0.85 -> 0.95 (fastai)
    poly_power: float = 0.9
    epochs: int = 80
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 16
    accumulate: int = 1
    clip_grad: float | None = None


@dataclass(frozen=True)
class RunConfig:
    out: str = "runs/bdd100k_unet_r34"
    seed: int = 0
    devices: int | str = "auto"
    num_nodes: int = 1
    accelerator: Accelerator = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
    val_every: int | None = None  # steps; None = once per epoch
    log_every: int = 10
    resume: bool = False
    deterministic: bool = False
    checkpoint_every: int | None = None  # steps between last.pt writes; None = at validations only
    stop_at: int | None = None  # end this invocation after this step, saving last.pt (resume later)
    # exponential moving average of the weights (its top decay, reached after a warm-up):
    # validation and best.pt use the averaged weights; None turns it off
    ema_decay: float | None = None


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES_20 if self.data.unknown == "class" else NUM_CLASSES


SECTIONS = {f.name: f.type for f in fields(Config)}


def choices(key: str) -> tuple[str, ...]:
    """The valid values of a setting with a fixed set of choices, e.g. ``choices("loss.name")``."""
    section, name = key.split(".")
    tp = typing.get_type_hints(_section_types()[section])[name]
    if typing.get_origin(tp) is not Literal:
        raise KeyError(f"{key} has no fixed set of choices")
    return typing.get_args(tp)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples become lists), safe for YAML, JSON and ``weights_only`` loads."""

    def plain(v):
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return {
        s: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()} for s in SECTIONS
    }


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples, ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except BddsegError as e:
                errors.append(e.problem)
        raise BddsegError(f"{where}: expected {_tname(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise BddsegError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        if not isinstance(value, list | tuple):
            raise BddsegError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise BddsegError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise BddsegError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BddsegError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BddsegError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise BddsegError(f"{where}: {value} is too large") from None
    if tp is str:
        if not isinstance(value, str):
            raise BddsegError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r}")  # a bug in this module, not user input


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_dict(
    d: dict[str, Any] | None, base: Config | None = None, source: str | None = None
) -> Config:
    """Apply a nested dict ``{section: {key: value}}`` on top of ``base`` (defaults if None).

    Raises:
        BddsegError: on unknown sections or keys (all of them in one message, each with its
            closest valid name: :func:`_unknown_keys`), or a value of the wrong type. The
            message names ``source`` (the YAML file) when given.
    """
    cfg = base or Config()
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise BddsegError("config must be a mapping of sections", source)
    hints = {s: typing.get_type_hints(t) for s, t in _section_types().items()}
    unknown = _unknown_keys(d, hints)
    if unknown:
        many = len(unknown) > 1
        raise BddsegError(f"unknown config key{'s:' if many else ''} {', '.join(unknown)}", source)
    new_sections = {}
    for section, values in d.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise BddsegError(f"config section {section!r} must be a mapping", source)
        changes = {}
        for key, value in values.items():
            try:
                changes[key] = _coerce(value, hints[section][key], f"{section}.{key}")
            except BddsegError as e:
                raise BddsegError(e.problem, source) from None
        new_sections[section] = dataclasses.replace(getattr(cfg, section), **changes)
    cfg = dataclasses.replace(cfg, **new_sections)
    check_values(cfg, source)
    return cfg


def _unknown_keys(d: dict[Any, Any], hints: dict[str, dict[str, Any]]) -> list[str]:
    """Every section and ``section.key`` of ``d`` that ``hints`` (section -> key -> type) does
    not have, in order, each with the closest valid name (``optim.lrr (did you mean
    optim.lr?)``) or, where none is close (:func:`difflib.get_close_matches`), the valid ones.
    A config with two typos then names both at once."""

    def shown(name: Any) -> str:
        return name if isinstance(name, str) and name.isidentifier() else repr(name)

    def hint(where: str, name: Any, valid: list[str], prefix: str = "") -> str:
        close = difflib.get_close_matches(str(name), valid, n=1)
        if close:
            return f"{where} (did you mean {prefix}{close[0]}?)"
        return f"{where} (valid: {', '.join(valid)})"

    found = []
    for section, values in d.items():
        if section not in hints:
            found.append(hint(shown(section), section, list(hints)))
        elif isinstance(values, dict):
            for key in values:
                if key not in hints[section]:
                    where = f"{section}.{shown(key)}"
                    found.append(hint(where, key, list(hints[section]), f"{section}."))
    return found


# (key, lowest allowed, whether the lowest is allowed); None values are "not set" and pass.
# Values outside these ranges crash or hang training (batch 0, crop 0x0, max_steps 0 = all
# epochs, log_every 0, workers -1, lr nan), so they are refused where the config is read.
_RANGES = (
    ("data.crop", 1, True),
    ("data.scale", 0.0, False),
    ("data.base_size", 1, True),
    ("data.jitter", 0.0, True),
    ("data.workers", 0, True),
    ("data.max_train_images", 1, True),
    ("data.max_val_images", 1, True),
    ("data.rare_class_temp", 0.0, False),
    ("optim.lr", 0.0, False),
    ("optim.weight_decay", 0.0, True),
    ("optim.momentum", 0.0, True),
    ("optim.betas", 0.0, True),
    ("optim.eps", 0.0, False),
    ("optim.layer_decay", 0.0, False),
    ("optim.head_lr_mult", 0.0, False),
    ("optim.warmup_steps", 0, True),
    ("optim.warmup_ratio", 0.0, True),
    ("optim.min_lr", 0.0, True),
    ("model.decoder_channels", 1, True),
    ("model.output_stride", 1, True),
    ("model.drop_path", 0.0, True),
    ("model.aux_weight", 0.0, True),
    ("optim.warmup_pct", 0.0, True),
    ("optim.poly_power", 0.0, True),
    ("optim.epochs", 1, True),
    ("optim.max_steps", 1, True),
    ("optim.batch_size", 1, True),
    ("optim.accumulate", 1, True),
    ("optim.clip_grad", 0.0, False),
    ("loss.gamma", 0.0, True),
    ("loss.ohem_min_kept", 0, True),
    ("run.num_nodes", 1, True),
    ("run.val_every", 1, True),
    ("run.log_every", 1, True),
    ("run.checkpoint_every", 1, True),
    ("run.stop_at", 1, True),
    ("run.ema_decay", 0.0, False),
)


def check_values(cfg: Config, source: str | None = None) -> None:
    """Refuse values that type-check but cannot work: outside :data:`_RANGES`, NaN or
    infinite numbers anywhere, ``scale`` low above high, ``warmup_pct`` of 1 or more."""
    for key, low, inclusive in _RANGES:
        section, _, name = key.partition(".")
        value = getattr(getattr(cfg, section), name, None)
        if value is None:
            continue
        for v in value if isinstance(value, tuple) else (value,):
            finite = not isinstance(v, float) or math.isfinite(v)
            if not finite or not (v >= low if inclusive else v > low):
                bound = f">= {low}" if inclusive else f"> {low}"
                shown = list(value) if isinstance(value, tuple) else value
                raise BddsegError(f"{key}: {shown!r} is out of range (must be {bound})", source)
    for section in SECTIONS:
        for key, value in dataclasses.asdict(getattr(cfg, section)).items():
            items = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                raise BddsegError(f"{section}.{key}: {value!r} is not a finite number", source)
    if cfg.data.scale[0] > cfg.data.scale[1]:
        raise BddsegError(f"data.scale: {list(cfg.data.scale)} must be [low, high]", source)
    if cfg.run.ema_decay is not None and cfg.run.ema_decay >= 1:
        raise BddsegError(f"run.ema_decay: {cfg.run.ema_decay} must be below 1", source)
    if max(cfg.optim.betas) >= 1:
        raise BddsegError(f"optim.betas: {list(cfg.optim.betas)} must be below 1", source)
    for key, value in (
        ("optim.layer_decay", cfg.optim.layer_decay),
        ("optim.warmup_ratio", cfg.optim.warmup_ratio),
    ):
        if value > 1:
            raise BddsegError(f"{key}: {value} must be at most 1", source)
    if cfg.model.drop_path is not None and cfg.model.drop_path >= 1:
        raise BddsegError(f"model.drop_path: {cfg.model.drop_path} must be below 1", source)
    if cfg.optim.warmup_pct >= 1:
        raise BddsegError(f"optim.warmup_pct: {cfg.optim.warmup_pct} must be below 1", source)


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTIONS}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file with the safe loader."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BddsegError("config file not found", p) from None
    except UnicodeDecodeError as e:
        why = f"not UTF-8 text: {e.reason} at byte {e.start}"
        raise BddsegError(f"cannot read config file ({why})", p) from None
    except OSError as e:
        raise BddsegError(f"cannot read config file ({e.strerror or e})", p) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        first = getattr(e, "problem", None) or (str(e).strip().splitlines() or ["YAMLError"])[0]
        if "python/" in str(e):
            first += " (Python tags are refused: a config holds plain data only)"
        raise BddsegError(f"invalid YAML{where}: {first}", p) from None
    # the safe loader's own constructors: "!!float abc" (ValueError), deep nesting (RecursionError)
    except (ValueError, TypeError, RecursionError) as e:
        raise BddsegError(f"invalid YAML ({e.__class__.__name__}: {str(e)[:120]})", p) from None
    if data is not None and not isinstance(data, dict):
        raise BddsegError("config must be a mapping of sections", p)
    return data or {}


CONFIG_DIR = Path(__file__).parent / "configs"  # the recipes shipped with the package


def bundled_config(name: str) -> Path:
    """The path of a recipe shipped in ``bddseg/configs`` (``configs/`` in a checkout), by its
    name with or without ``.yaml``: ``demo_ce``, ``bdd100k_unet_r34_ce``, ..."""
    path = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise BddsegError(f"no bundled config named {name!r} (bundled: {known})")
    return path


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or ``base``), then the YAML file at ``path``, then ``overrides``.

    ``path`` may also name a bundled recipe (``demo_ce``, see :func:`bundled_config`) when no
    such file exists.

    ``overrides`` is either nested (``{"optim": {"lr": 0.1}}``) or dotted (``{"optim.lr": 0.1}``);
    ``None`` values are skipped so CLI flags that were not given do not override the file.
    """
    cfg = base or Config()
    if path is not None:
        bare_name = "/" not in str(path) and Path(path).suffix not in (".yaml", ".yml")
        if bare_name and not Path(path).exists():
            path = bundled_config(str(path))  # `--config demo_ce`: a recipe shipped with bddseg
        cfg = from_dict(load_yaml(path), cfg, source=str(path))
    if overrides:
        cfg = from_dict(_nest(overrides), cfg, source="command line")
    return cfg


def override(cfg: Config, **dotted: Any) -> Config:
    """``override(cfg, **{"optim.lr": 0.1})``: a new config with the given values."""
    return from_dict(_nest(dotted), cfg)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if value is None:
            continue
        if isinstance(value, dict) and "." not in key:
            for k, v in value.items():
                if v is not None:
                    nested.setdefault(key, {})[k] = v
            continue
        section, _, name = key.partition(".")
        if not name:
            raise BddsegError(f"override {key!r} must look like section.key")
        nested.setdefault(section, {})[name] = value
    return nested


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename)."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
