"""``python -m explore`` (``make explore STUDY=paper|budget|fpga|smoke``): budget-aware design-space exploration.

Each trial is one SqueezeNet design point, evaluated by the project's own stages: a short float training
(``model.train``), a short QAT (``quantize``, which scores the quantized model on the test set), then
parameters, MACs, on-chip weight bytes, the FPGA estimate (``fpga.design``) and the int8 TFLite size and
latency (``export``). Optuna holds the study: ``GridSampler`` for the paper's sweeps, NSGA-II for the open
search. Output under ``--out`` (default ``artifacts/explore``): ``explore.db`` (the Optuna study, SQLite),
``points.jsonl`` (every trial of every study, with every figure or the reason it failed), and per study
``<study>/report.md``, ``pareto.png``, ``front_fps.png`` (and ``paper.png``), ``<study>/trials/<point>/``.

Studies: ``paper`` (SR and pct_3x3 sweeps at 4-bit weights, 9 distinct points), ``budget`` (open search over
base_e, incr_e, sr, pct_3x3, bypass and weight bits for top-1 under the byte budget and the FPGA part,
``--trials N``), ``fpga`` (the same search plus the stem's width and the activation bits, where a point is
trained only if the FPGA estimate fits the part with the calibration band included and reaches 2,000
images/s), ``smoke`` (two tiny points).

A rerun of the same command continues the study: finished trials are never recomputed, an interrupted
trial (Ctrl-C) is queued again and reuses its finished stages. Several workers -- processes here, or other
machines -- share a study through its storage: run the same command with the same ``--storage`` (a
database server URL such as ``postgresql://user@host/explore``, or ``journal:/shared/explore.journal`` on
a shared file system; the default SQLite file is for workers on this machine).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import contract
from contract import UserError, run_cli

from .report import write_report
from .space import STUDIES
from .study import Worker, default_storage, load_or_create, open_storage, study_rows, write_points
from .trial import Settings

DEFAULT_SEARCH_TRIALS = 24


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m explore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=sorted(STUDIES), default="paper", help="which study to run (default paper)")
    p.add_argument("--trials", type=int, default=None,
                   help="trials to evaluate in all, counted over every worker and rerun (points skipped before training, "
                        "over the budget or short of the FPGA constraint, do not count); default: 24 for a search, every point "
                        "of a grid (a grid stopped early has run the first N points of its seeded order)")
    p.add_argument("--out", default=contract.stage_dir("explore"), help="output directory (default %(default)s)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL: sqlite:///PATH (default <out>/explore.db), journal:PATH, or a "
                        "database server URL (postgresql://..., mysql://...) shared by several machines")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None, help="default: $DATA_DIR or the Debian package's directory")
    p.add_argument("--device", default="auto", help="training device: auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per training step (0: default)")
    p.add_argument("--part", default=os.environ.get("FPGA_PART", "xc7z020clg400-1"), help="FPGA part")
    p.add_argument("--resource-share", type=float, default=0.8, help="share of each FPGA resource a design may use")
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"the byte budget (default: ${contract.BUDGET_ENV} or {contract.BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--min-fps", type=float, default=2000.0, help="images/s the FPGA pick must reach (estimate)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite points.jsonl, the plots and report.md from the storage; run no trial")
    return p


def fpga_figure(row: dict) -> str:
    """The FPGA estimate of a point in a few words: its images/s, or that it does not fit the part."""
    if row.get("fpga_fits") is False:
        return f"does not fit {row.get('fpga_part', 'the part')}"
    return f"{row['fpga_images_per_second']:,.0f} img/s"


def progress_line(spec, rows: list[dict], total: int | None, started: float) -> str:
    done = sum(r["status"] in ("complete", "failed") for r in rows)
    skipped = sum(r["status"] in ("skipped", "duplicate") for r in rows)
    last = max((r for r in rows if r["status"] not in ("running", "waiting")), key=lambda r: r["trial"], default=None)
    complete = [r for r in rows if r["status"] == "complete"]
    top = max(complete, key=lambda r: r["top1"], default=None)
    elapsed = time.time() - started
    text = f"[explore {spec.name}] {done}/{total if total else '?'} done"
    if skipped:
        text += f" (+{skipped} skipped)"
    if last is not None:
        figures = (f"top-1 {last['top1']:.4f}, {last['onchip_bytes']:,} B, {fpga_figure(last)}"
                   if last["status"] == "complete" else (last.get("reason") or "")[:120])
        text += f"; trial {last['trial']} {last['status']}: {figures}"
        if last.get("seconds") is not None:
            text += f" ({last['seconds']:.0f} s)"
    text += f"; elapsed {int(elapsed // 60)}m{int(elapsed % 60):02d}s"
    if top is not None:
        text += f"; best top-1 {top['top1']:.4f} ({top['label']})"
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.budget_bytes = contract.budget_bytes(args.budget_bytes)  # flag, then $BUDGET_BYTES, then 0.5 MiB
    spec = STUDIES[args.study]
    if args.trials is not None and args.trials < 1:
        raise UserError("--trials must be at least 1")
    if args.trials is None and spec.kind == "search":
        args.trials = DEFAULT_SEARCH_TRIALS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(args.storage or default_storage(out.resolve()))
    settings = Settings(data_dir=args.data_dir, dataset=args.dataset, device=args.device, part=args.part,
                        resource_share=args.resource_share, budget_bytes=args.budget_bytes, threads=args.threads)
    total = min(len(spec.points), args.trials or len(spec.points)) if spec.kind == "grid" else args.trials
    study = load_or_create(spec, storage)
    started = time.time()

    def refresh() -> tuple[list[dict], dict]:
        write_points(storage, out / "points.jsonl")
        rows = study_rows(storage, spec.name)
        picks = write_report(
            rows, spec, study.user_attrs.get("schedule_text", spec.schedule.describe()), out / spec.name,
            args.budget_bytes, args.min_fps)
        return rows, picks

    def after_trial(_study) -> None:
        rows, _ = refresh()
        print(progress_line(spec, rows, total, started), flush=True)

    if not args.report_only:
        print(f"[explore {spec.name}] {spec.description}; {total} trial(s); schedule: {spec.schedule.describe()}; "
              f"storage {storage.url}", flush=True)
        worker = Worker(spec, storage, settings, out, target=args.trials)
        try:
            worker.run(study, after_trial)
        except KeyboardInterrupt:
            refresh()
            print(f"[explore {spec.name}] interrupted: the study is saved in {storage.url}; the interrupted trial "
                  f"runs again (reusing its finished stages) when you rerun the same command", flush=True)
            raise
    rows, picks = refresh()
    states = {}
    for row in rows:
        states[row["status"]] = states.get(row["status"], 0) + 1
    print(f"[explore {spec.name}] {', '.join(f'{v} {k}' for k, v in sorted(states.items())) or 'no trials'}; "
          f"points: {out / 'points.jsonl'}; report: {out / spec.name / 'report.md'}")
    for name, row in picks.items():
        print(f"  {name}: " + (f"{row['label']}: top-1 {row['top1']:.4f}, {row['onchip_bytes']:,} B on chip, "
                               f"{fpga_figure(row)}" if row else "none meets it"))
    unfinished = [r for r in rows if r["status"] in ("running", "waiting")]
    if unfinished and not args.report_only:
        print(f"[explore {spec.name}] {len(unfinished)} trial(s) still running elsewhere or queued")
    return 0


if __name__ == "__main__":
    run_cli(main)
