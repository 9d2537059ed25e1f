"""The streaming pipeline hls4ml generates, described without hls4ml: stages joined by FIFOs.

In ``io_stream`` every hls4ml layer is a dataflow process; each stream between two of them is a FIFO
whose element is one pixel with all its channels (``nnet::array<T, C>``). The folding planner, the
resource estimator and the dataflow simulation all work on this description, which comes from either

- ``pipeline_from_hls_model``: the converted hls4ml ``ModelGraph`` itself (shapes, precisions, reuse
  factors as hls4ml will write them), used by ``make fpga``; or
- ``pipeline_from_config``: a ``SqueezeNetConfig`` and bit widths, mirroring what the fpga stage builds
  from such a model, without a checkpoint or hls4ml (fast: for design-space exploration and for
  networks no checkpoint exists for, such as SqueezeNet 1.1). A test checks that both agree on the
  committed default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from contract import UserError, bits_by_pattern

if TYPE_CHECKING:  # the config builder needs model/ (torch); reading a written project does not
    from model.squeezenet import SqueezeNetConfig

# Stage kinds and the hls4ml functions they stand for (templates/vivado/nnet_utils unless noted).
KINDS = {
    "input": "top-level input port",
    "cast": "nnet::linear / nnet::relu (nnet_activation_stream.h)",
    "pad": "nnet::zeropad2d_cl (nnet_padding_stream.h)",
    "conv": "nnet::conv_2d_cl, Resource strategy (vitis/nnet_conv2d_stream.h + nnet_dense_resource.h)",
    "maxpool": "nnet::pooling2d_cl (vitis/nnet_pooling_stream.h)",
    "global_avgpool": "nnet::global_pooling2d_cl (nnet_pooling_stream.h)",
    "clone": "nnet::clone_stream (nnet_stream.h)",
    "concat": "nnet::concatenate3d, channel axis (nnet_merge_stream.h)",
    "add": "nnet::add (nnet_merge_stream.h)",
}


@dataclass
class Stream:
    """One FIFO (or a top-level port): ``tokens`` elements per image, each ``channels`` x ``element_bits``."""

    key: str
    name: str  # the C++ variable in firmware/myproject.cpp
    channels: int
    element_bits: int
    tokens: int
    producer: str = ""
    consumer: str = ""
    interface: bool = False  # the top-level input/output: an AXI-stream port, not a FIFO

    @property
    def width(self) -> int:
        return self.channels * self.element_bits


@dataclass
class Stage:
    name: str
    kind: str
    inputs: list[str]
    outputs: list[str]
    in_shape: tuple[int, int, int]  # (H, W, C) of the first input stream
    out_shape: tuple[int, int, int]
    in_bits: int
    out_bits: int
    kernel: int = 1
    stride: int = 1
    n_in: int = 0  # conv: dense kernel inputs (C * K * K) and outputs (filters)
    n_out: int = 0
    weight_bits: int = 0
    bias_bits: int = 0
    accum_bits: int = 0
    zero_weights: int = 0
    reuse_factor: int = 1  # as hls4ml holds it for this layer
    config_key: str = ""  # where the hls4ml config takes this layer's settings (the ONNX node name)
    strategy: str = "resource"  # conv / dense: hls4ml's Strategy (our own designs are all Resource)
    function: str = ""  # the nnet:: function, where read from a written project
    table_size: int = 0  # softmax / table activations: entries of each lookup table
    table_bits: int = 0
    implementation: str = ""  # softmax: latency | stable | legacy | argmax
    hls_config: str = ""  # the parameters.h struct (configN), where read from a written project
    serial_line_buffer: bool = False  # conv: hls4ml 0.7.x's recursively inlined line-buffer shift (PR #800)
    # conv / dense with weights in the project (firmware/weights/wN.txt): the non-zero signed digits (CSD)
    # of every weight on its fixed-point grid; None when the values are not known
    weight_digits: list[int] | None = None
    # Resource weights: hls4ml >= 1.0 binds the ROM to block RAM (``RESOURCE core=ROM_nP_BRAM`` in
    # nnet_dense_resource.h); earlier releases left the choice to the tools
    weights_bound_to_bram: bool = True
    # conv / dense: every multiplier bound to a DSP48 (``fpga.project.bind_multipliers_to_dsp`` writes
    # ``BIND_OP op=mul impl=dsp``); False: the tools' own choice (``estimate.DSP_MIN_WEIGHT_BITS``)
    multipliers_bound_to_dsp: bool = False

    @property
    def in_tokens(self) -> int:
        return self.in_shape[0] * self.in_shape[1]

    @property
    def out_tokens(self) -> int:
        return self.out_shape[0] * self.out_shape[1]

    @property
    def weights(self) -> int:
        return self.n_in * self.n_out


@dataclass
class Pipeline:
    name: str
    stages: list[Stage]
    streams: dict[str, Stream] = field(default_factory=dict)
    source: str = ""  # description of where the figures came from

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def convs(self) -> list[Stage]:
        return [s for s in self.stages if s.kind == "conv"]

    def fifos(self) -> list[Stream]:
        return [s for s in self.streams.values() if not s.interface]

    def signature(self) -> list[list]:
        """Every stage as [kind, in_shape, out_shape, kernel, stride, n_in, n_out, weight_bits, out_bits,
        accum_bits], and every FIFO as ["fifo", width], sorted: two descriptions of the same design have the
        same signature whatever their names and stage order."""
        rows = [[s.kind, list(s.in_shape), list(s.out_shape), s.kernel, s.stride, s.n_in, s.n_out, s.weight_bits,
                 s.out_bits, s.accum_bits] for s in self.stages]
        rows += [["fifo", f.width] for f in self.fifos()]
        return sorted(rows, key=repr)

    def with_multipliers_on_dsp(self, names: Iterable[str] | None = None) -> "Pipeline":
        """The same design with the multipliers of the named convs (None: every conv and dense kernel) bound
        to DSP48s, as the planner chose them for ``python -m fpga --multipliers dsp``: a copy, so the
        tools'-choice description stays as it was (no names: this pipeline itself)."""
        from dataclasses import replace

        chosen = None if names is None else set(names)
        if chosen is not None and not chosen:
            return self
        stages = [replace(s, multipliers_bound_to_dsp=True)
                  if s.kind in ("conv", "dense") and (chosen is None or s.name in chosen) else s
                  for s in self.stages]
        return replace(self, stages=stages, source=f"{self.source}; multipliers bound to DSP48s")

    def macs_per_image(self) -> int:
        return sum(s.weights * s.out_tokens for s in self.convs)

    def check(self) -> None:
        """Every stream has exactly one producer and one consumer (ports excepted): what hls4ml's Clone
        pass guarantees, and what the dataflow simulation relies on."""
        for stream in self.streams.values():
            if not stream.producer or (not stream.consumer and not stream.interface):
                raise UserError(f"pipeline {self.name}: stream {stream.key} is not connected at both ends")


