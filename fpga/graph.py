"""QONNX graph passes that make a Brevitas SqueezeNet convertible by hls4ml (1.3.0, io_stream).

qonnx's channels-last pass converts only Conv / MaxPool / BatchNorm, so Transposes stay around every Fire
``Concat(axis=1)``, around bypass ``Add``s and before ``GlobalAveragePool``; the graph input also keeps an
NCHW->NHWC Transpose. hls4ml streams none of them. ``remove_layout_transposes`` makes the whole graph
channels-last and annotates shapes the way hls4ml's parsers read them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import helper

from contract import UserError, atomic_path

TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]


def _perm(node) -> list[int] | None:
    if node is None or node.op_type != "Transpose":
        return None
    for attr in node.attribute:
        if attr.name == "perm":
            return list(helper.get_attribute_value(attr))
    return None


def _rewire(model, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for out in model.graph.output:
        if out.name == old:
            raise UserError("cannot remove a Transpose that produces the graph output")


# Ops whose meaning does not depend on the layout (elementwise, per-tensor quantizers) or that qonnx has
# already made channels-last (its own Conv / MaxPool). Anything else stops the pass with a clear error.
LAYOUT_FREE = {"Quant", "Relu", "Add", "Identity"}
CHANNELS_LAST = {"Conv", "MaxPool"}


def remove_layout_transposes(model) -> int:
    """Make every tensor channels-last by deleting all NCHW<->NHWC Transposes.

    After qonnx's pass each tensor is either NHWC or NCHW, and Transposes convert between them; without
    them, every tensor is NHWC. That is only valid if the layout-sensitive ops are adapted too: Concat's
    channel axis becomes 3, GlobalAveragePool is re-annotated (below), and nothing else may depend on the
    layout. The shapes are then recomputed in graph order.
    """
    graph_in = model.graph.input[0].name
    n, c, h, w = model.get_tensor_shape(graph_in)
    removed = 0
    for node in list(model.graph.node):
        if node.op_type != "Transpose":
            continue
        if _perm(node) not in (TO_NCHW, TO_NHWC):
            raise UserError(f"{node.name}: unexpected Transpose perm {_perm(node)}")
        _rewire(model, node.output[0], node.input[0])
        model.graph.node.remove(node)
        removed += 1
    model.set_tensor_shape(graph_in, [n, h, w, c])
    for node in model.graph.node:
        op = node.op_type
        first = model.get_tensor_shape(node.input[0]) if node.input else None
        if op in LAYOUT_FREE:
            model.set_tensor_shape(node.output[0], list(first))
        elif op in CHANNELS_LAST:
            if node.domain != "qonnx.custom_op.channels_last" and model.get_initializer(node.input[0]) is None:
                raise UserError(f"{node.name}: {op} was not converted to channels-last by qonnx")
        elif op == "Concat":
            axis = next(a for a in node.attribute if a.name == "axis")
            if axis.i not in (1, -3):
                raise UserError(f"{node.name}: only channel concatenation is supported, got axis {axis.i}")
            axis.i = 3
            shapes = [model.get_tensor_shape(name) for name in node.input]
            model.set_tensor_shape(node.output[0], shapes[0][:3] + [sum(s[3] for s in shapes)])
        elif op == "GlobalAveragePool":
            # hls4ml's global-pool parser sets channels_last but reads (C, H, W) from positions 1..3 of the
            # input shape: annotate the NHWC data as (N, C, H, W) so it reads the right sizes.
            bn, bh, bw, bc = first
            model.set_tensor_shape(node.input[0], [bn, bc, bh, bw])
            model.set_tensor_shape(node.output[0], [bn, bc, 1, 1])
        elif op == "Flatten":
            model.set_tensor_shape(node.output[0], [first[0], int(np.prod(first[1:]))])
        else:
            raise UserError(f"{node.name}: hls4ml layout pass does not know op {op}")
    return removed


def name_nodes_uniquely(model) -> None:
    """hls4ml crashes on unnamed nodes and keys its config by name: give every node a unique one."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_n{i}"
        seen.add(node.name)


