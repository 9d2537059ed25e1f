"""The int8 TFLite model checked as the Pi will run it: the pixel -> int8 table the Pi applies, the run under
ai-edge-litert (and tflite-runtime) against the Brevitas model, and the metadata JSON the Pi reads."""
from __future__ import annotations

import base64
import json
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import contract
from contract import UserError, atomic_path, sha256_of
from contract.tflite_model import Kernels, metadata_document, read_metadata
from model.inference import to_input
from quantize.agreement import compare

from . import tflite_run
from .steps import file_facts

if TYPE_CHECKING:
    from .build import ExportConfig

KNOWN_ANSWERS = 10  # test images recorded in the metadata for the Pi's known-answer health check


@torch.no_grad()
def pixel_lookup_table(model, norm) -> np.ndarray:
    """(C, 256) int8: the input code the quantized model gives each 8-bit pixel value of each channel,
    computed with the training normalisation and the model's own input quantizer (nothing re-typed)."""
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).repeat(1, norm.channels, 1, 1)
    codes = model.input_quant(to_input(ramp, norm)).int()
    return codes.view(norm.channels, 256).numpy().astype(np.int8)


def tflite_inputs(images_u8: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 images -> (N, H, W, C) int8 codes, through the lookup table: the step the Pi's
    preprocessing takes with the table the metadata carries (tests/test_export.py holds the two equal)."""
    codes = lut[np.arange(lut.shape[0]).reshape(1, -1, 1, 1), images_u8]
    return np.ascontiguousarray(codes.transpose(0, 2, 3, 1), dtype=np.int8)


def dequantize(raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 outputs -> float32 logits, as Brevitas computes them (float32), so the comparison is bit for bit."""
    return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def known_answers(images_u8: np.ndarray, raw: np.ndarray, labels: np.ndarray, classes: list,
                  count: int = KNOWN_ANSWERS) -> dict:
    """A few test images (model-sized uint8 pixels, HWC, RGB order) and the label the exported TFLite model
    gives each, for the Pi's health check (rpi/runtime/health.py replays them). One image per predicted label first
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
    """The Pi's metadata for ``tflite_path``, in the format contract.tflite_model defines."""
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


def tflite_step(cfg: ExportConfig, qm, test, brevitas_out: np.ndarray, stage: Path, out: Path) -> dict:
    """Convert, check full-integer, run under ai-edge-litert (and tflite-runtime), write the Pi's .json."""
    from .tflite_build import convert_to_tflite

    norm = qm.normalization
    tflite = convert_to_tflite(qm.model, (norm.channels, norm.input_size, norm.input_size), stage / contract.TFLITE_NAME)
    facts = check_tflite_is_integer(tflite_run.load(tflite, runtime="ai_edge_litert", delegates=False))
    interp = tflite_run.load(tflite, threads=1, runtime="ai_edge_litert", delegates=cfg.xnnpack)
    lut = pixel_lookup_table(qm.model, norm)
    x_int8 = tflite_inputs(test.images, lut)
    raw = tflite_run.run(interp, x_int8)
    out_details = interp.get_output_details()[0]
    kernels = Kernels.of(interp, "ai_edge_litert", () if cfg.xnnpack else ("XNNPACK turned off by --no-xnnpack",))
    entry = {**file_facts(tflite, out / contract.TFLITE_NAME), "parent": "brevitas", "runtime": "ai_edge_litert",
             **compare(dequantize(raw, *out_details["quantization"]), brevitas_out, test.labels),
             "kernels": kernels.describe(), "machine": platform.machine(),
             "ops": facts["ops"], "tensor_types": facts["tensor_types"], "budget_bytes": cfg.budget_bytes}
    # What the Pi checks its own kernels against: the comparison above, and the kernels that made it.
    exactness = {key: entry[key] for key in ("parent", "samples", "top1_agreement", "max_abs_diff", "machine")}
    exactness["kernels"] = kernels.to_json()
    entry["within_budget"] = entry["bytes"] <= cfg.budget_bytes
    entry["top1_agreement_tflite_runtime"] = None
    if cfg.tflite_runtime_python:
        raw_rt = run_tflite_runtime(cfg.tflite_runtime_python, tflite, x_int8)
        other = compare(dequantize(raw_rt, *out_details["quantization"]), brevitas_out, test.labels)
        entry.update({"top1_tflite_runtime": other["top1"],
                      "top1_agreement_tflite_runtime": other["top1_agreement"],
                      "max_abs_diff_tflite_runtime": other["max_abs_diff"],
                      "tflite_runtime_rows_equal_to_ai_edge_litert": round(float((raw_rt == raw).all(1).mean()), 6)})
    with atomic_path(stage / contract.TFLITE_METADATA_NAME) as tmp:
        answers = known_answers(test.images, raw, test.labels, list(qm.classes))
        tmp.write_text(json.dumps(tflite_metadata(tflite, qm, lut, answers, exactness), indent=1) + "\n")
        check_metadata(tmp)
    return entry


def check_metadata(path: Path) -> None:
    """Read the metadata back as the Pi will (contract.tflite_model.read_metadata): what the export writes, the Pi reads."""
    try:
        read_metadata(path)
    except UserError as exc:
        raise UserError(f"the Pi could not read the metadata written: {exc}") from None
