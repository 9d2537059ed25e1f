"""One call from a network to its FPGA design point: plan, estimate, fit and images/s.

``design_point`` is the plain function a design-space exploration calls for each candidate network: it
takes a ``SqueezeNetConfig`` (or a ``Pipeline`` already built), needs no checkpoint, hls4ml or C
simulation, and returns in milliseconds (seconds with ``simulate=True``, which also sizes the FIFOs
with the dataflow simulation instead of assuming depth 1).
"""
from __future__ import annotations

from pathlib import Path

from model.squeezenet import SqueezeNetConfig

from .dataflow import size_fifos
from .devices import Device, resolve_device
from .estimate import estimate
from .pipeline import BitWidths, Pipeline, pipeline_from_config
from .plan import PlanError, plan_folding


def design_point(network: SqueezeNetConfig | Pipeline, part: str = "xc7z020clg400-1", *,
                 resources: str | None = None, device: Device | None = None, share: float = 0.8,
                 target_fps: float | None = None, clock_mhz: float = 100.0, bits: BitWidths | None = None,
                 simulate: bool = False) -> dict:
    """Fold ``network`` for the part and estimate it. Always returns a dict:

    ``fits`` (bool), ``images_per_second`` (float, 0 when nothing fits), ``ii_cycles``, ``latency_cycles``,
    ``reuse_factors``, ``resources`` {name: {estimate, available, share}}, ``macs_per_image``, ``error``
    (why nothing fits, else None). Without a fitting plan the figures describe the smallest plan (every
    conv at its largest reuse factor), so an optimizer can see how far off a candidate is.
    """
    pipeline = network if isinstance(network, Pipeline) else pipeline_from_config(network, bits)
    device = device or resolve_device(part, resources)
    depths = {s.key: 1 for s in pipeline.fifos()}
    error = None
    try:
        plan = plan_folding(pipeline, device, share=share, target_fps=target_fps, clock_mhz=clock_mhz,
                            depths=depths)
        reuse, est = plan.reuse_factors, plan.estimate
        if simulate:
            sizing = size_fifos(pipeline, reuse)
            depths = sizing.depths
            est = estimate(pipeline, reuse, device, depths=depths, share=share, clock_mhz=clock_mhz)
    except PlanError as exc:
        error = str(exc)
        reuse = smallest_plan(pipeline)
        est = estimate(pipeline, reuse, device, depths=depths, share=share, clock_mhz=clock_mhz)
    fits = error is None and est.fits
    if error is None and not fits:
        error = "the plan stops fitting once the FIFOs are sized by simulation"
    return {
        "network": pipeline.name, "part": device.part, "share": share, "clock_mhz": clock_mhz,
        "fits": fits, "images_per_second": round(est.images_per_second, 1) if fits else 0.0,
        "ii_cycles": est.ii_cycles, "latency_cycles": est.latency_cycles, "bottleneck": est.bottleneck,
        "reuse_factors": reuse, "resources": est.resources(), "macs_per_image": pipeline.macs_per_image(),
        "fifo_bits": est.fifo_bits, "onchip_memory_bits": est.onchip_memory_bits, "error": error,
    }


def smallest_plan(pipeline: Pipeline) -> dict[str, int]:
    """Every conv at its largest valid reuse factor with at least one multiplier: the fewest resources."""
    from .plan import candidate_reuse_factors

    return {s.name: max(candidate_reuse_factors(s)) for s in pipeline.convs}


def estimate_preset(name: str, part: str, resources: str | None, share: float, target_fps: float | None,
                    clock_mhz: float, out: Path) -> int:
    """``python -m fpga --preset NAME``: plan and estimate a model.squeezenet preset from its config (the
    quantize stage's default bit widths), print the table, write ``<out>/preset-NAME/``. Estimate only."""
    from model.artifacts import UserError, write_json
    from model.squeezenet import PRESETS

    from .report import format_estimate, plot_estimate

    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    device = resolve_device(part, resources)
    pipeline = pipeline_from_config(PRESETS[name](), name=name)
    point = design_point(pipeline, device=device, share=share, target_fps=target_fps, clock_mhz=clock_mhz)
    est = estimate(pipeline, point["reuse_factors"], device, depths={s.key: 1 for s in pipeline.fifos()},
                   share=share, clock_mhz=clock_mhz)
    table = format_estimate(est)
    target = out / f"preset-{name}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "estimate.txt").write_text(table + "\n")
    plot_estimate(est, target / "layers.png")
    write_json(target / "report.json", {
        **point, "source": pipeline.source, "fifo_depths": "1 (not sized: no dataflow simulation for presets)",
        "layers": [layer.to_dict() for layer in est.layers], "plan_note": point["error"]})
    print(table)
    if point["error"]:
        print(f"no folding fits: {point['error']}")
    print(f"report: {target / 'report.json'}")
    return 0
