"""Evaluate a quantized checkpoint: ``python -m quantize.evaluate`` (part of ``make eval``).

Writes ``<out>/report.json`` with top-1, the float model's top-1, bit widths and the weight storage table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import contract
from contract import run_cli, sha256_of
from model.checkpoint import load_checkpoint
from model.data import DATASETS

from .qat import DEFAULT_FLOAT, DEFAULT_QUANT, evaluate_quant


def is_fresh(quant_checkpoint: str, float_checkpoint: str) -> bool:
    """True when the quantized checkpoint was trained from this exact float checkpoint."""
    if not Path(quant_checkpoint).is_file() or not Path(float_checkpoint).is_file():
        return False
    meta = load_checkpoint(quant_checkpoint).get("meta", {})
    return meta.get("float_sha256") == sha256_of(float_checkpoint)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.evaluate", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_QUANT)
    p.add_argument("--float-checkpoint", default=DEFAULT_FLOAT)
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="default: the data set the checkpoint was trained on")
    p.add_argument("--data-dir", default=None, help="default: the checkpoint's data directory, else $DATA_DIR")
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"the byte budget (default: ${contract.BUDGET_ENV} or {contract.BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--out", default=contract.stage_dir("quantize"))
    p.add_argument("--if-changed", action="store_true",
                   help="skip when <out>/report.json already describes this checkpoint")
    p.add_argument("--is-fresh", action="store_true",
                   help="only check that --checkpoint was made from --float-checkpoint (exit 0) or not (1)")
    args = p.parse_args(argv)
    if args.is_fresh:
        fresh = is_fresh(args.checkpoint, args.float_checkpoint)
        if not fresh:
            print(f"{args.checkpoint} is missing or was not made from {args.float_checkpoint}: running QAT")
        return 0 if fresh else 1
    report_path = Path(args.out) / "report.json"
    if args.if_changed and report_path.is_file():
        try:
            old = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("checkpoint_sha256") == sha256_of(args.checkpoint):
            print(f"{report_path} is up to date")
            return 0
    report = evaluate_quant(args.checkpoint, args.dataset, args.data_dir, args.out,
                            contract.budget_bytes(args.budget_bytes))
    print(f"{args.checkpoint}: top-1 {report['top1']:.4f} (float {report['float_top1']}), "
          f"{report['weight_bits']}-bit weights, {report['weight_storage_bytes']:,} bytes on chip, "
          f"{report['tied_top1']:.2%} tied top-1 -> {report_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
