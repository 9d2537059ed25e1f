"""``make budget`` / ``python -m fpga.budget``: every artifact that has a budget, checked against it.

- the FPGA's on-chip weight storage, counted from the hls4ml model of the quantized checkpoint (taken
  from ``artifacts/fpga/report.json`` when it describes this checkpoint, else converted here without
  compiling or simulating);
- the int8 TFLite model for the Raspberry Pi, when the export stage has built it.

Exits non-zero with a table naming what is over and by how much. ``BUDGET_BYTES`` (or --budget-bytes)
applies another budget to the same artifacts.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from model.artifacts import UserError, run_cli, sha256_of, write_json
from quantize.qat import DEFAULT_QUANT
from quantize.storage import BUDGET_BYTES

TFLITE_CANDIDATES = ("artifacts/export/squeezenet_int8.tflite",)


def hls_weight_storage_bits(checkpoint: str, fpga_report: Path, work_dir: Path) -> tuple[int, str]:
    """Bits the hls4ml model stores for this checkpoint, and where the figure came from."""
    if fpga_report.is_file():
        report = json.loads(fpga_report.read_text())
        if report.get("checkpoint_sha256") == sha256_of(checkpoint) and "weight_storage_bits" in report:
            return int(report["weight_storage_bits"]), str(fpga_report)
    from .build import FpgaConfig, build

    cfg = FpgaConfig(checkpoint=checkpoint, out=str(work_dir), samples=0)
    report = build(cfg, skip=("compile", "csim"))
    return int(report["weight_storage_bits"]), f"hls4ml conversion in {work_dir}"


def check(checkpoint: str, budget: int, fpga_report: Path, work_dir: Path, tflite_paths) -> list[dict]:
    rows = []
    bits, source = hls_weight_storage_bits(checkpoint, fpga_report, work_dir)
    rows.append({"artifact": "FPGA on-chip weights (hls4ml)", "bytes": (bits + 7) // 8, "source": source})
    for path in map(Path, tflite_paths):
        if path.is_file():
            rows.append({"artifact": f"TFLite model {path.name}", "bytes": path.stat().st_size, "source": str(path)})
    for row in rows:
        row["budget_bytes"] = budget
        row["over_by"] = max(0, row["bytes"] - budget)
        row["within_budget"] = row["bytes"] <= budget
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'artifact':<34}{'bytes':>10}{'budget':>10}{'used':>8}  verdict"]
    for r in rows:
        verdict = "ok" if r["within_budget"] else f"OVER by {r['over_by']:,} bytes"
        lines.append(f"{r['artifact']:<34}{r['bytes']:>10,}{r['budget_bytes']:>10,}"
                     f"{r['bytes'] / r['budget_bytes']:>8.1%}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_QUANT)
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"budget in bytes (default: $BUDGET_BYTES or {BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--fpga-report", default="artifacts/fpga/report.json")
    p.add_argument("--work-dir", default="artifacts/budget")
    p.add_argument("--tflite", action="append", default=None, help="TFLite files to check (default: the export's)")
    args = p.parse_args(argv)
    budget = args.budget_bytes or int(os.environ.get("BUDGET_BYTES") or BUDGET_BYTES)
    if budget <= 0:
        raise UserError(f"the budget must be positive, got {budget}")
    rows = check(args.checkpoint, budget, Path(args.fpga_report), Path(args.work_dir),
                 args.tflite or TFLITE_CANDIDATES)
    print(format_rows(rows))
    write_json(Path(args.work_dir) / "report.json", {"budget_bytes": budget, "artifacts": rows})
    over = [r for r in rows if not r["within_budget"]]
    if over:
        raise UserError("over budget: " + "; ".join(f"{r['artifact']} by {r['over_by']:,} bytes" for r in over))
    print(f"all {len(rows)} artifact(s) within the {budget:,}-byte budget")
    return 0


if __name__ == "__main__":
    run_cli(main)
