"""One call from a network to its FPGA design point: plan, estimate, fit and images/s.

``design_point`` is the plain function a design-space exploration calls for each candidate network: it
takes a ``SqueezeNetConfig`` (or a ``Pipeline`` already built), needs no checkpoint, hls4ml or C
simulation, and returns in milliseconds (seconds with ``simulate=True``, which also sizes the FIFOs
with the dataflow simulation instead of assuming depth 1).
"""
from __future__ import annotations

from pathlib import Path

from model.squeezenet import SqueezeNetConfig

from .config import DEFAULT_MULTIPLIERS
from .costs import load_bands
from .dataflow import size_fifos
from .devices import RESOURCES, Device, resolve_device
from .estimate import estimate
from .pipeline import BitWidths, Pipeline, pipeline_from_config
from .plan import MAX_MULTIPLIERS, PlanError, _Folding, describe_over, dsp_binding, plan_folding

SIZING_ROUNDS = 5


def fold_and_size(pipeline: Pipeline, device: Device, *, share: float = 0.8, target_fps: float | None = None,
                  clock_mhz: float = 100.0, simulate: bool = True, fallback_fps: float | None = None,
                  bind_dsp: bool = False):
    """Plan the folding and size the FIFOs for it by simulation. The FIFOs' cost depends on the plan and the
    plan on their cost, and not monotonically (a slower plan can need deeper FIFOs than a faster one), so
    the fastest plan (no ``target_fps``) comes from ``fastest_sized_plan``: every plan of the planner's
    family, fastest first, each judged with its own sized FIFOs. With ``target_fps``: plan for it, size,
    and plan again with the sized FIFOs for a few rounds. ``bind_dsp``: each plan also binds the
    multipliers of the convs it chooses to DSP48s (``plan_folding``).

    Returns (reuse factors, FIFO depths, FifoSizing or None, why nothing fits or None, the convs bound to
    DSPs). When no plan fits, the plan is the cheapest for ``fallback_fps`` (if given) or the smallest one,
    unbound."""
    if simulate and target_fps is None:
        found = fastest_sized_plan(pipeline, device, share, clock_mhz, bind_dsp)
        if found is not None:
            _, reuse, sizing, dsp_layers = found
            return reuse, sizing.depths, sizing, None, dsp_layers
    depths = {s.key: 1 for s in pipeline.fifos()}
    seen, best, last = set(), None, None

    for _ in range(SIZING_ROUNDS if simulate else 1):
        try:
            plan = plan_folding(pipeline, device, share=share, target_fps=target_fps, clock_mhz=clock_mhz,
                                depths=depths, bind_dsp=bind_dsp)
            reuse, dsp_layers, error = plan.reuse_factors, plan.dsp_layers, None
        except PlanError as exc:
            error, dsp_layers = str(exc), frozenset()
            reuse = (cheapest_plan(pipeline, device, fallback_fps, clock_mhz) if fallback_fps
                     else smallest_plan(pipeline))
        if not simulate:
            return reuse, depths, None, error, dsp_layers
        key = (tuple(sorted(reuse.items())), dsp_layers)
        if key in seen:
            break
        seen.add(key)
        sizing = size_fifos(pipeline, reuse)
        est = estimate(pipeline.with_multipliers_on_dsp(dsp_layers), reuse, device, depths=sizing.depths,
                       share=share, clock_mhz=clock_mhz)
        interval = max(est.ii_cycles, sizing.check.cycles_per_image or 0)
        if error is None and est.fits and (best is None or interval < best[0]):
            best = (interval, reuse, sizing, dsp_layers)
        last = (reuse, sizing, error or "no plan fits once its FIFOs are sized by simulation: " + describe_over(est),
                dsp_layers)
        depths = sizing.depths
    if best:
        return best[1], best[2].depths, best[2], None, best[3]
    reuse, sizing, error, dsp_layers = last
    return reuse, sizing.depths, sizing, error, dsp_layers


