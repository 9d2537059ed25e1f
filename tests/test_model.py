import pytest
import torch
from torch import nn

from model import (
    ConfigError,
    Layers,
    SqueezeNet,
    SqueezeNetConfig,
    count_macs,
    count_parameters,
    fire_specs,
    folded_copy,
    small_image_config,
    squeezenet1_0,
    squeezenet1_1,
)
from model.squeezenet import squeezenet1_0_config

# torchvision's SqueezeNet layout, written out from the paper's table (not from our builder):
# (features index, in, squeeze, expand1x1, expand3x3)
FIRES_1_0 = [(3, 96, 16, 64, 64), (4, 128, 16, 64, 64), (5, 128, 32, 128, 128), (7, 256, 32, 128, 128),
             (8, 256, 48, 192, 192), (9, 384, 48, 192, 192), (10, 384, 64, 256, 256), (12, 512, 64, 256, 256)]
FIRES_1_1 = [(3, 64, 16, 64, 64), (4, 128, 16, 64, 64), (6, 128, 32, 128, 128), (7, 256, 32, 128, 128),
             (9, 256, 48, 192, 192), (10, 384, 48, 192, 192), (11, 384, 64, 256, 256), (12, 512, 64, 256, 256)]


def torchvision_state_dict(stem_shape, fires, num_classes=1000):
    sd = {"features.0.weight": torch.randn(*stem_shape), "features.0.bias": torch.randn(stem_shape[0])}
    for idx, cin, s, e1, e3 in fires:
        sd[f"features.{idx}.squeeze.weight"] = torch.randn(s, cin, 1, 1)
        sd[f"features.{idx}.squeeze.bias"] = torch.randn(s)
        sd[f"features.{idx}.expand1x1.weight"] = torch.randn(e1, s, 1, 1)
        sd[f"features.{idx}.expand1x1.bias"] = torch.randn(e1)
        sd[f"features.{idx}.expand3x3.weight"] = torch.randn(e3, s, 3, 3)
        sd[f"features.{idx}.expand3x3.bias"] = torch.randn(e3)
    sd["classifier.1.weight"] = torch.randn(num_classes, 512, 1, 1)
    sd["classifier.1.bias"] = torch.randn(num_classes)
    return sd


def test_parameter_counts_match_the_paper():
    assert count_parameters(squeezenet1_0()) == 1_248_424
    assert count_parameters(squeezenet1_1()) == 1_235_496


@pytest.mark.parametrize("factory,stem,fires", [(squeezenet1_0, (96, 3, 7, 7), FIRES_1_0),
                                                (squeezenet1_1, (64, 3, 3, 3), FIRES_1_1)])
def test_torchvision_state_dict_loads_strictly(factory, stem, fires):
    model = factory()
    sd = torchvision_state_dict(stem, fires)
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.features[fires[0][0]].squeeze.weight, sd[f"features.{fires[0][0]}.squeeze.weight"])


def test_torchvision_versions_forward_at_224():
    for factory in (squeezenet1_0, squeezenet1_1):
        model = factory(num_classes=7, in_channels=1).eval()
        assert model(torch.zeros(2, 1, 224, 224)).shape == (2, 7)


def test_metaparameters_reproduce_squeezenet_1_0_fire_sizes():
    specs = fire_specs(SqueezeNetConfig(base_e=128, incr_e=128, freq=2, pct_3x3=0.5, sr=0.125))
    assert [(s.in_channels, s.squeeze, s.expand1x1, s.expand3x3) for s in specs] == [f[1:] for f in FIRES_1_0]


def test_metaparameter_rule_for_other_values():
    specs = fire_specs(SqueezeNetConfig(base_e=64, incr_e=32, freq=3, pct_3x3=0.25, sr=0.5))
    expected_e = [64, 64, 64, 96, 96, 96, 128, 128]
    assert [s.out_channels for s in specs] == expected_e
    assert [s.expand3x3 for s in specs] == [16, 16, 16, 24, 24, 24, 32, 32]
    assert [s.squeeze for s in specs] == [32, 32, 32, 48, 48, 48, 64, 64]


