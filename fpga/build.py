"""``make fpga`` / ``python -m fpga``: quantized SqueezeNet -> hls4ml Vitis HLS project, verified.

A build is a list of named steps (FINN's pattern), each timed in the report:

  export_qonnx   Brevitas -> QONNX (the export stage's code)
  prepare        qonnx cleanup, channels-last, the hls4ml layout passes (cached by QONNX hash)
  convert        hls4ml ModelGraph with exact precisions (input from its quantizer, widened average pool)
  compile        write the project and compile the C simulation with g++ (skipped when unchanged)
  storage        on-chip weight storage from the hls4ml model, BRAM estimate, budget verdict
  csim           C simulation on test images in worker processes, compared with the Brevitas model
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from export.qonnx_export import export_qonnx
from model.artifacts import UserError, run_cli, sha256_of, write_json
from model.data import DATASETS, load_dataset
from model.squeezenet import plain
from model.training import to_input
from quantize.qat import DEFAULT_QUANT, load_quant_model
from quantize.storage import BUDGET_BYTES, storage_table

from .csim import run_csim
from .graph import FixedPoint, prepare_for_hls4ml, quant_fixed_point, round_half_up_layers
from .storage import hls_storage_table

TESTBENCH_IMAGES = 10
PARTS_BRAM18K = {"xc7z020clg400-1": 280, "xc7z010clg400-1": 120, "xczu3eg-sbva484-1-i": 432,
                 "xck26-sfvc784-2lv-c": 288}


@dataclass
class FpgaConfig:
    """Every knob of the build; stored next to the project as fpga_config.json."""

    checkpoint: str = DEFAULT_QUANT
    out: str = "artifacts/fpga"
    part: str = "xc7z020clg400-1"
    clock_mhz: float = 100.0
    reuse_factor: int = 1
    strategy: str = "Latency"
    io_type: str = "io_stream"
    budget_bytes: int = BUDGET_BYTES
    samples: int = 1000  # 0: all test images
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    workers: int = 0  # 0: one per core

    def validate(self) -> None:
        if self.strategy not in ("Latency", "Resource"):
            raise UserError(f"strategy must be Latency or Resource, got {self.strategy!r}")
        if self.reuse_factor < 1 or self.clock_mhz <= 0 or self.samples < 0 or self.budget_bytes <= 0:
            raise UserError("reuse factor, clock, budget must be positive and samples >= 0")


@dataclass
class BuildState:
    cfg: FpgaConfig
    out: Path
    timings: dict[str, float] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    quant = None
    qonnx_path: Path | None = None
    hls_onnx: Path | None = None
    hls_model = None


def _quiet():
    """hls4ml prints every layer it parses; keep the tool's own output readable."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def step_export_qonnx(st: BuildState) -> None:
    st.quant = load_quant_model(st.cfg.checkpoint)
    norm = st.quant.normalization
    st.qonnx_path = export_qonnx(st.quant.model, (norm.channels, norm.input_size, norm.input_size),
                                 st.out / "squeezenet.qonnx.onnx")


def step_prepare(st: BuildState) -> None:
    digest = sha256_of(st.qonnx_path)[:16]
    cached = st.out / "cache" / f"hls_ready-{digest}.onnx"
    if not cached.is_file():
        shutil.rmtree(cached.parent, ignore_errors=True)
        with _quiet():
            prepare_for_hls4ml(st.qonnx_path, cached)
    st.hls_onnx = cached


def hls_config(model, cfg: FpgaConfig) -> dict:
    """hls4ml's per-layer config with the two exactness fixes."""
    import hls4ml

    hc = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis",
                                                    default_precision="fixed<16,6>",
                                                    default_reuse_factor=cfg.reuse_factor)
    hc["Model"]["Strategy"] = cfg.strategy
    # 1. The default input type fixed<16,6> would round before the input quantizer: feed the quantizer's
    #    own grid (the FPGA receives the int8 codes a camera pipeline produces).
    graph_in = model.graph.input[0].name
    first = model.find_consumer(graph_in)
    if first is None or first.op_type != "Quant":
        raise UserError("the QONNX graph does not start with an input quantizer")
    hc["LayerName"][graph_in]["Precision"]["result"] = quant_fixed_point(model, first).hls()
    # 2. The average pool's 'auto' precision truncates the division by H*W; give it enough fractional bits
    #    that truncation can never cross a rounding tie of the output quantizer.
    for node in model.graph.node:
        if node.op_type != "GlobalAveragePool":
            continue
        grid_in = quant_fixed_point(model, model.find_producer(node.input[0]))
        _, _, h, w = model.get_tensor_shape(node.input[0])
        after = _next_quant(model, node)
        extra = math.ceil(math.log2(h * w)) + 3
        frac = max(grid_in.frac, after.frac if after else grid_in.frac) + extra
        integer = grid_in.integer + math.ceil(math.log2(h * w)) + 1
        wide = FixedPoint(integer + frac, frac, True).hls()
        hc["LayerName"].setdefault(node.name, {})["Precision"] = {"result": wide, "accum": wide}
    return hc


