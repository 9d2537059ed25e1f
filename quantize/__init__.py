"""Brevitas quantization-aware SqueezeNet, built by the same builder as the float model."""
from .layers import QuantSettings, brevitas_layers, build_quant_model, conv_layer_names
from .storage import LayerStorage, StorageTable, storage_table

__all__ = ["LayerStorage", "QuantSettings", "StorageTable", "brevitas_layers",
           "build_quant_model", "conv_layer_names", "storage_table"]
