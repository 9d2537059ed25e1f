"""``python -m fpga.estimate PROJECT``: resources and cycles of any written hls4ml ``io_stream`` project.

Reads the project's ``hls4ml_config.yml`` and ``firmware/`` (parameters.h, defines.h, myproject.cpp) only:
no hls4ml, no HLS tool, no Vivado. Prints one row per layer and the totals against the part (the
project's own ``Part``, or ``--part`` / ``--resources``), and the range that the calibration against
published Vivado syntheses puts each total in (``python -m fpga.calibrate``). Every figure is an estimate.
A layer kind the estimator has no model for is named ("NOT MODELLED") and counted as zero.
"""
from __future__ import annotations

import argparse
import json

from .costs import load_bands
from .devices import device_for_part, resolve_device
from .estimate import estimate
from .project_pipeline import pipeline_from_project
from .report import format_estimate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.estimate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", help="a written hls4ml project directory (holds hls4ml_config.yml and firmware/)")
    p.add_argument("--part", help="the FPGA part to fit against (default: the project's Part)")
    p.add_argument("--resources", help="the part's resources instead: dsp=N,lut=N,ff=N,bram18k=N[,lutram=N]")
    p.add_argument("--resource-share", type=float, default=0.8, help="share of each resource allowed (0.8)")
    p.add_argument("--clock-mhz", type=float, help="clock for images/s (default: from the project's ClockPeriod)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    args = p.parse_args(argv)
    pipeline, project = pipeline_from_project(args.project)
    part = args.part or project.part
    device = resolve_device(part, args.resources) if (args.resources or args.part) else device_for_part(part)
    depths = {s.key: project.depths.get(s.key, 1) for s in pipeline.fifos()}
    est = estimate(pipeline, {}, device, depths=depths, share=args.resource_share,
                   clock_mhz=args.clock_mhz or project.clock_mhz, split_streams=project.splits_streams)
    if args.json:
        bands = load_bands()
        print(json.dumps({
            "project": str(project.path), "part": device.part, "clock_mhz": est.clock_mhz,
            "what": "estimate (fpga/estimate.py), not a synthesis result",
            "totals": est.totals.to_dict(),
            "band": {name: [round(getattr(est.totals, name) * low), round(getattr(est.totals, name) * high)]
                     for name, (low, high) in bands.items()},
            "resources": est.resources() if any(device.available().values()) else None,
            "fits": est.fits if any(device.available().values()) else None,
            "ii_cycles": est.ii_cycles, "bottleneck": est.bottleneck,
            "images_per_second": round(est.images_per_second, 1),
            "unmodeled": [{"layer": layer.name, "function": layer.function} for layer in est.layers
                          if layer.kind == "unmodeled"],
            "layers": [layer.to_dict() for layer in est.layers],
            "fifos": [{"stream": f.stream, "width": f.width, "depth": f.depth, "impl": f.impl,
                       "cost": f.cost.to_dict()} for f in est.fifos],
        }, indent=2))
    else:
        print(f"{project.path}: {len(pipeline.stages)} stages, {len(pipeline.fifos())} FIFOs, "
              f"{project.config.get('Backend', '?')} backend, {est.clock_mhz:g} MHz (estimate, not synthesis)")
        print(format_estimate(est, every_layer=True))
    return 0
