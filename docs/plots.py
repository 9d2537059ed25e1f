"""The figures in docs/img/, written from figures that docs/RESULTS.md records and from build artifacts.

Run from the repository root:  .venv/bin/python docs/plots.py

- img/paper_sweep.png   the paper study's SR and pct_3x3 sweeps (data transcribed below from RESULTS)
- img/pareto.png        the open search's trials and their Pareto front (data transcribed below from RESULTS)
- img/fpga_frontier.png issue 26's accuracy against images/s on the xc7z020 (data transcribed below from RESULTS)
- img/fpga_layers.png   a copy of artifacts/fpga/layers.png, which `make fpga` writes
- img/report_page.png   what `make report`'s page (artifacts/report/index.html) shows of the artifacts present:
                        the confusion matrix and the figures, read from the same JSON paths as report/page.py

The two artifact-based images are left as they are when their artifacts are missing. Needs matplotlib 3.x
and numpy; nothing else outside the standard library (it imports none of the project's packages).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
ART = ROOT / "artifacts"
SIZE, DPI = (7.0, 4.2), 100          # 700 x 420 pixels
BUDGET = 524_288                      # 0.5 MiB, the project's budget
SEED_SPREAD = 2.3                     # the proxy's seed spread in top-1 points (RESULTS, "The proxy schedule")

# docs/RESULTS.md, "The paper study, run: `make explore STUDY=paper`" (its table; measured by
# `make explore STUDY=paper`, 2026-11-28): base_e = incr_e = 64, simple bypass, 4-bit weights.
# (SR, pct_3x3, float top-1 %, 4-bit top-1 %, on-chip bytes, int8 TFLite bytes)
PAPER = [
    (0.125, 0.01, 80.13, 80.02, 35_924, 85_192),
    (0.125, 0.25, 82.04, 81.69, 65_300, 143_944),
    (0.125, 0.50, 84.85, 84.70, 96_020, 205_384),
    (0.125, 0.75, 84.92, 85.06, 126_740, 266_824),
    (0.125, 0.99, 85.26, 85.06, 156_116, 325_576),
    (0.25, 0.50, 84.79, 84.51, 186_196, 385_736),
    (0.50, 0.50, 86.25, 86.06, 366_548, 746_440),
    (0.75, 0.50, 86.96, 86.59, 546_900, 1_107_144),
    (1.00, 0.50, 86.60, 86.28, 727_252, 1_467_848),
]

# docs/RESULTS.md, "The open search, run: `make explore STUDY=budget TRIALS=12`" (its table; measured by
# `make explore STUDY=budget TRIALS=12`, 2026-11-28). images/s: the FPGA estimate on the xc7z020 at 80% of each
# resource, by the estimator before its calibration; None where the design does not fit.
# (trial, point, quantized top-1 %, on-chip bytes, est. images/s or None, pick)
BUDGET_STUDY = [
    (0, "16+16 SR .125 p.5 4b", 72.47, 7_748, 5_042, ""),
    (1, "8+8 SR .25 p.5 4b", 68.03, 4_308, 7_827, ""),
    (2, "12+12 SR .5 p.25 4b", 74.27, 10_396, 4_129, "FPGA pick"),
    (3, "20+20 SR .125 p.25 4b", 74.42, 8_318, 2_465, ""),
    (4, "24+24 SR .125 p.125 8b", 75.82, 15_196, 3_008, ""),
    (5, "16+16 SR .5 p.75 3b", 77.90, 25_076, 589, ""),
    (6, "24+8 SR .25 p.5 2b", 40.06, 6_052, 3_365, ""),
    (7, "32+32 SR .125 p.5 4b", 79.23, 25_972, None, ""),
    (8, "16+24 SR 1 p.875 8b", 82.15, 245_956, None, ""),
    (9, "64+64 SR .125 p.5 4b", 84.70, 96_020, None, "Pi pick (the default's config)"),
    (11, "20+24 SR .5 p.75 4b", 81.41, 63_680, None, ""),
    (12, "64+48 SR .5 p.75 4b", 84.55, 342_324, None, ""),
]

# docs/RESULTS.md, "The accuracy-against-speed frontier on the xc7z020" (its table). Top-1: `python -m quantize`'s
# report on the 10,000 test images; images/s: `python -m fpga --checkpoint <the QAT model.pt> --fit-with-band
# --samples 1000` (100 for the two mixes of the fourth sitting not committed; `all` for the committed ones) (the
# plan with the calibration band within 80% of every resource, estimate at 100 MHz; its C simulation bit-exact
# with Brevitas on those images), with the multipliers left to the tools (`--multipliers auto`, the only way
# before the fifth sitting) or bound to DSP48s where the planner chose (`dsp`; for models trained before it,
# `python -m fpga.design --base model/checkpoints/pynq_z2.pt --network '' ... --multipliers auto,dsp`, the
# config-only estimate, which equals the build's). Each point was planned by the planner of its day; since
# issue 26's eighth sitting the planner judges every plan with its own sized FIFOs (fpga.design.fastest_sized_plan),
# which moved the committed model's design from 3,119 to 3,164 images/s; the other points were not planned again.
# (label, weight bits, act bits, top-1 %, images/s, committed?, multipliers on DSPs?)
FRONTIER = [
    ("first pynq_z2 pair", 4, 8, 89.96, 1_762, False, False),
    ("first pynq_z2 network, 3 QAT epochs", 4, 6, 89.30, 3_505, False, False),
    ("first pynq_z2 network, 3 QAT epochs", 4, 4, 85.03, 7_819, False, False),
    ("first pynq_z2 network, 8-bit logits, 3 QAT epochs", 4, 4, 86.58, 6_934, False, False),
    ("epoch-37 snapshot", 4, 4, 90.81, 3_119, False, False),
    ("16/0.5/32, KD, 8-bit logits", 4, 4, 91.08, 3_119, False, False),
    ("the same float model, 5-bit activations", 4, 5, 91.60, 1_738, False, False),
    ("the same, fire1 squeeze at 8 bits", 4, 4, 90.45, 3_089, False, False),
    ("the same, fire1 squeeze 8, bypass sums 6", 4, 4, 91.53, 2_345, False, False),
    ("fire1 squeeze 8, fires 1-4 expand and bypass sums 5\n(committed before)", 4, 4, 91.53, 3_089, False, False),
    ("the same model, DSPs", 4, 4, 91.53, 3_947, False, True),
    ("5-bit activations, DSPs", 4, 5, 91.60, 3_410, False, True),
    ("5-bit activations, fire1 squeeze and bypass sums 8,\nDSPs (committed before)", 4, 5, 91.98, 3_119, False, True),
    ("pynq_z2 (committed): the same with\nleast-squared-error weight scales", 4, 5, 92.10, 3_164, True, True),
]
# Where a label goes (its text's left end, in data coordinates, with a leader line to the point) where the
# default (just right of the point, above it) would overlap another: the points near 3,100 images/s crowd.
FRONTIER_LABELS = {
    "pynq_z2 (committed): the same with\nleast-squared-error weight scales": (1_050, 93.15),
    "5-bit activations, fire1 squeeze and bypass sums 8,\nDSPs (committed before)": (5_200, 93.0),
    "the same float model, 5-bit activations": (1_050, 92.1),
    "the same, fire1 squeeze 8, bypass sums 6": (1_050, 91.0),
    "5-bit activations, DSPs": (5_200, 92.35),
    "the same model, DSPs": (5_200, 91.85),
    "fire1 squeeze 8, fires 1-4 expand and bypass sums 5\n(committed before)": (5_200, 91.3),
    "16/0.5/32, KD, 8-bit logits": (5_200, 90.85),
    "epoch-37 snapshot": (5_200, 90.6),
    "the same, fire1 squeeze at 8 bits": (5_200, 90.35),
}
FRONTIER_TARGET = (92.5, 2_000)  # issue 26: top-1 %, images/s


def save(fig, name: str) -> None:
    path = IMG / name
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size:,} bytes")


def paper_sweep() -> None:
    fig, axes = plt.subplots(1, 2, figsize=SIZE, sharey=True)
    sweeps = [("SR (squeeze ratio), pct_3x3 = 0.5", [p for p in PAPER if p[1] == 0.5], 0),
              ("pct_3x3 (share of 3x3 expand filters), SR = 0.125", [p for p in PAPER if p[0] == 0.125], 1)]
    twins = []
    for ax, (label, pts, key) in zip(axes, sweeps):
        x = np.array([p[key] for p in pts])
        q = np.array([p[3] for p in pts])
        f = np.array([p[2] for p in pts])
        kib = np.array([p[4] for p in pts]) / 1024
        best = q.max()
        ax.axhspan(best - SEED_SPREAD, best, color="0.85", alpha=0.5, label=f"within the seed spread ({SEED_SPREAD} pts)")
        ax.plot(x, f, "o--", color="tab:gray", lw=1, ms=4, label="float")
        ax.plot(x, q, "o-", color="tab:blue", lw=2, ms=5, label="4-bit (QAT)")
        ax.set_xlabel(label, fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{v:g}" for v in x], fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        twins.append(ax2)
        ax2.bar(x, kib, width=(x.max() - x.min()) / 14, color="tab:orange", alpha=0.35, label="on-chip KiB")
        ax2.axhline(BUDGET / 1024, color="tab:red", lw=1.5, ls=":", label="0.5 MiB budget")
        ax2.set_ylim(0, 1.15 * max(p[4] for p in PAPER) / 1024)
        ax2.tick_params(axis="y", labelsize=8, colors="tab:orange")
        if key == 1:
            ax2.set_ylabel("on-chip weights + biases, KiB", fontsize=8, color="tab:orange")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    axes[0].set_ylabel("top-1 on 10,000 test images, % (proxy)", fontsize=8)
    axes[0].set_ylim(78, 88.5)
    h1, l1 = axes[1].get_legend_handles_labels()
    h2, l2 = twins[-1].get_legend_handles_labels()
    axes[1].legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", framealpha=0.95)
    fig.suptitle("make explore STUDY=paper: base_e = incr_e = 64, simple bypass, 4-bit weights", fontsize=9)
    fig.tight_layout()
    save(fig, "paper_sweep.png")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (fewer bytes, higher top-1)."""
    front = []
    for i, (b, t) in enumerate(points):
        if not any((b2 <= b and t2 >= t) and (b2, t2) != (b, t) for b2, t2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto() -> None:
    fig, ax = plt.subplots(figsize=SIZE)
    pts = [(p[3], p[2]) for p in BUDGET_STUDY]
    front = pareto_front(pts)
    fits = [p for p in BUDGET_STUDY if p[4] is not None]
    over = [p for p in BUDGET_STUDY if p[4] is None]
    sc = ax.scatter([p[3] for p in fits], [p[2] for p in fits], c=[p[4] for p in fits], cmap="viridis", s=45,
                    edgecolors="k", linewidths=0.5, zorder=3)
    ax.scatter([p[3] for p in over], [p[2] for p in over], marker="x", color="tab:gray", s=40, zorder=3,
               label="does not fit the xc7z020")
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.2, zorder=2, label="Pareto front (top-1 vs bytes)")
    ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="tab:red", lw=1.2, zorder=4)
    for p in BUDGET_STUDY:
        ax.annotate(str(p[0]), (p[3], p[2]), textcoords="offset points", xytext=(7, 3), fontsize=7)
        if p[5]:
            high = p[3] > 50_000
            ax.annotate(p[5], (p[3], p[2]), textcoords="offset points", xytext=(-30, 10) if high else (25, -22),
                        fontsize=7, fontweight="bold", ha="right" if high else "left",
                        arrowprops=dict(arrowstyle="->", lw=0.8, color="0.3"))
    key = "\n".join(f"{p[0]:>2}: {p[1]}" for p in BUDGET_STUDY)
    ax.text(0.30, 0.05, "trial: base_e+incr_e, SR, pct_3x3, weight bits\n" + key, transform=ax.transAxes,
            fontsize=6, family="monospace", va="bottom", bbox=dict(fc="white", ec="0.8"))
    ax.axvline(BUDGET, color="tab:red", ls=":", lw=1, label="0.5 MiB budget")
    ax.set_xscale("log")
    ax.set_xlim(3_000, 1_000_000)
    ax.set_ylim(38, 90)
    ax.set_xlabel("on-chip weights + biases, bytes (log scale)", fontsize=8)
    ax.set_ylabel("quantized top-1, % (proxy)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3, which="both")
    cb = fig.colorbar(sc, ax=ax, pad=0.01)
    cb.set_label("xc7z020 images/s (estimate, before the calibration)", fontsize=7)
    cb.ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.95)
    ax.set_title("make explore STUDY=budget TRIALS=12: 12 trials (NSGA-II + seeded points)", fontsize=9)
    fig.tight_layout()
    save(fig, "pareto.png")