def _next_quant(model, node):
    while node is not None:
        consumer = model.find_consumer(node.output[0])
        if consumer is None or consumer.op_type == "Quant":
            return quant_fixed_point(model, consumer) if consumer is not None else None
        node = consumer
    return None


def step_convert(st: BuildState) -> None:
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(st.hls_onnx))
    # Test-bench data for Vitis HLS's own C simulation / co-simulation: real test images and the
    # outputs the Brevitas model gives for them.
    x_q, expected, _ = reference_io(st, TESTBENCH_IMAGES)
    tb_in, tb_out = st.out / "tb_input.npy", st.out / "tb_output.npy"
    np.save(tb_in, x_q.reshape(len(x_q), -1))
    np.save(tb_out, expected)
    with _quiet():
        hc = hls_config(model, st.cfg)
        st.hls_model = hls4ml.converters.convert_from_onnx_model(
            model, output_dir=str(st.out / "hls_project"), io_type=st.cfg.io_type, backend="Vitis",
            hls_config=hc, part=st.cfg.part, clock_period=round(1000.0 / st.cfg.clock_mhz, 3),
            input_data_tb=str(tb_in), output_data_tb=str(tb_out))
        round_half_up_layers(model, st.hls_model)
    st.report["hls_config"] = {"part": st.cfg.part, "clock_mhz": st.cfg.clock_mhz,
                               "reuse_factor": st.cfg.reuse_factor, "strategy": st.cfg.strategy,
                               "io_type": st.cfg.io_type,
                               "input_precision": hc["LayerName"][model.graph.input[0].name]["Precision"]["result"]}


def _project_key(st: BuildState) -> str:
    key = {"onnx": sha256_of(st.hls_onnx), "part": st.cfg.part, "clock": st.cfg.clock_mhz,
           "rf": st.cfg.reuse_factor, "strategy": st.cfg.strategy, "io": st.cfg.io_type}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _library(project: Path) -> Path | None:
    libs = sorted((project / "firmware").glob("myproject-*.so"), key=lambda p: p.stat().st_mtime)
    return libs[-1] if libs else None


def step_compile(st: BuildState) -> None:
    project = st.out / "hls_project"
    stamp = project / ".build_key"
    key = _project_key(st)
    if stamp.is_file() and stamp.read_text() == key and _library(project):
        st.report["compile_cached"] = True
        return
    shutil.rmtree(project, ignore_errors=True)
    with _quiet():
        st.hls_model.compile()  # writes the project, then g++ builds the C simulation library
    if _library(project) is None:
        raise UserError(f"hls4ml did not produce a C simulation library in {project}/firmware")
    stamp.write_text(key)
    st.report["compile_cached"] = False


def step_storage(st: BuildState) -> None:
    table = hls_storage_table(st.hls_model, st.cfg.budget_bytes, PARTS_BRAM18K.get(st.cfg.part))
    quant_table = storage_table(st.quant.model, st.cfg.budget_bytes)
    st.report.update(table.to_dict())
    st.report["quantize_storage_bytes"] = quant_table.total_bytes
    st.report["storage_agrees_with_quantize"] = table.weight_storage_bytes == quant_table.total_bytes
    (st.out / "storage.txt").write_text(table.format() + "\n")
    print(table.format())


