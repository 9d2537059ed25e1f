"""What a study's points say: Pareto fronts, the two picks, the plots and report.md.

- ``pareto_front``: among the evaluated points within the byte budget, those no other point beats on every
  objective (top-1 up, bytes down; or top-1 up, images/s up).
- The FPGA pick: the most accurate point within the budget that fits the part at the allowed resource
  share with at least ``min_fps`` estimated images/s. The Pi pick: the most accurate point whose on-chip
  weights and int8 TFLite file are both within the budget, whatever the FPGA. "Most accurate" is only as
  fine as the proxy: points within ``SEED_SPREAD_PP`` of the best top-1 are tied (the proxy's measured seed
  spread), and a tie goes to the most images/s (FPGA) or the fewest on-chip bytes (Pi).
- Plots: ``paper.png`` (the paper's figure 3 layout: top-1 and on-chip bytes against SR and against
  pct_3x3), ``pareto.png`` (top-1 against on-chip bytes, colour = images/s, budget line),
  ``front_fps.png`` (top-1 against images/s).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from contract import atomic_path
from model.checkpoint import load_checkpoint

from .space import DEFAULT_POINT, PAPER_PCT, PAPER_SR, DesignPoint

MIN_FPS = 2000.0
# The proxy's resolution, in top-1 percentage points: the default point's float top-1 over seeds 0-2 spread
# 2.25 points (82.9-85.2%; docs/RESULTS.md, "The proxy schedule"). Smaller differences do not rank points:
# the picks treat them as ties and the paper table's saturation uses it as its tolerance.
SEED_SPREAD_PP = 2.3
FLOAT_DEFAULT = "model/checkpoints/default.pt"
QUANT_DEFAULT = "quantize/checkpoints/default.pt"


# --- selection ---------------------------------------------------------------------------------------

def evaluated(rows: list[dict]) -> list[dict]:
    """Completed points, each design point once (a copied trial repeats its original)."""
    seen, out = set(), []
    for row in rows:
        if row.get("status") == "complete" and row.get("top1") is not None and row["key"] not in seen:
            seen.add(row["key"])
            out.append(row)
    return out


def dominates(a: dict, b: dict, maximize: tuple[str, ...], minimize: tuple[str, ...]) -> bool:
    no_worse = all(a[k] >= b[k] for k in maximize) and all(a[k] <= b[k] for k in minimize)
    better = any(a[k] > b[k] for k in maximize) or any(a[k] < b[k] for k in minimize)
    return no_worse and better


def pareto_front(rows: list[dict], maximize: tuple[str, ...] = ("top1",), minimize: tuple[str, ...] = ("onchip_bytes",),
                 budget_bytes: int | None = None, where=lambda row: True) -> list[dict]:
    """The non-dominated evaluated points with ``onchip_bytes <= budget_bytes`` (and ``where``), sorted
    by the first objective of ``minimize`` (else of ``maximize``)."""
    pool = [r for r in evaluated(rows) if where(r) and (budget_bytes is None or r["onchip_bytes"] <= budget_bytes)]
    front = [r for r in pool if not any(dominates(o, r, maximize, minimize) for o in pool if o is not r)]
    order = minimize[0] if minimize else maximize[0]
    return sorted(front, key=lambda r: (r[order], -r["top1"]))


def best(rows: list[dict], where, tie_pp: float, prefer) -> dict | None:
    """Among the evaluated points for which ``where`` holds, those within ``tie_pp`` percentage points of
    the most accurate one; of these the one ``prefer`` ranks highest (then the more accurate)."""
    pool = [r for r in evaluated(rows) if where(r)]
    if not pool:
        return None
    top = max(r["top1"] for r in pool)
    tied = [r for r in pool if 100 * (top - r["top1"]) <= tie_pp + 1e-9]
    return max(tied, key=lambda r: (prefer(r), r["top1"]))


def fpga_pick(rows: list[dict], budget_bytes: int, min_fps: float = MIN_FPS,
              tie_pp: float = SEED_SPREAD_PP) -> dict | None:
    return best(rows, lambda r: r["onchip_bytes"] <= budget_bytes and r["fpga_fits"]
                and r["fpga_images_per_second"] >= min_fps, tie_pp, lambda r: r["fpga_images_per_second"])


def pi_pick(rows: list[dict], budget_bytes: int, tie_pp: float = SEED_SPREAD_PP) -> dict | None:
    return best(rows, lambda r: r["onchip_bytes"] <= budget_bytes and r["tflite_bytes"] is not None
                and r["tflite_bytes"] <= budget_bytes,
                tie_pp, lambda r: -r["onchip_bytes"])


# --- the full-recipe commands for a picked point ------------------------------------------------------

# Options of the recorded commands that take no value (so dropping one does not drop the next word too).
VALUELESS = frozenset({"--no-eval", "--resume"})
# Where and how a run happened, not what it trains: left out of the full-recipe commands (which add their own
# --device and --out); --set too, since the point's own --set flags say which network to train.
NOT_RECIPE = ("--out", "--set", "--device", "--threads", "--no-eval", "--resume")


def recorded_flags(checkpoint: str, drop: tuple[str, ...]) -> list[str]:
    """The flags of the command that made a committed checkpoint (its meta), without ``drop`` options."""
    command = load_checkpoint(checkpoint).get("meta", {}).get("command", "")
    words = shlex.split(command)[3:]  # after "python -m MODULE"
    flags, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in drop:
            skip = "=" not in word and name not in VALUELESS
            continue
        flags.append(word)
    return flags


def full_recipe_commands(row: dict, root: Path = Path(".")) -> list[str]:
    """Train the point with the committed default's full recipe, QAT it the same way, build its FPGA project."""
    point = DesignPoint.from_dict(row)
    name = point.key
    float_flags = recorded_flags(str(root / FLOAT_DEFAULT), NOT_RECIPE)
    qat_flags = recorded_flags(str(root / QUANT_DEFAULT), (*NOT_RECIPE, "--checkpoint", "--weight-bits", "--act-bits",
                                                                    "--classifier-act-bits", "--override",
                                                                    "--act-override", "--weight-scale"))
    band = " --fit-with-band" if row.get("fpga_fit_criterion") == "band" else ""
    q = shlex.quote
    return [
        f"python -m model.train {' '.join(float_flags)} {' '.join(q(f) for f in point.train_flags())} "
        f"--device auto --out artifacts/model/{q(name)}",
        f"python -m quantize --checkpoint artifacts/model/{q(name)}/model.pt {' '.join(q(f) for f in point.qat_flags())} "
        f"{' '.join(qat_flags)} --device auto --out artifacts/quantize/{q(name)}",
        f"python -m fpga --checkpoint artifacts/quantize/{q(name)}/model.pt --part {row['fpga_part']}{band} "
        f"--out artifacts/fpga/{q(name)}",
    ]