def fpga_frontier() -> None:
    fig, ax = plt.subplots(figsize=(SIZE[0], SIZE[1] * 1.6))  # taller: the points near 3,000 images/s crowd
    pts = [(p[4], p[3]) for p in FRONTIER]
    front = [i for i, (f, t) in enumerate(pts) if not any(f2 >= f and t2 >= t and (f2, t2) != (f, t) for f2, t2 in pts)]
    front.sort(key=lambda i: pts[i][0])
    ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="pre", color="tab:red", lw=1.2,
            label="frontier (no point faster and more accurate)", zorder=2)
    for label, wb, ab, top1, fps, committed, on_dsp in FRONTIER:
        ax.scatter([fps], [top1], s=140 if committed else 45, marker="*" if committed else "s" if on_dsp else "o",
                   color="tab:orange" if committed else "tab:purple" if on_dsp else "tab:blue", edgecolors="k",
                   linewidths=0.5, zorder=3)
        # a point with a more accurate one at the same speed gets a one-line label
        below = any(f == fps and t > top1 for f, t in pts)
        text = f"{label}: {top1:.2f}%" if below else f"{label}\nW{wb}A{ab}: {top1:.2f}%, {fps:,} img/s"
        if label in FRONTIER_LABELS:
            ax.annotate(text, (fps, top1), xytext=FRONTIER_LABELS[label], va="center", fontsize=6.5,
                        arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6, shrinkA=0, shrinkB=4))
        else:
            ax.annotate(text, (fps, top1), textcoords="offset points", xytext=(6, 4), va="baseline", fontsize=6.5)
    ax.scatter([], [], marker="o", s=45, color="tab:blue", edgecolors="k", linewidths=0.5,
               label="multipliers in LUTs (the tools' choice)")
    ax.scatter([], [], marker="s", s=45, color="tab:purple", edgecolors="k", linewidths=0.5,
               label="planner's multipliers on DSP48s (--multipliers dsp)")
    top1_target, fps_target = FRONTIER_TARGET
    ax.axhline(top1_target, color="tab:green", ls=":", lw=1, label=f"target top-1 {top1_target}%")
    ax.axvline(fps_target, color="tab:green", ls="--", lw=1, label=f"target {fps_target:,} images/s")
    ax.set_xscale("log")
    ax.set_xlim(1_000, 20_000)
    ax.set_ylim(min(p[3] for p in FRONTIER) - 1.5, max(top1_target, max(p[3] for p in FRONTIER)) + 1.0)
    ax.set_xlabel("estimated images/s at 100 MHz on the xc7z020, calibration band within 80% (log scale)", fontsize=8)
    ax.set_ylabel("quantized top-1 on 10,000 test images, %", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.95)
    ax.set_title("Fashion-MNIST SqueezeNets on the PYNQ-Z2's xc7z020 (star: committed pynq_z2)", fontsize=9)
    fig.tight_layout()
    save(fig, "fpga_frontier.png")


