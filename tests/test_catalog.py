"""``bddseg models``: the table covers every architecture, its parameter counts are exact, its
GFLOPs counted on the meta device equal a real forward's and scale with the pixels, and
``--measure`` times a model and checks its ONNX parity; a bad pair is one line and exit 2."""

from __future__ import annotations

import json

import pytest

from bddseg.catalog import MODELS, count_flops, describe, resolve_pairs
from bddseg.cli import EXIT_BAD_INPUT, main
from bddseg.config import ModelConfig
from bddseg.errors import BddsegError
from bddseg.model import ARCHS, build_model


@pytest.fixture(scope="module")
def table(tmp_path_factory, one_torch_thread):
    """``bddseg models --json``: (stdout, the JSON it wrote), run once."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("models") / "models.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["models", "--json", str(path)]) == 0
    return out.getvalue(), json.loads(path.read_text())


def test_the_table_covers_every_architecture(table):
    text, result = table
    assert {arch for arch, _ in MODELS} == set(ARCHS)
    assert [(r["arch"], r["encoder"]) for r in result["rows"]] == list(MODELS)
    for arch, encoder in MODELS:
        assert f"| {arch} | {encoder} |" in text
    assert result["size"] == [720, 1280] and result["num_classes"] == 19
    assert f"Any of smp's {result['smp_encoders']} encoders" in text
    assert "multiply-adds (FLOPs/2" in text
    assert all(r["counted_on"] == "meta" for r in result["rows"])  # no slow real forwards
    rows = {(r["arch"], r["encoder"]): r for r in result["rows"]}
    assert rows["unet", "resnet34"]["input_size"] == [736, 1280]  # padded as bddseg runs it
    assert rows["deeplabv3plus", "resnet34"]["input_size"] == [720, 1280]
    assert rows["pan", "resnet34"]["input_size"] == [768, 1280]
    assert rows["upernet", "resnet34"]["onnx"] == "static only"
    assert rows["unet", "resnet34"]["onnx"] == "dynamic"


def test_params_are_the_built_models(table):
    _, result = table
    unet = next(r for r in result["rows"] if (r["arch"], r["encoder"]) == ("unet", "resnet34"))
    model = build_model(ModelConfig(arch="unet", encoder="resnet34", pretrained=False), 19)
    assert unet["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "encoder"),
    [("unet", "resnet18"), ("deeplabv3plus", "resnet18"), ("dpt", "tu-test_vit")],
)
def test_meta_counts_equal_a_real_forward(arch, encoder, one_torch_thread):
    row = describe(arch, encoder, 19, size=(64, 96))
    assert row["counted_on"] == "meta"
    model = build_model(ModelConfig(arch=arch, encoder=encoder, pretrained=False), 19).eval()
    assert row["macs"] == count_flops(model, (64, 96)) // 2


def test_a_model_that_cannot_be_built_on_meta_is_counted_all_the_same(one_torch_thread):
    row = describe("segformer", "mit_b0", 19, size=(64, 96))  # MiT reads a value when built
    model = build_model(ModelConfig(arch="segformer", encoder="mit_b0", pretrained=False), 19)
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["macs"] == count_flops(model.eval(), (64, 96)) // 2


def test_gflops_scale_with_the_pixels():
    small = describe("fpn", "resnet18", 19, size=(64, 96))
    large = describe("fpn", "resnet18", 19, size=(128, 192))
    assert large["macs"] / small["macs"] == pytest.approx(4, rel=0.01)
    frame = describe("fpn", "resnet18", 19)
    assert frame["macs"] / small["macs"] == pytest.approx(736 * 1280 / (64 * 96), rel=0.01)


def test_measure_times_the_model_and_checks_onnx_parity(tmp_path, capsys, one_torch_thread):
    path = tmp_path / "m.json"
    argv = ["models", "--arch", "unet", "--encoder", "resnet18", "--measure", "--size", "64x96"]
    assert main([*argv, "--runs", "1", "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert row["parity"] == "pass", row
    assert row["max_rel_diff"] <= 1e-4 and row["argmax_agreement"] >= 0.999
    assert row["fp32_ms"] > 0 and row["auto_ms"] > 0 and row["threads"] == 1
    out = capsys.readouterr().out
    assert "| unet | resnet18 |" in out and "pass (" in out and "CPU ms fp32" in out


def test_a_bad_pair_is_one_line_and_exit_2(capsys):
    assert main(["models", "--arch", "unet", "--encoder", "nope"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.err == (
        "error: unknown encoder 'nope' for architecture 'unet' (valid: an smp encoder name "
        "such as resnet34, or 'tu-' + a timm model name)\n"
    )
    assert captured.out == ""
    assert main(["models", "--arch", "dpt", "--encoder", "resnet18"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.count("\n") == 1


def test_which_pairs_are_listed():
    assert resolve_pairs() == list(MODELS)
    assert resolve_pairs(["upernet"]) == [(a, e) for a, e in MODELS if a == "upernet"]
    assert resolve_pairs(None, ["resnet34"])[0] == ("unet", "resnet34")
    assert resolve_pairs(["unet", "fpn"], ["resnet50"]) == [
        ("unet", "resnet50"),
        ("fpn", "resnet50"),
    ]
    assert resolve_pairs(["unet"], ["resnet18", "resnet50"]) == [
        ("unet", "resnet18"),
        ("unet", "resnet50"),
    ]
    with pytest.raises(BddsegError, match="2 --arch and 3 --encoder"):
        resolve_pairs(["unet", "fpn"], ["a", "b", "c"])
    with pytest.raises(BddsegError, match="no listed model has encoder nope"):
        resolve_pairs(None, ["nope"])


def test_recipes_named_in_the_table_train_those_pairs(table):
    from bddseg.catalog import RECIPES
    from bddseg.config import load_config

    text, result = table
    for (arch, encoder), (recipe, _) in RECIPES.items():
        name, _, flag = recipe.partition(" --encoder ")
        cfg = load_config(name).model
        assert cfg.arch == arch
        assert (flag or cfg.encoder).split(".")[0] == encoder  # tu-NAME.TAG: timm's weights tag
        assert (arch, encoder) in MODELS
    assert "bdd100k_upernet_convnext_b (zoo 67.3)" in text


def test_a_recipe_rows_checkpoint_rebuilds_its_network(tmp_path, monkeypatch):
    """--measure exports a row's model through a checkpoint: the checkpoint carries the
    recipe's options (decoder width, output stride), so the rebuilt network loads strictly."""
    from bddseg import catalog
    from bddseg.model import model_from_checkpoint

    pair = ("deeplabv3plus", "resnet18")  # with the DeepLabv3+ recipe's options: small to build
    monkeypatch.setitem(catalog.RECIPES, pair, ("bdd100k_deeplabv3plus_r50", None))
    model = catalog._build(*pair, 19, "cpu")
    assert model.segmentation_head[0].in_channels == 512  # the recipe's decoder width
    path = catalog._checkpoint(model, *pair, 19, tmp_path / "m.pt")
    rebuilt, cfg = model_from_checkpoint(path)
    assert (cfg.model.decoder_channels, cfg.model.output_stride) == (512, 8)
