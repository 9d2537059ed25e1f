"""Where a quantized model's accuracy goes: ``python -m quantize.sensitivity``.

Evaluates the quantized checkpoint on its test images with groups of quantizers switched off (Brevitas'
``quantization_status_manager``: the same weights, computed in float there):

- every quantizer on (the model as the targets run it);
- the activations in float: what the activation widths cost;
- the weights in float: how far the QAT weights are from their grid (they were trained for it, so this
  says how much the weights moved, not what a float model would reach);
- ``--per-layer``: each conv's weights in float, one at a time: which layers the weight width costs most.

The biases sit on the accumulator's grid (input scale x weight scale), so they go float with either. Writes
``<out>/sensitivity.json``. A diagnostic: nothing downstream reads it.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

import contract
from contract import run_cli, write_json
from model.data import DATASETS, load_checkpoint_data
from model.inference import accuracy, predict_logits
from model.progress import progress as progress_bar

from .qat import DEFAULT_QUANT, load_quant_model
from .storage import storage_table


def in_float(module: torch.nn.Module, activations: bool = False, weights: bool = False):
    """A context in which ``module``'s activation and/or weight quantizers compute in float (biases too)."""
    from brevitas.graph.calibrate import quantization_status_manager

    if not (activations or weights):
        return nullcontext()
    return quantization_status_manager(module, disable_act_quant=activations, disable_weight_quant=weights,
                                       disable_bias_quant=True, is_training=False)


def quantized_convs(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    import brevitas.nn as qnn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, qnn.QuantConv2d)]


def sensitivity(checkpoint: str | Path, dataset: str | None = None, data_dir: str | None = None,
                samples: int = 0, per_layer: bool = False) -> dict:
    qm = load_quant_model(checkpoint)
    test = load_checkpoint_data(qm.payload, str(checkpoint), "test", dataset, data_dir)[0]
    if samples:
        test = test.subset(np.arange(min(samples, len(test))))

    def top1(module=qm.model, **float_parts) -> float:
        with in_float(module, **float_parts):
            return accuracy(predict_logits(qm.model, test, qm.normalization), test.labels)

    rows = [{"float": "nothing", "top1": top1()},
            {"float": "activations", "top1": top1(activations=True)},
            {"float": "weights", "top1": top1(weights=True)},
            {"float": "activations and weights", "top1": top1(activations=True, weights=True)}]
    layers = []
    if per_layer:
        bits = {row.name: row.weight_bits for row in storage_table(qm.model).layers}
        for name, conv in progress_bar(quantized_convs(qm.model), desc="per layer", leave=False):
            layers.append({"layer": name, "weight_bits": bits.get(name), "top1": top1(conv, weights=True)})
    return {"checkpoint": str(checkpoint), "samples": len(test), "float_parent_top1": qm.payload.get(
        "meta", {}).get("float_top1") if not samples else None, "rows": rows, "per_layer": layers}


def format_report(report: dict) -> str:
    base = report["rows"][0]["top1"]
    lines = [f"{report['checkpoint']}: top-1 on {report['samples']:,} test images",
             f"{'in float':<26}{'top-1':>8}{'change':>9}"]
    lines += [f"{r['float']:<26}{r['top1']:>8.4f}{r['top1'] - base:>+9.4f}" for r in report["rows"]]
    if report["per_layer"]:
        lines += ["", f"{'weights in float: layer':<34}{'bits':>5}{'top-1':>8}{'change':>9}"]
        for r in sorted(report["per_layer"], key=lambda r: -r["top1"]):
            lines.append(f"{r['layer']:<34}{r['weight_bits'] or '-':>5}{r['top1']:>8.4f}{r['top1'] - base:>+9.4f}")
    if report["float_parent_top1"] is not None:
        lines.append(f"(its float parent: {report['float_parent_top1']:.4f}, another set of weights)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.sensitivity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_QUANT, help="quantized checkpoint (default: %(default)s)")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="default: the data set the checkpoint was trained on")
    p.add_argument("--data-dir", default=None, help="default: the checkpoint's data directory, else $DATA_DIR")
    p.add_argument("--samples", type=int, default=0, help="only the first N test images (default: all)")
    p.add_argument("--per-layer", action="store_true", help="also each conv's weights in float, one at a time")
    p.add_argument("--out", default=contract.stage_dir("quantize"), help="where sensitivity.json goes")
    args = p.parse_args(argv)
    if args.samples < 0:
        raise contract.UserError(f"--samples must be 0 (all) or more, not {args.samples}")
    report = sensitivity(args.checkpoint, args.dataset, args.data_dir, args.samples, args.per_layer)
    print(format_report(report))
    write_json(Path(args.out) / "sensitivity.json", report)
    return 0


if __name__ == "__main__":
    run_cli(main)