def fpga_layers() -> None:
    src = ART / "fpga" / "layers.png"
    if not src.is_file():
        print(f"skipped: {src.relative_to(ROOT)} is missing (make fpga writes it); docs/img/fpga_layers.png kept")
        return
    shutil.copyfile(src, IMG / "fpga_layers.png")
    report = ART / "fpga" / "report.json"
    which = json.loads(report.read_text()).get("checkpoint", "?") if report.is_file() else "?"
    print(f"docs/img/fpga_layers.png: copied from {src.relative_to(ROOT)} (checkpoint {which})")


# report/page.py's figures (label, JSON path), for the stages this image shows; HOW: what builds a missing one.
PAGE = {
    "model": [("top-1 (test set)", "top1"), ("test images", "samples"), ("parameters", "params")],
    "quantize": [("top-1 (test set)", "top1"), ("float parent's top-1", "float_top1"),
                 ("weight storage, bytes", "weight_storage_bytes")],
    "export": [("int8 TFLite bytes", "tflite/bytes"), ("TFLite agreement", "tflite/top1_agreement")],
    "fpga": [("part", "device/part"), ("fits the part", "fits_device"), ("C-sim images", "csim/samples"),
             ("C-sim top-1 agreement", "csim/top1_agreement"), ("C-sim max |diff|", "csim/max_abs_diff"),
             ("LUT estimate", "resources/lut/estimate"), ("LUT calibrated range", "resources/lut/band")],
    "rpi": [("FPS", "fps"), ("mean latency, ms", "mean_latency_ms")],
    "budget": [("first artifact", "artifacts/0/artifact"), ("bytes", "artifacts/0/bytes"),
               ("within budget", "artifacts/0/within_budget"), ("FPGA design fits", "fits_device")],
}
HOW = {"model": "make train (or make eval)", "quantize": "make quantize", "export": "make export",
       "fpga": "make fpga", "rpi": "make rpi-local", "budget": "make budget"}


