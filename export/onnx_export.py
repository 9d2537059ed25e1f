"""Float ONNX and Brevitas QCDQ ONNX, each run in onnxruntime."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from contract import UserError, atomic_path


def export_float_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """The float model (BatchNorm folded by the caller or not) as ONNX, weights inside the file."""
    path = Path(path)
    model.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *input_shape), str(tmp), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    check_onnx(path)
    return path


def export_qcdq_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """The quantized model as standard QuantizeLinear / Clip / DequantizeLinear ONNX."""
    from brevitas.export import export_onnx_qcdq

    from .qonnx_export import export_with_brevitas, round_half_up_quantizers

    export_with_brevitas(export_onnx_qcdq, model, input_shape, path,
                         patch=lambda graph: nudge_ties_up(graph, round_half_up_quantizers(model)))
    check_onnx(path)
    return Path(path)


def nudge_ties_up(graph, quantizers: dict[str, float]) -> int:
    """QuantizeLinear rounds half-to-even; the bypass-sum quantizers round ties toward +inf. Adding
    scale x 2^-12 first moves exactly the ties up and changes no other rounding, as long as the summands'
    grids are no finer than 2^-11 of the sum's scale (the learned po2 scales differ by one or two octaves;
    the tests check QCDQ == Brevitas). float32 keeps the nudged sum exact: 8 + 12 of its 24 mantissa bits."""
    from onnx import helper, numpy_helper

    nodes = list(graph.graph.node)
    done = 0
    for i, node in enumerate(nodes):
        prefix = next((p for p in quantizers if p in node.name), None)
        if node.op_type != "QuantizeLinear" or prefix is None:
            continue
        nudge = numpy_helper.from_array(np.asarray(quantizers[prefix] * 2.0 ** -12, np.float32),
                                        name=f"{node.name}_tie_nudge")
        graph.graph.initializer.append(nudge)
        nudged = f"{node.input[0]}_tie_nudged"
        add = helper.make_node("Add", [node.input[0], nudge.name], [nudged], name=f"{node.name}_TieNudge")
        node.input[0] = nudged
        graph.graph.node.insert(list(graph.graph.node).index(node), add)
        done += 1
    if done != len(quantizers):
        raise RuntimeError(f"found {done} of the {len(quantizers)} round-half-up quantizers in the QCDQ graph")
    return done


def check_onnx(path: str | Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:  # onnx raises several types for damaged files
        raise UserError(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None


def ort_session(path: str | Path, threads: int = 0, graph_semantics: bool = False):
    """An onnxruntime session on the CPU. ``graph_semantics``: only onnxruntime's basic graph optimizations,
    so each QuantizeLinear / DequantizeLinear runs as written. Its default (extended) level fuses a
    DequantizeLinear -> op -> QuantizeLinear chain into an integer kernel (QLinearConv, QLinearAdd,
    QLinearGlobalAveragePool), which rounds a half-way tie its own way: one step off the QDQ semantics and
    Brevitas on 9 of 18 images of a test model whose 8x8 means hit ties. The exactness check runs the
    model's semantics; the benchmark runs what a user gets by default."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if graph_semantics:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UserError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None


def run_ort(session, x: np.ndarray, batch: int = 500) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if session.get_inputs()[0].shape[0] == 1:  # a fixed batch of one
            outs.extend(session.run(None, {name: c[None]})[0] for c in chunk)
        else:
            outs.append(session.run(None, {name: chunk})[0])
    return np.concatenate(outs).reshape(len(x), -1)
