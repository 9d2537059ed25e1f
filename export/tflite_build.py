"""An int8 TFLite model built from the Brevitas model's integer weights and power-of-two scales.

The quantized SqueezeNet is rebuilt as a TensorFlow graph (NHWC) holding the Brevitas integer weights
times their scales, with ``fake_quant_with_min_max_vars`` on the input, on every activation and on every
weight, its ranges chosen so that TFLite's int8 scale equals the Brevitas scale:

- unsigned b-bit activation of scale s: [0, (2^b - 1) s] -> TFLite scale s, zero point -128 (b = 8);
- signed activation: [-2^(b-1) s, (2^(b-1) - 1) s] -> scale s, zero point 0;
- weights: symmetric narrow range +-127 s_w -> scale s_w (a 4-bit weight is an int8 weight in [-8, 7]);
- biases: float values already on the accumulator grid s_in * s_w, so TFLite's int32 bias is exact.

The converter (``Optimize.DEFAULT``, int8 I/O) keeps these ranges; no representative data set is needed.
Under ai-edge-litert's XNNPACK kernels the result equals the Brevitas model bit for bit: its int8 CONV_2D
requantizes half-to-even like Brevitas' ReLU quantizers, its ADD rounds ties up like the bypass-sum
quantizers (``quantize.layers.RoundHalfUpSte``), and the global average is AVERAGE_POOL_2D (odd
counts) or an all-1/N DEPTHWISE_CONV_2D (power-of-two counts), each exact where MEAN was not.
TensorFlow is needed only here, on the build machine; the Pi runs the .tflite with a TFLite interpreter.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from contract import UserError, atomic_path
from model.exactness import check_tflite_exactness, global_pool_kind
from model.squeezenet import Fire, SqueezeNet


@dataclass(frozen=True)
class Grid:
    """A quantizer's grid: scale, bit width, signedness."""

    scale: float
    bits: int
    signed: bool

    @property
    def range(self) -> tuple[float, float]:
        if self.signed:
            return -(2 ** (self.bits - 1)) * self.scale, (2 ** (self.bits - 1) - 1) * self.scale
        return 0.0, (2 ** self.bits - 1) * self.scale


TFLITE_ACT_BITS = 8  # int8 tensors: the only activation width the Pi's model can hold


def narrow_activations(model: nn.Module) -> dict[str, int]:
    """The activation quantizers of a Brevitas model that are not 8 bits wide: name -> bits."""
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    return {name.removesuffix(".act_quant"): int(m.bit_width()) for name, m in model.named_modules()
            if isinstance(m, ActQuantProxyFromInjector) and m.is_quant_enabled
            and int(m.bit_width()) != TFLITE_ACT_BITS}


def tflite_refusal(model: nn.Module) -> str | None:
    """Why the int8 TFLite export cannot hold ``model`` (one line), or None: checked before any work."""
    if any(isinstance(m, Fire) and m.bypass_kind not in (None, "simple") for m in model.modules()):
        # Brevitas adds the bypass conv's unquantized accumulator; an int8 TFLite tensor cannot hold it.
        return ("the int8 TFLite export supports bypass 'none' and 'simple'; the complex bypass's 1x1 conv output "
                "has no 8-bit quantizer, so TFLite cannot reproduce it (the ONNX and fpga exports handle it)")
    narrow = narrow_activations(model)
    if narrow:
        widths = "/".join(str(b) for b in sorted(set(narrow.values())))
        return (f"TFLite int8 holds 8-bit activations only; this model has {len(narrow)} {widths}-bit ones "
                f"(the first: {next(iter(narrow))}): a model for the FPGA (python -m fpga --checkpoint ...), "
                f"not the Pi")
    return None


def act_grid(module: nn.Module) -> Grid:
    """The grid of a Brevitas QuantReLU / QuantIdentity."""
    proxy = module.act_quant
    scale = float(proxy.scale())
    bits = int(proxy.bit_width())
    signed = bool(proxy.is_signed)
    if bits != TFLITE_ACT_BITS:
        raise UserError(f"TFLite int8 holds 8-bit activations only; this model has a {bits}-bit one")
    log2 = math.log2(scale)
    if abs(log2 - round(log2)) > 1e-9:
        raise UserError(f"activation scale {scale} is not a power of two")
    return Grid(scale, bits, signed)


@dataclass
class ConvParams:
    weight_hwio: np.ndarray  # float, = int weights x scale
    weight_scale: float
    bias: np.ndarray  # float, on the accumulator grid
    stride: int
    padding: int


