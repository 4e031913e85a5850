"""The model (any smp architecture; default U-Net/ResNet34), padding to its input multiple,
and rebuilding a model from a checkpoint (the format, saving and loading:
:mod:`bddseg.checkpoints`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bddseg.checkpoints import (
    load_checkpoint,
    safe_torch_load,
)
from bddseg.config import Config, ModelConfig, from_dict
from bddseg.errors import BddsegError, first_line
from bddseg.precision import autocast


def _smp():
    import segmentation_models_pytorch as smp

    return smp


# bddseg's name (config.ARCH_NAMES, ``model.arch``) -> the segmentation_models_pytorch class.
# Every architecture takes any smp encoder or "tu-" + a timm model name, except: dpt takes
# only ViT-style timm encoders ("tu-vit_small_patch16_224", ...), and no other architecture
# takes one (smp: "Unsupported model downsampling pattern"); unetplusplus and linknet refuse
# smp's "mit_b*" encoders. smp's own errors for a bad pair are quoted in one BddsegError.
ARCHS: dict[str, str] = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "fpn": "FPN",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "linknet": "Linknet",
    "manet": "MAnet",
    "pan": "PAN",
    "upernet": "UPerNet",
    "segformer": "Segformer",
    "dpt": "DPT",
}


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the segmentation network.

    Args:
        cfg: the model section of the config. ``pretrained`` loads ImageNet weights for the
            encoder from the model hub, unless ``encoder_weights`` names a local state-dict
            file (for air-gapped clusters). For ``tu-`` encoders the hub weights are timm's
            default tag for the name (``tu-NAME.TAG`` picks another).
        num_classes: 20 (``unknown: class``) or 19 (``unknown: ignore``).

    Returns:
        A module mapping float images ``(N, 3, H, W)`` (H, W multiples of
        :func:`input_multiple`) to logits ``(N, num_classes, H, W)``. Use
        :func:`forward_padded` for other sizes.

    Raises:
        BddsegError: unknown architecture or encoder, an encoder the architecture cannot take
            (one line naming both), unreadable weights file, or hub weights that cannot be
            fetched (the message names ``--no-pretrained`` and ``--encoder-weights PATH``).
    """
    if cfg.arch not in ARCHS:
        raise BddsegError(f"unknown architecture {cfg.arch!r} (valid: {', '.join(ARCHS)})")
    arch, encoder = cfg.arch, cfg.encoder
    if arch == "dpt" and not encoder.startswith("tu-"):
        raise BddsegError(
            f"architecture 'dpt' cannot take encoder {encoder!r}: it needs a ViT-style timm "
            "encoder, 'tu-' + its timm name (e.g. tu-vit_small_patch16_224)"
        )
    hub = cfg.pretrained and cfg.encoder_weights is None
    options = arch_options(cfg)
    try:
        model = _construct(cfg, num_classes, hub, options)
    except Exception as e:  # network failures surface as many exception types
        if isinstance(e, KeyError) and "Wrong pretrained weights" in str(e):
            raise BddsegError(
                f"encoder {encoder!r} has no ImageNet weights in smp; use --no-pretrained or "
                "--encoder-weights PATH"
            ) from None
        error = e
        if hub:
            try:  # the same pair without weights: if it builds, fetching them failed
                _construct(cfg, num_classes, False, options)
            except Exception as e2:
                error = e2
            else:
                raise BddsegError(
                    f"cannot fetch ImageNet weights for encoder {encoder!r} "
                    f"({e.__class__.__name__}); no network? Use --no-pretrained to start from "
                    "random weights, or --encoder-weights PATH to load a local encoder state dict"
                ) from None
        if "drop_path_rate" in str(error):
            raise BddsegError(
                f"model.drop_path: timm's {encoder.removeprefix('tu-')!r} takes no drop path rate"
            ) from None
        problem = _pair_problem(cfg, error)
        if problem is None:  # not about the pair: a bug shows
            raise error from None
        raise BddsegError(problem) from None
    if cfg.drop_path is not None and not encoder.startswith("tu-"):
        model.encoder.reset_drop_path(cfg.drop_path)  # smp's MiT (arch_options checked)
    if cfg.aux_weight > 0:
        add_aux_head(model, num_classes)
    if cfg.encoder_weights is not None:
        load_encoder_weights(model, cfg.encoder_weights)
    return model


