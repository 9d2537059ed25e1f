"""On-chip weight storage of a quantized SqueezeNet, read from the Brevitas model itself.

For every quantized conv: weights x weight bits + biases x bias bits. This is the figure the FPGA stage
cross-checks against what hls4ml actually stores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from contract import BUDGET_BYTES


@dataclass
class LayerStorage:
    name: str
    weights: int
    weight_bits: int
    biases: int
    bias_bits: int

    @property
    def bits(self) -> int:
        return self.weights * self.weight_bits + self.biases * self.bias_bits


@dataclass
class StorageTable:
    layers: list[LayerStorage]
    budget_bytes: int = BUDGET_BYTES

    @property
    def total_bits(self) -> int:
        return sum(layer.bits for layer in self.layers)

    @property
    def total_bytes(self) -> int:
        return (self.total_bits + 7) // 8

    @property
    def within_budget(self) -> bool:
        return self.total_bytes <= self.budget_bytes

    def to_dict(self) -> dict:
        return {"layers": [{**asdict(layer), "bits": layer.bits} for layer in self.layers],
                "total_bits": self.total_bits, "total_bytes": self.total_bytes,
                "budget_bytes": self.budget_bytes, "within_budget": self.within_budget,
                "budget_used": round(self.total_bytes / self.budget_bytes, 4)}

    def format(self) -> str:
        rows = [f"{'layer':<28}{'weights':>9}{'w bits':>7}{'biases':>8}{'b bits':>7}{'bytes':>10}"]
        for layer in self.layers:
            rows.append(f"{layer.name:<28}{layer.weights:>9,}{layer.weight_bits:>7}{layer.biases:>8,}"
                        f"{layer.bias_bits:>7}{layer.bits / 8:>10,.1f}")
        verdict = "within" if self.within_budget else "OVER"
        rows.append(f"{'total':<28}{sum(layer.weights for layer in self.layers):>9,}{'':>7}"
                    f"{sum(layer.biases for layer in self.layers):>8,}{'':>7}{self.total_bytes:>10,}")
        rows.append(f"budget {self.budget_bytes:,} bytes: {verdict} ({self.total_bytes / self.budget_bytes:.1%} used)")
        return "\n".join(rows)


def storage_table(model: nn.Module, budget_bytes: int = BUDGET_BYTES) -> StorageTable:
    """Count what a quantized model stores: every QuantConv2d's integer weights and biases."""
    from brevitas.nn import QuantConv2d

    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantConv2d):
            continue
        weight_bits = int(module.quant_weight().bit_width.item())
        biases = module.bias.numel() if module.bias is not None else 0
        # The bias quantizer's width is a constant; asking the proxy would need an input scale.
        bias_bits = int(module.bias_quant.tensor_quant.msb_clamp_bit_width_impl().item()) if biases else 0
        layers.append(LayerStorage(name, module.weight.numel(), weight_bits, biases, bias_bits))
    return StorageTable(layers, budget_bytes)
