"""What the build tells hls4ml: the per-layer configuration (Strategy Resource, the planned reuse factors,
the two exactness fixes, the user's precisions last), and a quiet context for its chatter."""
from __future__ import annotations

import contextlib
import io
import math
import warnings

from contract import UserError

from .config import FpgaConfig
from .graph import FixedPoint, quant_fixed_point


def quiet():
    """hls4ml prints every layer it parses; keep the tool's own output readable."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def hls_config(model, cfg: FpgaConfig, reuse_factors: dict[str, int] | None = None) -> dict:
    """hls4ml's per-layer config: Strategy Resource, the planned reuse factor per conv (set under the ONNX
    node name, where hls4ml reads it), the two exactness fixes, and the user's --layer-precision last."""
    import hls4ml

    hc = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                                    default_precision="fixed<16,6>", default_reuse_factor=1)
    hc["Model"]["Strategy"] = "Resource"
    for key, rf in (reuse_factors or {}).items():
        if key not in hc["LayerName"]:
            raise UserError(f"the plan names layer {key}, which the hls4ml config does not have")
        hc["LayerName"][key]["ReuseFactor"] = int(rf)
    # 1. The default input type fixed<16,6> would round before the input quantizer: feed the quantizer's
    #    own grid (the FPGA receives the int8 codes a camera pipeline produces).
    graph_in = model.graph.input[0].name
    first = model.find_consumer(graph_in)
    if first is None or first.op_type != "Quant":
        raise UserError("the QONNX graph does not start with an input quantizer")
    hc["LayerName"][graph_in]["Precision"]["result"] = quant_fixed_point(model, first).hls()
    # 2. The average pool's 'auto' precision truncates the division by H*W; give it enough fractional bits
    #    that truncation can never cross a rounding tie of the output quantizer.
    for node in model.graph.node:
        if node.op_type != "GlobalAveragePool":
            continue
        grid_in = quant_fixed_point(model, model.find_producer(node.input[0]))
        _, _, h, w = model.get_tensor_shape(node.input[0])
        after = _next_quant(model, node)
        extra = math.ceil(math.log2(h * w)) + 3
        frac = max(grid_in.frac, after.frac if after else grid_in.frac) + extra
        integer = grid_in.integer + math.ceil(math.log2(h * w)) + 1
        wide = FixedPoint(integer + frac, frac, True).hls()
        hc["LayerName"].setdefault(node.name, {})["Precision"] = {"result": wide, "accum": wide}
    # 3. The user's precisions (an investigation knob) win over the fixes: narrowing one shows what it prevents.
    for name, precisions in cfg.layer_precision.items():
        layer = hc["LayerName"].get(name)
        if layer is None:
            nodes = [n.name for n in model.graph.node if n.op_type != "Quant" and n.name in hc["LayerName"]]
            raise UserError(f"--layer-precision names {name}, which the hls4ml config does not have (its layers "
                            f"besides the Quant_N nodes: {', '.join(nodes)})")
        unknown = sorted(set(precisions) - set(layer["Precision"]))
        if unknown:
            raise UserError(f"--layer-precision: {name} has no precision {', '.join(unknown)} (it has "
                            f"{', '.join(layer['Precision'])})")
        layer["Precision"].update(precisions)
    return hc


def _next_quant(model, node):
    while node is not None:
        consumer = model.find_consumer(node.output[0])
        if consumer is None or consumer.op_type == "Quant":
            return quant_fixed_point(model, consumer) if consumer is not None else None
        node = consumer
    return None
