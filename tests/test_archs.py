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
def test_train_step_evaluate_and_predict(arch, trained, synth_root, tmp_path):
    """One training step, then every route downstream: evaluate --checkpoint, predict with
    TTA and a sliding window, load_predictor."""
    import bddseg
    from bddseg.evaluate import evaluate_checkpoint
    from bddseg.model import model_from_checkpoint
    from bddseg.predictor import Predictor

    ckpt = trained(arch)
    model, cfg = model_from_checkpoint(ckpt)
    assert (cfg.model.arch, cfg.model.encoder) == (arch, ENCODERS[arch])
    assert input_multiple(model) == MULTIPLES[arch]
    predictor = Predictor.from_checkpoint(ckpt, "cpu", precision="32-true")
    image = _image(75, 101)  # odd sides: padded to the multiple, cropped back
    mask = predictor.predict(image)
    assert mask.shape == (75, 101) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= set(range(19)) | {255}
    for options in ({"tta": "flip+scales"}, {"window": (64, 64)}):
        other = Predictor.from_checkpoint(ckpt, "cpu", precision="32-true", **options)
        assert other.predict(image).shape == (75, 101), options
    assert np.array_equal(bddseg.load_predictor(ckpt, precision="32-true").predict(image), mask)
    result = evaluate_checkpoint(
        ckpt, synth_root, tmp_path / "eval", precision="32-true", plots=False, progress=False
    )
    assert 0.0 <= result["official"]["miou"] <= 1.0 and result["num_images"] == 6


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
    size = None if dynamic else (720, 1280)  # the frame its fixed export is made for
    out = export_onnx(ckpt, tmp_path / f"{arch}.onnx", dynamic=dynamic, size=size, check=False).path
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


# ---------------------------------------------------------------- architecture options
def _build(**kw):
    return build_model(ModelConfig(pretrained=False, **kw), 19)


def test_decoder_width_output_stride_and_drop_path_reach_smp():
    unet = _build(encoder="resnet18", decoder_channels=128)
    widths = [b.conv2[0].out_channels for b in unet.decoder.blocks]
    assert widths == [128, 64, 32, 16, 8]
    upernet = _build(arch="upernet", encoder="resnet18", decoder_channels=512)
    assert upernet.segmentation_head[0].in_channels == 512
    segformer = _build(arch="segformer", encoder="mit_b0", decoder_channels=768, drop_path=0.3)
    assert segformer.segmentation_head[0].in_channels == 768
    drops = [m.drop_prob for m in segformer.encoder.modules() if hasattr(m, "drop_prob")]
    assert max(drops) == pytest.approx(0.3) and drops == sorted(drops)  # rising with depth
    d8 = _build(arch="deeplabv3plus", encoder="resnet18", output_stride=8)
    assert input_multiple(d8) == 8
    cnx = _build(arch="upernet", encoder="tu-convnext_atto", drop_path=0.4)
    rates = [m.drop_prob for m in cnx.encoder.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"arch": "linknet", "decoder_channels": 64}, "linknet's decoder widths follow"),
        ({"decoder_channels": 100}, "100 must be a multiple of 16 for unet"),
        ({"output_stride": 8}, "unet has a fixed output stride; it is an option of deeplabv3,"),
        ({"arch": "pan", "output_stride": 8}, "pan takes 16 or 32, not 8"),
        ({"drop_path": 0.1}, "encoder 'resnet18' has no drop path; timm encoders"),
    ],
)
def test_options_an_architecture_cannot_take_are_one_line_errors(kw, message):
    with pytest.raises(BddsegError, match=message) as e:
        _build(**{"encoder": "resnet18", **kw})
    assert "\n" not in str(e.value)


def test_aux_head_in_training_only():
    torch.manual_seed(0)
    model = _build(arch="deeplabv3plus", encoder="resnet18", aux_weight=0.4)
    assert model.aux_head[0].in_channels == 256  # resnet18's stage 3
    x = torch.randn(2, 3, 64, 96)
    model.train()
    logits, aux = model(x)
    assert logits.shape == (2, 19, 64, 96) and aux.shape == (2, 19, 4, 6)  # stride 16
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 19, 64, 96)
    assert "_aux_features" not in model.encoder.__dict__  # nothing kept between calls