# the architectures whose decoder normalises a globally pooled (1x1) map with BatchNorm: in
# training they need at least 2 images per process (tests/test_archs.py holds this list to
# what smp does)
NEEDS_TWO_PER_BATCH = ("deeplabv3", "deeplabv3plus", "pan", "upernet")


# model.decoder_channels -> smp's argument where it is not "decoder_channels" (the U-Net
# family halves it at each of its stages; FPN's segmentation branch is half its pyramid)
_DECODER_WIDTH = {
    "pspnet": "psp_out_channels",
    "segformer": "decoder_segmentation_channels",
    "dpt": "decoder_fusion_channels",
}
# model.output_stride: the architectures that take smp's encoder_output_stride, and its values
OUTPUT_STRIDES = {"deeplabv3": (8, 16), "deeplabv3plus": (8, 16), "pan": (16, 32)}


def arch_options(cfg: ModelConfig) -> dict[str, Any]:
    """smp's keyword arguments for the architecture options of ``cfg`` (``decoder_channels``,
    ``output_stride``, ``drop_path``); an option the architecture or encoder cannot take is
    one :class:`BddsegError` naming both and what works."""
    arch, encoder, kwargs = cfg.arch, cfg.encoder, {}
    width = cfg.decoder_channels
    if width is not None:
        if arch == "linknet":
            raise BddsegError(
                "model.decoder_channels: linknet's decoder widths follow its encoder's; "
                "leave it unset (architectures with a decoder width: "
                f"{', '.join(a for a in ARCHS if a != 'linknet')})"
            )
        if arch in ("unet", "unetplusplus", "manet"):
            if width % 16:
                raise BddsegError(
                    f"model.decoder_channels: {width} must be a multiple of 16 for {arch} "
                    f"(its five stages halve it: {width}, {width / 2:g}, ..., {width / 16:g})"
                )
            kwargs["decoder_channels"] = tuple(width >> i for i in range(5))
        elif arch == "fpn":
            kwargs |= {
                "decoder_pyramid_channels": width,
                "decoder_segmentation_channels": max(width // 2, 1),
            }
        else:
            kwargs[_DECODER_WIDTH.get(arch, "decoder_channels")] = width
    if cfg.output_stride is not None:
        valid = OUTPUT_STRIDES.get(arch)
        if valid is None:
            raise BddsegError(
                f"model.output_stride: {arch} has a fixed output stride; it is an option of "
                f"{', '.join(OUTPUT_STRIDES)} only"
            )
        if cfg.output_stride not in valid:
            raise BddsegError(
                f"model.output_stride: {arch} takes {' or '.join(map(str, valid))}, "
                f"not {cfg.output_stride}"
            )
        kwargs["encoder_output_stride"] = cfg.output_stride
    if cfg.drop_path is not None:
        if encoder.startswith("tu-"):
            kwargs["drop_path_rate"] = cfg.drop_path
        elif not encoder.startswith("mit_b"):
            raise BddsegError(
                f"model.drop_path: encoder {encoder!r} has no drop path; timm encoders "
                "('tu-' + a timm name, e.g. tu-convnext_base) and smp's MiT (mit_b0..mit_b5) have"
            )
    return kwargs


def _construct(
    cfg: ModelConfig, num_classes: int, hub: bool, options: dict[str, Any] | None = None
) -> nn.Module:
    cls = getattr(_smp(), ARCHS[cfg.arch])
    timm = cfg.encoder.startswith("tu-")
    kwargs: dict[str, Any] = dict(options or {})
    if cfg.arch == "dpt":
        # any input whose sides are multiples of two patches, not only the ViT's pretraining
        # size (timm interpolates the position embeddings)
        kwargs["dynamic_img_size"] = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoder_readout.*")  # ViTs without a cls token
        return cls(
            encoder_name=cfg.encoder,
            encoder_weights=(True if timm else "imagenet") if hub else None,
            in_channels=3,
            classes=num_classes,
            **kwargs,
        )


def _pair_problem(cfg: ModelConfig, e: Exception) -> str | None:
    """A one-line problem for an architecture/encoder pair smp (or timm) refused, or None
    when ``e`` is not about the pair."""
    arch, encoder = cfg.arch, cfg.encoder
    text = str(e)
    if (isinstance(e, KeyError) and "Wrong encoder name" in text) or (
        isinstance(e, RuntimeError) and text.startswith("Unknown model")
    ):
        return (
            f"unknown encoder {encoder!r} for architecture {arch!r} (valid: an smp encoder "
            "name such as resnet34, or 'tu-' + a timm model name)"
        )
    if isinstance(e, ValueError | TypeError | NotImplementedError | AssertionError | IndexError):
        hint = ""
        if "downsampling pattern" in text:
            hint = " (ViT-style encoders work with dpt only)"
        elif arch == "dpt":
            hint = " (dpt needs a ViT-style timm encoder, e.g. tu-vit_small_patch16_224)"
        return f"architecture {arch!r} cannot take encoder {encoder!r}: {first_line(e)}{hint}"
    return None


def _inner(model: nn.Module) -> nn.Module:
    """The smp model inside a Fabric / DDP / ``torch.compile`` wrapper."""
    for _ in range(4):
        model = getattr(model, "module", model)
        model = getattr(model, "_orig_mod", model)
    return model


def input_multiple(model: nn.Module) -> int:
    """What the height and width of the input of ``model`` (an smp model from
    :func:`build_model`, wrapped or not) must be divisible by.

    The encoder's output stride (32 for the default U-Net/ResNet34 and most encoders at depth
    5; 16 for deeplabv3plus, 8 for deeplabv3 and pspnet), except: dpt, two patches (32 for a
    patch-16 ViT: its decoder halves the patch grid once); pan, 8 times the encoder's stride
    (128: its pyramid-attention block max-pools the stride-16 map three more times).
    :func:`model_forward` pads to it, training crops must be multiples of it
    (:func:`check_input_size`), and ONNX files record it (``bddseg.pad_multiple``).
    """
    inner = _inner(model)
    stride = int(getattr(getattr(inner, "encoder", None), "output_stride", 32) or 32)
    kind = type(inner).__name__
    if kind == "DPT":
        return 2 * stride
    if kind == "PAN":
        return 8 * stride
    return stride


def check_input_size(model: nn.Module, cfg: ModelConfig, size: tuple[int, int], what: str) -> None:
    """Refuse an input size (e.g. ``data.crop``) ``model`` cannot take unpadded, in one line."""
    inner = _inner(model)
    if not getattr(inner, "requires_divisible_input_shape", True):
        return  # smp's U-Net resizes its skip connections: any size works
    m = input_multiple(inner)
    h, w = size
    if h % m or w % m:
        fit = f"{-(-h // m) * m}x{-(-w // m) * m}"
        raise BddsegError(
            f"{what} {h}x{w} does not fit {cfg.arch}/{cfg.encoder}: its sides must be "
            f"multiples of {m} (e.g. {fit})"
        )


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict: a ``.pth``/``.pt`` file (``torch.save``, loaded with
    ``weights_only``) or a ``.safetensors`` file (the model hubs' format).

    For smp encoders, e.g. torchvision's ``resnet34`` weights; for ``tu-`` encoders, the timm
    model's own state dict (``timm.create_model(NAME).state_dict()`` or the hub's
    ``model.safetensors``). Classifier keys are dropped (``fc.*``; for timm, any key the
    feature extractor lacks); every encoder weight must be in the file with its shape, so a
    file for another encoder is not silently half-loaded.
    """
    p = Path(path)
    state = _read_state_dict(p)
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    target = model.encoder
    if hasattr(target, "model") and type(target).__name__ == "TimmUniversalEncoder":
        target = target.model  # timm's feature extractor: flattens stem.0 to stem_0
        own = target.state_dict()
        mapped = {}
        for key, value in state.items():
            key = key.removeprefix("model.")
            head, _, rest = key.partition(".")
            name = key if key in own else f"{head}_{rest}"
            if name in own:
                mapped[name] = value
        missing = [k for k in own if k not in mapped]
        if missing:
            raise BddsegError(
                f"weights do not fit the encoder: {len(missing)} of its {len(own)} tensors are "
                f"not in the file (first: {missing[0]!r}); is it for another model?",
                p,
            )
        state = mapped
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = _state_dict_problem(e)
        raise BddsegError(f"weights do not fit the encoder: {first}", p) from None


def _read_state_dict(p: Path, what: str = "encoder weights") -> dict:
    return _state_dict_of(_read_weights(p, what), p, what)


def _read_weights(p: Path, what: str) -> Any:
    """A ``.safetensors`` file's state dict, or whatever a PyTorch file holds (loaded with
    ``weights_only``); a missing or unreadable file is one :class:`BddsegError` naming ``p``."""
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not p.is_file():
            raise BddsegError(f"{what} file not found", p)
        try:
            return load_file(p)
        except (SafetensorError, OSError, ValueError) as e:
            raise BddsegError(f"not a readable safetensors file ({first_line(e)})", p) from None
    return safe_torch_load(p, what=what)


def _state_dict_of(state: Any, p: Path, what: str) -> dict:
    """The state dict in a loaded file: itself, or under ``state_dict`` (Lightning and most
    training scripts) or ``model`` (the official ConvNeXt/Swin releases)."""
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BddsegError(f"{what} must be a state dict (names -> tensors)", p)
    return state


def _state_dict_problem(e: RuntimeError) -> str:
    """The first specific line of a ``load_state_dict`` error (its first line is only "Error(s)
    in loading state_dict for Unet:"), shortened."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
    return detail if len(detail) <= 200 else detail[:197] + "..."


# ---------------------------------------------------------------- auxiliary head
class AuxHead(nn.Sequential):
    """The BDD100K zoo's auxiliary head (mmseg's ``FCNHead``, one conv, no input concat):
    3x3 conv to 256 channels + BN + ReLU, dropout 0.1, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(channels, num_classes, 1),
        )


def add_aux_head(model: nn.Module, num_classes: int) -> None:
    """Give ``model`` an :class:`AuxHead` on its encoder's stage-3 features (the second
    deepest map: stride 16, or 8 in a dilated encoder), as ``model.aux_head``
    (``model.aux_weight`` weighs its loss).

    In training mode the model then returns ``(logits, aux_logits)``, the auxiliary logits at
    the feature map's size, as torchvision's segmentation models return ``{"out", "aux"}``;
    in eval mode (validation, predict, ONNX export) it returns the logits alone and the head
    does not run.
    """
    model.aux_head = AuxHead(model.encoder.out_channels[-2], num_classes)
    model.encoder.register_forward_hook(_keep_encoder_features)
    model.register_forward_hook(_add_aux_output)


def _keep_encoder_features(encoder: nn.Module, inputs, output) -> None:
    if encoder.training:  # dpt's encoder returns (features, prefix tokens)
        encoder.__dict__["_aux_features"] = output[0] if isinstance(output, tuple) else output


def _add_aux_output(model: nn.Module, inputs, output):
    features = model.encoder.__dict__.pop("_aux_features", None)
    if not model.training or features is None:
        return output
    return output, model.aux_head(features[-2])


def pad_to_multiple(x: torch.Tensor, multiple: int = 32, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dims of ``x`` on the bottom/right up to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), value=value)


def forward_padded(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``(N, 3, H, W)`` images of any size: pad to
    :func:`input_multiple` (32 for the default U-Net), crop logits back."""
    h, w = images.shape[-2:]
    return model(pad_to_multiple(images, input_multiple(model)))[..., :h, :w]