# --- from the hls4ml model ---------------------------------------------------------------------------

def _shape3(shape) -> tuple[int, int, int]:
    shape = [int(x) for x in shape]
    if len(shape) == 1:
        return (1, 1, shape[0])
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    raise UserError(f"cannot stream a tensor of shape {shape}")


def pipeline_from_hls_model(hls_model, name: str = "model") -> Pipeline:
    """The stages and FIFOs of a converted hls4ml ``io_stream`` model, with the precisions, shapes and
    reuse factors hls4ml holds for each layer (what its writer puts into ``parameters.h``)."""
    from hls4ml.backends.fpga.passes.clone import Clone
    from hls4ml.model.layers import (
        Activation,
        Concatenate,
        Conv2D,
        GlobalPooling2D,
        Input,
        Merge,
        Pooling2D,
        Reshape,
        ZeroPadding2D,
    )

    alias: dict[str, str] = {}  # in-place reshapes (Flatten): their output is their input's stream
    streams: dict[str, Stream] = {}
    stages: list[Stage] = []
    outputs = set(hls_model.outputs)

    def source_of(key: str) -> str:
        while key in alias:
            key = alias[key]
        return key

    for layer in hls_model.get_layers():
        if isinstance(layer, Reshape):
            alias[layer.outputs[0]] = layer.inputs[0]
            continue
        ins = [] if isinstance(layer, Input) else [source_of(k) for k in layer.inputs if k]
        for key in layer.outputs:
            var = hls_model.output_vars[key]
            h, w, c = _shape3(var.shape)
            streams[key] = Stream(key, var.name, c, int(var.type.precision.width), h * w, producer=layer.name,
                                  interface=isinstance(layer, Input) or key in outputs)
        for key in ins:
            streams[key].consumer = layer.name
        out_var = layer.get_output_variable()
        out_shape = _shape3(out_var.shape)
        if isinstance(layer, Input):
            in_shape, in_bits = out_shape, int(out_var.type.precision.width)
        else:
            in_var = hls_model.output_vars[ins[0]]
            in_shape, in_bits = _shape3(in_var.shape), int(in_var.type.precision.width)
        stage = Stage(layer.name, "", ins, list(layer.outputs), in_shape, out_shape, in_bits,
                      int(out_var.type.precision.width), reuse_factor=int(layer.get_attr("reuse_factor", 1) or 1))
        if isinstance(layer, Input):
            stage.kind = "input"
        elif isinstance(layer, Conv2D):  # PointwiseConv2D is a subclass
            if layer.get_attr("filt_height") != layer.get_attr("filt_width"):
                raise UserError(f"{layer.name}: only square kernels are estimated")
            weight, bias = layer.get_weights("weight"), layer.get_weights("bias")
            stage.kind = "conv"
            stage.kernel = int(layer.get_attr("filt_height"))
            stage.stride = int(layer.get_attr("stride_height"))
            stage.n_in = int(layer.get_attr("n_chan")) * stage.kernel * stage.kernel
            stage.n_out = int(layer.get_attr("n_filt"))
            stage.weight_bits = int(weight.type.precision.width)
            stage.bias_bits = int(bias.type.precision.width)
            stage.accum_bits = int(layer.types["accum_t"].precision.width)
            stage.zero_weights = int(weight.nzeros) if hasattr(weight, "nzeros") else 0
            stage.config_key = layer.name[len("Conv2D_"):] if layer.name.startswith("Conv2D_") else layer.name
            if layer.get_attr("pad_top", 0) or layer.get_attr("pad_left", 0):
                raise UserError(f"{layer.name}: io_stream convs take their padding from a ZeroPadding2D layer")
        elif isinstance(layer, ZeroPadding2D):
            stage.kind = "pad"
        elif isinstance(layer, Pooling2D):
            if "max" not in str(layer.get_attr("pool_op", "max")).lower():
                raise UserError(f"{layer.name}: only max pooling is estimated")
            stage.kind, stage.kernel = "maxpool", int(layer.get_attr("pool_height"))
            stage.stride = int(layer.get_attr("stride_height"))
        elif isinstance(layer, GlobalPooling2D):
            stage.kind = "global_avgpool"
            stage.accum_bits = int(layer.types["accum_t"].precision.width)
        elif isinstance(layer, Clone):
            stage.kind = "clone"
        elif isinstance(layer, Concatenate):
            stage.kind = "concat"
        elif isinstance(layer, Merge) and layer.get_attr("op") == "add":
            stage.kind = "add"
        elif isinstance(layer, Activation):
            stage.kind = "cast"
        else:
            raise UserError(f"{layer.name}: the estimator does not know hls4ml layer {layer.class_name}")
        stages.append(stage)
    pipeline = Pipeline(name, stages, streams, source="hls4ml ModelGraph")
    pipeline.check()
    return pipeline


