"""QONNX export of the Brevitas model: the fpga stage's input, written by one function for both stages."""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch

from model.artifacts import atomic_path


def export_qonnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``model`` as QONNX (Quant nodes with the Brevitas scales and bit widths).

    Uses the legacy TorchScript exporter (``dynamo=False``): torch 2.13's default dynamo exporter turns the
    global average pool into ReduceMean, which hls4ml rejects; the legacy one keeps GlobalAveragePool.
    """
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    path = Path(path)
    model.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        brevitas_export_qonnx(model, torch.zeros(1, *input_shape), export_path=str(tmp), dynamo=False)
    return path