# --- plots ---------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_rows(rows: list[dict], field: str) -> list[dict]:
    """The paper sweep along ``field`` (sr or pct_3x3): points equal to the default in every other field."""
    other = {k: v for k, v in DEFAULT_POINT.to_dict().items() if k != field}
    values = PAPER_SR if field == "sr" else PAPER_PCT
    pick = [r for r in evaluated(rows) if all(r[k] == v for k, v in other.items()) and r[field] in values]
    return sorted(pick, key=lambda r: r[field])


# What the paper found (Iandola et al. 2016, section 5; shared/REFERENCE.md): ImageNet top-5 rises with SR
# and plateaus at 86.0% from SR 0.75 (19 MB), and with pct_3x3 up to 50%, flat beyond, while size grows.
PAPER_TREND = {"sr": "top-5 rises with SR, plateaus at 86.0% from SR 0.75 (19 MB); size keeps growing",
               "pct_3x3": "top-5 rises up to pct_3x3 50%, flat beyond; size keeps growing"}
# A sweep has saturated at the first value within the proxy's seed spread of its best top-1: a smaller
# difference is not read as "more of it still buys accuracy".
SATURATION_PP = SEED_SPREAD_PP


def saturation(sweep: list[dict], field: str, tolerance_pp: float = SATURATION_PP) -> float | None:
    """The smallest value of ``field`` whose top-1 is within ``tolerance_pp`` percentage points of the
    sweep's best (where more of it stops buying accuracy), or None for an empty sweep."""
    if not sweep:
        return None
    top = max(r["top1"] for r in sweep)
    return min(r[field] for r in sweep if 100 * (top - r["top1"]) <= tolerance_pp)