def lookup(data, path: str):
    for part in path.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def report_page() -> None:
    confusion = ART / "model" / "confusion.png"
    if not confusion.is_file():
        print("skipped: artifacts/model/confusion.png is missing (make eval writes it); docs/img/report_page.png kept")
        return
    rows: list[tuple[str, str, bool]] = []   # (text, value, is a heading)
    for stage, figures in PAGE.items():
        path = ART / stage / "report.json"
        if not path.is_file():
            rows.append((f"{stage}: not built yet", HOW[stage], True))
            continue
        data = json.loads(path.read_text())
        rows.append((stage, f"artifacts/{stage}/report.json", True))
        for label, key in figures:
            try:
                value = lookup(data, key)
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(value, float):
                value = f"{value:.4f}"
            elif isinstance(value, int) and not isinstance(value, bool):
                value = f"{value:,}"
            elif isinstance(value, list):
                value = "-".join(f"{v:,}" for v in value)
            value = str(value)
            rows.append(("   " + label, value if len(value) <= 26 else value[:25] + "…", False))
    fig = plt.figure(figsize=SIZE)
    ax_img = fig.add_axes([0.0, 0.0, 0.47, 0.92])
    ax_img.imshow(plt.imread(confusion))
    ax_img.axis("off")
    ax_txt = fig.add_axes([0.47, 0.0, 0.53, 0.92])
    ax_txt.axis("off")
    step = 0.98 / max(len(rows), 1)
    for i, (text, value, head) in enumerate(rows):
        y = 0.98 - i * step
        ax_txt.text(0.0, y, text, fontsize=7, va="top", fontweight="bold" if head else "normal",
                    color="#a40" if head and "not built" in text else "#222")
        ax_txt.text(0.52, y, value, fontsize=7 if not head else 6, va="top", family="monospace",
                    color="#777" if head else "#222")
    fig.suptitle("make report: artifacts/report/index.html (its figures and the model's confusion matrix)",
                 fontsize=9, y=0.985)
    save(fig, "report_page.png")


def main() -> int:
    IMG.mkdir(parents=True, exist_ok=True)
    paper_sweep()
    pareto()
    fpga_frontier()
    fpga_layers()
    report_page()
    return 0


if __name__ == "__main__":
    sys.exit(main())