def fastest_sized_plan(pipeline: Pipeline, device: Device, share: float, clock_mhz: float, bind_dsp: bool = False):
    """The fastest plan that fits once its own FIFOs are sized by simulation: (interval, reuse factors,
    sizing, convs bound to DSPs), or None when none does. The candidates are the planner's plans, one per
    bottleneck budget (the largest reuse factor of each conv within it, as ``plan_folding`` makes them),
    fastest first; a plan whose layers alone, FIFOs left out, are over the share is skipped unsimulated.
    Iterating plan -> size -> plan can cycle between plans and miss a faster one that fits between them."""
    try:
        folding = _Folding(pipeline, device, MAX_MULTIPLIERS)
    except PlanError:
        return None  # a conv hls4ml cannot fold: fold_and_size's rounds say so
    limits = {name: share * value for name, value in device.available().items()}
    seen = set()
    for budget in folding.budgets():
        reuse = folding.plan_for(budget)
        key = reuse and tuple(sorted(reuse.items()))
        if reuse is None or key in seen:
            continue
        seen.add(key)
        dsp_layers = dsp_binding(pipeline, reuse, device, share) if bind_dsp else frozenset()
        on_dsp = pipeline.with_multipliers_on_dsp(dsp_layers)
        if not _fits_without_fifos(on_dsp, reuse, device, share, clock_mhz, limits):
            continue
        sizing = size_fifos(pipeline, reuse)
        est = estimate(on_dsp, reuse, device, depths=sizing.depths, share=share, clock_mhz=clock_mhz)
        if est.fits:
            return max(est.ii_cycles, sizing.check.cycles_per_image or 0), reuse, sizing, dsp_layers
    return None


def _fits_without_fifos(on_dsp: Pipeline, reuse: dict[str, int], device: Device, share: float, clock_mhz: float,
                        limits: dict[str, float]) -> bool:
    """A bound no sizing can beat: the plan's cost with its FIFOs left out (they cost >= 0)."""
    est = estimate(on_dsp, reuse, device, share=share, clock_mhz=clock_mhz)
    rest = est.totals
    for fifo in est.fifos:
        rest = rest - fifo.cost
    return all(getattr(rest, n) <= limits[n] for n in RESOURCES)


def design_point(network: SqueezeNetConfig | Pipeline, part: str = "xc7z020clg400-1", *,
                 resources: str | None = None, device: Device | None = None, share: float = 0.8,
                 target_fps: float | None = None, clock_mhz: float = 100.0, bits: BitWidths | None = None,
                 simulate: bool = False, with_band: bool = False, multipliers: str = DEFAULT_MULTIPLIERS) -> dict:
    """Fold ``network`` for the part and estimate it. Always returns a dict:

    ``fits`` (bool), ``images_per_second`` (float, 0 when nothing fits), ``ii_cycles``, ``latency_cycles``,
    ``reuse_factors``, ``resources`` {name: {estimate, available, share}}, ``macs_per_image``, ``error``
    (why nothing fits, else None). Without a fitting plan the figures describe the smallest plan (every
    conv at its largest reuse factor), so an optimizer can see how far off a candidate is. Without
    ``simulate`` the FIFOs are assumed one deep (a lower bound: the branches of a Fire module need more).
    ``fits_with_band``: the calibration band's upper edge is within ``share`` too; ``with_band`` plans for
    that (the part derated by the band) and makes it the ``fits`` verdict. ``multipliers="dsp"``: the plan
    also binds the multipliers of the convs it chooses to DSP48s (``dsp_layers``), as ``python -m fpga
    --multipliers dsp`` builds it.
    """
    pipeline = network if isinstance(network, Pipeline) else pipeline_from_config(network, bits)
    device = device or resolve_device(part, resources)
    planned_for = device.derated(load_bands()) if with_band else device
    reuse, depths, sizing, error, dsp_layers = fold_and_size(
        pipeline, planned_for, share=share, target_fps=target_fps, clock_mhz=clock_mhz, simulate=simulate,
        bind_dsp=multipliers == "dsp")
    pipeline = pipeline.with_multipliers_on_dsp(dsp_layers)
    est = estimate(pipeline, reuse, device, depths=depths, share=share, clock_mhz=clock_mhz)
    fits = error is None and est.fits and (est.fits_with_band or not with_band)
    if error is None and not fits:
        error = "no plan fits once the FIFOs are sized by simulation: " + describe_over(est)
        if est.fits:
            error = "no plan fits with the calibration band: " + "; ".join(
                f"{n.upper()} up to {v:,} > {a:,.0f} allowed" for n, (v, a) in est.over_with_band().items())
    ii = max(est.ii_cycles, sizing.check.cycles_per_image or 0) if sizing else est.ii_cycles
    return {
        "network": pipeline.name, "part": device.part, "share": share, "clock_mhz": clock_mhz,
        "fits": fits, "fits_with_band": est.fits_with_band, "with_band": with_band,
        "images_per_second": round(clock_mhz * 1e6 / ii, 1) if fits else 0.0,
        "ii_cycles": ii, "latency_cycles": sizing.check.latency_cycles if sizing else est.latency_cycles,
        "bottleneck": est.bottleneck, "reuse_factors": reuse, "resources": est.resources(),
        "macs_per_image": pipeline.macs_per_image(), "fifo_bits": est.fifo_bits,
        "onchip_memory_bits": est.onchip_memory_bits, "fifos_sized_by_simulation": bool(sizing), "error": error,
        "dsp_layers": sorted(dsp_layers),
    }