def trend_lines(rows: list[dict]) -> list[str]:
    """The paper study's table: each sweep's top-1 and bytes at each value, where it saturates, and the
    paper's finding beside it."""
    lines = ["## The sweeps against the paper's", "",
             f"Saturation: the smallest value within {SATURATION_PP} percentage points of the sweep's best "
             "top-1. One seed per point: at the proxy schedule the seed alone moved the default point's float top-1 "
             f"over 2.25 points (82.9-85.2%, three seeds, docs/RESULTS.md), so differences below {SATURATION_PP} "
             "points do not rank points.", "",
             "| sweep | top-1 % (4-bit) at each value | on-chip KiB at each value | saturates at | paper (ImageNet) |",
             "|---|---|---|---|---|"]
    for field, values in (("sr", PAPER_SR), ("pct_3x3", PAPER_PCT)):
        by_value = {r[field]: r for r in sweep_rows(rows, field)}
        top1 = ", ".join(f"{v:g}: {100 * by_value[v]['top1']:.2f}" if v in by_value else f"{v:g}: not run"
                         for v in values)
        size = ", ".join(f"{by_value[v]['onchip_bytes'] / 1024:.0f}" if v in by_value else "-" for v in values)
        sat = saturation(list(by_value.values()), field)
        done = len(by_value) == len(values)
        lines.append(f"| {field} | {top1} | {size} | "
                     f"{'-' if sat is None else f'{sat:g}' + ('' if done else ' (so far)')} | {PAPER_TREND[field]} |")
    return lines + [""]