def reference_io(st: BuildState, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` test images as the FPGA receives them (the input quantizer's grid, NHWC), the
    Brevitas model's logits for them, and their labels."""
    cfg, qm = st.cfg, st.quant
    norm = qm.normalization
    test = load_dataset(cfg.dataset, "test", cfg.data_dir, norm.input_size, norm.channels)
    n = len(test) if n == 0 else min(n, len(test))
    with torch.no_grad():
        x = to_input(torch.from_numpy(test.images[:n]), norm)
        expected = plain(qm.model(x)).numpy().astype(np.float64)
        x_q = plain(qm.model.input_quant(x)).permute(0, 2, 3, 1).contiguous().numpy()
    return x_q, expected, test.labels[:n]


def step_csim(st: BuildState) -> None:
    cfg = st.cfg
    x_q, expected, labels = reference_io(st, cfg.samples)
    n = len(labels)
    got, seconds = run_csim(_library(st.out / "hls_project"), x_q, expected.shape[1],
                            workers=cfg.workers or None)
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    st.report.update({
        "csim_samples": int(n), "csim_top1_agreement": agree,
        "csim_max_abs_diff": float(np.abs(got - expected).max()),
        "csim_exact_outputs": float((got == expected).all(axis=1).mean()),
        "accuracy_csim": float((got.argmax(1) == labels).mean()),
        "accuracy_brevitas": float((expected.argmax(1) == labels).mean()),
        "csim_seconds": round(seconds, 2), "csim_images_per_second": round(n / seconds, 2),
    })
    np.save(st.out / "csim_outputs.npy", got)


STEPS = [("export_qonnx", step_export_qonnx), ("prepare", step_prepare), ("convert", step_convert),
         ("compile", step_compile), ("storage", step_storage), ("csim", step_csim)]


def build(cfg: FpgaConfig, skip: tuple[str, ...] = ()) -> dict:
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    st = BuildState(cfg, out)
    t_all = time.time()
    for name, step in STEPS:
        if name in skip:
            continue
        t0 = time.time()
        print(f"[fpga] {name} ...", flush=True)
        step(st)
        st.timings[name] = round(time.time() - t0, 2)
        print(f"[fpga] {name} done in {st.timings[name]:.1f} s", flush=True)
    st.report.update({"checkpoint": cfg.checkpoint, "checkpoint_sha256": sha256_of(cfg.checkpoint),
                      "step_seconds": st.timings,
                      "total_seconds": round(time.time() - t_all, 2), "config": asdict(cfg),
                      "hls_project": str(out / "hls_project")})
    write_json(out / "fpga_config.json", asdict(cfg))
    write_json(out / "report.json", st.report)
    return st.report


def build_parser() -> argparse.ArgumentParser:
    d = FpgaConfig()
    p = argparse.ArgumentParser(prog="python -m fpga", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=d.checkpoint, help=f"quantized checkpoint (default {d.checkpoint})")
    p.add_argument("--out", default=d.out, help=f"output directory (default {d.out})")
    p.add_argument("--part", default=os.environ.get("FPGA_PART", d.part), help="FPGA part ($FPGA_PART)")
    p.add_argument("--clock-mhz", type=float, default=d.clock_mhz)
    p.add_argument("--reuse-factor", type=int, default=d.reuse_factor)
    p.add_argument("--strategy", choices=("Latency", "Resource"), default=d.strategy)
    p.add_argument("--budget-bytes", type=int, default=int(os.environ.get("BUDGET_BYTES", d.budget_bytes)))
    p.add_argument("--samples", default=str(d.samples), help="test images for the C simulation, or 'all'")
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--workers", type=int, default=0, help="C simulation processes (0: one per core)")
    p.add_argument("--no-csim", action="store_true", help="generate and check storage only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples == "all":
        samples = 0
    else:
        try:
            samples = int(args.samples)
        except ValueError:
            raise UserError(f"--samples must be a number or 'all', got {args.samples!r}") from None
    cfg = FpgaConfig(checkpoint=args.checkpoint, out=args.out, part=args.part, clock_mhz=args.clock_mhz,
                     reuse_factor=args.reuse_factor, strategy=args.strategy, budget_bytes=args.budget_bytes,
                     samples=samples, dataset=args.dataset, data_dir=args.data_dir, workers=args.workers)
    report = build(cfg, skip=("csim",) if args.no_csim else ())
    if "csim_samples" in report:
        print(f"C simulation on {report['csim_samples']:,} images: top-1 agreement "
              f"{report['csim_top1_agreement']:.4f}, max |logit diff| {report['csim_max_abs_diff']:g}, "
              f"accuracy {report['accuracy_csim']:.4f} ({report['csim_images_per_second']:.1f} images/s)")
    print(f"HLS project: {report['hls_project']}  report: {Path(cfg.out) / 'report.json'}")
    if not report["within_budget"]:
        raise UserError(f"on-chip weight storage {report['weight_storage_bytes']:,} bytes exceeds the budget of "
                        f"{report['budget_bytes']:,} bytes by {report['weight_storage_bytes'] - report['budget_bytes']:,}")
    return 0


if __name__ == "__main__":
    run_cli(main)