def prepare_for_hls4ml(qonnx_path: str | Path, out_path: str | Path) -> Path:
    """QONNX from Brevitas -> cleaned, channels-last graph that hls4ml converts."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    model = ModelWrapper(str(qonnx_path))
    model = cleanup_model(model)
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    model = cleanup_model(model)
    remove_layout_transposes(model)
    fold_relu_into_unsigned_quant(model)
    name_nodes_uniquely(model)
    hand_over_half_up_rounding(model)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        model.save(str(tmp))
    return out_path


# Bump when a pass here changes the prepared graph, so that cached graphs of an older version are rebuilt.
PREPARE_VERSION = 2


def _attribute(node, name, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def fold_relu_into_unsigned_quant(model) -> int:
    """Delete every ReLU between a Conv and an unsigned quantizer: Quant(signed=0) already clips at zero,
    so Quant(ReLU(x)) == Quant(x) for every x. hls4ml then merges the quantizer into the conv's output
    type (its MergeLinearActivation pass), and the conv writes 8-bit codes instead of a wide accumulator
    stream followed by a separate ReLU stage: one dataflow process and one FIFO less per conv, and a
    stream 2-3x narrower."""
    folded = 0
    for relu in [n for n in model.graph.node if n.op_type == "Relu"]:
        producer = model.find_producer(relu.input[0])
        consumers = model.find_consumers(relu.output[0]) or []
        if (producer is None or producer.op_type != "Conv" or len(consumers) != 1
                or consumers[0].op_type != "Quant" or _attribute(consumers[0], "signed", 1)
                or len(model.find_consumers(relu.input[0]) or []) != 1):
            continue
        consumers[0].input[0] = relu.input[0]
        model.graph.node.remove(relu)
        folded += 1
    return folded


def fold_quant_into_add(hls_model) -> list[str]:
    """A bypass sum is computed exactly (its hls4ml type holds the whole range) and then quantized by a
    separate linear stage. Give the Add the quantizer's type instead (rounding and saturation included:
    ap_fixed rounds the exact sum on assignment) and remove the linear stage: the same values, one
    stage and one wide FIFO less."""
    from hls4ml.model.layers import Activation, Merge

    folded = []
    for layer in list(hls_model.get_layers()):
        if not isinstance(layer, Activation) or layer.get_attr("activation") != "linear":
            continue
        parent = layer.get_input_node(layer.inputs[0])
        if not isinstance(parent, Merge) or parent.get_attr("op") != "add":
            continue
        users = [n for n in hls_model.get_layers() if parent.outputs[0] in n.inputs]
        if len(users) != 1 or parent.outputs[0] in hls_model.outputs:
            continue
        # The Add takes over the linear stage's type itself (name included): a Clone after it was given
        # that type, and hls4ml writes typedefs from the types of the layers that remain.
        quantized = layer.get_output_variable().type
        parent.types["result_t"] = quantized
        parent.get_output_variable().type = quantized
        hls_model.remove_node(layer)
        folded.append(layer.name)
    if folded:  # the C++ calls were rendered during conversion: render them again for the new graph
        rerender_templates(hls_model)
    return folded


def rerender_templates(hls_model) -> None:
    """Apply every template flow the conversion applied (Vitis' and the Vivado ones it inherits, such as
    the Clone's) again, so that the C++ calls and configs describe the graph as it is now."""
    applied = set()
    for flows in hls_model._applied_flows:
        applied |= set(flows)
    for flow in sorted(f for f in applied if f.endswith(":apply_templates")):
        hls_model.apply_flow(flow)


@contextmanager
def one_by_one_convs_as_conv2d():
    """Keep 1x1 convs on hls4ml's line-buffer Conv2D path during conversion.

    hls4ml rewrites 1x1 convs into PointwiseConv2D, whose io_stream function
    (``nnet_sepconv2d_stream.h: pointwise_conv_2d_cl``) declares ``ARRAY_PARTITION variable=weights
    complete``: the weights would become registers, while the Resource kernel underneath asks for a BRAM
    ROM. The pass also re-reads the configured reuse factor after hls4ml has validated it for the Conv2D.
    hls4ml 1.3.0's ``SkipOptimizers`` setting is not applied (``model/graph.py`` notes it is "effectively
    broken"), so the pass is switched off here for the conversion only.
    """
    from hls4ml.backends.vivado.passes.pointwise import OptimizePointwiseConv

    original = OptimizePointwiseConv.match
    OptimizePointwiseConv.match = lambda self, node: False
    try:
        yield
    finally:
        OptimizePointwiseConv.match = original


HALF_UP_KEY = "hls4ml_round_half_up_quant_nodes"


def hand_over_half_up_rounding(model) -> list[str]:
    """hls4ml's Quant parser knows only ROUND (half-even) and FLOOR. Quant nodes that round ties up (the
    bypass sums, see ``quantize.layers``) are handed to it as ROUND and listed in the model's metadata;
    ``round_half_up_layers`` then gives their hls4ml layers ap_fixed's AP_RND (ties toward +inf)."""
    names = []
    for node in model.graph.node:
        if node.op_type != "Quant":
            continue
        for attr in node.attribute:
            if attr.name == "rounding_mode" and attr.s.decode().upper() == "HALF_UP":
                attr.s = b"ROUND"
                names.append(node.name)
    helper.set_model_props(model.model, {HALF_UP_KEY: ",".join(names)})
    return names


def round_half_up_layers(model, hls_model) -> list[str]:
    """Set AP_RND on the hls4ml layers that came from the Quant nodes ``hand_over_half_up_rounding`` listed
    (hls4ml turns Quant node ``X`` into a linear activation ``X_act``)."""
    from hls4ml.model.types import RoundingMode

    props = {p.key: p.value for p in model.model.metadata_props}
    names = [n for n in props.get(HALF_UP_KEY, "").split(",") if n]
    layers = {layer.name: layer for layer in hls_model.get_layers()}
    done = []
    for name in names:
        layer = layers.get(f"{name}_act") or layers.get(name)
        if layer is None:
            raise UserError(f"hls4ml has no layer for the round-half-up quantizer {name}; cannot keep it exact")
        layer.get_output_variable().type.precision.rounding_mode = RoundingMode.RND
        done.append(layer.name)
    return done


# --- quantizer facts read from the graph --------------------------------------------------------------

@dataclass(frozen=True)
class FixedPoint:
    """A Quant node's grid: ``bits`` wide, ``frac`` fractional bits (scale 2^-frac), signed or not."""

    bits: int
    frac: int
    signed: bool

    @property
    def integer(self) -> int:  # hls4ml's I: integer bits including the sign bit
        return self.bits - self.frac

    def hls(self) -> str:
        return f"{'fixed' if self.signed else 'ufixed'}<{self.bits},{self.integer}>"


def quant_fixed_point(model, node) -> FixedPoint:
    """The power-of-two grid of a Quant node; anything else cannot be reproduced exactly."""
    scale = model.get_initializer(node.input[1])
    zero = model.get_initializer(node.input[2])
    bits = model.get_initializer(node.input[3])
    if scale is None or zero is None or bits is None or np.asarray(scale).size != 1:
        raise UserError(f"{node.name}: only per-tensor quantizers with constant scale are supported")
    scale, zero, bits = float(np.asarray(scale)), float(np.asarray(zero)), int(np.asarray(bits))
    frac = -math.log2(scale)
    if zero != 0 or abs(frac - round(frac)) > 1e-9:
        raise UserError(f"{node.name}: scale {scale} / zero point {zero} is not a power-of-two fixed point; "
                        f"hls4ml reproduces only those exactly")
    signed = bool(helper.get_attribute_value(next(a for a in node.attribute if a.name == "signed")))
    return FixedPoint(bits, int(round(frac)), signed)
