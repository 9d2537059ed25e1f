"""Interchange artifacts of the quantized SqueezeNet: float/QCDQ ONNX, QONNX (the fpga stage's input) and
the int8 TFLite model for the Raspberry Pi."""
import os

# TensorFlow may be imported indirectly (hls4ml, onnx tooling) before the TFLite converter runs: keep its
# C++ start-up chatter out of the stage's output from the start. oneDNN's float-kernel rewrites are of no
# use to a converter and announce themselves on every import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from .qonnx_export import export_qonnx

__all__ = ["export_qonnx"]
