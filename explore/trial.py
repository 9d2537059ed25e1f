"""One trial = one design point, evaluated by the project's own stages, each in its own process:

1. ``python -m model.train`` (the proxy schedule's float training, ``--set`` for the point's metaparameters);
2. ``python -m quantize`` (short QAT at the point's weight bits, then its own test evaluation: float and
   quantized top-1 on the test set, the on-chip storage table);
3. ``python -m explore.measure`` (parameters, MACs, on-chip bytes, FPGA estimate, int8 TFLite size and
   latency).

Every step writes under ``<trial dir>`` (one directory per point and schedule) and is skipped when its
output is already there, so a trial interrupted in its QAT resumes from the float checkpoint, and a stage
interrupted mid-run resumes from its ``last.pt`` (``--resume``). A stage that exits non-zero fails the
trial with the stage's own error line as the reason.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .space import DesignPoint, Schedule

ROOT = Path(__file__).resolve().parents[1]


class TrialFailed(Exception):
    """A design point that could not be evaluated; the message is the reason recorded in the study."""


@dataclass
class Settings:
    """Where and how trials run (the same for every trial of a run)."""

    data_dir: str | None = None
    dataset: str = "fashion-mnist"
    device: str = "auto"
    part: str = "xc7z020clg400-1"
    resource_share: float = 0.8
    clock_mhz: float = 100.0
    budget_bytes: int = 524_288
    threads: int = 0  # torch CPU threads of the training steps (0: torch's default)
    fit_with_band: bool = False  # the FPGA figures plan with the calibration band (fpga --fit-with-band)


def precheck(point: DesignPoint, settings: Settings, fpga: bool = False) -> dict:
    """What a point costs before any training, in this process: the builder's verdict (ConfigError ->
    TrialFailed), the on-chip bytes of its quantized twin (the quantize stage's calculator) and its
    parameters. Milliseconds to a second. With ``fpga``, also its FPGA design point on ``settings.part``
    (``explore.measure.fpga_figures``, the figures measure gives the trained point: they depend on the
    network and its bit widths only), a few seconds more."""
    from model.squeezenet import ConfigError
    from quantize.layers import QuantSettings, build_quant_model
    from quantize.qat import DEFAULT_OVERRIDES
    from quantize.storage import storage_table

    try:
        config = point.config()
    except ConfigError as exc:
        raise TrialFailed(f"the builder rejects this point: {exc}") from None
    twin = build_quant_model(config, QuantSettings(point.weight_bits, overrides=dict(DEFAULT_OVERRIDES)))
    table = storage_table(twin, settings.budget_bytes)
    result = {"onchip_bytes": table.total_bytes, "params": sum(layer.weights + layer.biases for layer in table.layers),
              "within_budget": table.within_budget}
    if fpga:
        from .measure import fpga_figures

        figures = fpga_figures(config, point.bits(), settings.part, settings.resource_share, settings.clock_mhz,
                               with_band=settings.fit_with_band)
        result["fpga"] = {k: figures[k] for k in ("fits", "fits_with_band", "images_per_second", "why_not")}
    return result


class DeferredInterrupt:
    """Ctrl-C that never tears a study write in half. While installed, SIGINT only sets a flag and is passed
    on to the running stage (which stops and exits 130; a second Ctrl-C kills it). The worker raises
    KeyboardInterrupt at safe points: when a stage ends and between trials, never inside Optuna's database
    writes (a run once hung 120 s after Ctrl-C; the likely cause, inferred and not observed, is a SQLite
    transaction torn mid-write that kept the lock the heartbeat thread then waited on)."""

    def __init__(self) -> None:
        self.requested = False
        self.child: subprocess.Popen | None = None

    def _handle(self, signum, frame) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT if not self.requested else signal.SIGKILL)
        self.requested = True

    def check(self) -> None:
        """Raise KeyboardInterrupt here if Ctrl-C came since the last check."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        previous = signal.signal(signal.SIGINT, self._handle)
        self.requested = False
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


INTERRUPT = DeferredInterrupt()


def run_stage(name: str, module: str, args: list[str], log: Path) -> tuple[float, float]:
    """``python -m module args`` with its output in ``log``; returns its wall and CPU seconds (user + system
    of the stage's process: a figure the other jobs on a shared machine inflate far less than the wall
    time); raises TrialFailed, or KeyboardInterrupt after a Ctrl-C."""
    INTERRUPT.check()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    t, cpu = time.time(), _children_cpu()
    with open(log, "a") as f:
        f.write(f"$ python -m {module} {' '.join(args)}\n")
        f.flush()
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=f, stderr=subprocess.STDOUT,
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
        INTERRUPT.child = proc
        if INTERRUPT.requested:  # Ctrl-C came while the stage was starting
            proc.send_signal(signal.SIGINT)
        try:
            returncode = proc.wait()
        except BaseException:  # without the deferred handler (a library caller): stop the stage, pass it on
            proc.kill()
            proc.wait()
            raise
        finally:
            INTERRUPT.child = None
    if INTERRUPT.requested or returncode in (130, -2):
        INTERRUPT.requested = False  # the stage got the user's Ctrl-C: the trial is interrupted, not failed
        raise KeyboardInterrupt
    if returncode != 0:
        raise TrialFailed(f"{name} failed (exit status {returncode}): {last_error_line(log)}")
    return time.time() - t, _children_cpu() - cpu


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def last_error_line(log: Path) -> str:
    """The stage's own ``error:`` line, or its last non-empty line (a traceback's exception)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:500]


def evaluate(point: DesignPoint, schedule: Schedule, settings: Settings, trial_dir: Path,
             on_step=lambda step: None) -> dict:
    """Run the stages a point still lacks and return every figure of it (see ``record_fields``)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    log = trial_dir / "log.txt"
    data = ["--data-dir", settings.data_dir] if settings.data_dir else []
    device = ["--device", settings.device] + (["--threads", str(settings.threads)] if settings.threads else [])
    seconds = {}
    float_ckpt = trial_dir / "float" / "model.pt"
    if not float_ckpt.is_file():
        on_step("float training")
        seconds["float"] = run_stage("float training", "model.train", [
            *point.train_flags(), *schedule.float_flags(), *data, *device, "--no-eval", "--resume",
            "--out", str(trial_dir / "float")], log)
    quant_ckpt, quant_report = trial_dir / "quant" / "model.pt", trial_dir / "quant" / "report.json"
    if not (quant_ckpt.is_file() and quant_report.is_file()):
        on_step("QAT")
        seconds["qat"] = run_stage("QAT", "quantize", [
            "--checkpoint", str(float_ckpt), *point.qat_flags(), *schedule.quant_flags(), *data, *device,
            "--resume", "--budget-bytes", str(settings.budget_bytes), "--out", str(trial_dir / "quant")], log)
    measured = trial_dir / "measure.json"
    if not measured.is_file():
        on_step("measure")
        seconds["measure"] = run_stage("measure", "explore.measure", [
            "--checkpoint", str(quant_ckpt), "--out", str(measured), *data, "--part", settings.part,
            "--resource-share", str(settings.resource_share), "--clock-mhz", str(settings.clock_mhz),
            *(["--fit-with-band"] if settings.fit_with_band else []),
            "--latency-images", str(schedule.latency_images), "--budget-bytes", str(settings.budget_bytes),
            "--keep-tflite", str(trial_dir)], log)
    return record_fields(point, json.loads(quant_report.read_text()), json.loads(measured.read_text()),
                         float_run(float_ckpt), seconds)


def float_run(checkpoint: Path) -> dict:
    """What the float run logged in its checkpoint's meta: device, seconds, last validation accuracy."""
    from model.checkpoint import load_checkpoint

    meta = load_checkpoint(checkpoint).get("meta", {})
    return {"train_seconds": meta.get("train_seconds"), "device": meta.get("device"),
            "val_acc": (meta.get("history") or [{}])[-1].get("val_acc")}


def record_fields(point: DesignPoint, quant: dict, measured: dict, float_run: dict, seconds: dict) -> dict:
    """The flat record of a finished point: what points.jsonl and the study's user attributes hold."""
    fpga, tflite = measured["fpga"], measured["tflite"]
    return {
        **point.to_dict(), "key": point.key,
        "top1": quant["top1"], "float_top1": quant["float_top1"], "test_images": quant["samples"],
        "params": measured["params"], "macs": measured["macs"],
        "onchip_bytes": measured["onchip_bytes"], "budget_bytes": measured["budget_bytes"],
        "within_budget": measured["onchip_bytes"] <= measured["budget_bytes"],
        "onchip_bytes_quantize_report": quant["weight_storage_bytes"],
        "fpga_part": fpga["part"], "fpga_fits": fpga["fits"], "fpga_images_per_second": fpga["images_per_second"],
        "fpga_fits_with_band": fpga.get("fits_with_band"), "fpga_fit_criterion": fpga.get("fit_criterion", "estimate"),
        "fpga_resources": fpga["resources"], "fpga_bottleneck": fpga["bottleneck"], "fpga_why_not": fpga["why_not"],
        "fpga_share_allowed": fpga["share_allowed"],
        # None where the int8 TFLite cannot hold the point (tflite_skipped says why)
        "tflite_bytes": tflite.get("bytes"),
        "tflite_within_budget": "bytes" in tflite and tflite["bytes"] <= measured["budget_bytes"],
        "tflite_median_ms": tflite.get("median_ms"), "tflite_p90_ms": tflite.get("p90_ms"),
        "tflite_agreement": tflite.get("top1_agreement_with_brevitas"), "tflite_skipped": tflite.get("skipped"),
        "float_val_acc": float_run.get("val_acc"), "device": float_run.get("device"),
        "stage_seconds": {k: round(v[0], 1) for k, v in seconds.items()},
        "stage_cpu_seconds": {k: round(v[1], 1) for k, v in seconds.items()},
    }
