"""Latency of every runtime on the same images: `make bench`.

For each backend, one image at a time (batch 1, as a camera feeds the Pi), single thread and all threads:
median and p90 latency per image, throughput (images/s over the run) and the speed-up over torch fp32 at the
same thread count. Backends: torch fp32, Brevitas (fake-quant, what QAT trains), onnxruntime fp32 and QCDQ,
the int8 TFLite under ai-edge-litert and under tflite-runtime 2.14 (its own venv). Reads the artifacts
`python -m export` wrote; writes bench.json beside them and prints the table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import contract
from contract import UserError, read_json, write_json
from model.data import load_dataset
from model.evaluate import load_float_model
from model.inference import to_input
from quantize.qat import load_quant_model

from . import tflite_run
from .build import DEFAULT_TFLITE_RUNTIME_PYTHON
from .onnx_export import ort_session
from .tflite_check import pixel_lookup_table, tflite_inputs


def summarize(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "images_per_s": round(float(len(ms) / (ms.sum() / 1e3)), 1)}


def time_calls(fn, inputs) -> list[float]:
    fn(inputs[0])  # warm-up: first calls allocate and pick kernels
    seconds = []
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        seconds.append(time.perf_counter() - t)
    return seconds


def torch_backend(model, x: torch.Tensor, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    model.eval()
    with torch.inference_mode():
        return time_calls(model, [x[i:i + 1] for i in range(len(x))])


def ort_backend(path: Path, x: np.ndarray, threads: int) -> list[float]:
    session = ort_session(path, threads=threads)
    name = session.get_inputs()[0].name
    return time_calls(lambda xi: session.run(None, {name: xi}), [x[i:i + 1] for i in range(len(x))])


def tflite_runtime_backend(python: str, tflite: Path, x_int8: np.ndarray, threads: int) -> list[float]:
    script = Path(__file__).with_name("tflite_run.py")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "in.npy", x_int8)
        proc = subprocess.run([python, str(script), str(tflite), str(Path(tmp) / "in.npy"),
                               str(Path(tmp) / "out.npy"), "--runtime", "tflite_runtime", "--time",
                               "--threads", str(threads)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"tflite-runtime benchmark failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        return np.load(Path(tmp) / "out.npy").tolist()


def run_bench(export_dir: Path, images: int, tflite_runtime_python: str | None, data_dir: str | None) -> dict:
    report = read_json(export_dir / "report.json")
    floats = load_float_model(report["float_checkpoint"])
    qm = load_quant_model(report["checkpoint"])
    norm = qm.normalization
    test = load_dataset(report["dataset"], "test", data_dir, norm.input_size, norm.channels)
    pick = test.subset(np.arange(min(images, len(test))))
    x_float = to_input(torch.from_numpy(pick.images), floats.normalization)
    x_quant = to_input(torch.from_numpy(pick.images), norm)
    x_int8 = tflite_inputs(pick.images, pixel_lookup_table(qm.model, norm))
    tflite = export_dir / contract.TFLITE_NAME
    all_threads = os.cpu_count() or 1
    results = []
    for threads in sorted({1, all_threads}):
        backends = {
            "torch fp32": lambda: torch_backend(floats.model, x_float, threads),
            "brevitas fake-quant": lambda: torch_backend(qm.model, x_quant, threads),
            "onnxruntime fp32": lambda: ort_backend(export_dir / "squeezenet_float.onnx", x_float.numpy(), threads),
            "onnxruntime qcdq": lambda: ort_backend(export_dir / "squeezenet_qcdq.onnx", x_quant.numpy(), threads),
            "tflite int8 ai-edge-litert": lambda: tflite_run.time_invocations(
                tflite_run.load(tflite, threads=threads, runtime="ai_edge_litert"), x_int8),
        }
        if tflite_runtime_python:
            backends["tflite int8 tflite-runtime"] = lambda: tflite_runtime_backend(
                tflite_runtime_python, tflite, x_int8, threads)
        for name, timed in backends.items():
            print(f"[bench] {name}, {threads} thread(s)", file=sys.stderr, flush=True)
            results.append({"backend": name, "threads": threads, **summarize(timed())})
    for row in results:
        base = next(r for r in results if r["backend"] == "torch fp32" and r["threads"] == row["threads"])
        # 3 significant digits: a backend 200x slower than torch must not round to 0.00
        row["speedup_vs_torch_fp32"] = float(f"{base['median_ms'] / row['median_ms']:.3g}")
    return {"images": len(pick), "batch": 1, "cpu_count": all_threads, "torch": torch.__version__,
            "export_report_sha256": report.get("checkpoint_sha256"), "results": results}


def table(bench: dict) -> str:
    lines = [f"{'backend':<28} {'threads':>7} {'median ms':>10} {'p90 ms':>8} {'img/s':>8} {'x torch fp32':>12}"]
    for r in bench["results"]:
        lines.append(f"{r['backend']:<28} {r['threads']:>7} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f} "
                     f"{r['images_per_s']:>8.1f} {r['speedup_vs_torch_fp32']:>12.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", default=contract.stage_dir("export"), help="what `python -m export` wrote")
    p.add_argument("--images", type=int, default=300, help="test images timed per backend (default 300)")
    p.add_argument("--tflite-runtime-python", default=DEFAULT_TFLITE_RUNTIME_PYTHON,
                   help="python of the tflite-runtime venv, or 'none' to skip it")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    export_dir = Path(args.export_dir)
    for needed in ("report.json", contract.TFLITE_NAME, contract.TFLITE_METADATA_NAME, "squeezenet_float.onnx", "squeezenet_qcdq.onnx"):
        if not (export_dir / needed).is_file():
            raise UserError(f"{export_dir / needed} is missing: run `make export` first")
    if args.images < 1:
        raise UserError("--images must be at least 1")
    python = None if args.tflite_runtime_python == "none" else args.tflite_runtime_python
    if python and not Path(python).exists():
        raise UserError(f"{python} not found: run `make setup` or pass --tflite-runtime-python none")
    bench = run_bench(export_dir, args.images, python, args.data_dir)
    write_json(export_dir / "bench.json", bench)
    print(table(bench))
    print(f"bench: {export_dir / 'bench.json'}")
    return 0


if __name__ == "__main__":
    from contract import run_cli

    run_cli(main)
