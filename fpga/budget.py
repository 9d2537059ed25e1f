"""``make budget`` / ``python -m fpga.budget``: every artifact that has a budget, checked against it.

- the FPGA's on-chip weight storage, counted from the hls4ml model of the quantized checkpoint;
- the FPGA design's resource estimate (DSP, LUT, FF, BRAM18K, LUTRAM) against the part and the resource
  share the design was planned for, or another part given here (``--part`` / ``--resources``);
- the int8 TFLite model for the Raspberry Pi, when the export stage has built it.

The FPGA figures come from ``artifacts/fpga/report.json`` when it describes this checkpoint, else from a
build here without compiling or simulating (the plan, the FIFO sizing and the estimate: about a minute).
Exits non-zero with a table naming what is over and by how much. ``BUDGET_BYTES`` (or --budget-bytes)
applies another byte budget; ``--no-device`` checks the bytes only.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from model.artifacts import UserError, read_json, run_cli, sha256_of, write_json
from quantize.qat import FPGA_QUANT
from quantize.storage import BUDGET_BYTES

from .devices import resolve_device

TFLITE_CANDIDATES = ("artifacts/export/squeezenet_int8.tflite",)


def fpga_report(checkpoint: str, fpga_report_path: Path, work_dir: Path, part: str | None = None,
                resources: str | None = None, share: float | None = None,
                budget_bytes: int = BUDGET_BYTES) -> tuple[dict, str]:
    """The fpga stage's report for this checkpoint, and where it came from. Without one, a build here plans
    the design for ``part`` / ``resources`` / ``share``."""
    if fpga_report_path.is_file():
        report = read_json(fpga_report_path)
        if report.get("checkpoint_sha256") == sha256_of(checkpoint) and "resources" in report:
            return report, str(fpga_report_path)
    from .build import FpgaConfig, build

    # The build's own storage line uses the same budget as this gate (one verdict, not two); no C-sim, no data.
    cfg = FpgaConfig(checkpoint=checkpoint, out=str(work_dir / "fpga"), samples=0, resources=resources,
                     budget_bytes=budget_bytes)
    if part:
        cfg.part = part
    if share is not None:
        cfg.resource_share = share
    report = build(cfg, skip=("compile", "csim"))
    return report, f"fpga build (plan + estimate, no compile) in {cfg.out}"


def device_verdict(report: dict, device: dict | None = None, share: float | None = None) -> list[dict]:
    """The FPGA design's estimate against a part: one row per resource (DSP, LUT, FF, BRAM18K, LUTRAM),
    with ``over_by`` > 0 where the estimate exceeds ``share`` of the part. FF and LUTRAM are held to the same
    share as the rest: a design that needs every flip-flop of a part cannot be placed either.

    A plain function of the fpga report (its ``resources`` estimates; ``device`` and ``share`` default to
    the ones the design was planned for), so that any gate can call it."""
    device = device or report["device"]
    share = report["resource_share"] if share is None else share
    rows = []
    for name, figures in report["resources"].items():
        available = device.get(name)
        if available is None:
            continue
        allowed = share * available
        estimate = figures["estimate"]
        rows.append({"resource": name, "estimate": estimate, "available": available, "share": share,
                     "allowed": allowed, "over_by": max(0, round(estimate - allowed))})
    return rows


def weight_rows(report: dict, source: str, budget: int, tflite_paths) -> list[dict]:
    rows = [{"artifact": "FPGA on-chip weights (hls4ml)", "bytes": (int(report["weight_storage_bits"]) + 7) // 8,
             "source": source}]
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


def format_device(rows: list[dict], part: str) -> str:
    lines = [f"{'FPGA ' + part + ' (estimate)':<34}{'estimate':>10}{'allowed':>10}{'used':>8}  verdict"]
    for r in rows:
        verdict = "ok" if not r["over_by"] else f"OVER by {r['over_by']:,}"
        label = f"{r['resource'].upper()} ({r['share']:.0%} of {r['available']:,})"
        used = r["estimate"] / r["available"] if r["available"] else float("inf")
        lines.append(f"{label:<34}{r['estimate']:>10,}{r['allowed']:>10,.0f}{used:>8.1%}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=FPGA_QUANT)
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"budget in bytes (default: $BUDGET_BYTES or {BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--fpga-report", default="artifacts/fpga/report.json")
    p.add_argument("--work-dir", default="artifacts/budget")
    p.add_argument("--tflite", action="append", default=None, help="TFLite files to check (default: the export's)")
    p.add_argument("--part", default=None, help="check the FPGA design against this part (default: the one it was "
                                                "planned for; $FPGA_PART)")
    p.add_argument("--resources", default=None, metavar="dsp=N,lut=N,ff=N,bram18k=N[,lutram=N]",
                   help="check against a part given by its resources")
    p.add_argument("--resource-share", type=float, default=None,
                   help="share of DSP, LUT and BRAM18K the design may use (default: the one it was planned for)")
    p.add_argument("--no-device", action="store_true", help="check the byte budgets only")
    args = p.parse_args(argv)
    budget = args.budget_bytes or int(os.environ.get("BUDGET_BYTES") or BUDGET_BYTES)
    if budget <= 0:
        raise UserError(f"the budget must be positive, got {budget}")
    part = args.part or os.environ.get("FPGA_PART") or None
    report, source = fpga_report(args.checkpoint, Path(args.fpga_report), Path(args.work_dir), part, args.resources,
                                 args.resource_share, budget)
    rows = weight_rows(report, source, budget, args.tflite or TFLITE_CANDIDATES)
    print(format_rows(rows))
    problems = [f"{r['artifact']} by {r['over_by']:,} bytes" for r in rows if not r["within_budget"]]
    result = {"budget_bytes": budget, "artifacts": rows}
    if not args.no_device:
        device = resolve_device(part, args.resources).to_dict() if (part or args.resources) else report["device"]
        device_rows = device_verdict(report, device, share=args.resource_share)
        part_name = device["part"]
        print(format_device(device_rows, part_name))
        problems += [f"FPGA {r['resource'].upper()} estimate {r['estimate']:,} exceeds {r['share']:.0%} of "
                     f"{part_name}'s {r['available']:,} by {r['over_by']:,}" for r in device_rows if r["over_by"]]
        result.update({"device": device, "device_check": device_rows,
                       "fits_device": not any(r["over_by"] for r in device_rows)})
    write_json(Path(args.work_dir) / "report.json", result)
    if problems:
        raise UserError("over budget: " + "; ".join(problems))
    print(f"all {len(rows)} artifact(s) within the {budget:,}-byte budget"
          + ("" if args.no_device else f"; the FPGA design fits {part_name}"))
    return 0


if __name__ == "__main__":
    run_cli(main)