@pytest.mark.parametrize("bypass", ["none", "simple", "complex"])
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_small_variants_forward(bypass, size, channels):
    cfg = small_image_config(input_size=size, in_channels=channels, num_classes=5, bypass=bypass)
    model = SqueezeNet(cfg).eval()
    assert model(torch.randn(3, channels, size, size)).shape == (3, 5)


def test_bypass_placement_follows_the_paper():
    simple = SqueezeNet(squeezenet1_0_config().replace(bypass="simple"))
    complex_ = SqueezeNet(squeezenet1_0_config().replace(bypass="complex"))
    fires = [i for i, m in enumerate(simple.features) if hasattr(m, "squeeze")]
    kinds_simple = [simple.features[i].bypass_kind for i in fires]
    kinds_complex = [complex_.features[i].bypass_kind for i in fires]
    # fire2..fire9: identity bypass on fire3, 5, 7, 9; complex adds 1x1 conv bypasses on 2, 4, 6, 8.
    assert kinds_simple == [None, "simple"] * 4
    assert kinds_complex == ["complex", "simple"] * 4
    assert count_parameters(complex_) > count_parameters(simple) == 1_248_424


def test_builder_uses_the_layer_classes_it_is_given():
    made = []

    def conv(name, cin, cout, k, stride=1, padding=0):
        made.append(name)
        return nn.Conv2d(cin, cout, k, stride=stride, padding=padding)

    model = SqueezeNet(small_image_config(), Layers(conv=conv))
    assert "features.0" in made and "classifier.1" in made
    assert len(made) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_small_default_downsamples_late_and_fits_the_budget():
    cfg = small_image_config()
    model = SqueezeNet(cfg)
    assert cfg.feature_map_size() == 7 and cfg.stem_stride == 1
    assert cfg.pool_kernel == cfg.pool_stride  # the only max pools hls4ml computes exactly
    # int8 TFLite ~1 byte per weight: stay well under 0.5 MiB.
    assert count_parameters(folded_copy(model)) < 450_000
    assert 1e6 < count_macs(model, (1, 28, 28)) < 50e6


def test_batch_norm_folding_preserves_outputs():
    model = SqueezeNet(small_image_config(bypass="complex"))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28))
    model.eval()
    folded = folded_copy(model)
    x = torch.randn(4, 1, 28, 28)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(model(x), folded(x), atol=1e-4)


@pytest.mark.parametrize("change,message", [
    (dict(bypass="sideways"), "bypass"), (dict(pct_3x3=1.5), "pct_3x3"), (dict(sr=0), "sr"),
    (dict(pool_after=(9,)), "pool_after"), (dict(input_size=4, pool_after=(0, 1, 2)), "too small"),
])
def test_bad_configs_are_rejected(change, message):
    with pytest.raises(ConfigError, match=message):
        small_image_config().replace(**change)


def test_config_round_trips():
    cfg = small_image_config(bypass="complex")
    assert SqueezeNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        SqueezeNetConfig.from_dict({**cfg.to_dict(), "colour": "red"})


@pytest.mark.parametrize("cfg", [small_image_config(), small_image_config(batch_norm=False),
                                 small_image_config(pool_after=(2, 5)), squeezenet1_0_config()],
                         ids=["small", "no-norm", "other-pools", "squeezenet1_0"])
def test_fire_module_names_are_the_built_models(cfg):
    """model.squeezenet.fire_module_names names each Fire as the builder does (the FPGA estimator looks up
    quantize's per-layer --override patterns by these names without building the model)."""
    from model.squeezenet import fire_module_names

    built = [name[: -len(".squeeze")] for name, _ in SqueezeNet(cfg).named_modules() if name.endswith(".squeeze")]
    assert fire_module_names(cfg) == built
