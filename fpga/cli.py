"""``python -m fpga``: the command line of the FPGA build (fpga/build.py, whose docstring is its help)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import contract
from contract import UserError, run_cli
from model.data import DATASETS
from quantize.agreement import mismatch_line

from . import build as build_module
from .build import build
from .config import MULTIPLIERS, FpgaConfig, parse_layer_precision
from .devices import DEVICES


def build_parser() -> argparse.ArgumentParser:
    d = FpgaConfig()
    p = argparse.ArgumentParser(prog="python -m fpga", description=build_module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=d.checkpoint, help=f"quantized checkpoint (default {d.checkpoint})")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--part", default=os.environ.get("FPGA_PART", d.part),
                   help=f"FPGA part (default $FPGA_PART or {d.part}; known: {', '.join(DEVICES)})")
    p.add_argument("--resources", default=None, metavar="dsp=N,lut=N,ff=N,bram18k=N[,lutram=N]",
                   help="the part's resources, for a part not in the table")
    p.add_argument("--clock-mhz", type=float, default=d.clock_mhz, help=f"default {d.clock_mhz:g}")
    p.add_argument("--resource-share", type=float, default=d.resource_share,
                   help=f"share of each resource the plan may use (default {d.resource_share:g})")
    p.add_argument("--fit-with-band", action="store_true", help="plan so that the calibration band's upper "
                   "edge (python -m fpga.calibrate), not the estimate alone, stays within the share")
    p.add_argument("--target-fps", type=float, default=None,
                   help="plan the cheapest folding for this many images/s (default: the fastest that fits)")
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"default: $BUDGET_BYTES or {d.budget_bytes:,} (0.5 MiB)")
    p.add_argument("--samples", default=str(d.samples),
                   help=f"test images for the C simulation, or 'all' (default {d.samples})")
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="data set of the C simulation (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", default=d.data_dir, help="its directory (default: the checkpoint's, else $DATA_DIR)")
    p.add_argument("--workers", type=int, default=d.workers, help="C simulation processes (0: one per core)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="report a C simulation that differs from the Brevitas model without failing "
                        "(for investigation)")
    p.add_argument("--layer-precision", action="append", default=[], metavar="NODE.VAR=TYPE",
                   help="expert, for investigation: set one hls4ml precision of one layer (the ONNX node name, "
                        "as in hls4ml's per-layer config), overriding the build's exactness fixes and hls4ml's "
                        "inference; repeatable. E.g. GlobalAveragePool_0.accum=fixed<10,4> narrows the average "
                        "pool's accumulator ('auto': hls4ml's own choice). The C simulation gate then says "
                        "whether the design still equals the Brevitas model")
    p.add_argument("--multipliers", choices=MULTIPLIERS, default=d.multipliers,
                   help="where the convs' multipliers go: 'auto', the tools' choice (weights narrower than 9 bits "
                        "multiply in LUTs); 'dsp', the planner binds those of the convs that free the most LUTs "
                        "to DSP48s, as many as the part's DSPs hold (BIND_OP in the project), for a faster plan "
                        f"(default {d.multipliers})")
    p.add_argument("--no-csim", action="store_true", help="generate, estimate and check storage only")
    p.add_argument("--preset", default=None,
                   help="estimate a model.squeezenet preset (e.g. squeezenet1_1) from its config alone: no "
                        "checkpoint, no HLS project, no C simulation")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.preset:
        from .design import estimate_preset

        return estimate_preset(args.preset, args.part, args.resources, args.resource_share, args.target_fps,
                               args.clock_mhz, Path(args.out), with_band=args.fit_with_band)
    if args.samples == "all":
        samples = 0
    else:
        try:
            samples = int(args.samples)
        except ValueError:
            raise UserError(f"--samples must be a number or 'all', got {args.samples!r}") from None
    target = args.target_fps if args.target_fps else None
    cfg = FpgaConfig(checkpoint=args.checkpoint, out=args.out, part=args.part, resources=args.resources,
                     clock_mhz=args.clock_mhz, resource_share=args.resource_share, target_fps=target,
                     fit_with_band=args.fit_with_band,
                     budget_bytes=contract.budget_bytes(args.budget_bytes), samples=samples, dataset=args.dataset, data_dir=args.data_dir,
                     workers=args.workers, layer_precision=parse_layer_precision(args.layer_precision),
                     multipliers=args.multipliers)
    report = build(cfg, skip=("csim",) if args.no_csim else ())
    csim = report.get("csim")
    if csim:
        print(f"C simulation on {csim['samples']:,} images: top-1 agreement {csim['top1_agreement']:.4f}, max "
              f"|logit diff| {csim['max_abs_diff']:g}, accuracy {csim['top1']:.4f} "
              f"({csim['images_per_second']:.1f} images/s)")
    print(f"HLS project: {report['hls_project']}  report: {Path(cfg.out) / 'report.json'}")
    if csim and not csim["exact"]:
        line = mismatch_line("the C simulation", csim)
        if not args.allow_mismatch:
            raise UserError(line + " (--allow-mismatch reports without failing)")
        print(f"warning (--allow-mismatch): {line}", file=sys.stderr)
    if not report["within_budget"]:
        raise UserError(f"on-chip weight storage {report['weight_storage_bytes']:,} bytes exceeds the budget of "
                        f"{report['budget_bytes']:,} bytes by {report['weight_storage_bytes'] - report['budget_bytes']:,}")
    return 0


if __name__ == "__main__":
    run_cli(main)