def cheapest_plan(pipeline: Pipeline, device: Device, fps: float, clock_mhz: float) -> dict[str, int]:
    """The cheapest plan reaching ``fps`` (or the fastest plan, if none does), fit or not."""
    folding = _Folding(pipeline, device, MAX_MULTIPLIERS)
    return folding.plan_for(max(int(clock_mhz * 1e6 / fps), folding.fastest_budget()))


def smallest_plan(pipeline: Pipeline) -> dict[str, int]:
    """Every conv at its largest valid reuse factor with at least one multiplier: the fewest resources."""
    from .plan import candidate_reuse_factors

    return {s.name: max(candidate_reuse_factors(s)) for s in pipeline.convs}


def estimate_preset(name: str, part: str, resources: str | None, share: float, target_fps: float | None,
                    clock_mhz: float, out: Path, with_band: bool = False) -> int:
    """``python -m fpga --preset NAME``: plan and estimate a model.squeezenet preset from its config (the
    quantize stage's default bit widths), print the table, write ``<out>/preset-NAME/``. Estimate only."""
    from contract import UserError, write_json
    from model.squeezenet import PRESETS

    from .report import format_estimate, plot_estimate

    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    device = resolve_device(part, resources)
    pipeline = pipeline_from_config(PRESETS[name](), name=name)
    point = design_point(pipeline, device=device, share=share, target_fps=target_fps, clock_mhz=clock_mhz,
                         with_band=with_band)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m fpga.design``: design points of the default network at several widths, on several parts;
    or of variants of a checkpoint's network (--base, --network) at several activation widths (--act-bits)."""
    import argparse
    from dataclasses import replace

    from contract import UserError, pattern_matches_any
    from model.checkpoint import load_checkpoint
    from model.squeezenet import small_image_config
    from model.train import parse_overrides
    from quantize.qat import parse_overrides as parse_weight_overrides

    from .config import MULTIPLIERS
    from .devices import DEVICES

    p = argparse.ArgumentParser(prog="python -m fpga.design", description=main.__doc__ + "\n\n" + __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="16,32,48,64",
                   help="base_e = incr_e values of small_image_config() (the committed default is 64); ignored "
                        "with --network")
    p.add_argument("--base", metavar="CHECKPOINT",
                   help="start from this checkpoint's network instead of small_image_config()")
    p.add_argument("--network", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="a variant of the base network (model settings as in model.train --set; '' for the base "
                        "itself); repeatable: one row per variant")
    p.add_argument("--act-bits", default="8", help="activation widths, comma-separated: quantize's --act-bits "
                                                   "(default 8)")
    p.add_argument("--classifier-act-bits", type=int, default=None, metavar="BITS",
                   help="the logits' bits (quantize's --classifier-act-bits; default: each --act-bits)")
    p.add_argument("--weight-bits", default="4", help="weight widths, comma-separated: quantize's --weight-bits "
                                                      "(default 4)")
    p.add_argument("--override", action="append", default=[], metavar="LAYER=BITS",
                   help="weight bits of the matching convs (fnmatch, as quantize's --override; repeatable); the "
                        "first conv and the classifier keep 8 bits unless overridden")
    p.add_argument("--act-override", action="append", default=[], metavar="NAME=BITS",
                   help="bits of the matching activations (fnmatch on module names, as quantize's --act-override; "
                        "repeatable); the others take each --act-bits")
    p.add_argument("--multipliers", default=DEFAULT_MULTIPLIERS, metavar="auto|dsp[,...]",
                   help="where the convs' multipliers go, comma-separated for one row each: 'auto', the tools' "
                        "choice; 'dsp', the planner binds those of the convs it chooses to DSP48s (python -m "
                        f"fpga's --multipliers; default {DEFAULT_MULTIPLIERS})")
    p.add_argument("--parts", default=",".join(DEVICES), help="comma-separated parts")
    p.add_argument("--resource-share", type=float, default=0.8)
    p.add_argument("--clock-mhz", type=float, default=100.0)
    p.add_argument("--simulate", action="store_true", help="size the FIFOs by dataflow simulation (slower)")
    p.add_argument("--fit-with-band", action="store_true",
                   help="plan so that the calibration band's upper edge stays within the share (python -m fpga's "
                        "--fit-with-band)")
    args = p.parse_args(argv)
    try:
        widths = [int(w) for w in args.widths.split(",")]
        acts = [int(a) for a in args.act_bits.split(",")]
        weights = [int(w) for w in args.weight_bits.split(",")]
    except ValueError:
        raise UserError(f"--widths, --act-bits and --weight-bits must be comma-separated whole numbers, got "
                        f"{args.widths!r}, {args.act_bits!r} and {args.weight_bits!r}") from None
    mults = [m.strip() for m in args.multipliers.split(",")]
    if not mults or any(m not in MULTIPLIERS for m in mults):
        raise UserError(f"--multipliers takes {' or '.join(MULTIPLIERS)}, comma-separated; got {args.multipliers!r}")
    overrides = tuple(parse_weight_overrides(args.override).items())
    overrides += tuple(o for o in BitWidths().overrides if o[0] not in dict(overrides))
    act_overrides = tuple(parse_weight_overrides(args.act_override, "--act-override", "NAME=BITS").items())
    base = (SqueezeNetConfig(**load_checkpoint(args.base)["config"]) if args.base
            else small_image_config())
    if args.network:
        networks = [(n or "base", replace(base, **parse_overrides([kv for kv in n.split(",") if kv])))
                    for n in args.network]
    else:
        networks = [(str(w), replace(base, base_e=w, incr_e=w)) for w in widths]
    if act_overrides:  # a pattern that names no activation would plan uniform widths without a word
        from quantize.layers import CLASSIFIER_RELU, activation_names

        for name, cfg in networks:
            known = [n for n in activation_names(cfg) if n != CLASSIFIER_RELU]  # the logits: --classifier-act-bits
            for pattern, _ in act_overrides:
                if not pattern_matches_any(pattern, known):
                    raise UserError(f"--act-override {pattern!r} names no activation of network {name}; they are: "
                                    f"{', '.join(known)}")
    print(f"{'network':<28}{'w':>3}{'act':>4}{'mult':>5}  {'part':<22}{'fits':>5}{'images/s':>10}{'LUT':>9}{'FF':>9}"
          f"{'BRAM18K':>8}{'DSP':>6}{'band':>6}  (estimates; fit {'with' if args.fit_with_band else 'without'} the calibration "
          f"band; LUT/FF/BRAM of the plan, or of the smallest plan when nothing fits; band: its upper edge fits)")
    for name, cfg in networks:
        for wb, act, mult, part in ((w, a, m, p) for w in weights for a in acts for m in mults
                                    for p in args.parts.split(",")):
            bits = BitWidths(weight_bits=wb, overrides=overrides, act_bits=act,
                             classifier_act_bits=args.classifier_act_bits, act_overrides=act_overrides)
            d = design_point(cfg, part.strip(), share=args.resource_share, clock_mhz=args.clock_mhz,
                             simulate=args.simulate, bits=bits, with_band=args.fit_with_band, multipliers=mult)
            r = d["resources"]
            print(f"{name:<28}{wb:>3}{act:>4}{mult:>5}  {d['part']:<22}{'yes' if d['fits'] else 'no':>5}"
                  f"{d['images_per_second']:>10,.0f}{r['lut']['estimate']:>9,}{r['ff']['estimate']:>9,}"
                  f"{r['bram18k']['estimate']:>8,}{r['dsp']['estimate']:>6,}"
                  f"{'yes' if d['fits_with_band'] else 'no':>6}", flush=True)
    return 0


if __name__ == "__main__":
    from contract import run_cli

    run_cli(main)