def plot_paper(rows: list[dict], path: Path, budget_bytes: int, schedule: str) -> None:
    """Two panels like the paper's figure 3: top-1 (quantized and float) against SR and against pct_3x3,
    on-chip bytes on the right axis, the budget as a line; each point labelled with its KiB."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, field, title in ((axes[0], "sr", "(a) squeeze ratio SR (pct_3x3 = 0.5)"),
                             (axes[1], "pct_3x3", "(b) share of 3x3 filters pct_3x3 (SR = 0.125)")):
        sweep = sweep_rows(rows, field)
        x = [r[field] for r in sweep]
        ax.plot(x, [100 * r["top1"] for r in sweep], "o-", color="tab:blue", label="top-1, 4-bit QAT")
        with_float = [r for r in sweep if r.get("float_top1") is not None]
        ax.plot([r[field] for r in with_float], [100 * r["float_top1"] for r in with_float], "s--",
                color="tab:cyan", label="top-1, float parent")
        for r in sweep:
            ax.annotate(f"{r['onchip_bytes'] / 1024:.0f} KiB", (r[field], 100 * r["top1"]), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xlabel(title)
        ax.set_xlim(-0.05, 1.05)  # the whole sweep's range, also while only some of its points are done
        ax.set_ylabel("test top-1 (%)")
        ax.grid(alpha=0.3)
        size = ax.twinx()
        size.bar(x, [r["onchip_bytes"] / 1024 for r in sweep], width=0.04 if field == "sr" else 0.05, alpha=0.25,
                 color="tab:orange", label="on-chip bytes")
        size.axhline(budget_bytes / 1024, color="tab:red", ls=":", lw=1, label="0.5 MiB budget")
        size.set_ylabel("on-chip weights + biases (KiB)")
        lines, labels = ax.get_legend_handles_labels()
        more, more_labels = size.get_legend_handles_labels()
        ax.legend(lines + more, labels + more_labels, fontsize=8, loc="lower right")
        ax.set_zorder(size.get_zorder() + 1)
        ax.patch.set_visible(False)
    fig.subplots_adjust(wspace=0.45)  # room between the left panel's size axis and the right panel's top-1 axis
    fig.suptitle(f"SqueezeNet metaparameters on Fashion-MNIST, 4-bit weights ({schedule})", fontsize=11)
    _save(fig, path)


def plot_pareto(rows: list[dict], path: Path, budget_bytes: int, picks: dict[str, dict | None]) -> None:
    """Top-1 against on-chip bytes; colour = estimated FPGA images/s (grey x: does not fit the part)."""
    plt = _pyplot()
    points = evaluated(rows)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    fits = [r for r in points if r["fpga_fits"]]
    misses = [r for r in points if not r["fpga_fits"]]
    if fits:
        sc = ax.scatter([r["onchip_bytes"] / 1024 for r in fits], [100 * r["top1"] for r in fits],
                        c=[r["fpga_images_per_second"] for r in fits], cmap="viridis", s=40, zorder=3)
        fig.colorbar(sc, ax=ax, label=f"estimated images/s on {fits[0]['fpga_part']}")
    if misses:
        ax.scatter([r["onchip_bytes"] / 1024 for r in misses], [100 * r["top1"] for r in misses], marker="x",
                   color="grey", label="does not fit the FPGA part", zorder=2)
    front = pareto_front(rows, budget_bytes=budget_bytes)
    ax.step([r["onchip_bytes"] / 1024 for r in front], [100 * r["top1"] for r in front], where="post",
            color="tab:red", lw=1, label="Pareto front within the budget")
    ax.axvline(budget_bytes / 1024, color="tab:red", ls=":", label=f"budget {budget_bytes / 1024:.0f} KiB")
    _mark_picks(ax, picks, lambda r: r["onchip_bytes"] / 1024)
    ax.set_xlabel("on-chip weights + biases (KiB)")
    ax.set_ylabel("test top-1 (%), proxy schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def plot_fps_front(rows: list[dict], path: Path, budget_bytes: int, picks: dict[str, dict | None]) -> None:
    """Top-1 against estimated images/s, for the points within the budget (0 images/s: does not fit)."""
    plt = _pyplot()
    points = [r for r in evaluated(rows) if r["onchip_bytes"] <= budget_bytes]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter([r["fpga_images_per_second"] for r in points], [100 * r["top1"] for r in points],
               c=["tab:blue" if r["fpga_fits"] else "grey" for r in points], s=36, zorder=3)
    front = pareto_front(rows, maximize=("top1", "fpga_images_per_second"), minimize=(), budget_bytes=budget_bytes,
                         where=lambda r: r["fpga_fits"])
    front = sorted(front, key=lambda r: r["fpga_images_per_second"])
    ax.plot([r["fpga_images_per_second"] for r in front], [100 * r["top1"] for r in front], color="tab:red", lw=1,
            label="Pareto front (fits the part, within the budget)")
    ax.axvline(MIN_FPS, color="tab:green", ls=":", label=f"{MIN_FPS:,.0f} images/s")
    _mark_picks(ax, picks, lambda r: r["fpga_images_per_second"])
    part = points[0]["fpga_part"] if points else "the part"
    ax.set_xlabel(f"estimated FPGA images/s on {part} (0: does not fit)")
    ax.set_ylabel("test top-1 (%), proxy schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, path)


def _mark_picks(ax, picks: dict, x_of) -> None:
    for name, row in picks.items():
        if row is not None:
            ax.annotate(name, (x_of(row), 100 * row["top1"]), textcoords="offset points", xytext=(6, 6), fontsize=8,
                        arrowprops={"arrowstyle": "-", "lw": 0.5})


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


# --- report.md ---------------------------------------------------------------------------------------------

def _fps_cell(r: dict) -> str:
    return f"{r['fpga_images_per_second']:,.0f}" if r["fpga_fits"] else "-"


def _row_line(r: dict) -> str:
    res = r["fpga_resources"]
    return (f"| {r['label']} | {100 * r['top1']:.2f} | {100 * r['float_top1']:.2f} | {r['params']:,} | "
            f"{r['macs'] / 1e6:.2f} | {r['onchip_bytes']:,} | {_or_dash(r['tflite_bytes'], ',')} | "
            f"{'yes' if r['fpga_fits'] else 'no'} | {_fps_cell(r)} | "
            f"{res['lut']['share']:.0%} / {res['ff']['share']:.0%} / {res['bram18k']['share']:.0%} / "
            f"{res['dsp']['share']:.0%} | {_or_dash(r['tflite_median_ms'], '.3f')} |")


def _or_dash(value, spec: str) -> str:
    """A TFLite figure, or "-" for a point the int8 TFLite cannot hold (activations under 8 bits)."""
    return "-" if value is None else format(value, spec)


TABLE_HEAD = ("| point | top-1 % (4-bit QAT) | float top-1 % | params | M MACs | on-chip bytes | TFLite bytes | "
              "fits FPGA | est. images/s | LUT / FF / BRAM / DSP of part | TFLite ms |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")


def describe_pick(title: str, row: dict | None, why: str) -> list[str]:
    if row is None:
        return [f"### {title}", "", f"No evaluated point meets it ({why}).", ""]
    res, point = row["fpga_resources"], DesignPoint.from_dict(row)
    lines = [f"### {title}", "", f"{why}.", "",
             f"- **{row['label']}** (`{row['key']}`, trial {row['trial']})",
             f"- config: base_e={row['base_e']}, incr_e={row['incr_e']}, sr={row['sr']:g}, pct_3x3={row['pct_3x3']:g}, "
             f"bypass={row['bypass']}, stem_channels={point.stem_channels}; the rest of `small_image_config()`'s defaults",
             f"- weights: {row['weight_bits']}-bit (first conv and classifier 8-bit), {point.act_bits}-bit activations "
             f"(8-bit input), 16-bit biases" + "".join(
                 f"; {what} mix {mix}: " + ", ".join(f"{p}={b}" for p, b in pairs)
                 for what, mix, pairs in (("activation", point.act_mix, point.act_overrides()),
                                          ("weight", point.weight_mix, point.weight_overrides())) if pairs)
             + (f"; {point.weight_scale} weight scales" if "--weight-scale" in point.qat_flags() else ""),
             f"- proxy top-1 ({row['weight_bits']}-bit QAT): {100 * row['top1']:.2f}% (float parent {100 * row['float_top1']:.2f}%) on "
             f"{row['test_images']:,} test images",
             f"- {row['params']:,} parameters, {row['macs'] / 1e6:.2f} M MACs per image",
             f"- on-chip weights + biases: {row['onchip_bytes']:,} bytes "
             f"({row['onchip_bytes'] / row['budget_bytes']:.1%} of {row['budget_bytes']:,}); " + (
                 f"int8 TFLite file {row['tflite_bytes']:,} bytes" if row.get("tflite_bytes") is not None else
                 f"no int8 TFLite ({row.get('tflite_skipped')})"),
             f"- FPGA ({row['fpga_part']}, estimate): " + (
                 f"fits at {row['fpga_share_allowed']:.0%} of each resource"
                 f"{' with the calibration band' if row.get('fpga_fit_criterion') == 'band' else ''}, "
                 f"{row['fpga_images_per_second']:,.0f} "
                 f"images/s at 100 MHz" if row['fpga_fits'] else
                 f"does not fit at {row['fpga_share_allowed']:.0%} of each resource") + f"; DSP {res['dsp']['estimate']:,}, LUT {res['lut']['estimate']:,}, FF {res['ff']['estimate']:,}, "
             f"BRAM18K {res['bram18k']['estimate']:,}, LUTRAM {res['lutram']['estimate']:,} "
             f"({res['lut']['share']:.0%} LUT, {res['ff']['share']:.0%} FF, {res['bram18k']['share']:.0%} BRAM18K)",
             *([f"- int8 TFLite on this machine (ai-edge-litert, 1 thread, batch 1): median "
                f"{row['tflite_median_ms']:.3f} ms, p90 {row['tflite_p90_ms']:.3f} ms; top-1 agreement with Brevitas "
                f"{row['tflite_agreement']:.4f}"] if row.get("tflite_bytes") is not None else []),
             "", "Train it with the full recipe (the commands that made the committed default, with this point's "
             "settings), then build its FPGA project:", "", "```sh"]
    try:
        lines += full_recipe_commands(row)
    except Exception as exc:  # the committed checkpoints are missing: say so rather than guess the recipe
        lines.append(f"# (the committed checkpoints' recipe could not be read: {exc})")
    return lines + ["```", ""]


def write_report(rows: list[dict], spec, schedule_text: str, out_dir: Path, budget_bytes: int,
                 min_fps: float = MIN_FPS) -> dict:
    """Plots and report.md for one study; returns the picks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fpga = fpga_pick(rows, budget_bytes, min_fps)
    pi = pi_pick(rows, budget_bytes)
    picks = {"FPGA pick": fpga, "Pi pick": pi}
    files = []
    if any(r.get("status") == "complete" for r in rows):
        plot_pareto(rows, out_dir / "pareto.png", budget_bytes, picks)
        plot_fps_front(rows, out_dir / "front_fps.png", budget_bytes, picks)
        files += ["pareto.png", "front_fps.png"]
        if spec.name == "paper":
            plot_paper(rows, out_dir / "paper.png", budget_bytes, schedule_text)
            files.append("paper.png")
    statuses = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    part = next((r["fpga_part"] for r in evaluated(rows)), "the FPGA part")
    lines = [f"# Design-space exploration: study `{spec.name}`", "", f"{spec.description}.", "",
             f"- proxy schedule (every point): {schedule_text}",
             f"- trials: {', '.join(f'{v} {k}' for k, v in sorted(statuses.items())) or 'none yet'}",
             f"- budget: {budget_bytes:,} bytes of on-chip weights + biases (the Pi pick also needs its int8 TFLite "
             f"file within it); FPGA: {part}, FIFOs sized by simulation, estimates from `fpga.design` (not synthesis)",
             "- top-1 figures come from the short proxy schedule: they rank the points, they are not what the full "
             "recipe reaches", f"- plots: {', '.join(files) or 'none (no evaluated point)'}", "",
             "## Picks", ""]
    tie = f"points within {SEED_SPREAD_PP} top-1 points of the best (the proxy's seed spread) count as tied"
    lines += describe_pick("For the FPGA (PYNQ-Z2) stage", fpga,
                           f"most accurate point within the budget that fits {part} at the allowed resource share "
                           f"with at least {min_fps:,.0f} estimated images/s; {tie}, and of those the most "
                           f"images/s wins")
    lines += describe_pick("For the Pi", pi, "most accurate point whose on-chip weights and int8 TFLite file are "
                           f"both within the budget, whatever the FPGA; {tie}, and of those the fewest on-chip "
                           "bytes wins")
    front = pareto_front(rows, budget_bytes=budget_bytes)
    fps_front = sorted(pareto_front(rows, maximize=("top1", "fpga_images_per_second"), minimize=(),
                                    budget_bytes=budget_bytes, where=lambda r: r["fpga_fits"]),
                       key=lambda r: r["fpga_images_per_second"])
    if spec.name == "paper":
        lines += trend_lines(rows)
    lines += ["## Front: top-1 against on-chip bytes (within the budget)", "",
              "What each step up in size buys, from the smallest to the most accurate point.", "", TABLE_HEAD,
              *[_row_line(r) for r in front], "",
              "## Front: top-1 against estimated FPGA images/s (fits the part, within the budget)", "", TABLE_HEAD,
              *[_row_line(r) for r in fps_front], "",
              "## Every evaluated point", "", TABLE_HEAD,
              *[_row_line(r) for r in sorted(evaluated(rows), key=lambda r: r["onchip_bytes"])], ""]
    others = [r for r in rows if r.get("status") != "complete"]
    if others:
        lines += ["## Trials not evaluated", "", "| trial | point | status | reason |", "|---|---|---|---|"]
        lines += [f"| {r['trial']} | {r.get('label') or r.get('key') or '?'} | {r['status']} | "
                  f"{(r.get('reason') or '').replace('|', '/')} |" for r in others]
        lines.append("")
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines))
    return picks