def conv_params(conv: nn.Module, input_scale: float) -> ConvParams:
    qw = conv.quant_weight()
    w_scale = float(qw.scale)
    w_int = qw.int().detach().numpy().astype(np.int64)
    if np.abs(w_int).max() > 127:
        raise UserError("TFLite int8 holds weights of at most 8 bits")
    acc_scale = input_scale * w_scale
    bits = int(conv.bias_quant.tensor_quant.msb_clamp_bit_width_impl())
    b_int = np.round(conv.bias.detach().numpy().astype(np.float64) / acc_scale)
    b_int = np.clip(b_int, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return ConvParams((w_int * w_scale).transpose(2, 3, 1, 0).astype(np.float32), w_scale,
                      (b_int * acc_scale).astype(np.float32), int(conv.stride[0]), int(conv.padding[0]))


class TFGraph:
    """Walks a quantized SqueezeNet in forward order and emits the same computation in TensorFlow."""

    def __init__(self, model: SqueezeNet) -> None:
        import tensorflow as tf

        self.tf = tf
        self.model = model.eval()

    def fake_quant(self, x, grid: Grid):
        lo, hi = grid.range
        return self.tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=grid.bits)

    def conv(self, x, conv: nn.Module, in_grid: Grid):
        tf = self.tf
        p = conv_params(conv, in_grid.scale)
        w = tf.quantization.fake_quant_with_min_max_vars(
            tf.constant(p.weight_hwio), -127 * p.weight_scale, 127 * p.weight_scale, num_bits=8,
            narrow_range=True)
        if p.padding:
            k = p.padding
            # Zero padding of the int8 input is exact: the grid has zero at code 0 (signed) or -128 (unsigned).
            x = tf.pad(x, [[0, 0], [k, k], [k, k], [0, 0]])
        y = tf.nn.conv2d(x, w, strides=p.stride, padding="VALID")
        return tf.nn.bias_add(y, tf.constant(p.bias))

    def relu(self, x, module: nn.Module) -> tuple[object, Grid]:
        grid = act_grid(module)
        return self.fake_quant(self.tf.nn.relu(x), grid), grid

    def fire(self, x, fire: Fire, grid: Grid):
        tf = self.tf
        s, s_grid = self.relu(self.conv(x, fire.squeeze, grid), fire.squeeze_activation)
        e_grid = act_grid(fire.expand_activation)
        e1 = self.fake_quant(tf.nn.relu(self.conv(s, fire.expand1x1, s_grid)), e_grid)
        e3 = self.fake_quant(tf.nn.relu(self.conv(s, fire.expand3x3, s_grid)), e_grid)
        out = tf.concat([e1, e3], axis=-1)
        if fire.bypass_kind is None:
            return out, e_grid
        other = x
        add_grid = act_grid(fire.bypass_quant)
        return self.fake_quant(out + other, add_grid), add_grid

    def __call__(self, x):
        tf, m = self.tf, self.model
        grid = act_grid(m.input_quant)
        x = self.fake_quant(x, grid)
        layers = list(m.features)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, Fire):
                x, grid = self.fire(x, layer, grid)
            elif isinstance(layer, nn.Conv2d):
                x = self.conv(x, layer, grid)
            elif hasattr(layer, "act_quant"):
                x, grid = self.relu(x, layer)
            elif isinstance(layer, nn.MaxPool2d):
                k, s = layer.kernel_size, layer.stride
                if layer.ceil_mode:
                    raise UserError("ceil-mode pools are not supported in the TFLite export")
                x = tf.nn.max_pool2d(x, k, s, padding="VALID")
            elif not isinstance(layer, nn.Identity):
                raise UserError(f"the TFLite export does not know layer {type(layer).__name__}")
            i += 1
        x = self.conv(x, m.classifier[1], grid)
        x, grid = self.relu(x, m.classifier[2])
        x = self.global_average(x, grid)
        return self.fake_quant(tf.reshape(x, (-1, x.shape[-1])), act_grid(m.output_quant))

    def global_average(self, x, grid: Grid):
        """The mean over the last feature map, rounded half-to-even on the output grid as Brevitas does.

        int8 AVERAGE_POOL_2D rounds half away from zero in code space. With an odd count N = h x w a mean
        is never half-way between two codes, so it is exact (and it divides exactly where MEAN did not).
        With N a power of two, a DEPTHWISE_CONV_2D with every weight 1/N (int8 weight 1, scale 1/N)
        requantizes by the power-of-two multiplier 1/N, half-to-even: exact (measured, ties included).
        Any other even N has ties that neither op rounds the Brevitas way: refused (check_tflite_exactness)."""
        tf = self.tf
        h, w = int(x.shape[1]), int(x.shape[2])
        kind = global_pool_kind(h * w)
        if kind is None:
            raise UserError(f"the int8 TFLite export cannot average a {h}x{w} feature map exactly")
        if kind == "average_pool":
            return tf.nn.avg_pool2d(x, (h, w), (h, w), padding="VALID")
        n, c = h * w, int(x.shape[3])
        weights = tf.quantization.fake_quant_with_min_max_vars(
            tf.constant(np.full((h, w, c, 1), 1.0 / n, np.float32)), -127.0 / n, 127.0 / n, num_bits=8,
            narrow_range=True)
        return tf.nn.depthwise_conv2d(x, weights, [1, 1, 1, 1], "VALID")


def convert_to_tflite(model: SqueezeNet, input_shape_chw: tuple[int, int, int], path: str | Path) -> Path:
    """Write the full-integer (int8 in, int8 out) TFLite model of ``model``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    why = tflite_refusal(model)
    if why:
        raise UserError(why)
    check_tflite_exactness(model.config)
    c, h, w = input_shape_chw
    graph = TFGraph(model)
    fn = tf.function(lambda x: graph(x), input_signature=[tf.TensorSpec([1, h, w, c], tf.float32)])
    with warnings.catch_warnings():  # autograph's float() on Brevitas scales that carry gradients
        warnings.simplefilter("ignore")
        concrete = fn.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # "statistics for quantized inputs were expected": the ranges are set
        warnings.simplefilter("ignore")
        blob = converter.convert()
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path