def model_num_classes(model: nn.Module) -> int:
    """The number of classes an smp model (Fabric- or DDP-wrapped or not) predicts: the
    output channels of the last convolution of its segmentation head."""
    head = _inner(model).segmentation_head
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def model_forward(
    model: nn.Module,
    precision: str = "32-true",
    device: str | torch.device | None = None,
    channels_last: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` as the forward every route runs (:class:`bddseg.predictor.Predictor` for
    predict, evaluate and training's validation; ``bddseg bench``): normalised images
    ``(N, 3, H, W)`` of any size -> float32 logits ``(N, C, H, W)``, padded to a multiple of
    :func:`input_multiple` (32 for the default U-Net) and cropped back, under ``precision``'s autocast (:func:`resolve_precision`), without
    autograd. ``channels_last``: hand the padded batch over in that memory format (for a model
    converted to it)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    multiple = input_multiple(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, multiple)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(precision, device):
            return model(x)[..., :h, :w].float()

    forward.model = model  # type: ignore[attr-defined]  # for callers that want the module
    return forward


def model_from_checkpoint(
    checkpoint: str | Path | dict[str, Any],
    device: str | torch.device = "cpu",
    source: str | Path | None = None,
) -> tuple[nn.Module, Config]:
    """Rebuild the model stored in a checkpoint (a file, or a dict from
    :func:`bddseg.checkpoints.make_checkpoint`), in eval mode and the default memory format,
    without fetching weights. Training's validation rebuilds the model it scores from the
    checkpoint dict it is about to save, so it scores exactly what ``bddseg evaluate
    --checkpoint`` scores. ``source``: the file a dict was loaded from, named in errors."""
    if isinstance(checkpoint, dict):
        ckpt, p = checkpoint, Path(source or "<checkpoint in memory>")
    else:
        p = Path(checkpoint)
        ckpt = load_checkpoint(p)
    cfg = from_dict(ckpt.get("config") or {}, source=str(p))
    model_cfg = cfg.model.__class__(
        **{**cfg.model.__dict__, "pretrained": False, "encoder_weights": None}
    )
    num_classes = int(ckpt.get("num_classes", cfg.num_classes))
    try:
        model = build_model(model_cfg, num_classes)
    except BddsegError as e:  # e.g. an architecture this version does not know: name the file
        raise BddsegError(e.problem, e.path or p) from None
    load_weights(model, ckpt["model"], p, f"{cfg.model.arch}/{cfg.model.encoder}", num_classes)
    return model.to(device).eval(), cfg


def load_weights(
    model: nn.Module,
    state: dict,
    path: str | Path,
    name: str = "the model",
    num_classes: int | None = None,
) -> None:
    """``model.load_state_dict(state, strict=True)`` (``torch.compile`` / DDP prefixes
    dropped); weights that do not fit raise a one-line :class:`BddsegError` naming ``path``."""
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        classes = f" with {num_classes} classes" if num_classes is not None else ""
        raise BddsegError(
            f"checkpoint weights do not fit {name}{classes}: {_state_dict_problem(e)}", path
        ) from None


__all__ = [
    "ARCHS",
    "AuxHead",
    "ModelConfig",
    "NEEDS_TWO_PER_BATCH",
    "add_aux_head",
    "arch_options",
    "build_model",
    "check_input_size",
    "forward_padded",
    "input_multiple",
    "load_encoder_weights",
    "load_weights",
    "model_forward",
    "model_num_classes",
    "model_from_checkpoint",
    "pad_to_multiple",
]
