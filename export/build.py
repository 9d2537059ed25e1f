"""Export the trained SqueezeNet for deployment and check every artifact against the model it came from.

Writes under --out (default artifacts/export):
  squeezenet_float.onnx   the float model (onnx.checker, onnxruntime)       parent: float PyTorch model
  squeezenet_qcdq.onnx    QuantizeLinear/Clip/DequantizeLinear ONNX          parent: Brevitas model
  squeezenet.qonnx.onnx   QONNX (Quant nodes), the fpga stage's input        parent: Brevitas model
  squeezenet_int8.tflite  full-integer int8 TFLite for the Raspberry Pi      parent: Brevitas model
  squeezenet_int8.json    what the Pi needs to feed it: input size, channels, normalisation and the
                          pixel -> int8 code table, output quantization, labels; a few test images
                          with the label this model gives each (the Pi's known-answer health check);
                          and ``exactness``: how the TFLite model compared with the Brevitas model
                          here, under which runtime, on which machine and with which kernels (XNNPACK
                          or built-in, per operator), which the Pi's app compares with its own
                          (contract.tflite_model.Kernels, one definition)
  report.json             per artifact: path, bytes, sha256, top-1, top-1 agreement with its parent and
                          max |output difference| on the test images

By default the export runs on the data the quantized checkpoint was trained on and pairs it with the float
checkpoint it was trained from (both recorded in the checkpoint). Every check is a gate: the QCDQ ONNX, the
QONNX and the int8 TFLite under ai-edge-litert must equal the Brevitas model on every output, the float ONNX
the float model within FLOAT_TOLERANCE; otherwise the export fails with the figures and the first differing
image, and publishes nothing (--allow-mismatch reports and publishes, for investigation). tflite-runtime's
figures are reported, not gated (its reference kernels round some ties differently; see docs/export.md).
--no-xnnpack measures and gates the int8 TFLite model under ai-edge-litert's built-in kernels instead of
XNNPACK (what the Pi app's --no-xnnpack runs); they round ties differently, so the gate usually fails: it is
for investigation, with --allow-mismatch.
The artifacts are built in a staging directory and moved into --out only when every step succeeded.

The TFLite model is measured under ai-edge-litert (in this process) and under tflite-runtime 2.14 (which
needs numpy < 2, so it runs in its own venv, --tflite-runtime-python).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import contract
from contract import BUDGET_BYTES, UserError, sha256_of, write_json
from model.data import DATASETS, load_checkpoint_data
from model.evaluate import load_float_model
from model.inference import to_input
from model.squeezenet import plain
from quantize.agreement import compare, mismatch_line
from quantize.qat import float_parent, load_quant_model

from .onnx_export import export_float_onnx, export_qcdq_onnx, ort_session, run_ort
from .qonnx_export import export_qonnx
from .steps import Step, file_facts, run_steps
from .tflite_check import (
    tflite_step,
)

DEFAULT_TFLITE_RUNTIME_PYTHON = ".venv-tflite-runtime/bin/python"
FLOAT_TOLERANCE = 1e-3  # float ONNX vs float PyTorch: different kernels sum in other orders (measured 1.7e-5)


@dataclass
class ExportConfig:
    checkpoint: str = contract.QUANT_CHECKPOINT
    float_checkpoint: str | None = None  # None: the float parent the quantized checkpoint records
    out: str = contract.stage_dir("export")
    dataset: str | None = None  # None (and data_dir None): the data the quantized checkpoint was trained on
    data_dir: str | None = None
    samples: int = 0  # 0: the whole test set
    qonnx_samples: int = 0
    tflite_runtime_python: str | None = DEFAULT_TFLITE_RUNTIME_PYTHON
    budget_bytes: int = BUDGET_BYTES
    allow_mismatch: bool = False
    xnnpack: bool = True  # False: the TFLite gate runs ai-edge-litert's built-in kernels (--no-xnnpack)


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    model.eval()
    return np.concatenate([plain(model(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


# --- the Pi's view of the input -----------------------------------------------------------------------


# --- the build ----------------------------------------------------------------------------------------

def load_pair(cfg: ExportConfig):
    """The quantized model and its float parent (the one it records, or --float-checkpoint), checked to
    take the same images and predict the same classes."""
    qm = load_quant_model(cfg.checkpoint)
    float_path = cfg.float_checkpoint or float_parent(qm.payload, cfg.checkpoint)
    floats = load_float_model(float_path)
    fn, qn = floats.normalization, qm.normalization
    if (fn.channels, fn.input_size) != (qn.channels, qn.input_size) or list(floats.classes) != list(qm.classes):
        raise UserError(f"{float_path} ({len(floats.classes)} classes of {fn.channels}x{fn.input_size}x{fn.input_size}) "
                        f"is not the float model of {cfg.checkpoint} ({len(qm.classes)} classes of {qn.channels}x"
                        f"{qn.input_size}x{qn.input_size}); pass its own parent with --float-checkpoint")
    return qm, floats, float_path


def export_all(cfg: ExportConfig, log=print) -> dict:
    """Build, run and check every artifact in a staging directory; publish them into ``cfg.out`` (and
    write report.json) only when every step and every exactness gate passed (or --allow-mismatch)."""
    from model.exactness import check_tflite_exactness

    from .tflite_build import tflite_refusal

    out = Path(cfg.out)
    qm, floats, float_path = load_pair(cfg)
    why = tflite_refusal(qm.model)  # refuse before any work
    if why:
        raise UserError(why)
    check_tflite_exactness(qm.config)
    # Data first: a data set that does not fit the model, or a damaged file, fails before the slow steps.
    test, dataset, data_dir = load_checkpoint_data(qm.payload, cfg.checkpoint, "test", cfg.dataset, cfg.data_dir)
    if cfg.samples:
        test = test.subset(np.arange(min(cfg.samples, len(test))))
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        report = build_all(cfg, qm, floats, float_path, test, dataset, data_dir, stage, out, log)
        failures = [mismatch_line(Path(report[k]["path"]).name, report[k]) for k in ARTIFACTS if not report[k]["exact"]]
        report["exact"], report["allow_mismatch"] = not failures, cfg.allow_mismatch
        if failures and not cfg.allow_mismatch:
            raise UserError("not exact, nothing published: " + "; ".join(failures)
                            + " (--allow-mismatch publishes and reports without failing)")
        for path in sorted(stage.iterdir()):
            os.replace(path, out / path.name)
        report["made_from"] = contract.made_from(*freshness_key(cfg))
        write_json(out / "report.json", report)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for line in failures:
        log(f"warning (--allow-mismatch): {line}")
    return report


ARTIFACTS = ("float_onnx", "qcdq_onnx", "qonnx", "tflite")


def freshness_key(cfg: ExportConfig) -> tuple[dict, dict]:
    """(input files by role, settings) that decide what the export writes: ``make`` re-exports when they or
    the code the export ran (``contract.made_from``) changed. The data set and the float parent are the ones
    the export resolves (a flag that names the checkpoint's own data changes nothing); the byte budget is
    not in it: it changes a verdict, not a file, and every target that uses the export checks it again."""
    from model.checkpoint import load_checkpoint
    from model.data import checkpoint_data, resolve_data

    payload = load_checkpoint(cfg.checkpoint)
    kind, data_dir = resolve_data(checkpoint_data(payload), cfg.dataset, cfg.data_dir, cfg.checkpoint)
    settings = {"dataset": kind, "data_dir": os.path.abspath(data_dir),
                **{name: getattr(cfg, name) for name in ("samples", "qonnx_samples", "tflite_runtime_python",
                                                         "allow_mismatch", "xnnpack")}}
    parent = cfg.float_checkpoint or float_parent(payload, cfg.checkpoint)
    return {"checkpoint": cfg.checkpoint, "float checkpoint": parent}, settings


def why_stale(cfg: ExportConfig) -> str | None:
    """None when ``cfg.out`` holds an export that these settings, inputs and the current code would write."""
    report = Path(cfg.out) / "report.json"
    if not report.is_file():
        return "it has no report"
    try:
        record = json.loads(report.read_text()).get("made_from")
    except (ValueError, AttributeError):
        record = None
    try:
        key = freshness_key(cfg)
    except UserError:
        return "its inputs cannot be read"  # the export itself says why, in its one error line
    return contract.why_stale(record, *key)


@dataclass
class ExportState:
    """What the export steps share: the models, the test images as each parent takes them, where the files go
    (``stage``, published into ``out`` when every gate passed), the report."""

    cfg: ExportConfig
    stage: Path
    out: Path
    floats: object
    qm: object
    shape: tuple
    test: object
    x_quant: torch.Tensor
    x_float: torch.Tensor
    report: dict
    parents: dict = field(default_factory=dict)  # parent name -> its outputs on the test images

    def checked(self, path: Path, outputs: np.ndarray, parent: str, runtime: str) -> dict:
        labels = self.test.labels
        reference = self.parents[parent][:len(outputs)]
        tolerance = FLOAT_TOLERANCE if parent == "float_torch" else 0.0
        return {**file_facts(path, self.out / path.name), "parent": parent, "runtime": runtime,
                **compare(outputs, reference, labels[:len(outputs)], tolerance)}


def step_reference(st: ExportState) -> None:
    st.parents = {"float_torch": torch_logits(st.floats.model, st.x_float),
                  "brevitas": torch_logits(st.qm.model, st.x_quant)}
    st.report["parents"] = {k: {"top1": round(float((v.argmax(1) == st.test.labels).mean()), 6)}
                            for k, v in st.parents.items()}


def step_float_onnx(st: ExportState) -> None:
    path = export_float_onnx(st.floats.model, st.shape, st.stage / "squeezenet_float.onnx")
    st.report["float_onnx"] = st.checked(path, run_ort(ort_session(path), st.x_float.numpy()), "float_torch",
                                         "onnxruntime")


def step_qcdq_onnx(st: ExportState) -> None:
    path = export_qcdq_onnx(st.qm.model, st.shape, st.stage / "squeezenet_qcdq.onnx")
    # onnxruntime at its basic optimization level runs the QDQ graph as written (see ort_session)
    got = run_ort(ort_session(path, graph_semantics=True), st.x_quant.numpy())
    st.report["qcdq_onnx"] = st.checked(path, got, "brevitas", "onnxruntime (basic graph optimizations)")


def step_qonnx(st: ExportState) -> None:
    path = export_qonnx(st.qm.model, st.shape, st.stage / "squeezenet.qonnx.onnx")
    n = min(len(st.test), st.cfg.qonnx_samples) if st.cfg.qonnx_samples else len(st.test)
    st.report["qonnx"] = st.checked(path, run_qonnx(path, st.x_quant[:n].numpy()), "brevitas",
                                    "qonnx.core.onnx_exec")


def step_tflite(st: ExportState) -> None:
    st.report["tflite"] = tflite_step(st.cfg, st.qm, st.test, st.parents["brevitas"], st.stage, st.out)
    st.report["tflite_metadata"] = str(st.out / contract.TFLITE_METADATA_NAME)


STEPS = [Step("reference", step_reference, "reference outputs (float PyTorch, Brevitas)"),
         Step("float_onnx", step_float_onnx, "float ONNX"), Step("qcdq_onnx", step_qcdq_onnx, "QCDQ ONNX"),
         Step("qonnx", step_qonnx, "QONNX"), Step("tflite", step_tflite, "int8 TFLite")]


def build_all(cfg: ExportConfig, qm, floats, float_path: str, test, dataset: str, data_dir: str, stage: Path,
              out: Path, log) -> dict:
    norm = qm.normalization
    report: dict = {"checkpoint": cfg.checkpoint, "checkpoint_sha256": sha256_of(cfg.checkpoint),
                    "float_checkpoint": float_path, "dataset": dataset, "data_dir": str(data_dir),
                    "samples": len(test)}
    st = ExportState(cfg, stage, out, floats, qm, (norm.channels, norm.input_size, norm.input_size), test,
                     x_quant=to_input(torch.from_numpy(test.images), norm),
                     x_float=to_input(torch.from_numpy(test.images), floats.normalization), report=report)
    report["seconds"] = run_steps(STEPS, st, log=log, digits=1)
    return report


def run_qonnx(path: Path, x: np.ndarray, batch: int = 250) -> np.ndarray:
    """Execute the QONNX graph node by node with qonnx's reference executor (Quant nodes in numpy)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    base = cleanup_model(ModelWrapper(str(path)))
    name_in, name_out = base.graph.input[0].name, base.graph.output[0].name
    from model.progress import progress as progress_bar

    outs, models = [], {}
    for start in progress_bar(range(0, len(x), batch), desc="QONNX executor", unit="batch", leave=False, disable=None):
        chunk = x[start:start + batch]
        if len(chunk) not in models:
            models[len(chunk)] = base.transform(ChangeBatchSize(len(chunk))).transform(InferShapes())
        outs.append(execute_onnx(models[len(chunk)], {name_in: chunk})[name_out])
    return np.concatenate(outs).reshape(len(x), -1)


def summary_lines(report: dict) -> list[str]:
    lines = [f"{'artifact':<11} {'bytes':>9} {'top-1':>7} {'agree':>7} {'max|diff|':>9}  parent / runtime"]
    for key in ("float_onnx", "qcdq_onnx", "qonnx", "tflite"):
        e = report[key]
        lines.append(f"{key:<11} {e['bytes']:>9,} {e['top1']:>7.4f} {e['top1_agreement']:>7.4f} "
                     f"{e['max_abs_diff']:>9.3g}  {e['parent']} / {e['runtime']} ({e['samples']:,} images)")
    e = report["tflite"]
    if e.get("top1_agreement_tflite_runtime") is not None:
        lines.append(f"{'tflite':<11} {'':>9} {e['top1_tflite_runtime']:>7.4f} "
                     f"{e['top1_agreement_tflite_runtime']:>7.4f} {e['max_abs_diff_tflite_runtime']:>9.3g}  "
                     f"brevitas / tflite_runtime 2.14")
    return lines


def build_parser() -> argparse.ArgumentParser:
    d = ExportConfig()
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=d.checkpoint, help=f"quantized checkpoint (default {d.checkpoint})")
    p.add_argument("--float-checkpoint", default=d.float_checkpoint,
                   help="float checkpoint (default: the float parent the quantized checkpoint records)")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="data set to compare on (default: the one the quantized checkpoint was trained on)")
    p.add_argument("--data-dir", default=d.data_dir, help="data set directory (default: the checkpoint's, else "
                                                          "$DATA_DIR or the Debian path)")
    p.add_argument("--samples", type=int, default=d.samples, help="test images to compare on (default 0: all)")
    p.add_argument("--qonnx-samples", type=int, default=d.qonnx_samples,
                   help="test images for the (slow, reference) QONNX executor (default: as --samples)")
    p.add_argument("--tflite-runtime-python", default=d.tflite_runtime_python,
                   help="python of the tflite-runtime 2.14 venv, or 'none' to skip that runtime "
                        f"(default {d.tflite_runtime_python})")
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"default: $BUDGET_BYTES or {d.budget_bytes:,} (0.5 MiB)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="publish and report artifacts that are not exact with their parent instead of failing "
                        "(for investigation)")
    p.add_argument("--no-xnnpack", action="store_true",
                   help="measure and gate the int8 TFLite model under ai-edge-litert's built-in kernels instead of "
                        "XNNPACK, as the Pi app's --no-xnnpack runs it; they round ties differently, so the gate "
                        "usually fails (for investigation, with --allow-mismatch)")
    p.add_argument("--is-fresh", action="store_true",
                   help="only check whether --out holds what these options, their checkpoints and the current "
                        "code would export: exit 0 if so, 1 (and why) if not; make runs this first")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("samples", "qonnx_samples"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    for path in (args.checkpoint, args.float_checkpoint):
        if path and not Path(path).is_file():
            raise UserError(f"{path}: no such checkpoint")
    tflite_python = None if args.tflite_runtime_python == "none" else args.tflite_runtime_python
    if tflite_python and not Path(tflite_python).exists():
        raise UserError(f"{tflite_python} not found: create the tflite-runtime environment with 'make setup', or "
                        f"pass --tflite-runtime-python none")
    cfg = ExportConfig(checkpoint=args.checkpoint, float_checkpoint=args.float_checkpoint, out=args.out,
                       dataset=args.dataset, data_dir=args.data_dir, samples=args.samples,
                       qonnx_samples=args.qonnx_samples,
                       tflite_runtime_python=tflite_python, budget_bytes=contract.budget_bytes(args.budget_bytes),
                       allow_mismatch=args.allow_mismatch, xnnpack=not args.no_xnnpack)
    if args.is_fresh:
        reason = why_stale(cfg)
        if reason:
            print(f"{cfg.out} is out of date ({reason}): exporting", flush=True)
        return 1 if reason else 0
    report = export_all(cfg, log=lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True))
    print("\n".join(summary_lines(report)))
    print(f"report: {Path(cfg.out) / 'report.json'}")
    if not report["tflite"]["within_budget"]:
        raise UserError(f"the TFLite model is {report['tflite']['bytes']:,} bytes, over the budget of "
                        f"{cfg.budget_bytes:,}")
    return 0