def test_timm_encoder_weights_from_a_local_file(tmp_path):
    """``--encoder-weights`` for a ``tu-`` encoder: timm's own state dict (.pth or the hub's
    .safetensors); a file for another model is refused, not half-loaded."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = timm.create_model("convnext_atto").state_dict()
    torch.save(state, tmp_path / "cnx.pth")
    save_file(state, tmp_path / "cnx.safetensors")
    for name in ("cnx.pth", "cnx.safetensors"):
        model = _build(
            arch="upernet", encoder="tu-convnext_atto", encoder_weights=str(tmp_path / name)
        )
        assert torch.equal(model.encoder.model.stem_0.weight, state["stem.0.weight"])
        got = model.encoder.model.stages_3.blocks[1].mlp.fc2.weight
        assert torch.equal(got, state["stages.3.blocks.1.mlp.fc2.weight"])
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(
        BddsegError, match="r18.pth: weights do not fit the encoder: .* not in the file"
    ):
        _build(
            arch="upernet", encoder="tu-convnext_atto", encoder_weights=str(tmp_path / "r18.pth")
        )


# ---------------------------------------------------------------- the zoo's recipes
@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "arch", "encoder"),
    [
        ("bdd100k_upernet_convnext_b", "upernet", "tu-convnext_base.fb_in22k_ft_in1k"),
        ("bdd100k_deeplabv3plus_r50", "deeplabv3plus", "resnet50"),
        ("bdd100k_segformer_mit_b2", "segformer", "mit_b2"),
    ],
)
def test_zoo_configs_train_on_cpu(config, arch, encoder, synth_root, tmp_path, one_torch_thread):
    """``bddseg train --config configs/<zoo recipe>.yaml --no-pretrained``, shrunk to one step
    of two 64x128 crops: the recipe as shipped (aux head, layer decay, drop path, poly with
    warm-up) builds and trains, and its checkpoint predicts."""
    from bddseg.cli import main
    from bddseg.model import model_from_checkpoint

    out = tmp_path / "run"
    shrink = ["data.crop=[64,128]", "optim.batch_size=2", "optim.max_steps=1", "data.workers=0"]
    args = ["train", "--config", config, "--data", str(synth_root), "--out", str(out)]
    args += ["--no-pretrained", "--accelerator", "cpu", "--devices", "1"]
    assert main(args + [a for s in shrink for a in ("--set", s)]) == 0
    model, cfg = model_from_checkpoint(out / "best.pt")
    assert (cfg.model.arch, cfg.model.encoder) == (arch, encoder)
    assert not cfg.model.pretrained and cfg.optim.schedule == "poly"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 128)).shape == (1, 19, 64, 128)


def test_batch_of_one_is_refused_where_batchnorm_sees_a_pooled_map(synth_root, tmp_path):
    """NEEDS_TWO_PER_BATCH is exactly the architectures that fail a training forward of one
    image, and training refuses them one image per process in one line, before any step."""
    from bddseg.model import NEEDS_TWO_PER_BATCH
    from bddseg.train import train

    failing = []
    for arch in ARCH_NAMES:
        model = _build(arch=arch, encoder=ENCODERS[arch]).train()
        try:
            model(torch.randn(1, 3, 128, 128))
        except ValueError as e:
            assert "Expected more than 1 value per channel" in str(e)
            failing.append(arch)
    assert tuple(failing) == NEEDS_TWO_PER_BATCH
    cfg = from_dict(
        {
            "data": {"root": str(synth_root), "crop": [64, 96], "workers": 0},
            "model": {"arch": "upernet", "encoder": "resnet18", "pretrained": False},
            "optim": {"batch_size": 1, "max_steps": 1},
            "run": {"out": str(tmp_path / "run"), "accelerator": "cpu"},
        }
    )
    with pytest.raises(BddsegError, match="upernet normalises a globally pooled map with "
                       "BatchNorm, which needs 2 or more in training"):  # fmt: skip
        train(cfg)
