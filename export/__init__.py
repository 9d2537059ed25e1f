"""Interchange artifacts of the quantized SqueezeNet (QONNX for the fpga stage)."""
from .qonnx_export import export_qonnx

__all__ = ["export_qonnx"]
