"""``python -m fpga.calibrate``: the estimator against published syntheses of hls4ml designs.

Every design under ``fpga/calibration/designs/<name>/`` is a published hls4ml ``io_stream`` project (its
``hls4ml_config.yml`` and ``firmware/``, or a rebuild of it with the same shapes, precisions, strategies
and reuse factors) with the reports its authors committed: Vivado's post-synthesis utilization
(``vivado_synth.rpt``) and the HLS tool's ``csynth.rpt``. ``source.json`` names where each came from.

For each design this estimates the project with ``fpga.estimate`` (nothing fitted to these points), and
compares:
- each resource with Vivado's post-synthesis figure (ratio = estimate / Vivado);
- each layer's cycles per image with the HLS tool's latency of that layer (min and max).

The band a resource's estimate carries (``fpga/calibration/bands.json``, used by ``make fpga``, the
planner's report and ``make budget``) is the range of Vivado / estimate over the calibration set; the
tests recompute every point and fail when one leaves its band or when bands.json is stale.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from contract import UserError, run_cli, write_json

from .costs import BANDS, Estimate
from .cycles import stage_cycles
from .devices import device_for_part
from .estimate import estimate
from .project_pipeline import pipeline_from_project
from .synth_reports import read_csynth, read_vivado_utilization

CALIBRATION = Path(__file__).parent / "calibration"
DESIGNS = CALIBRATION / "designs"
HELDOUT = CALIBRATION / "heldout"  # collected after the formulas were written: the check, not the fit
COMPARED = ("lut", "ff", "dsp", "bram18k")
VALUE_DEPENDENT = ("lut", "dsp")


@dataclass
class LayerCycles:
    layer: str
    kind: str
    estimate: int  # cycles per image, as the pipeline runs it (fpga.estimate.stage_cycles)
    worst: int  # the same, counted as the HLS tool's static analysis does (every pixel taking the call)
    csynth_min: int
    csynth_max: int

    @property
    def ratio(self) -> float:
        """Our worst case / csynth's worst case."""
        return self.worst / self.csynth_max if self.csynth_max else float("nan")


@dataclass
class Point:
    name: str
    source: dict
    estimate: Estimate
    vivado: dict[str, int]
    csynth_totals: dict[str, int]
    layers: list[LayerCycles]

    value_dependent: list[str] = None  # constant-weight layers whose weights the project does not ship

    def comparable(self, resource: str) -> bool:
        """LUTs and DSPs of constant weights (Latency at RF 1) depend on the weights' values: without them
        (a rebuilt project with stand-in weights) the comparison says nothing about the formulas. A design
        with a layer the estimator does not model is never compared: its totals leave that layer out."""
        if self.unmodeled:
            return False
        return not (self.value_dependent and resource in VALUE_DEPENDENT)

    @property
    def unmodeled(self) -> list[str]:
        return [layer.name for layer in self.estimate.layers if layer.kind == "unmodeled"]

    def ratio(self, resource: str) -> float | None:
        """estimate / Vivado; None when Vivado used none (the comparison is then in blocks, not a ratio)."""
        actual = self.vivado[resource]
        return getattr(self.estimate.totals, resource) / actual if actual else None


def designs(root: Path = DESIGNS) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "vivado_synth.rpt").is_file()
                  and (p / "firmware" / "parameters.h").is_file()) if root.is_dir() else []


def calibration_point(design: Path) -> Point:
    pipeline, project = pipeline_from_project(design, name=design.name)
    device = device_for_part(project.part)
    depths = {key: project.depths.get(key, 1) for key in (s.key for s in pipeline.fifos())}
    est = estimate(pipeline, {}, device, depths=depths, clock_mhz=project.clock_mhz,
                   split_streams=project.splits_streams)
    vivado = read_vivado_utilization((design / "vivado_synth.rpt").read_text())
    csynth = read_csynth((design / "csynth.rpt").read_text())
    by_config = {i.config: i for i in csynth.instances if i.config}
    source = json.loads((design / "source.json").read_text()) if (design / "source.json").is_file() else {}
    # a rebuilt project numbers its configs its own way: source.json maps each layer to the published one
    published = {layer: m["published_csynth"] for layer, m in source.get("config_map", {}).items()}
    layers = []
    for stage in pipeline.stages:
        inst = by_config.get(published.get(stage.name, stage.hls_config))
        if inst is None or stage.kind in ("input",):
            continue
        layers.append(LayerCycles(stage.name, stage.kind, stage_cycles(stage, stage.reuse_factor),
                                  stage_cycles(stage, stage.reuse_factor, worst=True),
                                  inst.latency_min, inst.latency_max))
    unknown = [s.name for s in pipeline.stages if s.kind in ("conv", "dense") and s.strategy == "latency"
               and s.reuse_factor <= 1 and s.weight_digits is None and s.weights > 0]
    return Point(design.name, source, est, vivado, csynth.totals, layers, unknown)


