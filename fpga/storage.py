"""On-chip weight storage read from the hls4ml model itself: every weight/bias variable of every layer,
count x precision width, whatever the quantized model says. hls4ml stores all weights on chip; how many
block RAMs they take depends on the folding (``fpga.estimate``: ROMs of RF words x block_factor x width)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HlsVariable:
    layer: str
    variable: str
    count: int
    width: int
    precision: str
    all_zero: bool

    @property
    def bits(self) -> int:
        return self.count * self.width


@dataclass
class HlsStorageTable:
    variables: list[HlsVariable]
    budget_bytes: int

    @property
    def weight_storage_bits(self) -> int:
        return sum(v.bits for v in self.variables)

    @property
    def weight_storage_bytes(self) -> int:
        return (self.weight_storage_bits + 7) // 8

    @property
    def within_budget(self) -> bool:
        return self.weight_storage_bytes <= self.budget_bytes

    def to_dict(self) -> dict:
        return {
            "weight_storage_bits": self.weight_storage_bits,
            "weight_storage_bytes": self.weight_storage_bytes,
            "budget_bytes": self.budget_bytes,
            "within_budget": self.within_budget,
            "zero_arrays_stored": [f"{v.layer}.{v.variable}" for v in self.variables if v.all_zero],
            "storage_table": [{"layer": v.layer, "variable": v.variable, "count": v.count, "width": v.width,
                               "precision": v.precision, "bits": v.bits, "all_zero": v.all_zero}
                              for v in self.variables],
        }

    def format(self) -> str:
        rows = [f"{'layer':<26}{'var':<7}{'count':>8}{'width':>6}{'bytes':>10}  precision"]
        for v in self.variables:
            note = "  (all zero, still stored)" if v.all_zero else ""
            rows.append(f"{v.layer:<26}{v.variable:<7}{v.count:>8,}{v.width:>6}{v.bits / 8:>10,.1f}"
                        f"  {v.precision}{note}")
        rows.append(f"{'total':<26}{'':<7}{sum(v.count for v in self.variables):>8,}{'':>6}"
                    f"{self.weight_storage_bytes:>10,}")
        verdict = "within" if self.within_budget else "OVER"
        rows.append(f"on-chip weights and biases: {self.weight_storage_bytes:,} bytes; budget {self.budget_bytes:,} "
                    f"bytes: {verdict} ({self.weight_storage_bytes / self.budget_bytes:.1%} used)")
        return "\n".join(rows)


def hls_storage_table(hls_model, budget_bytes: int) -> HlsStorageTable:
    variables = []
    for layer in hls_model.get_layers():
        for var in layer.get_weights():
            data = np.asarray(var.data)
            precision = var.type.precision
            variables.append(HlsVariable(layer.name, var.name, int(data.size), int(precision.width),
                                         str(precision), bool(data.size and not np.any(data))))
    return HlsStorageTable(variables, budget_bytes)
