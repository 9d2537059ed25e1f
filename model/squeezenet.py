"""The SqueezeNet family (Iandola et al., 2016), built from the paper's metaparameters.

One builder serves every variant: the exact torchvision SqueezeNet 1.0 / 1.1 (same parameter names and
shapes, so torchvision weights load unchanged), the paper's bypass variants, and small-image networks for
28x28 / 32x32 inputs. The builder takes the layer classes it instantiates (``Layers``), so the Brevitas
quantized twin in ``quantize/`` is this same code with quantized layers passed in.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from contract import UserError

BYPASS_MODES = ("none", "simple", "complex")


class ConfigError(UserError, ValueError):
    """A configuration that cannot describe a SqueezeNet; the message says which field and why."""


@dataclass(frozen=True)
class FireSpec:
    """Sizes of one Fire module: s_1x1 squeeze filters feeding e_1x1 and e_3x3 expand filters."""

    in_channels: int
    squeeze: int
    expand1x1: int
    expand3x3: int

    @property
    def out_channels(self) -> int:
        return self.expand1x1 + self.expand3x3


@dataclass(frozen=True)
class SqueezeNetConfig:
    """Every knob of a SqueezeNet. Round-trips through ``to_dict`` / ``from_dict`` (stored in checkpoints).

    Fire i (0-based, i.e. fire{i+2} in the paper) has e_i = base_e + incr_e * floor(i / freq) expand
    filters, of which pct_3x3 are 3x3, and s_i = sr * e_i squeeze filters.
    ``pool_after`` names where max pools sit: 0 means after the stem conv, k >= 1 after Fire module k
    (fire{k+1} in the paper's numbering).
    """

    in_channels: int = 3
    num_classes: int = 1000
    input_size: int = 224
    stem_channels: int = 96
    stem_kernel: int = 7
    stem_stride: int = 2
    stem_padding: int = 0
    base_e: int = 128
    incr_e: int = 128
    freq: int = 2
    pct_3x3: float = 0.5
    sr: float = 0.125
    num_fire: int = 8
    pool_after: tuple[int, ...] = (0, 3, 7)
    pool_kernel: int = 3
    pool_stride: int = 2
    pool_ceil_mode: bool = True
    bypass: str = "none"
    dropout: float = 0.5
    batch_norm: bool = False  # BatchNorm after every conv but the classifier; folded away before QAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_after", tuple(int(p) for p in self.pool_after))
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for name in ("in_channels", "num_classes", "input_size", "stem_channels", "stem_kernel",
                     "stem_stride", "base_e", "freq", "num_fire", "pool_kernel", "pool_stride"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.incr_e >= 0, f"incr_e must be >= 0, got {self.incr_e}")
        need(0.0 < self.pct_3x3 < 1.0, f"pct_3x3 must be in (0, 1), got {self.pct_3x3}")
        need(0.0 < self.sr <= 1.0, f"sr (squeeze ratio) must be in (0, 1], got {self.sr}")
        need(self.bypass in BYPASS_MODES, f"bypass must be one of {BYPASS_MODES}, got {self.bypass!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        bad_pools = [p for p in self.pool_after if not 0 <= p <= self.num_fire]
        need(not bad_pools, f"pool_after entries must be in 0..{self.num_fire}, got {bad_pools}")
        need(len(set(self.pool_after)) == len(self.pool_after), "pool_after has duplicates")
        for spec in fire_specs(self):
            need(spec.squeeze >= 1 and spec.expand1x1 >= 1 and spec.expand3x3 >= 1,
                 f"metaparameters give an empty layer in a Fire module: {spec}")
        need(self.feature_map_size() >= 1,
             f"input_size {self.input_size} is too small for the stem and {len(self.pool_after)} pools")

    def feature_map_size(self) -> int:
        """Side of the last feature map (before global pooling), following the stem and the pools."""
        size = (self.input_size + 2 * self.stem_padding - self.stem_kernel) // self.stem_stride + 1
        for _ in self.pool_after:
            span = size - self.pool_kernel
            steps = math.ceil(span / self.pool_stride) if self.pool_ceil_mode else span // self.pool_stride
            if self.pool_ceil_mode and steps * self.pool_stride >= size:  # PyTorch's ceil-mode rule
                steps -= 1
            size = steps + 1
        return size

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["pool_after"] = list(self.pool_after)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SqueezeNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SqueezeNet config fields: {unknown}")
        return cls(**data)

    def replace(self, **changes) -> "SqueezeNetConfig":
        return dataclasses.replace(self, **changes)


def fire_specs(cfg: SqueezeNetConfig) -> list[FireSpec]:
    """The paper's microarchitecture rule, Fire module by Fire module."""
    specs, in_ch = [], cfg.stem_channels
    for i in range(cfg.num_fire):
        e_i = cfg.base_e + cfg.incr_e * (i // cfg.freq)
        e3 = int(round(cfg.pct_3x3 * e_i))
        s = int(round(cfg.sr * e_i))
        specs.append(FireSpec(in_ch, s, e_i - e3, e3))
        in_ch = e_i
    return specs


def _identity(*_args, **_kwargs) -> nn.Module:
    return nn.Identity()


def plain(t):
    """The values of ``t``. A quantized twin passes Brevitas QuantTensors between layers (so every conv
    knows its input scale and can put its bias on the accumulator grid); sums need the plain values."""
    return t.value if hasattr(t, "value") and hasattr(t, "scale") else t


@dataclass(frozen=True)
class Layers:
    """The layer classes the builder instantiates. Float defaults; ``quantize`` passes Brevitas ones.

    Each is a factory called with the arguments shown, so a quantized variant can also read per-layer
    settings from the ``name`` it is given (the module's path, for example ``features.3.squeeze``).
    """

    conv: Callable[..., nn.Module] = lambda name, cin, cout, k, stride=1, padding=0: nn.Conv2d(
        cin, cout, k, stride=stride, padding=padding)
    relu: Callable[[str], nn.Module] = lambda name: nn.ReLU(inplace=True)
    max_pool: Callable[..., nn.Module] = lambda name, k, s, ceil: nn.MaxPool2d(k, s, ceil_mode=ceil)
    global_pool: Callable[[str], nn.Module] = lambda name: nn.AdaptiveAvgPool2d((1, 1))
    norm: Callable[[str, int], nn.Module] = lambda name, channels: nn.BatchNorm2d(channels)
    # Quantization points that are no-ops in the float model.
    input_quant: Callable[[str], nn.Module] = _identity
    add_quant: Callable[[str], nn.Module] = _identity
    # Called with the classifier's activation, which a quantized twin reuses (see SqueezeNet.__init__).
    output_quant: Callable[[str, nn.Module], nn.Module] = _identity


class Fire(nn.Module):
    """Squeeze 1x1 -> ReLU -> (expand 1x1 | expand 3x3) -> ReLU -> concat, with an optional bypass.

    Both expand branches go through one activation module, so a quantized twin gives the concat a single
    scale (a TFLite or HLS concat has one; two would force a requantization). ``bypass`` is None, "simple"
    (identity add) or "complex" (1x1 conv add); the sum gets its own quantization point (``add_quant``).
    """

    def __init__(self, spec: FireSpec, name: str, layers: Layers, bypass: str | None = None,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.squeeze = layers.conv(f"{name}.squeeze", spec.in_channels, spec.squeeze, 1)
        self.expand1x1 = layers.conv(f"{name}.expand1x1", spec.squeeze, spec.expand1x1, 1)
        self.expand3x3 = layers.conv(f"{name}.expand3x3", spec.squeeze, spec.expand3x3, 3, padding=1)
        self.squeeze_activation = layers.relu(f"{name}.squeeze_activation")
        self.expand_activation = layers.relu(f"{name}.expand_activation")
        self.bypass_kind = bypass
        if bypass == "complex":
            self.bypass = layers.conv(f"{name}.bypass", spec.in_channels, spec.out_channels, 1)
        if bypass is not None:
            self.bypass_quant = layers.add_quant(f"{name}.bypass_quant")
        self.batch_norm = batch_norm
        if batch_norm:  # named <conv>_norm so that fold_batch_norm finds each conv's partner
            self.squeeze_norm = layers.norm(f"{name}.squeeze_norm", spec.squeeze)
            self.expand1x1_norm = layers.norm(f"{name}.expand1x1_norm", spec.expand1x1)
            self.expand3x3_norm = layers.norm(f"{name}.expand3x3_norm", spec.expand3x3)
            if bypass == "complex":
                self.bypass_norm = layers.norm(f"{name}.bypass_norm", spec.out_channels)

    def _conv(self, which: str, x: torch.Tensor) -> torch.Tensor:
        y = getattr(self, which)(x)
        return getattr(self, f"{which}_norm")(y) if self.batch_norm else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self._conv("squeeze", x))
        out = torch.cat([self.expand_activation(self._conv("expand1x1", s)),
                         self.expand_activation(self._conv("expand3x3", s))], 1)
        if self.bypass_kind == "simple":
            out = self.bypass_quant(plain(out) + plain(x))
        elif self.bypass_kind == "complex":
            out = self.bypass_quant(plain(out) + plain(self._conv("bypass", x)))
        return out


def bypass_plan(cfg: SqueezeNetConfig) -> list[str | None]:
    """Per Fire module: the paper's simple bypass goes where in and out channels match (fire3/5/7/9 of
    1.0); complex bypass adds a 1x1 conv bypass on the others as well."""
    plan = []
    for spec in fire_specs(cfg):
        same = spec.in_channels == spec.out_channels
        if cfg.bypass == "simple" and same:
            plan.append("simple")
        elif cfg.bypass == "complex":
            plan.append("simple" if same else "complex")
        else:
            plan.append(None)
    return plan


def fire_module_names(cfg: SqueezeNetConfig) -> list[str]:
    """The module name (``features.N``) of each Fire module of ``SqueezeNet(cfg)``, without building it: what
    per-layer settings such as quantize's ``--override 'features.4.*=3'`` match. The indices follow the
    layout ``SqueezeNet.__init__`` builds (stem conv, its norm, ReLU, pools and Fires in order)."""
    index = 1 + int(cfg.batch_norm) + 1 + int(0 in cfg.pool_after)
    names = []
    for i in range(1, cfg.num_fire + 1):
        names.append(f"features.{index}")
        index += 1 + int(i in cfg.pool_after)
    return names


class SqueezeNet(nn.Module):
    """features (stem, Fire modules, pools) -> classifier (dropout, 1x1 conv, ReLU, global average pool).

    Module indices follow torchvision, so ``features.N.squeeze.weight`` and ``classifier.1.weight`` load
    from a torchvision state_dict unchanged.
    """

    def __init__(self, cfg: SqueezeNetConfig, layers: Layers | None = None) -> None:
        super().__init__()
        layers = layers or Layers()
        self.config = cfg
        self.input_quant = layers.input_quant("input_quant")
        feats: list[nn.Module] = [
            layers.conv("features.0", cfg.in_channels, cfg.stem_channels, cfg.stem_kernel,
                        stride=cfg.stem_stride, padding=cfg.stem_padding)]
        if cfg.batch_norm:  # features.1 is the stem's norm; torchvision's layout has none
            feats.append(layers.norm("features.1", cfg.stem_channels))
        feats.append(layers.relu(f"features.{len(feats)}"))
        if 0 in cfg.pool_after:
            feats.append(self._pool(layers, len(feats), cfg))
        for i, (spec, bypass) in enumerate(zip(fire_specs(cfg), bypass_plan(cfg)), start=1):
            feats.append(Fire(spec, f"features.{len(feats)}", layers, bypass, cfg.batch_norm))
            if i in cfg.pool_after:
                feats.append(self._pool(layers, len(feats), cfg))
        self.features = nn.Sequential(*feats)
        last = fire_specs(cfg)[-1].out_channels
        self.classifier = nn.Sequential(
            nn.Dropout(p=cfg.dropout),
            layers.conv("classifier.1", last, cfg.num_classes, 1),
            layers.relu("classifier.2"),
            layers.global_pool("classifier.3"),
        )
        # The averaged logits are quantized again. The quantized twin uses the classifier's own activation
        # quantizer here, so the average lands on its input's grid: what an int8 AVERAGE_POOL_2D computes
        # (TFLite requires equal input and output scales), with one rounding and no requantization.
        self.output_quant = layers.output_quant("output_quant", self.classifier[2])
        self._init_weights()

    @staticmethod
    def _pool(layers: Layers, index: int, cfg: SqueezeNetConfig) -> nn.Module:
        return layers.max_pool(f"features.{index}", cfg.pool_kernel, cfg.pool_stride, cfg.pool_ceil_mode)

    def _init_weights(self) -> None:
        # torchvision's policy: Kaiming-uniform everywhere, a small normal init for the final conv.
        final_conv = self.classifier[1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.input_quant(x))
        x = self.classifier(x)
        return plain(self.output_quant(torch.flatten(plain(x), 1)))


# --- named configurations ---------------------------------------------------------------------------

def squeezenet1_0_config(num_classes: int = 1000, in_channels: int = 3) -> SqueezeNetConfig:
    """The paper's SqueezeNet 1.0: conv1 96x7x7/2, pools after conv1, fire4, fire8 (3x3/2, ceil mode)."""
    return SqueezeNetConfig(in_channels=in_channels, num_classes=num_classes)


def squeezenet1_1_config(num_classes: int = 1000, in_channels: int = 3) -> SqueezeNetConfig:
    """SqueezeNet 1.1: conv1 64x3x3/2, pools after conv1, fire3, fire5; same Fire sizes as 1.0."""
    return SqueezeNetConfig(in_channels=in_channels, num_classes=num_classes, stem_channels=64,
                            stem_kernel=3, pool_after=(0, 2, 4))


def small_image_config(input_size: int = 28, in_channels: int = 1, num_classes: int = 10,
                       **overrides) -> SqueezeNetConfig:
    """A SqueezeNet for 28x28 / 32x32 images, and the project's deployable default.

    The stem is a stride-1 3x3 conv (a 7x7/2 stem would throw away most of a 28x28 image), and the two
    2x2/2 max pools come late (strategy 3 of the paper). Pools have kernel == stride because hls4ml
    computes those exactly; the paper's 3x3/2 ceil-mode pools abort its C simulation.
    """
    base = dict(in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                stem_channels=64, stem_kernel=3, stem_stride=1, stem_padding=1,
                base_e=64, incr_e=64, freq=2, pct_3x3=0.5, sr=0.125, num_fire=8,
                pool_after=(0, 4), pool_kernel=2, pool_stride=2, pool_ceil_mode=False,
                bypass="simple", dropout=0.2, batch_norm=True)
    base.update(overrides)
    return SqueezeNetConfig(**base)


PRESETS: dict[str, Callable[..., SqueezeNetConfig]] = {
    "squeezenet1_0": squeezenet1_0_config,
    "squeezenet1_1": squeezenet1_1_config,
    "small": small_image_config,
}


def squeezenet1_0(num_classes: int = 1000, in_channels: int = 3, layers: Layers | None = None) -> SqueezeNet:
    return SqueezeNet(squeezenet1_0_config(num_classes, in_channels), layers)


def squeezenet1_1(num_classes: int = 1000, in_channels: int = 3, layers: Layers | None = None) -> SqueezeNet:
    return SqueezeNet(squeezenet1_1_config(num_classes, in_channels), layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of the conv layers for one image (what a C simulation or an FPGA pays)."""
    macs = 0

    def hook(module, _inputs, output):
        nonlocal macs
        kernel_macs = module.weight[0].numel()  # cin/groups * kh * kw
        macs += int(output[0].numel()) * kernel_macs

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return macs


# --- batch-norm folding -------------------------------------------------------------------------------

def norm_partner(norm_name: str) -> str:
    """The conv a norm follows: the stem's features.1 follows features.0; <conv>_norm follows <conv>."""
    if norm_name == "features.1":
        return "features.0"
    if not norm_name.endswith("_norm"):
        raise ValueError(f"{norm_name} is not a norm of this builder")
    return norm_name[: -len("_norm")]


def without_norm_layers(layers: Layers | None = None) -> Layers:
    """``layers`` with every norm replaced by an Identity: the shape of a network after folding."""
    layers = layers or Layers()
    return dataclasses.replace(layers, norm=lambda name, channels: nn.Identity())


@torch.no_grad()
def fold_batch_norm(model: SqueezeNet) -> dict[str, torch.Tensor]:
    """A state_dict for the same config built with ``without_norm_layers``: each BatchNorm (in eval
    mode: running statistics) folded into the conv before it, W' = W * g, b' = (b - mean) * g + beta
    with g = gamma / sqrt(var + eps). Quantization then acts on the weights inference really uses."""
    modules = dict(model.named_modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, norm in modules.items():
        if not isinstance(norm, nn.BatchNorm2d):
            continue
        conv_name = norm_partner(name)
        conv = modules[conv_name]
        gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        state[f"{conv_name}.weight"] = conv.weight * gain.view(-1, 1, 1, 1)
        state[f"{conv_name}.bias"] = (bias - norm.running_mean) * gain + norm.bias
        for key in list(state):
            if key.startswith(f"{name}."):
                del state[key]
    return state


def folded_copy(model: SqueezeNet) -> SqueezeNet:
    """An eval-mode float SqueezeNet whose norms are folded into its convs (same outputs in eval mode)."""
    folded = SqueezeNet(model.config, without_norm_layers())
    folded.load_state_dict(fold_batch_norm(model), strict=True)
    return folded.eval()
