"""Brevitas layer factories for the shared SqueezeNet builder.

Every quantizer has a power-of-two, per-tensor scale and zero point 0: the only kind that hls4ml reproduces
bit-exactly through QONNX (per-channel float scales crash its precision inference; per-tensor float scales
make its C simulation output zeros) and that a TFLite int8 model can hold without requantization.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from contract import UserError, bits_by_pattern, pattern_matches_any
from model import Layers, SqueezeNet, SqueezeNetConfig, without_norm_layers
from model.squeezenet import plain

DEFAULT_OVERRIDES = {"features.0": 8, "classifier.1": 8}
# How a conv's power-of-two weight scale is chosen. "max": the smallest power of two that covers the largest
# weight, recomputed from the weights at every step (Brevitas' Int8WeightPerTensorFixedPoint). Rounding up
# wastes up to a bit: at 4 bits many layers use codes -4..4 of -7..7. "mse": the power of two with the least
# squared error over the layer's weights, clipping the few largest, then learned with the weights
# (Int8WeightPerTensorFixedPointMSE). Either stays one power of two per tensor, so every target is unchanged.
WEIGHT_SCALES = ("max", "mse")
CLASSIFIER_RELU = "classifier.2"  # the builder's name for the classifier's ReLU (model.squeezenet.SqueezeNet)


@dataclass(frozen=True)
class QuantSettings:
    """Bit widths. ``overrides`` maps conv layer names (or fnmatch patterns such as ``features.*.squeeze``)
    to weight bits, for mixed precision; the first match in insertion order wins. The defaults here are the
    only ones: ``python -m quantize`` reads them, so ``QuantSettings()`` is what the CLI builds by default."""

    weight_bits: int = 4
    act_bits: int = 8
    input_bits: int = 8
    bias_bits: int = 16
    overrides: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_OVERRIDES))
    # The classifier's ReLU, whose grid the averaged logits keep (the output quantizer is the same module):
    # None = act_bits. Narrow activations inside the network with wide logits: 16 levels of logits at 4 bits
    # would tie the top-1 of many images.
    classifier_act_bits: int | None = None
    # Activation bits of single quantizers, by module name or fnmatch pattern (the ReLUs
    # ``features.N.squeeze_activation`` / ``expand_activation`` / ``features.2``, the bypass sums
    # ``features.N.bypass_quant``), first match wins; every other one keeps ``act_bits``. The logits keep
    # ``classifier_act_bits``. hls4ml reads each quantizer's own width, so the FPGA stage needs nothing more.
    act_overrides: dict[str, int] = field(default_factory=dict)
    weight_scale: str = WEIGHT_SCALES[0]  # "max"

    @property
    def logit_bits(self) -> int:
        return self.act_bits if self.classifier_act_bits is None else self.classifier_act_bits

    def act_bits_for(self, relu_name: str) -> int:
        """The bits of one activation quantizer (by the module name the builder gives it)."""
        if relu_name == CLASSIFIER_RELU:
            return self.logit_bits
        return bits_by_pattern(relu_name, self.act_overrides.items(), self.act_bits)

    def bits_for(self, conv_name: str) -> int:
        return bits_by_pattern(conv_name, self.overrides.items(), self.weight_bits)

    def validate(self, conv_names: list[str] | None = None, act_names: list[str] | None = None) -> None:
        for what, bits in [("weight_bits", self.weight_bits), ("act_bits", self.act_bits),
                           ("classifier_act_bits", self.logit_bits),
                           ("input_bits", self.input_bits), ("bias_bits", self.bias_bits),
                           *[(f"override {k}", v) for k, v in self.overrides.items()],
                           *[(f"activation override {k}", v) for k, v in self.act_overrides.items()]]:
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise UserError(f"{what} must be an integer from 2 to 16, got {bits!r}")
        if self.weight_scale not in WEIGHT_SCALES:
            raise UserError(f"weight scale must be one of {', '.join(WEIGHT_SCALES)}, got {self.weight_scale!r}")
        if conv_names is not None:
            for pattern in self.overrides:
                if not pattern_matches_any(pattern, conv_names):
                    raise UserError(f"bit-width override {pattern!r} names no layer of this model; "
                                    f"conv layers are: {', '.join(conv_names)}")
        if act_names is not None:
            for pattern in self.act_overrides:
                if not pattern_matches_any(pattern, (n for n in act_names if n != CLASSIFIER_RELU)):
                    raise UserError(f"activation override {pattern!r} names no activation of this model; they are: "
                                    f"{', '.join(n for n in act_names if n != CLASSIFIER_RELU)} "
                                    f"(the logits take --classifier-act-bits)")

    def short_biases(self, conv_names: list[str]) -> list[str]:
        """The convs whose bias cannot reach one full product of their input and weight. A bias lives on
        the accumulator's grid (input scale x weight scale) with ``bias_bits`` bits, so it spans
        2^(bias_bits - input_bits - weight_bits) of the largest product: below 1 where input and weight
        bits add up to more than ``bias_bits``, and the biases clip (16 bits is the most this toolchain
        keeps exact: Brevitas accumulates in float32)."""
        short = []
        for i, name in enumerate(conv_names):
            # (the widest activation stands in for a conv's own input: a warning errs on the safe side)
            input_bits = self.input_bits if i == 0 else max([self.act_bits, *self.act_overrides.values()])
            if input_bits + self.bits_for(name) > self.bias_bits:
                short.append(f"{name} ({input_bits}+{self.bits_for(name)} bits)")
        return short

    def to_dict(self) -> dict:
        return {"weight_bits": self.weight_bits, "act_bits": self.act_bits, "input_bits": self.input_bits,
                "bias_bits": self.bias_bits, "overrides": dict(self.overrides),
                "classifier_act_bits": self.classifier_act_bits, "act_overrides": dict(self.act_overrides),
                "weight_scale": self.weight_scale}

    @classmethod
    def from_dict(cls, data: dict) -> "QuantSettings":
        return cls(int(data["weight_bits"]), int(data["act_bits"]), int(data["input_bits"]),
                   int(data["bias_bits"]), {str(k): int(v) for k, v in data.get("overrides", {}).items()},
                   None if data.get("classifier_act_bits") is None else int(data["classifier_act_bits"]),
                   {str(k): int(v) for k, v in data.get("act_overrides", {}).items()},
                   str(data.get("weight_scale", WEIGHT_SCALES[0])))  # checkpoints before the field: "max"


def brevitas_layers(qs: QuantSettings, signed_add: bool = False) -> Layers:
    """The Layers the builder instantiates for the quantized twin. ``signed_add``: a complex bypass adds a
    conv output (signed) to a ReLU output, so its sum needs a signed quantizer."""
    import brevitas.nn as qnn
    from brevitas.quant import (
        Int8ActPerTensorFixedPoint,
        Int8WeightPerTensorFixedPoint,
        Int8WeightPerTensorFixedPointMSE,
        IntBias,
        Uint8ActPerTensorFixedPoint,
    )

    weight_quant = Int8WeightPerTensorFixedPointMSE if qs.weight_scale == "mse" else Int8WeightPerTensorFixedPoint

    def conv(name, cin, cout, k, stride=1, padding=0):
        # Biases live on the accumulator's grid (scale = input scale x weight scale, bias_bits wide), as
        # an int8 TFLite conv (int32 bias) and an HLS accumulator hold them: no target needs to round them.
        return qnn.QuantConv2d(cin, cout, k, stride=stride, padding=padding, bias=True,
                               weight_quant=weight_quant, weight_bit_width=qs.bits_for(name),
                               bias_quant=IntBias, bias_bit_width=qs.bias_bits, return_quant_tensor=False)

    # Activations hand QuantTensors on, so the next conv knows its input scale (for its bias grid).
    def relu(name):
        return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=qs.act_bits_for(name),
                             return_quant_tensor=True)

    # The bypass sum of two grids lands on a tie whenever it is rescaled to a coarser power-of-two grid.
    # Every int8 runtime's ADD (XNNPACK's, TFLite's reference kernels) and ap_fixed's AP_RND resolve
    # ties toward +inf, none rounds them half-to-even: the sum's quantizer rounds the way they all do.
    def add_quant(name):
        quant = Int8ActPerTensorFixedPoint if signed_add else Uint8ActPerTensorFixedPoint
        return qnn.QuantIdentity(act_quant=quant, bit_width=qs.act_bits_for(name), float_to_int_impl=RoundHalfUpSte,
                                 return_quant_tensor=True)

    def input_quant(name):
        return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=qs.input_bits,
                                 return_quant_tensor=True)

    def global_pool(name):
        # Average the plain values; the logits quantizer after it sets the output grid.
        return _PlainGlobalAverage()

    return Layers(conv=conv, relu=relu, input_quant=input_quant, global_pool=global_pool,
                  add_quant=add_quant,
                  output_quant=lambda name, classifier_activation: classifier_activation)


class RoundHalfUpSte(nn.Module):
    """Round to nearest, ties toward +inf (``floor(x + 1/2)``), with a straight-through gradient."""

    def __init__(self) -> None:  # an explicit signature: Brevitas' injector instantiates it
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (torch.floor(x + 0.5) - x).detach()


def is_round_half_up(quant_module: nn.Module) -> bool:
    """Whether a Brevitas activation quantizer rounds ties toward +inf (the bypass-sum quantizers)."""
    return any(isinstance(m, RoundHalfUpSte) for m in quant_module.modules())


class _PlainGlobalAverage(nn.AdaptiveAvgPool2d):
    def __init__(self) -> None:
        super().__init__((1, 1))

    def forward(self, x):
        return super().forward(plain(x))


def conv_layer_names(cfg: SqueezeNetConfig) -> list[str]:
    float_model = SqueezeNet(cfg)
    return [n for n, m in float_model.named_modules() if isinstance(m, nn.Conv2d)]


def activation_names(cfg: SqueezeNetConfig) -> list[str]:
    """The names the builder gives its activation quantizers (ReLUs and bypass sums), in order."""
    names: list[str] = []
    record = lambda name, *_: names.append(name) or nn.Identity()  # noqa: E731
    SqueezeNet(cfg, Layers(relu=record, add_quant=record))
    return names


@torch.no_grad()
def init_weight_scales(model: nn.Module) -> None:
    """Choose every learned weight scale ("mse") from the weights the convs hold now. Brevitas would do it at
    the first quantized forward pass, and leaves an uninitialised scale out of the state dict: a twin saved
    before one (e.g. after calibration alone) would not load. "max" scales have nothing to choose."""
    import brevitas.nn as qnn

    for module in model.modules():
        if isinstance(module, qnn.QuantConv2d):
            module.quant_weight()


def build_quant_model(cfg: SqueezeNetConfig, qs: QuantSettings) -> SqueezeNet:
    """The Brevitas twin: the same builder, Brevitas layers passed in."""
    qs.validate(conv_layer_names(cfg), activation_names(cfg) if qs.act_overrides else None)
    # BatchNorm is folded into the convs before quantization, so the twin's norms are identities.
    return SqueezeNet(cfg, without_norm_layers(brevitas_layers(qs, signed_add=cfg.bypass == "complex")))
