"""``make qat-sweep`` / ``python -m quantize.sweep``: the size/accuracy trade-off over weight bit widths.

Runs a (short) QAT for each weight width from the same float checkpoint and prints one table: weight bits,
on-chip bytes (weights + biases), share of the 0.5 MiB budget, test top-1. Extra arguments after ``--``
go to every ``python -m quantize`` run (e.g. ``-- --epochs 1 --limit 20000``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import contract
from contract import read_json, run_cli, write_json

from . import qat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="8,4,3,2", help="comma list of weight bit widths")
    p.add_argument("--out", default=f"{contract.stage_dir('quantize')}/sweep")
    p.add_argument("qat_args", nargs=argparse.REMAINDER, help="arguments for every QAT run (after --)")
    args = p.parse_args(argv)
    extra = [a for a in args.qat_args if a != "--"]
    rows = []
    for bits in [int(b) for b in args.bits.split(",")]:
        out = Path(args.out) / f"w{bits}"
        print(f"=== {bits}-bit weights -> {out}", flush=True)
        qat.main(["--weight-bits", str(bits), "--out", str(out), *extra])
        report = read_json(out / "report.json")
        rows.append({"weight_bits": bits, "weight_storage_bytes": report["weight_storage_bytes"],
                     "budget_used": report["storage"]["budget_used"], "top1": report["top1"],
                     "float_top1": report["float_top1"], "command": report["qat"]["command"]})
    lines = [f"{'weight bits':>11}{'bytes':>10}{'budget':>9}{'top-1':>8}{'float':>8}"]
    for r in rows:
        lines.append(f"{r['weight_bits']:>11}{r['weight_storage_bytes']:>10,}{r['budget_used']:>9.1%}"
                     f"{r['top1']:>8.4f}{r['float_top1']:>8.4f}")
    print("\n".join(lines))
    write_json(Path(args.out) / "sweep.json", {"rows": rows})
    return 0


if __name__ == "__main__":
    run_cli(main)