# --- from a SqueezeNetConfig ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BitWidths:
    """What the quantize stage gives a model (its defaults): weight bits per layer (fnmatch overrides on
    the module name), 8-bit activations and input, 16-bit biases."""

    weight_bits: int = 4
    overrides: tuple[tuple[str, int], ...] = (("features.0", 8), ("classifier.1", 8))
    act_bits: int = 8
    input_bits: int = 8
    bias_bits: int = 16
    classifier_act_bits: int | None = None  # the logits' grid (quantize's --classifier-act-bits); None: act_bits
    act_overrides: tuple[tuple[str, int], ...] = ()  # quantize's --act-override, on the activations' module names

    @property
    def logit_bits(self) -> int:
        return self.act_bits if self.classifier_act_bits is None else self.classifier_act_bits

    def act(self, module: str) -> int:
        """The bits of the activation quantizer that quantize names ``module`` (a ReLU or a bypass sum)."""
        return bits_by_pattern(module, self.act_overrides, self.act_bits)

    def weight(self, module: str) -> int:
        return bits_by_pattern(module, self.overrides, self.weight_bits)


def _accum_bits(in_bits: int, weight_bits: int, n_in: int, bias_bits: int) -> int:
    # hls4ml's precision inference for a dense/conv accumulator (model/optimizer/passes/infer_precision.py,
    # _infer_common_precision): the products' sum takes input + weight + ceil(log2(n_in)) bits; the bias,
    # on the same grid (quantize's bias scale is input scale x weight scale) and signed like it, widens the
    # integer part to whichever is wider, plus one for the add. So a layer with few inputs or narrow
    # activations still gets bias_bits + 1 (measured: 17-bit accumulators in the 6-bit-activation project
    # where in + weight + log2 n_in + 1 gives 13).
    return max(in_bits + weight_bits + math.ceil(math.log2(max(n_in, 2))), bias_bits) + 1


