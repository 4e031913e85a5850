"""Every segmentation_models_pytorch architecture as a bddseg model: the table matches the
config's choices and smp, bad architecture/encoder pairs are one-line errors, and for each
architecture (small encoder, random weights, CPU) one training step through ``train``, a
``Predictor`` on an odd-sized image, and ONNX export with the parity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bddseg.config import ARCH_NAMES, ModelConfig, choices, from_dict
from bddseg.errors import BddsegError
from bddseg.model import ARCHS, build_model, check_input_size, input_multiple

# a small encoder for each architecture: resnet18 (SegFormer takes CNN encoders too; with
# MiT-B0 its ONNX export alone takes ~40 s here), timm's 0.4M-parameter test ViT (patch 16)
# for DPT, which takes only ViT-style encoders
ENCODERS = {arch: "resnet18" for arch in ARCH_NAMES} | {"dpt": "tu-test_vit"}
# what the input's sides must be divisible by (bddseg.model.input_multiple)
MULTIPLES = {arch: 32 for arch in ARCH_NAMES} | {
    "pspnet": 8,  # encoder depth 3
    "deeplabv3": 8,  # dilated encoder, output stride 8
    "deeplabv3plus": 16,  # output stride 16
    "pan": 128,  # output stride 16, then three 2x max-pools in its pyramid attention
    "dpt": 32,  # two 16-pixel patches
}
# training crops (the synthetic images are 96x160): multiples of the above
CROPS = {arch: (64, 96) for arch in ARCH_NAMES} | {"pan": (128, 128)}
REL_TOL = 1e-4  # largest |logit difference| / largest |logit|, PyTorch vs onnxruntime
MIN_AGREEMENT = 0.999


def test_arch_table_matches_the_config_and_smp():
    import segmentation_models_pytorch as smp

    assert tuple(ARCHS) == ARCH_NAMES == choices("model.arch")
    smp_names = {name: cls.__name__ for name, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()}
    assert smp_names == ARCHS  # every smp architecture, by smp's own lower-case name


@pytest.mark.parametrize(
    ("arch", "encoder", "message"),
    [
        ("dpt", "resnet18", "architecture 'dpt' cannot take encoder 'resnet18': it needs a ViT"),
        (
            "unet",
            "tu-test_vit",
            "architecture 'unet' cannot take encoder 'tu-test_vit': .*dpt only",
        ),
        ("unetplusplus", "mit_b0", "architecture 'unetplusplus' cannot take encoder 'mit_b0'"),
        ("fpn", "resnet9000", "unknown encoder 'resnet9000' for architecture 'fpn'"),
        ("upernet", "tu-no_such_net", "unknown encoder 'tu-no_such_net' for architecture"),
    ],
)
def test_bad_pairs_are_one_line_errors_naming_both(arch, encoder, message):
    with pytest.raises(BddsegError, match=message) as e:
        build_model(ModelConfig(arch=arch, encoder=encoder, pretrained=False), 20)
    assert "\n" not in str(e.value)


def test_unknown_arch_is_a_config_error():
    with pytest.raises(BddsegError, match="model.arch: 'segformer2' is not one of 'unet'"):
        from_dict({"model": {"arch": "segformer2"}})


def test_crop_must_fit_the_input_multiple():
    cfg = ModelConfig(arch="deeplabv3plus", encoder="resnet18", pretrained=False)
    model = build_model(cfg, 20)
    assert input_multiple(model) == 16
    check_input_size(model, cfg, (64, 96), "data.crop")
    with pytest.raises(BddsegError, match=r"data.crop 72x100 does not fit deeplabv3plus/resnet18: "
                       r"its sides must be multiples of 16 \(e.g. 80x112\)"):  # fmt: skip
        check_input_size(model, cfg, (72, 100), "data.crop")
    unet = build_model(ModelConfig(encoder="resnet18", pretrained=False), 20)
    assert input_multiple(unet) == 32
    check_input_size(unet, cfg, (72, 100), "data.crop")  # smp's U-Net takes any size


# ---------------------------------------------------------------- every architecture end to end
@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory, one_torch_thread):
    """``trained(arch)``: best.pt of a one-step training of ``arch`` (built once per module)."""
    from bddseg.train import train

    done: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in done:
            out = tmp_path_factory.mktemp(f"run_{arch}")
            h, w = CROPS[arch]
            cfg = from_dict(
                {
                    "data": {"root": str(synth_root), "crop": [h, w], "workers": 0,
                             "max_train_images": 4, "max_val_images": 2},
                    "model": {"arch": arch, "encoder": ENCODERS[arch], "pretrained": False},
                    "optim": {"batch_size": 2, "max_steps": 1, "lr": 1e-3},
                    "run": {"out": str(out), "accelerator": "cpu", "precision": "32-true",
                            "log_every": 1},
                }
            )  # fmt: skip
            torch.manual_seed(0)
            result = train(cfg)
            assert result.last_step == 1
            done[arch] = result.run_dir / "best.pt"
        return done[arch]

    return get


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_train_step_and_predict(arch, trained):
    from bddseg.model import model_from_checkpoint
    from bddseg.predictor import Predictor

    ckpt = trained(arch)
    model, cfg = model_from_checkpoint(ckpt)
    assert (cfg.model.arch, cfg.model.encoder) == (arch, ENCODERS[arch])
    assert input_multiple(model) == MULTIPLES[arch]
    predictor = Predictor.from_checkpoint(ckpt, "cpu", precision="32-true")
    mask = predictor.predict(_image(75, 101))  # odd sides: padded to the multiple, cropped back
    assert mask.shape == (75, 101) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= set(range(19)) | {255}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_onnx_export_parity(arch, trained, tmp_path):
    """Dynamic export where it works; the fixed 720x1280 one for the architectures whose
    dynamic export breaks at other sizes (refused with one line)."""
    import onnx

    from bddseg.export import NO_DYNAMIC_EXPORT, check_parity, export_onnx

    ckpt = trained(arch)
    dynamic = arch not in NO_DYNAMIC_EXPORT
    if not dynamic:
        with pytest.raises(BddsegError, match=f"--dynamic is not supported for {arch}"):
            export_onnx(ckpt, tmp_path / "refused.onnx", dynamic=True)
    out = export_onnx(ckpt, tmp_path / f"{arch}.onnx", dynamic=dynamic)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["bddseg.pad_multiple"] == str(MULTIPLES[arch])
    # a fixed export pads every image to the traced frame: global pooling then sees the
    # padding, so it matches PyTorch on full 720x1280 frames, the size it is made for
    image = _image(75, 101, 1) if dynamic else _image(720, 1280, 1)
    result = check_parity(ckpt, out, [image])
    assert result["max_abs_diff"] <= REL_TOL * result["max_abs_logit"], result
    assert result["argmax_agreement"] >= MIN_AGREEMENT, result


def test_cli_offers_the_same_names():
    from bddseg.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--arch", "upernet", "--encoder", "tu-convnext_tiny"])
    assert (args.arch, args.encoder) == ("upernet", "tu-convnext_tiny")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--arch", "segformer2"])
