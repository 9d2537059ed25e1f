"""QONNX export of the Brevitas model: the fpga stage's input, written by one function for both stages."""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch

from contract import atomic_path

# the default (simple-bypass) network, where that is the same as ties toward +inf (their Brevitas rounding).
HALF_UP = "HALF_UP"


def export_qonnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``model`` as QONNX (Quant nodes with the Brevitas scales and bit widths).

    Uses the legacy TorchScript exporter (``dynamo=False``): torch 2.13's default dynamo exporter turns the
    global average pool into ReduceMean, which hls4ml rejects; the legacy one keeps GlobalAveragePool.
    """
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    return export_with_brevitas(brevitas_export_qonnx, model, input_shape, path,
                                patch=lambda graph: mark_round_half_up(graph, model))


def export_with_brevitas(exporter, model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path,
                         patch) -> Path:
    """Run one of Brevitas' ONNX exporters (legacy TorchScript route, quietly) into a temporary file, let
    ``patch`` edit the loaded graph, and move the result into place only when all of it worked."""
    import onnx

    path = Path(path)
    model.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        exporter(model, torch.zeros(1, *input_shape), export_path=str(tmp), dynamo=False)
        graph = onnx.load(str(tmp))
        patch(graph)
        onnx.save(graph, str(tmp))
    return path


def round_half_up_quantizers(model: torch.nn.Module) -> dict[str, float]:
    """ONNX node-name prefix -> scale of every activation quantizer that rounds ties toward +inf."""
    from quantize.layers import is_round_half_up

    found = {}
    for name, module in model.named_modules():
        if hasattr(module, "act_quant") and is_round_half_up(module):
            parent, _, leaf = name.rpartition(".")
            prefix = f"/{parent}/{leaf}/act_quant/" if parent else f"/{leaf}/act_quant/"
            found[prefix] = float(module.act_quant.scale().detach())
    return found


def mark_round_half_up(graph, model: torch.nn.Module) -> int:
    """Brevitas writes ``rounding_mode=ROUND`` for every quantizer it cannot name; give the quantizers that
    round ties up (``quantize.layers.RoundHalfUpSte``) their own mode, so no backend rounds them half-even."""
    prefixes = list(round_half_up_quantizers(model))
    marked = 0
    for node in graph.graph.node:
        if node.op_type == "Quant" and any(p in node.name for p in prefixes):
            for attr in node.attribute:
                if attr.name == "rounding_mode":
                    attr.s = HALF_UP.encode()
                    marked += 1
    if marked != len(prefixes):
        raise RuntimeError(f"found {marked} of the {len(prefixes)} round-half-up quantizers in the QONNX graph")
    return marked