class _Builder:
    def __init__(self, name: str):
        self.pipeline = Pipeline(name, [], {}, source="SqueezeNetConfig (no checkpoint, assumed bit widths)")
        self.count = 0

    def stream(self, shape, bits, producer, interface=False) -> str:
        self.count += 1
        key = f"s{self.count}"
        h, w, c = shape
        self.pipeline.streams[key] = Stream(key, key, c, bits, h * w, producer=producer, interface=interface)
        return key

    def stage(self, name, kind, inputs, out_shape, out_bits, n_outputs=1, interface=False, **params) -> list[str]:
        first = self.pipeline.streams[inputs[0]] if inputs else None
        in_shape = params.pop("in_shape", None) or (self._shape(first) if first else out_shape)
        outs = [self.stream(out_shape, out_bits, name, interface) for _ in range(n_outputs)]
        for key in inputs:
            self.pipeline.streams[key].consumer = name
        self.pipeline.stages.append(Stage(name, kind, list(inputs), outs, in_shape, out_shape,
                                          first.element_bits if first else out_bits, out_bits, **params))
        return outs

    def _shape(self, stream: Stream) -> tuple[int, int, int]:
        for s in self.pipeline.stages:
            if stream.key in s.outputs:
                return s.out_shape
        raise KeyError(stream.key)

    def conv(self, name, src, cin, cout, k, stride, pad, bits: BitWidths, out_bits, module: str | None = None) -> str:
        """A conv stage ``name``; its weight bits are those ``bits`` gives the PyTorch module ``module``
        (default: ``name``)."""
        h, w, _ = self._shape(self.pipeline.streams[src])
        if pad:
            src = self.stage(f"{name}.pad", "pad", [src], (h + 2 * pad, w + 2 * pad, cin),
                             self.pipeline.streams[src].element_bits)[0]
            h, w = h + 2 * pad, w + 2 * pad
        oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
        in_bits = self.pipeline.streams[src].element_bits
        wb = bits.weight(module or name)
        return self.stage(name, "conv", [src], (oh, ow, cout), out_bits, kernel=k, stride=stride,
                          n_in=cin * k * k, n_out=cout, weight_bits=wb, bias_bits=bits.bias_bits,
                          accum_bits=_accum_bits(in_bits, wb, cin * k * k, bits.bias_bits), config_key=name)[0]

    def fork(self, src: str, name: str) -> tuple[str, str]:
        shape = self._shape(self.pipeline.streams[src])
        a, b = self.stage(f"clone.{name}", "clone", [src], shape, self.pipeline.streams[src].element_bits,
                          n_outputs=2)
        return a, b


def _pooled(size: int, k: int, s: int, ceil_mode: bool) -> int:
    # PyTorch's pooling arithmetic, as SqueezeNetConfig.feature_map_size applies it
    steps = math.ceil((size - k) / s) if ceil_mode else (size - k) // s
    if ceil_mode and steps * s >= size:
        steps -= 1
    return steps + 1


