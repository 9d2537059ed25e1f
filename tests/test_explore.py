"""explore/: the Optuna study through the real stages (model.train, quantize, explore.measure with the FPGA
estimate and the int8 TFLite), resume after Ctrl-C, two workers on one SQLite study, failures recorded,
and the Pareto selection."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from contract import UserError
from explore.report import (
    evaluated,
    fpga_pick,
    full_recipe_commands,
    pareto_front,
    pi_pick,
    plot_paper,
    recorded_flags,
    saturation,
    sweep_rows,
    trend_lines,
)
from explore.space import SMOKE, SMOKE_POINTS, STUDIES, DesignPoint, Schedule, StudySpec, paper_points
from explore.study import Worker, load_or_create, open_storage, study_rows
from explore.trial import Settings

from .conftest import ROOT, run_module

BUDGET = 524_288
# A smoke study takes 2 to 5 minutes on an idle 2-core machine; under a load average of 10 (shared machine)
# one trial's TFLite conversion alone took 6 minutes: the limits only catch a hang.
STUDY_TIMEOUT = 2400


def read_points(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]


def explore_env(data_dir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(data_dir)}


def start_explore(out: Path, data_dir: Path, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "explore", "--study", "smoke", "--out", str(out), *args], cwd=ROOT,
                            env=explore_env(data_dir), stdout=open(log, "w"), stderr=subprocess.STDOUT)


def assert_complete_smoke(rows: list[dict], keys: list[str] | None = None) -> None:
    keys = sorted(keys or [p.key for p in SMOKE_POINTS])
    complete = [r for r in rows if r["status"] == "complete"]
    assert sorted(r["key"] for r in complete) == keys, rows
    for r in complete:
        for field in ("top1", "float_top1", "params", "macs", "onchip_bytes", "fpga_fits", "fpga_images_per_second",
                      "fpga_resources", "tflite_bytes", "tflite_median_ms"):
            assert r[field] is not None, (field, r)
        assert 0.0 <= r["top1"] <= 1.0 and r["test_images"] == 200
        assert r["onchip_bytes"] == r["onchip_bytes_quantize_report"] == r["precheck"]["onchip_bytes"]
        assert r["tflite_agreement"] == 1.0  # the int8 TFLite predicts what Brevitas predicts
        assert r["fpga_fits"] and r["fpga_images_per_second"] > 0  # tiny networks fit the xc7z020


@pytest.mark.slow
def test_resume_after_interrupt(tiny_idx_dir, tmp_path):
    """Ctrl-C during a trial's QAT: the study stays consistent (the trial FAIL, status interrupted); the
    rerun queues that point again, reuses its float checkpoint and finishes it. (A one-trial study: an
    interrupted trial does not count toward --trials, so the rerun's one trial is the retry, and the grid's
    other point, which would add a whole trial's minutes, is not needed to show it.)"""
    out = tmp_path / "explore"
    first = start_explore(out, tiny_idx_dir, tmp_path / "first.log", "--trials", "1")
    trials = out / "smoke" / "trials"
    deadline = time.time() + STUDY_TIMEOUT
    def qat_started() -> bool:
        """The QAT stage is past its imports: Brevitas guards its optional imports with bare ``except:``,
        which swallows a Ctrl-C that lands inside one (seen once in CI: the stage then ran to the end, so
        its outputs existed although the trial was, rightly, marked interrupted)."""
        return any("$ python -m quantize" in text and "calibrated" in text.split("$ python -m quantize", 1)[1]
                   for text in (log.read_text() for log in trials.glob("*/log.txt")))

    while time.time() < deadline and not qat_started():
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)  # Ctrl-C during the QAT: it stops before writing anything
    try:
        code = first.wait(timeout=120)
    except subprocess.TimeoutExpired:
        first.kill()
        pytest.fail("explore did not stop within 120 s of Ctrl-C: " + (tmp_path / "first.log").read_text()[-3000:])
    assert code == 130, (tmp_path / "first.log").read_text()[-3000:]
    rows = read_points(out)
    assert [r["status"] for r in rows] == ["interrupted"], rows
    interrupted_key = rows[0]["key"]
    (trial_dir,) = [p for p in trials.iterdir() if p.name.startswith(interrupted_key)]
    assert (trial_dir / "float" / "model.pt").is_file() and not (trial_dir / "quant" / "report.json").exists()

    second = run_module("explore", "--study", "smoke", "--trials", "1", "--out", str(out),
                        env={"DATA_DIR": str(tiny_idx_dir)}, timeout=STUDY_TIMEOUT)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "re-queued interrupted trial(s) [0]" in second.stdout
    rows = read_points(out)
    assert_complete_smoke(rows, [interrupted_key])
    retry = next(r for r in rows if r["key"] == interrupted_key and r["status"] == "complete")
    assert retry["retry_of"] == 0
    assert "float" not in retry["stage_seconds"]  # its float checkpoint was reused, not retrained
    assert (trial_dir / "log.txt").read_text().count("$ python -m model.train") == 1
    assert len(rows) == 2  # the interrupted trial and its retry: nothing lost or repeated


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_and_make_reruns_it_without_recomputing(tiny_idx_dir, tmp_path):
    """Two processes on one SQLite study: each grid point through every stage exactly once, no trial lost,
    points.jsonl complete, plots and report written; then `make explore STUDY=smoke` on the same study
    recomputes nothing."""
    out = tmp_path / "explore"
    workers = [start_explore(out, tiny_idx_dir, tmp_path / f"worker{i}.log") for i in range(2)]
    for i, w in enumerate(workers):
        assert w.wait(timeout=STUDY_TIMEOUT) == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]
    storage = open_storage(f"sqlite:///{out / 'explore.db'}")
    trials = optuna.load_study(study_name="smoke", storage=storage.optuna).get_trials()
    assert len(trials) == len(SMOKE_POINTS)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs["key"] for t in trials) == sorted(p.key for p in SMOKE_POINTS)
    rows = read_points(out)
    assert len(rows) == 2
    assert_complete_smoke(rows)
    said = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert sum(text.count("] trial ") for text in said) == len(SMOKE_POINTS), said
    assert any("best top-1" in text for text in said)  # the progress line after each trial
    for name in ("pareto.png", "front_fps.png"):
        png = (out / "smoke" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    report = (out / "smoke" / "report.md").read_text()
    assert "For the FPGA (PYNQ-Z2) stage" in report and "python -m model.train" in report
    logs = {p.name: (p / "log.txt").read_text() for p in (out / "smoke" / "trials").iterdir()}
    assert len(logs) == 2 and all(log.count("$ python -m model.train") == 1 for log in logs.values())

    again = subprocess.run(["make", "--no-print-directory", "explore", "STUDY=smoke", f"EXPLORE_OUT={out}",
                            f"DATA_DIR={tiny_idx_dir}"], cwd=ROOT, env=explore_env(tiny_idx_dir),
                           capture_output=True, text=True, timeout=STUDY_TIMEOUT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trial 0:" not in again.stdout and "2 complete" in again.stdout
    assert read_points(out) == rows
    assert all(log == (p / "log.txt").read_text() for p in (out / "smoke" / "trials").iterdir()
               for log in [logs[p.name]])


def test_failing_trials_are_recorded(tmp_path):
    """A point the builder rejects and a point whose training stage fails: both FAIL with their reasons."""
    rejected = DesignPoint(8, 8, 0.25, 0.01, "simple", 4)  # 1% of 8 filters rounds to no 3x3 filter
    spec = StudySpec("failing", "grid", SMOKE, (rejected, SMOKE_POINTS[0]))
    storage = open_storage(f"sqlite:///{tmp_path / 'explore.db'}")
    study = load_or_create(spec, storage)
    settings = Settings(data_dir=str(tmp_path / "no-such-data"))
    # --trials 1 stops a grid after its first point; the next run does the rest.
    assert Worker(spec, storage, settings, tmp_path, target=1, log=lambda line: None).run(study, lambda s: None) == 1
    assert len(study_rows(storage, "failing")) == 1
    Worker(spec, storage, settings, tmp_path, log=lambda line: None).run(study, lambda s: None)
    rows = {r["key"]: r for r in study_rows(storage, "failing")}
    assert len(rows) == 2 and all(r["status"] == "failed" and r["state"] == "FAIL" for r in rows.values())
    assert "builder rejects" in rows[rejected.key]["reason"] and "empty layer" in rows[rejected.key]["reason"]
    stage = rows[SMOKE_POINTS[0].key]["reason"]
    assert stage.startswith("float training failed (exit status 2): error:") and "no-such-data" in stage
    # A rerun does not retry a point that failed for a reason of its own.
    Worker(spec, storage, settings, tmp_path, log=lambda line: None).run(study, lambda s: None)
    assert len(study_rows(storage, "failing")) == 2


def row(key, top1, onchip, fps=0.0, tflite=None, status="complete", **extra):
    return {"key": key, "status": status, "top1": top1, "onchip_bytes": onchip, "fpga_images_per_second": fps,
            "fpga_fits": fps > 0, "tflite_bytes": tflite if tflite is not None else 2 * (onchip or 0), **extra}


def test_pareto_front_picks_exactly_the_non_dominated_points_under_the_budget():
    rows = [
        row("small", 0.85, 50_000, fps=6000),
        row("a", 0.90, 100_000, fps=5000),
        row("b", 0.92, 200_000, fps=1000),
        row("tie-with-b", 0.92, 200_000),       # equal to b: neither dominates the other
        row("dominated", 0.91, 250_000, fps=900),  # b is more accurate and smaller
        row("same-bytes-worse", 0.89, 100_000, fps=7000),  # a: same bytes, more accurate
        row("h", 0.93, 400_000, tflite=600_000),
        row("over-budget", 0.95, 600_000, fps=100),  # best of all, but over 0.5 MiB
        row("failed", None, None, status="failed"),
        row("a", 0.90, 100_000, fps=5000),          # a copied trial of point a: counted once
    ]
    front = pareto_front(rows, budget_bytes=BUDGET)
    assert [r["key"] for r in front] == ["small", "a", "b", "tie-with-b", "h"]
    assert [r["key"] for r in pareto_front(rows)][-1] == "over-budget"  # without the budget it is on the front
    fps_front = pareto_front(rows, maximize=("top1", "fpga_images_per_second"), minimize=(), budget_bytes=BUDGET,
                             where=lambda r: r["fpga_fits"])
    assert sorted(r["key"] for r in fps_front) == ["a", "b", "same-bytes-worse"]
    # Strictly the most accurate (no ties):
    assert fpga_pick(rows, BUDGET, tie_pp=0)["key"] == "a"  # b and h are more accurate but under 2,000 images/s / no fit
    assert fpga_pick(rows, BUDGET, min_fps=900, tie_pp=0)["key"] == "b"
    assert pi_pick(rows, BUDGET, tie_pp=0)["key"] == "b"    # h's TFLite file is over the budget
    # With the proxy's seed spread (2.3 points) as the tie: the fastest (FPGA) or smallest (Pi) tied point.
    assert fpga_pick(rows, BUDGET)["key"] == "same-bytes-worse"  # 0.89, 1.0 below a, 7,000 images/s
    assert fpga_pick(rows, BUDGET, min_fps=900)["key"] == "a"  # b, a, dominated tie; a has the most images/s
    assert pi_pick(rows, BUDGET)["key"] == "a"                 # b, tie-with-b, dominated, a tie; a is smallest
    assert len(evaluated(rows)) == 8


def test_paper_study_is_the_two_sweeps_and_its_plot(tmp_path):
    points = paper_points()
    assert len(points) == 9 and len(set(points)) == 9  # 5 + 5 sweep points, the default one shared
    assert {p.sr for p in points if p.pct_3x3 == 0.5} == {0.125, 0.25, 0.5, 0.75, 1.0}
    assert {p.pct_3x3 for p in points if p.sr == 0.125} == {0.01, 0.25, 0.5, 0.75, 0.99}
    assert all(p.weight_bits == 4 and p.base_e == 64 and p.bypass == "simple" for p in points)
    assert STUDIES["paper"].kind == "grid" and STUDIES["budget"].kind == "search"
    rows = [{**p.to_dict(), "key": p.key, "status": "complete", "top1": 0.9 + p.sr / 100 + p.pct_3x3 / 200,
             "float_top1": 0.91, "onchip_bytes": int(100_000 * (p.sr + p.pct_3x3))} for p in points]
    sr_sweep = sweep_rows(rows, "sr")
    assert [r["sr"] for r in sr_sweep] == [0.125, 0.25, 0.5, 0.75, 1.0]
    rising = [{"sr": sr, "top1": top1} for sr, top1 in ((0.125, 0.80), (0.25, 0.85), (0.5, 0.894), (0.75, 0.898),
                                                        (1.0, 0.90))]
    assert saturation(rising, "sr", tolerance_pp=0.5) == 0.75  # 0.2 points below the best; 0.5 is 0.6 below
    assert saturation([{"sr": 0.125, "top1": 0.95}, *rising[1:]], "sr", tolerance_pp=0.5) == 0.125
    assert saturation(rising, "sr") == 0.5  # the default tolerance is the proxy's seed spread (2.3 points)
    table = "\n".join(trend_lines(rows[:3]))
    assert "0.75: not run" in table and "(so far)" in table and "plateaus at 86.0%" in table
    plot_paper(rows, tmp_path / "paper.png", BUDGET, "test")
    assert (tmp_path / "paper.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "paper.png").stat().st_size > 20_000


def test_full_recipe_commands_come_from_the_committed_checkpoints():
    """The default's recorded recipe, without where it ran (--device, --threads, --out, --resume, --no-eval)
    or which network (--set: the point's own flags say that)."""
    from explore.report import NOT_RECIPE

    flags = recorded_flags(str(ROOT / "model/checkpoints/default.pt"), NOT_RECIPE)
    assert flags[flags.index("--epochs") + 1] == "49" and flags[flags.index("--label-smoothing") + 1] == "0.1"
    assert not set(flags) & {"--set", "--device", "--threads", "--out", "--resume", "--no-eval", "cpu"}
    # A valueless option dropped does not take the next option with it.
    assert recorded_flags(str(ROOT / "model/checkpoints/default.pt"), ("--no-eval",)).count("--out") == 1
    point = DesignPoint(16, 16, 0.125, 0.25, "none", 3)
    commands = full_recipe_commands({**point.to_dict(), "fpga_part": "xc7z020clg400-1"}, ROOT)
    assert commands[0].startswith("python -m model.train --batch-size 256 ") and "--set=bypass=none" in commands[0]
    assert "base_e=96" not in commands[0] and commands[0].count("--device") == 1
    assert "--weight-bits 3" in commands[1] and "--label-smoothing 0.1 --ema 0.999" in commands[1]
    assert f"artifacts/quantize/{point.key}/model.pt" in commands[2] and "--fit-with-band" not in commands[2]
    # An FPGA-study point: its stem and activation bits, and the band in the fit its study used.
    point = DesignPoint(16, 16, 0.5, 0.5, "simple", 4, stem_channels=32, act_bits=4)
    commands = full_recipe_commands({**point.to_dict(), "fpga_part": "xc7z020clg400-1", "fpga_fit_criterion": "band"},
                                    ROOT)
    assert "--set=stem_channels=32" in commands[0]
    assert "--weight-bits 4 --act-bits 4 --classifier-act-bits 8 " in commands[1]
    assert commands[1].count("--act-bits") == 1 and "--fit-with-band" in commands[2]


def test_cli_errors_are_one_line(tmp_path):
    r = run_module("explore", "--study", "budget", "--trials", "0", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip() == "error: --trials must be at least 1"
    r = run_module("explore", "--study", "smoke", "--storage", "nosuchdb://x", "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: cannot open Optuna storage")
    # A study made with another proxy schedule is not mixed with this one.
    other = StudySpec("smoke", "grid", Schedule("smoke", float_epochs=2, qat_epochs=1, limit=600), SMOKE_POINTS)
    load_or_create(other, open_storage(f"sqlite:///{tmp_path / 'explore.db'}"))
    r = run_module("explore", "--study", "smoke", "--out", str(tmp_path))
    assert r.returncode == 2 and "made with another schedule or grid" in r.stderr, r.stderr



def test_cost_estimate_adds_up_the_schedule():
    """explore.cost times real steps of a point and multiplies them out over the schedule."""
    from explore.cost import point_cost

    c = point_cost(SMOKE_POINTS[0], Schedule("a", float_epochs=2, qat_epochs=1, limit=1200), steps=1)
    ms = {k[:-len("_ms_per_image")]: v / 1e3 for k, v in c.items() if k.endswith("_ms_per_image")}
    assert all(v > 0 for v in ms.values()) and c["macs"] > 0
    assert c["float_cpu_s"] == pytest.approx(2 * (1100 * ms["float_train"] + 100 * ms["float_eval"]))
    assert c["qat_cpu_s"] == pytest.approx(1100 * ms["qat_train"] + 100 * ms["qat_eval"]
                                           + 10_000 * (ms["float_eval"] + ms["qat_eval"]))


def test_every_seeded_point_lies_in_its_search_space():
    """Optuna refuses an enqueued value that is not one of a categorical's choices (ValueError inside the
    trial: measured, it stopped `make explore STUDY=budget` at its fourth seed)."""
    for spec in STUDIES.values():
        for point in spec.seeds:
            for name, choices in spec.space.items():
                assert getattr(point, name) in choices, f"{spec.name}: {point.key} has {name} outside {choices}"


def test_schedule_flags_and_trial_directory_follow_every_setting():
    """The proxy trains its float stage at batch 32 (the measured fix for its seed spread); a schedule that
    differs in any flag gets another trial directory, so it never reuses an older schedule's checkpoints."""
    from dataclasses import replace

    from explore.space import PROXY

    flags = PROXY.float_flags()
    assert flags[flags.index("--batch-size") + 1] == "32" and "batch 32" in PROXY.describe()
    assert PROXY.tag != replace(PROXY, float_batch=128).tag != replace(PROXY, qat_args=("--lr", "1e-4")).tag
    assert PROXY.tag == replace(PROXY).tag and PROXY.tag.startswith("proxy-")


@pytest.mark.slow
def test_budget_search_skips_over_budget_points_and_stops_at_its_target(tmp_path):
    """The NSGA-II search: its queued seeds are asked first, a point over the byte budget is skipped before
    any training (not counted), and the worker stops once --trials points are counted. (The data directory
    is missing, so each trained point fails fast in its float stage: the search machinery is what is tested.)"""
    over = DesignPoint(128, 128, 1.0, 0.875, "simple", 8)  # megabytes of 8-bit weights
    seeds = (over, *SMOKE_POINTS)
    space = {"base_e": (8, 128), "incr_e": (4, 8, 128), "sr": (0.25, 0.5, 1.0), "pct_3x3": (0.25, 0.5, 0.875),
             "bypass": ("none", "simple"), "weight_bits": (3, 4, 8)}
    spec = StudySpec("search", "search", SMOKE, space=space, seeds=seeds, skip_over_budget=True)
    storage = open_storage(f"sqlite:///{tmp_path / 'explore.db'}")
    study = load_or_create(spec, storage)
    settings = Settings(data_dir=str(tmp_path / "no-such-data"))
    Worker(spec, storage, settings, tmp_path, target=2, log=lambda line: None).run(study, lambda s: None)
    rows = study_rows(storage, "search")
    assert [(r["key"], r["status"]) for r in rows] == [(over.key, "skipped"), (SMOKE_POINTS[0].key, "failed"),
                                                       (SMOKE_POINTS[1].key, "failed")]
    assert "over budget before training" in rows[0]["reason"] and rows[0]["precheck"]["onchip_bytes"] > BUDGET
    assert not (tmp_path / "search" / "trials" / f"{over.key}-{SMOKE.tag}").exists()
    # A third counted trial: the sampler draws a new point (no seed left).
    Worker(spec, storage, settings, tmp_path, target=3, log=lambda line: None).run(study, lambda s: None)
    rows = study_rows(storage, "search")
    assert sum(r["status"] in ("complete", "failed") for r in rows) == 3
    assert all(r["status"] in ("failed", "skipped", "duplicate") for r in rows[3:])
    # A point drawn again after it failed fails again at once, with the first failure's reason.
    study.enqueue_trial(SMOKE_POINTS[0].to_dict())
    Worker(spec, storage, settings, tmp_path, target=4, log=lambda line: None).run(study, lambda s: None)
    again = study_rows(storage, "search")[-1]
    assert again["status"] == "failed" and again["reason"].startswith("the same point as trial 1, which failed: ")
    assert (tmp_path / "search" / "trials" / f"{SMOKE_POINTS[0].key}-{SMOKE.tag}" / "log.txt").read_text().count("$ ") == 1


def test_stem_and_activation_bits_extend_a_point_without_renaming_the_old_ones():
    """The FPGA study's two new fields: at their defaults a point keeps the key, flags and label it had
    before them (so studies recorded earlier keep their trials); otherwise they reach the stages' flags and
    the FPGA estimator's bit widths."""
    from explore.measure import bit_widths
    from explore.space import DEFAULT_ACT_BITS, DEFAULT_STEM
    from model.squeezenet import small_image_config
    from quantize.layers import QuantSettings

    assert DEFAULT_ACT_BITS == QuantSettings().act_bits and DEFAULT_STEM == small_image_config().stem_channels
    old = DesignPoint(16, 16, 0.25, 0.5, "simple", 4)
    assert old.key == "e16+16-sr0.25-p0.5-simple-w4" and old.qat_flags() == ["--weight-bits", "4"]
    assert not any("stem" in flag for flag in old.train_flags())
    assert DesignPoint.from_dict({k: v for k, v in old.to_dict().items() if k not in ("stem_channels", "act_bits")}) == old
    new = DesignPoint(16, 16, 0.25, 0.5, "simple", 4, stem_channels=32, act_bits=5)
    assert new.key == "e16+16-sr0.25-p0.5-simple-w4-s32-a5" and "stem=32 act 5-bit" in new.label
    assert new.train_flags()[-1] == "--set=stem_channels=32"
    assert new.qat_flags()[-4:] == ["--act-bits", "5", "--classifier-act-bits", "8"] and new.bits().logit_bits == 8
    assert new.config().stem_channels == 32 and DesignPoint.from_dict(new.to_dict()) == new
    assert (new.bits().act_bits, new.bits().weight("features.3.squeeze"), new.bits().weight("features.0")) == (5, 4, 8)
    measured = bit_widths(QuantSettings(weight_bits=3, act_bits=5))  # what explore.measure reads from a checkpoint
    assert (measured.act_bits, measured.weight("features.3.squeeze"), measured.weight("classifier.1")) == (5, 3, 8)


def test_per_layer_precision_mixes_reach_quantize_and_the_estimator():
    """Lever 5's mixes, resolved on each point's own layers: the flags a trial gives quantize build a twin
    whose widths (what explore.measure reads back after training) are the estimator's bit widths (what the
    precheck planned). The committed pynq_z2 model is one point of the FPGA space."""
    import shlex

    import quantize.layers
    from explore.measure import bit_widths
    from explore.report import full_recipe_commands
    from explore.space import ACT_MIXES, FPGA_SEEDS, FPGA_SPACE, WEIGHT_MIXES, WEIGHT_SCALES
    from model.checkpoint import load_checkpoint
    from model.squeezenet import SqueezeNetConfig
    from quantize.layers import QuantSettings, build_quant_model
    from quantize.qat import build_parser, quant_settings_from_args

    assert FPGA_SPACE["act_mix"] == tuple(ACT_MIXES) and FPGA_SPACE["weight_mix"] == tuple(WEIGHT_MIXES)
    committed = FPGA_SEEDS[-2]
    ckpt = load_checkpoint(str(ROOT / "quantize/checkpoints/pynq_z2.pt"))
    assert committed.config() == SqueezeNetConfig.from_dict(ckpt["config"])
    assert committed.bits() == bit_widths(QuantSettings.from_dict(ckpt["quant"]))
    assert committed.key.endswith("-s32-a5-act-entry8-ws-mse") and committed.label.endswith("mse weight scales")

    def settings(point):
        qs = quant_settings_from_args(build_parser().parse_args(["--checkpoint", "x", *point.qat_flags()]))
        build_quant_model(point.config(), qs)  # quantize refuses a pattern that names no layer
        return qs

    assert settings(committed) == QuantSettings.from_dict(ckpt["quant"])
    mixed = DesignPoint(16, 16, 0.5, 0.5, "none", 4, 32, 5, "entry8", "expand3x3-3")
    qs, bits = settings(mixed), mixed.bits()
    assert bit_widths(qs) == bits
    # bypass=none has no bypass sums: that half of the mix is left out; the 3x3 expands alone take 3 bits
    assert qs.act_overrides == {"features.4.squeeze_activation": 8}
    assert [bits.weight(n) for n in ("features.0", "features.4.squeeze", "features.12.expand3x3", "classifier.1")] \
        == [8, 4, 3, 8]
    assert (bits.act("features.4.squeeze_activation"), bits.act("features.4.expand_activation")) == (8, 5)
    # A mix that gives the point's own widths adds no flag; the records keep their mixes.
    assert DesignPoint(16, 16, 0.5, 0.5, "simple", 3, 32, 8, "entry8", "expand3x3-3").qat_flags() == ["--weight-bits", "3"]
    assert DesignPoint.from_dict(mixed.to_dict()) == mixed and mixed.key.endswith("-act-entry8-wq-expand3x3-3")
    with pytest.raises(UserError, match="unknown activation mix 'wide'"):
        DesignPoint(act_mix="wide")
    # The weight scales (quantize --weight-scale): "max" is quantize's default and adds nothing.
    mse = DesignPoint(16, 16, 0.5, 0.5, "simple", 4, 32, 5, weight_scale="mse")
    assert settings(mse).weight_scale == "mse" and mse.key.endswith("-a5-ws-mse") and DesignPoint.from_dict(
        mse.to_dict()) == mse and "--weight-scale" not in DesignPoint().qat_flags()
    assert FPGA_SPACE["weight_scale"] == WEIGHT_SCALES == quantize.layers.WEIGHT_SCALES
    assert QuantSettings().weight_scale == WEIGHT_SCALES[0]
    # The full recipe quotes the patterns for the shell.
    command = full_recipe_commands({**mixed.to_dict(), "fpga_part": "xc7z020clg400-1"}, ROOT)[1]
    assert "features.*.expand3x3=3" in shlex.split(command) and command.count("--override") == 3


def test_a_point_with_narrow_activations_is_measured_for_the_fpga_and_has_no_pi_pick():
    """TFLite int8 holds 8-bit activations only. A trained FPGA-study point at 5 bits (here the committed
    pynq_z2 model, the FPGA space's seed) gets its FPGA figures and no TFLite ones, with the reason; the
    report prints "-" for them and never makes it the Pi pick. Before, its measure step failed after the
    training, so no such point could finish."""
    from explore.measure import measure
    from explore.report import _row_line, describe_pick
    from explore.space import FPGA_SEEDS
    from explore.trial import record_fields

    point = FPGA_SEEDS[-2]
    measured = measure(str(ROOT / "quantize/checkpoints/pynq_z2.pt"), None, "fashion-mnist", "xc7z020clg400-1",
                       0.8, 100.0, 20, BUDGET, None, with_band=True)
    assert measured["tflite"]["skipped"].startswith("TFLite int8 holds 8-bit activations only")
    assert measured["fpga"]["fits"] and measured["fpga"]["images_per_second"] >= 2000
    quant = {"top1": 0.921, "float_top1": 0.9275, "samples": 10_000, "weight_storage_bytes": 24_500}
    fields = record_fields(point, quant, measured, {}, {})
    assert fields["tflite_bytes"] is None and not fields["tflite_within_budget"] and fields["tflite_skipped"]
    r = {**fields, "trial": 0, "label": point.label, "status": "complete"}
    assert _row_line(r).endswith("| - |") and "| - | yes |" in _row_line(r)
    assert pi_pick([r], BUDGET) is None and fpga_pick([r], BUDGET)["key"] == point.key
    text = "\n".join(describe_pick("FPGA pick", r, "the most accurate"))
    assert "no int8 TFLite (TFLite int8 holds" in text and "ai-edge-litert" not in text
    assert "activation mix entry8: features.4.squeeze_activation=8, features.*.bypass_quant=8" in text
    assert "--act-override 'features.*.bypass_quant=8'" in text  # the full recipe, quoted for the shell


@pytest.mark.slow
def test_fpga_search_skips_what_misses_the_part_or_the_speed_floor_before_training(tmp_path):
    """The FPGA study's hard constraint: a point is trained only if it fits the part with the calibration
    band included and reaches the study's images/s, both from the estimate before any training. The
    figures are the ones `python -m fpga.design --fit-with-band` gives (RESULTS, "Toward issue 26")."""
    from explore.space import FPGA_SEEDS

    committed_a8, committed_a4 = FPGA_SEEDS[0], FPGA_SEEDS[2]
    too_wide = DesignPoint(32, 32, 0.75, 0.75, "simple", 4, stem_channels=48, act_bits=8)
    spec = StudySpec("fpga", "search", SMOKE, space=STUDIES["fpga"].space, seeds=(too_wide, committed_a8, committed_a4),
                     skip_over_budget=True, fpga_min_fps=7000.0)  # the first pynq_z2 network at act 8 misses it
    assert spec.fit_with_band and STUDIES["fpga"].fit_with_band and not STUDIES["budget"].fit_with_band
    storage = open_storage(f"sqlite:///{tmp_path / 'explore.db'}")
    study = load_or_create(spec, storage)
    settings = Settings(data_dir=str(tmp_path / "no-such-data"))
    Worker(spec, storage, settings, tmp_path, target=1, log=lambda line: None).run(study, lambda s: None)
    rows = study_rows(storage, "fpga")
    assert [(r["key"], r["status"]) for r in rows] == [(too_wide.key, "skipped"), (committed_a8.key, "skipped"),
                                                       (committed_a4.key, "failed")]
    assert rows[0]["reason"].startswith("does not fit xc7z020clg400-1 with the calibration band before training")
    # (1,762 with its multipliers in LUTs; the study plans as python -m fpga does, with the DSPs bound)
    assert rows[1]["reason"] == ("under 7,000 images/s before training: 6,494 estimated on xc7z020clg400-1 "
                                 "with the calibration band")
    assert rows[2]["precheck"]["fpga"]["fits_with_band"] and rows[2]["precheck"]["fpga"]["images_per_second"] > 6000
    assert "float training failed" in rows[2]["reason"]  # trained (no data here), so it passed the constraint
    log = (tmp_path / "fpga" / "trials" / f"{committed_a4.key}-{SMOKE.tag}" / "log.txt").read_text()
    assert "--set=base_e=16" in log and not (tmp_path / "fpga" / "trials" / f"{too_wide.key}-{SMOKE.tag}").exists()


@pytest.mark.parametrize("module", ["explore", "explore.measure", "explore.cost"])
def test_entry_points_explain_themselves(module):
    r = run_module(module, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and len(r.stdout) > 500


def test_progress_line_says_when_a_point_does_not_fit_the_part():
    from explore.__main__ import progress_line

    row = {"status": "complete", "trial": 3, "top1": 0.725, "onchip_bytes": 126740, "label": "p",
           "fpga_fits": False, "fpga_part": "xc7z020clg400-1", "fpga_images_per_second": 0.0, "seconds": 192}
    line = progress_line(STUDIES["paper"], [row], 9, time.time())
    assert "1/9 done" in line and "does not fit xc7z020clg400-1" in line and "0 img/s" not in line
    row.update(fpga_fits=True, fpga_images_per_second=6141.2)
    assert "6,141 img/s" in progress_line(STUDIES["paper"], [row], 9, time.time())


def test_ctrl_c_waits_for_a_safe_point_and_stops_the_running_stage(tmp_path):
    """SIGINT during a database write only sets a flag (raised at the next check); during a stage it is passed
    on to the stage's process, and run_stage raises KeyboardInterrupt once that process has stopped."""
    import threading

    from explore.trial import INTERRUPT, run_stage

    before = signal.getsignal(signal.SIGINT)
    with INTERRUPT.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # e.g. Optuna writing to SQLite: not torn by the signal
        with pytest.raises(KeyboardInterrupt):
            INTERRUPT.check()
        INTERRUPT.check()  # consumed: no second raise

        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.time()
        with pytest.raises(KeyboardInterrupt):
            run_stage("sleep", "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(60)"], tmp_path / "log.txt")
        assert time.time() - started < 30
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
