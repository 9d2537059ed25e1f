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
                          (rpi.model.Kernels, one definition)
  report.json             per artifact: path, bytes, sha256, top-1, top-1 agreement with its parent and
                          max |output difference| on the test images

By default the export runs on the data the quantized checkpoint was trained on and pairs it with the float
checkpoint it was trained from (both recorded in the checkpoint). Every check is a gate: the QCDQ ONNX, the
QONNX and the int8 TFLite under ai-edge-litert must equal the Brevitas model on every output, the float ONNX
the float model within FLOAT_TOLERANCE; otherwise the export fails with the figures and the first differing
image, and publishes nothing (--allow-mismatch reports and publishes, for investigation). tflite-runtime's
figures are reported, not gated (its reference kernels round some ties differently; see the README).
--no-xnnpack measures and gates the int8 TFLite model under ai-edge-litert's built-in kernels instead of
XNNPACK (what the Pi app's --no-xnnpack runs); they round ties differently, so the gate usually fails: it is
for investigation, with --allow-mismatch.
The artifacts are built in a staging directory and moved into --out only when every step succeeded.

The TFLite model is measured under ai-edge-litert (in this process) and under tflite-runtime 2.14 (which
needs numpy < 2, so it runs in its own venv, --tflite-runtime-python).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.artifacts import UserError, atomic_path, sha256_of, write_json
from model.data import DATASETS, load_checkpoint_data
from model.evaluate import load_float_model
from model.squeezenet import plain
from model.training import to_input
from quantize.qat import float_parent, load_quant_model
from rpi import contract
from rpi.contract import BUDGET_BYTES
from rpi.errors import RpiError
from rpi.model import Kernels, metadata_document, read_metadata
from rpi.preprocess import dequantize, lookup

from . import tflite_run
from .onnx_export import export_float_onnx, export_qcdq_onnx, ort_session, run_ort
from .qonnx_export import export_qonnx
from .steps import Step, run_steps

TFLITE_NAME = contract.TFLITE_NAME
METADATA_NAME = contract.TFLITE_METADATA_NAME
DEFAULT_TFLITE_RUNTIME_PYTHON = ".venv-tflite-runtime/bin/python"
KNOWN_ANSWERS = 10  # test images recorded in the metadata for the Pi's known-answer health check
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


def compare(outputs: np.ndarray, parent: np.ndarray, labels: np.ndarray, tolerance: float = 0.0) -> dict:
    """Top-1 of ``outputs`` and how far they are from the parent's on the same images; ``exact``: every
    output within ``tolerance`` of the parent's, else the first image that is not."""
    diff = np.abs(outputs.astype(np.float64) - parent)
    off = np.flatnonzero((diff > tolerance).any(axis=1))
    facts = {"samples": int(len(outputs)),
             "top1": round(float((outputs.argmax(1) == labels).mean()), 6),
             "top1_agreement": round(float((outputs.argmax(1) == parent.argmax(1)).mean()), 6),
             "max_abs_diff": float(diff.max()), "tolerance": tolerance, "exact": not len(off),
             "rows_off": int(len(off))}
    if len(off):
        i = int(off[0])
        facts["first_mismatch"] = {"index": i, "top1": int(outputs[i].argmax()), "parent_top1": int(parent[i].argmax()),
                                   "max_abs_diff": float(diff[i].max())}
    return facts


def mismatch_line(name: str, entry: dict) -> str:
    """One artifact's failed exactness check, in words."""
    first = entry["first_mismatch"]
    runtime = f"{entry['runtime']} with {entry['kernels']}" if "kernels" in entry else entry["runtime"]
    return (f"{name} differs from {entry['parent']} ({runtime}) on {entry['rows_off']} of {entry['samples']} "
            f"images (top-1 agreement {entry['top1_agreement']:.4f}, max |diff| {entry['max_abs_diff']:.3g}, "
            f"tolerance {entry['tolerance']:g}); first: test image {first['index']} (class {first['top1']} vs "
            f"{first['parent_top1']}, max |diff| {first['max_abs_diff']:.3g})")


def file_facts(path: Path, published: Path | None = None) -> dict:
    """Size and hash of ``path``; its ``path`` in the report is where it is published (``published``)."""
    return {"path": str(published or path), "bytes": path.stat().st_size, "sha256": sha256_of(path)}


@torch.no_grad()
def torch_logits(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    model.eval()
    return np.concatenate([plain(model(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


# --- the Pi's view of the input -----------------------------------------------------------------------

@torch.no_grad()
def pixel_lookup_table(model, norm) -> np.ndarray:
    """(C, 256) int8: the input code the quantized model gives each 8-bit pixel value of each channel,
    computed with the training normalisation and the model's own input quantizer (nothing re-typed)."""
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).repeat(1, norm.channels, 1, 1)
    codes = model.input_quant(to_input(ramp, norm)).int()
    return codes.view(norm.channels, 256).numpy().astype(np.int8)


def tflite_inputs(images_u8: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 images -> (N, H, W, C) int8 codes, through the lookup table (the Pi's own step)."""
    return lookup(lut, images_u8)


def known_answers(images_u8: np.ndarray, raw: np.ndarray, labels: np.ndarray, classes: list,
                  count: int = KNOWN_ANSWERS) -> dict:
    """A few test images (model-sized uint8 pixels, HWC, RGB order) and the label the exported TFLite model
    gives each, for the Pi's health check (rpi/health.py replays them). One image per predicted label first
    (a model stuck on one label must fail), each the one with the widest gap between the top two int8
    outputs (a runtime that rounds a tie one step differently, tflite-runtime, still agrees), among the
    correctly classified images when there are enough."""
    ranked = np.sort(raw.astype(np.int32), axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    predicted = raw.argmax(1)
    pool = np.flatnonzero(predicted == labels)
    pool = pool if len(pool) >= count else np.arange(len(raw))
    by_margin = pool[np.argsort(-margin[pool], kind="stable")]
    first_per_label = {}
    for i in by_margin:
        first_per_label.setdefault(int(predicted[i]), int(i))
    picks = list(first_per_label.values())[:count]
    picks += [int(i) for i in by_margin if int(i) not in picks][:count - len(picks)]
    chosen = np.sort(np.asarray(picks, dtype=np.int64))
    return {"layout": "HWC", "order": "rgb", "dtype": "uint8", "chosen_by": "widest top-2 output gap",
            "images": [{"test_index": int(i), "label": classes[int(predicted[i])], "index": int(predicted[i]),
                        "true_label": classes[int(labels[i])], "margin_steps": int(margin[i]),
                        "pixels": base64.b64encode(images_u8[i].transpose(1, 2, 0).tobytes()).decode()}
                       for i in chosen]}


def tflite_metadata(tflite_path: Path, qm, lut: np.ndarray, answers: dict, exactness: dict) -> dict:
    """The Pi's metadata for ``tflite_path``, in the format rpi.model defines (metadata_document)."""
    interp = tflite_run.load(tflite_path, runtime="ai_edge_litert")
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    _, h, w, c = (int(v) for v in inp["shape"])
    norm = qm.normalization
    return metadata_document(
        model_file=tflite_path.name, model_sha256=sha256_of(tflite_path), labels=list(qm.classes),
        height=h, width=w, channels=c, input_dtype=np.dtype(inp["dtype"]).name,
        input_scale=inp["quantization"][0], input_zero_point=inp["quantization"][1],
        mean=norm.mean, std=norm.std, lut=lut, output_dtype=np.dtype(out["dtype"]).name,
        output_scale=out["quantization"][0], output_zero_point=out["quantization"][1],
        known_answers=answers, exactness=exactness)


def check_tflite_is_integer(interp) -> dict:
    """Full-integer: no Flex / custom ops, no float tensor on the compute path."""
    facts = tflite_run.describe(interp)
    foreign = [op for op in facts["ops"] if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]
    floats = [t for t in facts["tensor_types"] if t.startswith("float")]
    if foreign or floats or "DEQUANTIZE" in facts["ops"] or "QUANTIZE" in facts["ops"]:
        raise UserError(f"the TFLite model is not full-integer: ops {facts['ops']}, tensor types "
                        f"{facts['tensor_types']}")
    return facts


def run_tflite_runtime(python: str, tflite: Path, x: np.ndarray) -> np.ndarray:
    """The raw outputs of ``tflite`` under tflite-runtime, run by ``python`` in its own environment."""
    script = Path(__file__).with_name("tflite_run.py")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "in.npy", x)
        proc = subprocess.run([python, str(script), str(tflite), str(Path(tmp) / "in.npy"),
                               str(Path(tmp) / "out.npy"), "--runtime", "tflite_runtime"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"tflite-runtime run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        return np.load(Path(tmp) / "out.npy")


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

    out = Path(cfg.out)
    qm, floats, float_path = load_pair(cfg)
    check_tflite_exactness(qm.config)  # refuse before any work
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
        write_json(out / "report.json", report)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for line in failures:
        log(f"warning (--allow-mismatch): {line}")
    return report


ARTIFACTS = ("float_onnx", "qcdq_onnx", "qonnx", "tflite")


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
    st.report["tflite_metadata"] = str(st.out / METADATA_NAME)


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


def tflite_step(cfg: ExportConfig, qm, test, brevitas_out: np.ndarray, stage: Path, out: Path) -> dict:
    """Convert, check full-integer, run under ai-edge-litert (and tflite-runtime), write the Pi's .json."""
    from .tflite_build import convert_to_tflite

    norm = qm.normalization
    tflite = convert_to_tflite(qm.model, (norm.channels, norm.input_size, norm.input_size), stage / TFLITE_NAME)
    facts = check_tflite_is_integer(tflite_run.load(tflite, runtime="ai_edge_litert", delegates=False))
    interp = tflite_run.load(tflite, threads=1, runtime="ai_edge_litert", delegates=cfg.xnnpack)
    lut = pixel_lookup_table(qm.model, norm)
    x_int8 = tflite_inputs(test.images, lut)
    raw = tflite_run.run(interp, x_int8)
    out_details = interp.get_output_details()[0]
    kernels = Kernels.of(interp, "ai_edge_litert", () if cfg.xnnpack else ("XNNPACK turned off by --no-xnnpack",))
    entry = {**file_facts(tflite, out / TFLITE_NAME), "parent": "brevitas", "runtime": "ai_edge_litert",
             **compare(dequantize(raw, *out_details["quantization"], dtype=np.float32), brevitas_out, test.labels),
             "kernels": kernels.describe(), "machine": platform.machine(),
             "ops": facts["ops"], "tensor_types": facts["tensor_types"], "budget_bytes": cfg.budget_bytes}
    # What the Pi checks its own kernels against: the comparison above, and the kernels that made it.
    exactness = {key: entry[key] for key in ("parent", "samples", "top1_agreement", "max_abs_diff", "machine")}
    exactness["kernels"] = kernels.to_json()
    entry["within_budget"] = entry["bytes"] <= cfg.budget_bytes
    entry["top1_agreement_tflite_runtime"] = None
    if cfg.tflite_runtime_python:
        raw_rt = run_tflite_runtime(cfg.tflite_runtime_python, tflite, x_int8)
        other = compare(dequantize(raw_rt, *out_details["quantization"], dtype=np.float32), brevitas_out, test.labels)
        entry.update({"top1_tflite_runtime": other["top1"],
                      "top1_agreement_tflite_runtime": other["top1_agreement"],
                      "max_abs_diff_tflite_runtime": other["max_abs_diff"],
                      "tflite_runtime_rows_equal_to_ai_edge_litert": round(float((raw_rt == raw).all(1).mean()), 6)})
    with atomic_path(stage / METADATA_NAME) as tmp:
        answers = known_answers(test.images, raw, test.labels, list(qm.classes))
        tmp.write_text(json.dumps(tflite_metadata(tflite, qm, lut, answers, exactness), indent=1) + "\n")
        check_metadata(tmp)
    return entry


def check_metadata(path: Path) -> None:
    """Read the metadata back as the Pi will (rpi.model.read_metadata): what the export writes, the Pi reads."""
    try:
        read_metadata(path)
    except RpiError as exc:
        raise UserError(f"the Pi could not read the metadata written: {exc}") from None


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
    report = export_all(cfg, log=lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True))
    print("\n".join(summary_lines(report)))
    print(f"report: {Path(cfg.out) / 'report.json'}")
    if not report["tflite"]["within_budget"]:
        raise UserError(f"the TFLite model is {report['tflite']['bytes']:,} bytes, over the budget of "
                        f"{cfg.budget_bytes:,}")
    return 0
