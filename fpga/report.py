"""The fpga stage's human-readable outputs: the per-layer estimate table and its bar chart."""
from __future__ import annotations

from pathlib import Path

from contract import atomic_path

from .costs import Cost, Estimate, load_bands
from .devices import RESOURCES
from .estimate import KERNEL_KINDS


def _row(name: str, rf: str, mult: str, cost: Cost, cycles: str) -> str:
    return (f"{name:<24}{rf:>6}{mult:>7}{cost.dsp:>6,}{cost.lut:>9,}{cost.ff:>9,}{cost.bram18k:>8,}"
            f"{cost.lutram:>8,}{cycles:>13}")


def format_estimate(est: Estimate, sim: dict | None = None, labels: dict[str, str] | None = None,
                    every_layer: bool = False) -> str:
    """Every conv (with ``every_layer``, every stage) on its own row; the other stages and the FIFOs summed;
    totals against the part, with the calibrated band of each resource."""
    labels = labels or {}
    lines = [f"{'layer':<24}{'RF':>6}{'mult':>7}{'DSP':>6}{'LUT':>9}{'FF':>9}{'BRAM18K':>8}{'LUTRAM':>8}{'cycles':>13}"]
    others, n_others, n_fifo, fifo = Cost(), 0, 0, Cost()
    for layer in est.layers:
        if every_layer and layer.kind not in KERNEL_KINDS:
            name = f"{layer.name} ({layer.kind})"[:24]
            lines.append(_row(name, "", "", layer.cost, f"{layer.cycles:,}"))
        elif layer.kind in KERNEL_KINDS:
            mark = " *" if layer.name == est.bottleneck else ""
            name = labels.get(layer.name, layer.name).replace("Conv2D_", "")
            lines.append(_row(name + mark, str(layer.reuse_factor), str(layer.block_factor), layer.cost,
                              f"{layer.cycles:,}"))
        else:
            others, n_others = others + layer.cost, n_others + 1
    for f in est.fifos:
        fifo, n_fifo = fifo + f.cost, n_fifo + 1
    if not every_layer:
        lines.append(_row(f"other stages ({n_others})", "", "", others, ""))
    lines.append(_row(f"FIFOs ({n_fifo}, {est.fifo_bits:,} bits)", "", "", fifo, ""))
    mults = sum(layer.block_factor for layer in est.layers)
    lines.append(_row("total (estimate)", "", f"{mults:,}", est.totals, f"{est.ii_cycles:,}"))
    avail = est.device.available()
    lines.append(f"{est.device.part + ' available':<24}{'':>13}{avail['dsp']:>6,}{avail['lut']:>9,}{avail['ff']:>9,}"
                 f"{avail['bram18k']:>8,}{avail['lutram']:>8,}")
    used = "  ".join(f"{n.upper()} {getattr(est.totals, n) / avail[n]:.0%}" for n in RESOURCES if avail[n])
    if used:
        lines.append(f"used: {used}  (share allowed: {est.share:.0%})")
    lines.append(format_band(est))
    slowest = labels.get(est.bottleneck, est.bottleneck)
    rate = f"{est.images_per_second:,.0f} images/s at {est.clock_mhz:g} MHz (slowest stage {slowest}, " \
           f"{est.ii_cycles:,} cycles/image)"
    if sim and sim.get("cycles_per_image"):
        rate += f"; dataflow simulation: {sim['cycles_per_image']:,} cycles/image, " \
                f"latency {sim['latency_cycles']:,} cycles, deadlock: {'YES' if sim['deadlock'] else 'no'}"
    lines.append("estimate: " + rate)
    kib = est.onchip_memory_bits / 8 / 1024
    lines.append(f"on-chip memory: weights+biases {est.weight_bits:,} + FIFOs {est.fifo_bits:,} + line buffers "
                 f"{est.line_buffer_bits:,} = {est.onchip_memory_bits:,} bits ({kib:,.1f} KiB); "
                 f"block RAM {est.totals.bram18k:,} of {avail['bram18k']:,} RAMB18")
    unmodeled = [layer.name for layer in est.layers if layer.kind == "unmodeled"]
    if unmodeled:
        lines.append("NOT MODELLED (counted as zero): " + ", ".join(
            f"{layer.name} ({layer.function})" for layer in est.layers if layer.kind == "unmodeled"))
    over = est.over()
    if not any(avail.values()):
        lines.append(f"{est.device.part} is not in fpga/devices.py: no fit verdict (give --resources)")
    elif over:
        lines.append("DOES NOT FIT: " + "; ".join(f"{n.upper()} {v:,} > {a:,.0f} allowed (+{v - a:,.0f})"
                                                   for n, (v, a) in over.items()))
    else:
        lines.append(f"fits {est.device.part} within {est.share:.0%} of every resource")
    if any(avail.values()) and load_bands():
        over_band = est.over_with_band()
        lines.append(f"with the calibration band's upper edge: fits within {est.share:.0%} of every resource"
                     if not over_band else "with the calibration band's upper edge: does not fit within "
                     f"{est.share:.0%} (" + "; ".join(f"{n.upper()} up to {v:,} > {a:,.0f}"
                                                       for n, (v, a) in over_band.items()) + ")")
    return "\n".join(lines)


def format_band(est: Estimate) -> str:
    """One line: each resource's estimate with the range the calibration set puts the synthesized figure in."""
    bands = load_bands()
    if not bands:
        return "calibration band: none (fpga/calibration/bands.json missing)"
    parts = []
    for name in ("lut", "ff", "dsp", "bram18k"):
        low, high = bands.get(name, (1.0, 1.0))
        value = getattr(est.totals, name)
        parts.append(f"{name.upper()} {value * low:,.0f}-{value * high:,.0f}")
    return "post-synthesis range from the calibration (python -m fpga.calibrate): " + ", ".join(parts)


def plot_estimate(est: Estimate, path: Path, labels: dict[str, str] | None = None) -> None:
    """Bar chart per conv: LUT, FF, BRAM18K and cycles per image (the slowest stage highlighted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    convs = [layer for layer in est.layers if layer.kind == "conv"]
    names = [(labels or {}).get(layer.name, layer.name).replace("Conv2D_", "") for layer in convs]
    x = range(len(convs))
    panels = [("LUT", [layer.cost.lut for layer in convs]), ("FF", [layer.cost.ff for layer in convs]),
              ("BRAM18K", [layer.cost.bram18k for layer in convs]),
              ("cycles / image", [layer.cycles for layer in convs])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.35 * len(convs) + 2), 10), sharex=True)
    for ax, (label, values) in zip(axes, panels):
        colors = ["tab:red" if layer.name == est.bottleneck else "tab:blue" for layer in convs]
        ax.bar(x, values, color=colors)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].axhline(est.ii_cycles, color="tab:red", lw=0.8, ls="--")
    axes[-1].set_xticks(list(x), names, rotation=60, ha="right", fontsize=7)
    fits = "fits" if est.fits else "does NOT fit"
    fig.suptitle(f"{est.pipeline}: per-conv estimate (not a synthesis result) on {est.device.part}: {fits}; "
                 f"{est.images_per_second:,.0f} images/s at {est.clock_mhz:g} MHz", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
