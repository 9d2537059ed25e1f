"""``python -m model.campaign``: several float + QAT recipes trained side by side on one machine, in a time box.

A campaign is a JSON plan (see ``model/campaigns/``): a list of runs, each one float training
(``python -m model.train`` arguments) followed by one or more QAT variants (``python -m quantize`` arguments)
that start from it. Every run goes through the project's own CLIs (with ``--no-eval``: the test set is scored later,
on the CPU, by ``make eval``'s commands), so each result is a normal checkpoint, reproducible with the same arguments outside the campaign.

It exists for the one case where a fixed epoch count is a gamble: a borrowed accelerator for a few minutes,
with several recipes sharing it. So it first measures, with every run going at once (as they will later), how
long one float epoch and one QAT epoch take; then gives each run the most float epochs that leave room for
its QAT epochs before the deadline (capped by the plan's ``max_epochs``); then runs every chain concurrently
(``--time-limit`` on each as a safety net) and packs the checkpoints, reports and logs into archives of at
most ``--archive-mib`` each. Nothing here schedules across machines: for that, use torchrun (one run on many
GPUs) or the explore stage's Optuna storage (many runs on many machines).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CALIBRATION_IMAGES = 12_000  # --limit for the timing epoch: 11,000 train + 1,000 val images
PACK_MARGIN_S = 25.0
# A full epoch took ~20% longer than the scaled timing epoch on the H200 (4.5 s vs 3.7 s: the per-epoch
# validation and checkpoint do not shrink with --limit), so the plan pads the measured time.
EPOCH_TIME_MARGIN = 1.2


@dataclass
class Job:
    name: str
    argv: list[str]
    out: Path
    process: subprocess.Popen | None = None
    started: float = 0.0
    ended: float = 0.0
    returncode: int | None = None

    def start(self, env: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        log = open(self.out / "log.txt", "w")
        self.started = time.time()
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def poll(self) -> bool:
        if self.process is not None and self.returncode is None and self.process.poll() is not None:
            self.returncode, self.ended = self.process.returncode, time.time()
        return self.returncode is not None


@dataclass
class Run:
    name: str
    train_args: list[str]
    qat: dict[str, list[str]]  # variant name -> quantize arguments
    qat_epochs: int
    max_epochs: int
    float_epoch_s: float = math.nan
    qat_epoch_s: float = math.nan
    epochs: int = 0
    jobs: dict[str, Job] = field(default_factory=dict)


def python_m(module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def history(last_pt: Path) -> list[dict]:
    """The per-epoch log of a run, from its own resume state."""
    import torch

    return torch.load(last_pt, map_location="cpu", weights_only=True)["history"]


def epoch_seconds(last_pt: Path) -> float:
    """Seconds of the last finished epoch."""
    return float(history(last_pt)[-1]["seconds"])


def run_all(jobs: list[Job], env: dict, deadline: float) -> None:
    for job in jobs:
        job.start(env)
    while not all(job.poll() for job in jobs):
        if time.time() > deadline:
            for job in jobs:
                if not job.poll():
                    job.process.kill()
            break
        time.sleep(0.5)


def calibrate(runs: list[Run], out: Path, env: dict, common: list[str], deadline: float, images: int) -> None:
    """Two float epochs, then two QAT epochs, on CALIBRATION_IMAGES, every run at once; the second epoch's
    time (the first also pays for start-up: CUDA context, cuDNN's kernel search) scaled to the full training
    set of ``images``."""
    scale = max(1.0, images / CALIBRATION_IMAGES)
    floats = [Job(r.name, python_m("model.train", [*r.train_args, *common, "--epochs", "2", "--warmup-epochs", "0",
                                                      "--limit", str(CALIBRATION_IMAGES), "--no-eval",
                                                      "--out", str(out / "calibration" / r.name)]),
                  out / "calibration" / r.name) for r in runs]
    run_all(floats, env, deadline)
    for run, job in zip(runs, floats):
        if job.returncode != 0:
            raise SystemExit(f"calibration of {run.name} failed (exit {job.returncode}): see {job.out}/log.txt")
        run.float_epoch_s = epoch_seconds(job.out / "last.pt") * scale * EPOCH_TIME_MARGIN
    qats, timed = [], [run for run in runs if run.qat]
    for run in timed:
        variant, args = next(iter(run.qat.items()))
        qats.append(Job(f"{run.name}-{variant}", python_m("quantize", [
            *args, *common, "--checkpoint", str(out / "calibration" / run.name / "model.pt"), "--epochs", "2",
            "--no-eval",
            "--limit", str(CALIBRATION_IMAGES), "--out", str(out / "calibration" / f"{run.name}-q")]),
            out / "calibration" / f"{run.name}-q"))
    run_all(qats, env, deadline)
    for run, job in zip(timed, qats):
        if job.returncode != 0:
            raise SystemExit(f"QAT calibration of {run.name} failed (exit {job.returncode}): see {job.out}/log.txt")
        run.qat_epoch_s = epoch_seconds(job.out / "last.pt") * scale * EPOCH_TIME_MARGIN


def plan_epochs(run: Run, seconds_left: float, overhead_s: float) -> int:
    """The most float epochs that leave the run's QAT (all variants at once) room before the deadline."""
    qat_s = (run.qat_epochs * run.qat_epoch_s * max(1.0, len(run.qat) ** 0.5) if run.qat else 0.0) + overhead_s
    return max(1, min(run.max_epochs, int((seconds_left - qat_s - overhead_s) / run.float_epoch_s)))


def chain(run: Run, out: Path, common: list[str], float_deadline: float, qat_deadline: float) -> str:
    """The shell line of one run: float training, then its QAT variants side by side. The deadlines are
    absolute (epoch seconds); each --time-limit is what is left of them when the step starts."""
    import shlex

    def left(deadline: float) -> str:
        return f"$(( {int(deadline)} - $(date +%s) ))"

    float_dir = out / run.name / "float"
    lines = [shlex.join(python_m("model.train", [*run.train_args, *common, "--epochs", str(run.epochs),
                                                 "--no-eval", "--out", str(float_dir)])) + f" --time-limit {left(float_deadline)}"]
    qats = []
    for variant, args in run.qat.items():
        qat_dir = out / run.name / variant
        qats.append(shlex.join(python_m("quantize", [*args, *common, "--checkpoint", str(float_dir / "model.pt"),
                                                     "--epochs", str(run.qat_epochs), "--no-eval",
                                                     "--out", str(qat_dir)]))
                    + f" --time-limit {left(qat_deadline)} > {shlex.quote(str(qat_dir))}.log 2>&1 &")
    if not qats:  # a float-only run (its QAT happens elsewhere)
        return lines[0]
    return " && ".join(lines) + " && { " + " ".join(qats) + " wait; }"


def pack(out: Path, archive_mib: float) -> list[Path]:
    """Checkpoints, logs, and the resume state of every step that did not finish (to finish it elsewhere
    with --resume), into archives of at most archive_mib each (files sorted by run)."""
    def unfinished(path: Path) -> bool:
        return path.name == "last.pt" and not (path.parent / "model.pt").is_file()

    wanted = sorted(p for p in out.rglob("*") if p.is_file() and "calibration" not in p.parts
                    and (p.name in ("model.pt", "log.txt", "campaign.json") or p.suffix == ".log"
                         or unfinished(p)))
    archives, current, size = [], [], 0
    limit = archive_mib * 2 ** 20 * 0.95
    for path in wanted:
        if current and size + path.stat().st_size > limit:
            archives.append(current)
            current, size = [], 0
        current.append(path)
        size += path.stat().st_size
    if current:
        archives.append(current)
    written = []
    for i, paths in enumerate(archives, start=1):
        target = out / f"campaign-{i}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            for path in paths:
                tar.add(path, arcname=str(path.relative_to(out)))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", required=True, help="the campaign's JSON plan")
    p.add_argument("--out", required=True, help="where every run writes (and the archives go)")
    p.add_argument("--seconds", type=float, required=True, help="wall-clock budget, from start to packed archives")
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--archive-mib", type=float, default=15.0)
    args = p.parse_args(argv)
    t0 = time.time()
    deadline = t0 + args.seconds - PACK_MARGIN_S
    plan = json.loads(Path(args.plan).read_text())
    runs = [Run(r["name"], r["train"], r["qat"], int(r.get("qat_epochs", plan.get("qat_epochs", 10))),
                int(r.get("max_epochs", plan.get("max_epochs", 300)))) for r in plan["runs"]]
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):  # a second campaign there would pack the first one's files
        raise SystemExit(f"error: {out} is not empty; give the campaign a new directory")
    out.mkdir(parents=True, exist_ok=True)
    common = ["--device", args.device, "--dataset", args.dataset] + (
        ["--data-dir", args.data_dir] if args.data_dir else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    from model.data import load_dataset

    images = len(load_dataset(args.dataset, "train", args.data_dir))
    calibrate(runs, out, env, common, deadline, images)
    overhead = float(plan.get("overhead_seconds", 30))
    left = deadline - time.time()
    summary = {"plan": plan, "device": args.device, "budget_seconds": args.seconds,
               "calibration_seconds": round(time.time() - t0, 1), "runs": {}}
    shells = []
    for run in runs:
        run.epochs = plan_epochs(run, left, overhead)
        qat_s = overhead + (run.qat_epochs * run.qat_epoch_s * max(1.0, len(run.qat) ** 0.5) if run.qat else 0.0)
        shells.append(Job(run.name, ["bash", "-c", chain(run, out, common, deadline - qat_s, deadline - 5)],
                          out / run.name))
        print(f"{run.name}: float epoch {run.float_epoch_s:.1f} s, QAT epoch {run.qat_epoch_s:.1f} s -> "
              f"{run.epochs} float epochs + {run.qat_epochs} QAT epochs", flush=True)
    run_all(shells, env, deadline)
    for run, job in zip(runs, shells):
        entry = {"float_epochs": run.epochs, "qat_epochs": run.qat_epochs,
                 "float_epoch_seconds_measured": round(run.float_epoch_s, 2),
                 "qat_epoch_seconds_measured": round(run.qat_epoch_s, 2), "exit": job.returncode,
                 "seconds": round((job.ended or time.time()) - job.started, 1), "results": {}}
        for state in sorted((out / run.name).glob("*/last.pt")):
            log = history(state)
            entry["results"][state.parent.name] = {"epochs_done": len(log), "val_acc": log[-1]["val_acc"],
                                                   "done": (state.parent / "model.pt").is_file()}
        summary["runs"][run.name] = entry
        print(f"{run.name}: exit {job.returncode}, {entry['results']}", flush=True)
    summary["total_seconds"] = round(time.time() - t0, 1)
    (out / "campaign.json").write_text(json.dumps(summary, indent=1) + "\n")
    for archive in pack(out, args.archive_mib):
        print(f"wrote {archive} ({archive.stat().st_size / 2 ** 20:.1f} MiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
