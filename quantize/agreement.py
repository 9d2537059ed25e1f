"""How a derived model agrees with its parent, the Brevitas model: the one comparison the export (ONNX,
TFLite) and the FPGA stage (the C simulation of the HLS code) both report and gate on, under the same keys:
``samples, top1, top1_agreement, max_abs_diff, tolerance, exact, rows_off`` and ``first_mismatch``."""
from __future__ import annotations

import numpy as np


def compare(outputs: np.ndarray, parent: np.ndarray, labels: np.ndarray, tolerance: float = 0.0) -> dict:
    """Top-1 of ``outputs`` and how far they are from the parent's on the same images; ``exact``: every
    output within ``tolerance`` of the parent's, else the first image that is not."""
    diff = np.abs(outputs.astype(np.float64) - parent)
    off = np.flatnonzero((diff > tolerance).any(axis=1))
    facts = {"samples": int(len(outputs)),
             "top1": round(float((outputs.argmax(1) == labels).mean()), 6),
             "top1_agreement": round(float((outputs.argmax(1) == parent.argmax(1)).mean()), 6),
             "max_abs_diff": float(diff.max()), "tolerance": tolerance, "exact": not len(off),
             "rows_off": int(len(off))}
    if len(off):
        i = int(off[0])
        facts["first_mismatch"] = {"index": i, "top1": int(outputs[i].argmax()), "parent_top1": int(parent[i].argmax()),
                                   "max_abs_diff": float(diff[i].max())}
    return facts


def mismatch_line(name: str, entry: dict) -> str:
    """One artifact's failed exactness check, in words."""
    first = entry["first_mismatch"]
    runtime = f"{entry['runtime']} with {entry['kernels']}" if "kernels" in entry else entry["runtime"]
    return (f"{name} differs from {entry['parent']} ({runtime}) on {entry['rows_off']} of {entry['samples']} "
            f"images (top-1 agreement {entry['top1_agreement']:.4f}, max |diff| {entry['max_abs_diff']:.3g}, "
            f"tolerance {entry['tolerance']:g}); first: test image {first['index']} (class {first['top1']} vs "
            f"{first['parent_top1']}, max |diff| {first['max_abs_diff']:.3g})")
