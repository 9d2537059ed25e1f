"""``make budget`` / ``python -m budget``: every artifact that has a budget, checked against it.

- the int8 TFLite model for the Raspberry Pi, when the export stage has built it (``--tflite`` names others;
  ``make rpi`` and ``make fleet`` name the file they send);
- the FPGA's on-chip weight storage, as hls4ml stores it, and the FPGA design's resource estimate (DSP, LUT,
  FF, BRAM18K, LUTRAM) against the part and the resource share it was planned for, or another part given
  here (``--part`` / ``--resources``).

The FPGA figures come from ``artifacts/fpga/report.json`` when it describes this checkpoint. Without one
they are unknown and the gate says so; ``--fpga`` (``make budget FPGA=1``) builds them here instead, with
hls4ml, without compiling or simulating (the plan, the FIFO sizing and the estimate: about a minute).
``make fpga`` runs the gate on the report it has just written.
Exits non-zero with a table naming what is over and by how much. ``BUDGET_BYTES`` (or --budget-bytes)
applies another byte budget; ``--no-device`` checks the bytes only (what ``make rpi``, ``make export`` and
``make fleet`` do: a Pi deploy does not depend on the FPGA design).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import contract
from contract import UserError, read_json, sha256_of, write_json
from fpga.devices import resolve_device

WORK_DIR = contract.stage_dir("budget")
FPGA_WEIGHTS = "FPGA on-chip weights (hls4ml)"


def fpga_report(checkpoint: str, fpga_report_path: Path, work_dir: Path, build_if_missing: bool,
                part: str | None = None, resources: str | None = None, share: float | None = None,
                budget_bytes: int = contract.BUDGET_BYTES) -> tuple[dict | None, str]:
    """The fpga stage's report for this checkpoint and where it came from; (None, why) when there is none
    and ``build_if_missing`` is false. Otherwise a build here (hls4ml) plans the design for ``part`` /
    ``resources`` / ``share``."""
    if fpga_report_path.is_file():
        report = read_json(fpga_report_path)
        if report.get("checkpoint_sha256") == sha256_of(checkpoint) and "resources" in report:
            return report, str(fpga_report_path)
        other = report.get("checkpoint", "another checkpoint")
        why = (f"{fpga_report_path} describes {other}, not {checkpoint} (make budget CHECKPOINT={other} "
               f"checks that one)")
    else:
        why = f"no {fpga_report_path}"
    if not build_if_missing:
        return None, why
    from fpga.build import build  # hls4ml and torch: only when asked
    from fpga.config import FpgaConfig

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
                     "allowed": allowed, "over_by": max(0, round(estimate - allowed)),
                     "band": figures.get("band")})
    return rows


def weight_rows(report: dict | None, source: str, budget: int, tflite_paths) -> list[dict]:
    """One row per artifact with a known size; the FPGA row only when its report is known."""
    rows = []
    if report is not None:
        rows.append({"artifact": FPGA_WEIGHTS, "bytes": (int(report["weight_storage_bits"]) + 7) // 8,
                     "source": source})
    for path in map(Path, tflite_paths):
        if path.is_file():
            rows.append({"artifact": f"TFLite model {path.name}", "bytes": path.stat().st_size, "source": str(path)})
    for row in rows:
        row["budget_bytes"] = budget
        row["over_by"] = max(0, row["bytes"] - budget)
        row["within_budget"] = row["bytes"] <= budget
    return rows


def table(header: list[str], body: list[list[str]], right: set[int]) -> str:
    """Columns as wide as their widest cell, two spaces apart (a long figure never runs into the next)."""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in [header, *body])


def format_rows(rows: list[dict]) -> str:
    body = [[r["artifact"], f"{r['bytes']:,}", f"{r['budget_bytes']:,}", f"{r['bytes'] / r['budget_bytes']:.1%}",
             "ok" if r["within_budget"] else f"OVER by {r['over_by']:,} bytes"] for r in rows]
    return table(["artifact", "bytes", "budget", "used", "verdict"], body, right={1, 2, 3})


def format_device(rows: list[dict], part: str) -> str:
    body = []
    for r in rows:
        used = r["estimate"] / r["available"] if r["available"] else float("inf")
        body.append([f"{r['resource'].upper()} ({r['share']:.0%} of {r['available']:,})", f"{r['estimate']:,}",
                     f"{r['allowed']:,.0f}", f"{used:.1%}",
                     f"{r['band'][0]:,}-{r['band'][1]:,}" if r.get("band") else "-",
                     "ok" if not r["over_by"] else f"OVER by {r['over_by']:,}"])
    return table([f"FPGA {part} (estimate)", "estimate", "allowed", "used", "calibrated range", "verdict"], body,
                 right={1, 2, 3})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=contract.FPGA_QUANT_CHECKPOINT,
                   help="the quantized checkpoint the FPGA figures must describe (default: %(default)s)")
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"budget in bytes (default: ${contract.BUDGET_ENV} or {contract.BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--fpga-report", default=contract.FPGA_REPORT, help="default: %(default)s")
    p.add_argument("--work-dir", default=WORK_DIR, help="where report.json goes (default: %(default)s)")
    p.add_argument("--tflite", action="append", default=None,
                   help=f"TFLite file to check, repeatable (default: {contract.EXPORT_TFLITE} when it exists)")
    p.add_argument("--fpga", action="store_true",
                   help="build the FPGA figures here (hls4ml, about a minute) when no fpga report describes the "
                        "checkpoint; without it they are reported as unknown (make budget FPGA=1)")
    p.add_argument("--part", default=None, help="check the FPGA design against this part (default: the one it was "
                                                "planned for; $FPGA_PART)")
    p.add_argument("--resources", default=None, metavar="dsp=N,lut=N,ff=N,bram18k=N[,lutram=N]",
                   help="check against a part given by its resources")
    p.add_argument("--resource-share", type=float, default=None,
                   help="share of every resource (DSP, LUT, FF, BRAM18K, LUTRAM) the design may use (default: "
                        "the one it was planned for)")
    p.add_argument("--no-device", action="store_true",
                   help="check the byte budgets only; without it, a design whose figures are unknown fails the gate")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = contract.budget_bytes(args.budget_bytes)
    part = args.part or os.environ.get("FPGA_PART") or None
    report, source = fpga_report(args.checkpoint, Path(args.fpga_report), Path(args.work_dir), args.fpga, part,
                                 args.resources, args.resource_share, budget)
    missing = [path for path in args.tflite or () if not Path(path).is_file()]
    if missing:  # asked to check a file that is not there: the gate cannot pass
        raise UserError(f"{', '.join(missing)}: no such TFLite model to check")
    rows = weight_rows(report, source, budget, args.tflite or (contract.EXPORT_TFLITE,))
    if rows:
        print(format_rows(rows))
    problems = [f"{r['artifact']} by {r['over_by']:,} bytes" for r in rows if not r["within_budget"]]
    result = {"budget_bytes": budget, "artifacts": rows, "fpga_known": report is not None}
    if report is None:
        result["fpga_unknown_because"] = source
        print(f"{FPGA_WEIGHTS} and device fit: unknown ({source})")
        if not args.no_device:
            problems.append(f"the FPGA design of {args.checkpoint} was not checked: {source}; `make fpga` or "
                            f"`make budget FPGA=1` computes its figures, DEVICE_CHECK=0 (--no-device) checks "
                            f"the bytes only")
    fits = None
    if not args.no_device and report is not None:
        device = resolve_device(part, args.resources).to_dict() if (part or args.resources) else report["device"]
        device_rows = device_verdict(report, device, share=args.resource_share)
        part_name = device["part"]
        print(format_device(device_rows, part_name))
        problems += [f"FPGA {r['resource'].upper()} estimate {r['estimate']:,} exceeds {r['share']:.0%} of "
                     f"{part_name}'s {r['available']:,} by {r['over_by']:,}" for r in device_rows if r["over_by"]]
        fits = not any(r["over_by"] for r in device_rows)
        if not fits:
            problems.append("a narrower network fits (MODEL=pynq_z2 trains the one made for the xc7z020, on your "
                            "data too: docs/own-data.md), or a larger part (FPGA_PART=)")
        result.update({"device": device, "device_check": device_rows, "fits_device": fits})
    write_json(Path(args.work_dir) / contract.REPORT_NAME, result)
    if problems:
        over = [p for p in problems if "was not checked" not in p]
        raise UserError(("over budget: " if over else "") + "; ".join(problems))
    if not rows:
        raise UserError(f"nothing to check: no TFLite model ({contract.EXPORT_TFLITE}) and no FPGA report; "
                        f"run `make export` or `make fpga` first")
    print(f"all {len(rows)} artifact(s) within the {budget:,}-byte budget"
          + (f"; the FPGA design fits {part_name}" if fits else ""))
    return 0