def summarize(points: list[Point]) -> dict:
    """Per resource: the ratios, their median |error| and worst, and the band of Vivado / estimate."""
    out = {}
    for resource in COMPARED:
        ratios = [p.ratio(resource) for p in points if p.ratio(resource) is not None and p.comparable(resource)]
        errors = [abs(r - 1) for r in ratios]
        # the band: what the actual figure may be, as a multiple of the estimate (the extremes seen)
        inverse = [1 / r for r in ratios if r > 0]
        out[resource] = {
            "points": len(ratios),
            "median_abs_error": round(statistics.median(errors), 4) if errors else None,
            "worst_abs_error": round(max(errors), 4) if errors else None,
            "band": [round(min(inverse), 3), round(max(inverse), 3)] if inverse else [1.0, 1.0],
        }
    cycles = [layer for p in points for layer in p.layers if layer.csynth_max > 0]
    errors = [abs(layer.ratio - 1) for layer in cycles]
    out["cycles"] = {"points": len(cycles),
                     "median_abs_error": round(statistics.median(errors), 4) if errors else None,
                     "worst_abs_error": round(max(errors), 4) if errors else None,
                     "within_30pct": sum(e <= 0.30 for e in errors)}
    return out


def markdown(points: list[Point], summary: dict) -> str:
    lines = ["| design | part, clock | resource | estimate | Vivado post-synth | estimate / Vivado | HLS csynth |",
             "|---|---|---|---|---|---|---|"]
    for p in points:
        for resource in COMPARED:
            ratio = p.ratio(resource)
            mark = '' if p.comparable(resource) else (' (b)' if p.unmodeled else ' (a)')
            shown = '-' if ratio is None else f'{ratio:.2f}' + mark
            lines.append(f"| {p.name} | {p.estimate.device.part}, {p.estimate.clock_mhz:.0f} MHz | {resource} | "
                         f"{getattr(p.estimate.totals, resource):,} | {p.vivado[resource]:,} | {shown} | "
                         f"{p.csynth_totals.get(resource, 0):,} |")
    lines.append("\n(a) not counted in the summary: constant weights (Latency, RF 1) whose values the project does "
                 "not ship (a rebuild with stand-in weights); their LUTs and DSPs depend on the values.\n"
                 "(b) not counted in the summary: the design has layers the estimator does not model (below).")
    lines += ["", markdown_summary(summary)]
    lines += ["", "| design | layer | kind | estimate (cycles/image) | estimate, worst case | csynth min | csynth max "
              "| worst case / csynth max |", "|---|---|---|---|---|---|---|---|"]
    for p in points:
        for layer in p.layers:
            lines.append(f"| {p.name} | {layer.layer} | {layer.kind} | {layer.estimate:,} | {layer.worst:,} | "
                         f"{layer.csynth_min:,} | {layer.csynth_max:,} | {layer.ratio:.2f} |")
    unmodeled = sorted({f"{p.name}: {layer.name} ({layer.kind})" for p in points for layer in p.estimate.layers
                        if layer.kind == "unmodeled"})
    if unmodeled:
        lines.append("Not modelled (counted as zero): " + "; ".join(unmodeled))
    return "\n".join(lines)


def markdown_summary(summary: dict) -> str:
    lines = ["| resource | points | median abs error | worst abs error | band (Vivado / estimate) |",
             "|---|---|---|---|---|"]
    for resource in COMPARED:
        s = summary[resource]
        lines.append(f"| {resource} | {s['points']} | {_pct(s['median_abs_error'])} | {_pct(s['worst_abs_error'])} "
                     f"| {s['band'][0]:.2f} - {s['band'][1]:.2f} |")
    c = summary["cycles"]
    lines.append(f"\nLayer cycles: {c['within_30pct']} of {c['points']} within 30% of csynth's worst case; "
                 f"median abs error {_pct(c['median_abs_error'])}, worst {_pct(c['worst_abs_error'])}.")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def bands_document(summary: dict, points: list[Point]) -> dict:
    return {"what": "Vivado post-synthesis figure / our estimate over the calibration and held-out designs "
                    "(python -m fpga.calibrate)",
            "designs": [p.name for p in points],
            "resources": {r: summary[r] for r in COMPARED}, "cycles": summary["cycles"]}


def load_sets(folders: list[Path]) -> list[tuple[Path, list[Point]]]:
    sets = []
    for folder in folders:
        found = designs(folder)
        if not found:
            raise UserError(f"no calibration designs (a folder with vivado_synth.rpt and firmware/) under {folder}")
        sets.append((folder, [calibration_point(d) for d in found]))
    return sets


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--designs", type=Path, action="append",
                   help="a folder of designs (repeatable; default: fpga/calibration/designs and the held-out "
                        "fpga/calibration/heldout, each reported on its own, the band over both)")
    p.add_argument("--write", action="store_true", help="rewrite fpga/calibration/bands.json from these designs")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON instead of the tables")
    args = p.parse_args(argv)
    sets = load_sets(args.designs or [DESIGNS, HELDOUT])
    every = [point for _, points in sets for point in points]
    combined = summarize(every)
    if args.json:
        print(json.dumps({"sets": {str(folder): summarize(points) for folder, points in sets},
                          "combined": combined}, indent=2))
    else:
        for folder, points in sets:
            shown = folder.resolve().relative_to(Path.cwd()) if folder.resolve().is_relative_to(Path.cwd()) else folder
            print(f"## {shown}\n\n{markdown(points, summarize(points))}\n")
        if len(sets) > 1:
            print("## all designs (the band)\n\n" + markdown_summary(combined))
    if args.write:
        write_json(BANDS, bands_document(combined, every))
        print(f"wrote {BANDS}")
    return 0


if __name__ == "__main__":
    run_cli(main)