def pipeline_from_config(cfg: "SqueezeNetConfig", bits: BitWidths | None = None, name: str = "squeezenet") -> Pipeline:
    """The pipeline the fpga stage builds for a quantized SqueezeNet of this config: the input quantizer,
    a padded stem conv, max pools, Fire modules (squeeze, clone, 1x1 and padded 3x3 expand, concat,
    bypass add with its quantizer folded in), the classifier conv, the global average pool and the
    output quantizer; every ReLU folded into its conv's unsigned output quantizer."""
    from model.squeezenet import bypass_plan, fire_module_names, fire_specs

    bits = bits or BitWidths()
    b = _Builder(name)
    size, ch = cfg.input_size, cfg.in_channels
    (src,) = b.stage("input", "input", [], (size, size, ch), bits.input_bits, interface=True)
    (src,) = b.stage("input_quant", "cast", [src], (size, size, ch), bits.input_bits)
    src = b.conv("features.0", src, ch, cfg.stem_channels, cfg.stem_kernel, cfg.stem_stride, cfg.stem_padding,
                 bits, bits.act("features.2"))

    def pool(src: str, name: str) -> str:
        h, w, c = b._shape(b.pipeline.streams[src])
        k, s = cfg.pool_kernel, cfg.pool_stride
        return b.stage(name, "maxpool", [src], (_pooled(h, k, s, cfg.pool_ceil_mode),
                                                _pooled(w, k, s, cfg.pool_ceil_mode), c),
                       b.pipeline.streams[src].element_bits, kernel=k, stride=s)[0]

    if 0 in cfg.pool_after:
        src = pool(src, "features.pool0")
    # Stages are named fire1..fireN; the weight bits are looked up by the PyTorch module name (features.N),
    # the names quantize's --override patterns match.
    modules = fire_module_names(cfg)
    for i, (spec, bypass) in enumerate(zip(fire_specs(cfg), bypass_plan(cfg)), start=1):
        fire, module = f"fire{i}", modules[i - 1]
        main = src
        if bypass:
            main, skip = b.fork(src, fire)
        sq = b.conv(f"{fire}.squeeze", main, spec.in_channels, spec.squeeze, 1, 1, 0, bits,
                    bits.act(f"{module}.squeeze_activation"), module=f"{module}.squeeze")
        act = bits.act(f"{module}.expand_activation")
        to_e1, to_e3 = b.fork(sq, f"{fire}.squeeze")
        e1 = b.conv(f"{fire}.expand1x1", to_e1, spec.squeeze, spec.expand1x1, 1, 1, 0, bits, act,
                    module=f"{module}.expand1x1")
        e3 = b.conv(f"{fire}.expand3x3", to_e3, spec.squeeze, spec.expand3x3, 3, 1, 1, bits, act,
                    module=f"{module}.expand3x3")
        h, w, _ = b._shape(b.pipeline.streams[e1])
        (src,) = b.stage(f"{fire}.concat", "concat", [e1, e3], (h, w, spec.out_channels), act)
        if bypass == "complex":
            in_bits = b.pipeline.streams[skip].element_bits
            wb = bits.weight(f"{module}.bypass")
            n_in = spec.in_channels
            # the complex bypass adds the bypass conv's accumulator itself (see quantize/, export/)
            skip = b.stage(f"{fire}.bypass", "conv", [skip], (h, w, spec.out_channels),
                           _accum_bits(in_bits, wb, n_in, bits.bias_bits), n_in=n_in, n_out=spec.out_channels,
                           weight_bits=wb, bias_bits=bits.bias_bits,
                           accum_bits=_accum_bits(in_bits, wb, n_in, bits.bias_bits), config_key=f"{fire}.bypass")[0]
        if bypass:
            (src,) = b.stage(f"{fire}.add", "add", [src, skip], (h, w, spec.out_channels),
                             bits.act(f"{module}.bypass_quant"))
        if i in cfg.pool_after:
            src = pool(src, f"{fire}.pool")
    last = fire_specs(cfg)[-1].out_channels
    logit = bits.logit_bits
    logits = b.conv("classifier.1", src, last, cfg.num_classes, 1, 1, 0, bits, logit)
    n = cfg.feature_map_size() ** 2
    gap_bits = logit + 2 * math.ceil(math.log2(max(n, 2))) + 4  # the widened average of fpga.hls_config.hls_config
    (avg,) = b.stage("classifier.3", "global_avgpool", [logits], (1, 1, cfg.num_classes), gap_bits,
                     accum_bits=gap_bits)
    b.stage("output_quant", "cast", [avg], (1, 1, cfg.num_classes), logit, interface=True)
    b.pipeline.check()
    return b.pipeline
