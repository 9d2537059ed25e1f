"""``make fpga`` / ``python -m fpga``: quantized SqueezeNet -> a folded hls4ml Vitis HLS project for an FPGA
part, with resource and throughput estimates, FIFO depths from a dataflow simulation, and a bit-exact C
simulation.

A build is a list of named steps (FINN's pattern), each timed in the report:

  export_qonnx   Brevitas -> QONNX (the export stage's code)
  prepare        qonnx cleanup, channels-last, the hls4ml layout passes, ReLUs folded into their
                 unsigned quantizers (cached by QONNX hash)
  probe          a first hls4ml conversion: the pipeline's stages, shapes and precisions
  plan           folding: a reuse factor per conv (Strategy Resource, weights in block RAM), the fastest
                 plan within RESOURCE_SHARE of the part, or the cheapest for TARGET_FPS
  fifo_sizing    dataflow simulation of the planned pipeline: FIFO depths that neither stall nor
                 deadlock (re-plans when the sized FIFOs change the fit)
  convert        the hls4ml model with the plan and the depths, exactness fixes, bypass quantizers
                 folded into their adds
  compile        write the project (FIFO storage bound as estimated) and compile the C simulation
  estimate       per-layer estimate of the generated design, checked against firmware/parameters.h;
                 table (estimate.txt), chart (layers.png), fit against the part
  storage        on-chip weight storage from the hls4ml model, budget verdict
  csim           C simulation on test images in worker processes, compared with the Brevitas model

The test images are read and checked against the checkpoint (its recorded data set by default) before the
first step. The C simulation is a gate: an output that differs from the Brevitas model fails the stage with
the figures and the first differing image (--allow-mismatch reports without failing).

Estimates are analytic (fpga/estimate.py names the source of every formula), not synthesis results.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from contract import UserError, sha256_of, write_json
from export.qonnx_export import export_qonnx
from export.steps import Step, run_steps
from model.data import load_checkpoint_data
from model.inference import to_input
from model.squeezenet import plain
from quantize.agreement import compare
from quantize.qat import load_quant_model
from quantize.storage import storage_table

from .config import FpgaConfig
from .csim import run_csim
from .design import fold_and_size
from .devices import resolve_device
from .estimate import estimate
from .graph import (
    PREPARE_VERSION,
    fold_quant_into_add,
    one_by_one_convs_as_conv2d,
    prepare_for_hls4ml,
    round_half_up_layers,
)
from .hls_config import hls_config, quiet
from .pipeline import pipeline_from_config, pipeline_from_hls_model
from .project import DSP_PRODUCT, bind_fifo_storage, bind_multipliers_to_dsp, read_dense_configs
from .report import format_estimate, plot_estimate
from .storage import hls_storage_table

TESTBENCH_IMAGES = 10
FALLBACK_FPS = 2000.0  # when no plan fits the part: the plan built instead, for the report and the C-sim


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
    device = None
    pipeline = None  # from the probe conversion
    test = None  # the C simulation's test images, read before the first step
    reuse_factors: dict | None = None  # conv stage name -> RF
    dsp_layers: frozenset = frozenset()  # convs whose multipliers the plan binds to DSP48s (--multipliers dsp)
    depths: dict | None = None  # stream key -> FIFO depth
    sizing = None
    estimate = None


def step_export_qonnx(st: BuildState) -> None:
    st.quant = st.quant or load_quant_model(st.cfg.checkpoint)
    norm = st.quant.normalization
    st.qonnx_path = export_qonnx(st.quant.model, (norm.channels, norm.input_size, norm.input_size),
                                 st.out / "squeezenet.qonnx.onnx")


def step_prepare(st: BuildState) -> None:
    digest = sha256_of(st.qonnx_path)[:16]
    cached = st.out / "cache" / f"hls_ready-v{PREPARE_VERSION}-{digest}.onnx"
    if not cached.is_file():
        shutil.rmtree(cached.parent, ignore_errors=True)
        with quiet():
            prepare_for_hls4ml(st.qonnx_path, cached)
    st.hls_onnx = cached


def _convert(st: BuildState, reuse_factors: dict[str, int] | None, output_dir: Path, testbench: bool):
    """One hls4ml conversion of the prepared graph, with the exactness fixes and the bypass quantizers
    folded into their adds."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(st.hls_onnx))
    tb = {}
    if testbench:
        # Test-bench data for Vitis HLS's own C simulation / co-simulation: real test images and the
        # outputs the Brevitas model gives for them.
        x_q, expected, _ = reference_io(st, TESTBENCH_IMAGES)
        tb_in, tb_out = st.out / "tb_input.npy", st.out / "tb_output.npy"
        np.save(tb_in, x_q.reshape(len(x_q), -1))
        np.save(tb_out, expected)
        tb = {"input_data_tb": str(tb_in), "output_data_tb": str(tb_out)}
    with quiet(), one_by_one_convs_as_conv2d():
        hc = hls_config(model, st.cfg, reuse_factors)
        hls_model = hls4ml.converters.convert_from_onnx_model(
            model, output_dir=str(output_dir), io_type=st.cfg.io_type, backend="Vitis", hls_config=hc,
            part=st.device.part if st.cfg.resources is None else st.cfg.part,
            clock_period=round(1000.0 / st.cfg.clock_mhz, 3), **tb)
        round_half_up_layers(model, hls_model)
        fold_quant_into_add(hls_model)
    return hls_model, hc, model


def step_probe(st: BuildState) -> None:
    st.device = resolve_device(st.cfg.part, st.cfg.resources)
    probe, _, _ = _convert(st, None, st.out / "probe", testbench=False)
    shutil.rmtree(st.out / "probe", ignore_errors=True)
    st.pipeline = pipeline_from_hls_model(probe, name="squeezenet")
    st.report["pipeline"] = {"stages": len(st.pipeline.stages), "convs": len(st.pipeline.convs),
                             "fifos": len(st.pipeline.fifos()), "macs_per_image": st.pipeline.macs_per_image(),
                             "signature": st.pipeline.signature()}


def _as_planned(st: BuildState, pipeline):
    """The pipeline as the project is written: the convs the plan chose (--multipliers dsp) multiply on DSP48s."""
    return pipeline.with_multipliers_on_dsp(st.dsp_layers)


def step_plan(st: BuildState) -> None:
    """The folding for the part with FIFOs one deep (their sizing comes next). When no plan fits, the
    cheapest plan for TARGET_FPS (or 2,000 images/s) is built instead, so that the project and the C
    simulation still exist; the reason goes into the report and the budget gate fails."""
    cfg = st.cfg
    st.reuse_factors, st.depths, _, error, st.dsp_layers = fold_and_size(
        st.pipeline, cfg.planning_device(st.device), share=cfg.resource_share, target_fps=cfg.target_fps,
        clock_mhz=cfg.clock_mhz, simulate=False, fallback_fps=cfg.target_fps or FALLBACK_FPS,
        bind_dsp=cfg.multipliers == "dsp")
    if error:
        print(f"[fpga] no plan fits: {error}\n[fpga] building the cheapest plan for "
              f"{cfg.target_fps or FALLBACK_FPS:,.0f} images/s instead (the budget check will fail)", flush=True)


def step_fifo_sizing(st: BuildState) -> None:
    """Size the FIFOs for the plan by simulation; plan again with the sized FIFOs until the plan holds."""
    cfg = st.cfg
    st.reuse_factors, st.depths, st.sizing, error, st.dsp_layers = fold_and_size(
        st.pipeline, cfg.planning_device(st.device), share=cfg.resource_share, target_fps=cfg.target_fps,
        clock_mhz=cfg.clock_mhz, simulate=True, fallback_fps=cfg.target_fps or FALLBACK_FPS,
        bind_dsp=cfg.multipliers == "dsp")
    st.report["plan_error"] = error
    check = st.sizing.check
    st.report["dataflow_sim"] = {
        "images": check.images, "cycles_per_image": check.cycles_per_image,
        "latency_cycles": check.latency_cycles, "deadlock": check.deadlock, "blocked": check.blocked,
        "reference_cycles_per_image": st.sizing.reference_interval,
        "slack_moved_to_narrowest_fifo": st.sizing.relocated,
        "max_fifo_occupancy": {st.pipeline.streams[k].name: v for k, v in check.max_occupancy.items()},
        "model": "pixel-level: fpga/dataflow.py (stage timing from fpga/estimate.py)",
    }
    if check.deadlock:
        raise UserError("the dataflow simulation deadlocks even with the sized FIFOs: " + "; ".join(check.blocked))


def step_convert(st: BuildState) -> None:
    by_stage = {s.name: s.config_key for s in st.pipeline.convs}
    keyed = {by_stage[name]: rf for name, rf in st.reuse_factors.items()}
    # the project's test bench holds real test images; a plan-and-estimate build (make budget) reads no data
    st.hls_model, hc, model = _convert(st, keyed, st.out / "hls_project", testbench=st.test is not None)
    final = pipeline_from_hls_model(st.hls_model, name="squeezenet")
    changed = {s.name: (st.reuse_factors[s.name], s.reuse_factor) for s in final.convs
               if s.reuse_factor != st.reuse_factors.get(s.name)}
    if changed or [s.key for s in final.fifos()] != [s.key for s in st.pipeline.fifos()]:
        raise UserError(f"hls4ml did not build the planned design (reuse factor planned -> kept: {changed})")
    for key, depth in st.depths.items():  # the STREAM pragmas hls4ml's writer emits
        st.hls_model.output_vars[key].pragma = ("stream", int(depth))
    st.report["hls_config"] = {"part": st.device.part, "clock_mhz": st.cfg.clock_mhz, "strategy": "Resource",
                               "io_type": st.cfg.io_type,
                               "input_precision": hc["LayerName"][model.graph.input[0].name]["Precision"]["result"],
                               "layer_precision": st.cfg.layer_precision}


def _fifo_bindings(st: BuildState) -> dict[str, str]:
    est = estimate(_as_planned(st, st.pipeline), st.reuse_factors, st.device, depths=st.depths)
    return {f.name: f.impl for f in est.fifos if f.impl in ("srl", "bram")}


def _project_key(st: BuildState) -> str:
    key = {"onnx": sha256_of(st.hls_onnx), "part": st.device.part, "clock": st.cfg.clock_mhz,
           "plan": st.reuse_factors, "depths": st.depths, "io": st.cfg.io_type, "prepare": PREPARE_VERSION}
    if st.cfg.layer_precision:  # only when set: the default build keeps the key of the projects it cached
        key["layer_precision"] = st.cfg.layer_precision
    if st.dsp_layers:  # only when some are bound, as above
        key["dsp_layers"] = sorted(st.dsp_layers)
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
    with quiet():
        st.hls_model.write()
        bound = bind_fifo_storage(project, _fifo_bindings(st))
        st.report["kernels_bound_to_dsp"] = bind_multipliers_to_dsp(project, st.dsp_layers) if st.dsp_layers else 0
        st.hls_model._compile()  # hls4ml's compile() is write() + _compile(): g++ builds the C simulation
    if _library(project) is None:
        raise UserError(f"hls4ml did not produce a C simulation library in {project}/firmware")
    stamp.write_text(key)
    st.report["compile_cached"] = False
    st.report["fifo_storage_bound"] = bound


def step_estimate(st: BuildState) -> None:
    cfg, out = st.cfg, st.out
    final = _as_planned(st, pipeline_from_hls_model(st.hls_model, name="squeezenet"))
    est = estimate(final, {s.name: s.reuse_factor for s in final.convs}, st.device, depths=st.depths,
                   share=cfg.resource_share, clock_mhz=cfg.clock_mhz)
    project = out / "hls_project"
    if (project / "firmware" / "parameters.h").is_file():
        written = read_dense_configs(project)
        for layer in est.layers:
            if layer.kind != "conv":
                continue
            w = written.get(layer.name)
            on_dsp = final.stage(layer.name).multipliers_bound_to_dsp
            if w is None or (w["reuse_factor"], w["block_factor"]) != (layer.reuse_factor, layer.block_factor) \
                    or (w["product"] == DSP_PRODUCT) != on_dsp:
                raise UserError(f"{layer.name}: parameters.h says {w}, the estimate used RF {layer.reuse_factor}, "
                                f"block factor {layer.block_factor}, multipliers "
                                f"{'bound to DSPs' if on_dsp else 'unbound'}")
        st.report["estimate_matches_parameters_h"] = True
    st.estimate = est
    labels = module_labels(final, st.quant.config if st.quant else None)
    sim = st.report.get("dataflow_sim", {})
    ii = max(est.ii_cycles, sim.get("cycles_per_image") or 0)  # the simulation includes FIFO effects
    st.report.update({
        "strategy": "Resource",
        "multiplier_binding": cfg.multipliers,  # auto: the tools' choice; dsp: the plan's convs bound to DSP48s
        "dsp_layers": sorted(st.dsp_layers),
        "device": est.device.to_dict(),
        "resource_share": est.share,
        "target_fps": cfg.target_fps,
        "reuse_factors": {layer.name: layer.reuse_factor for layer in est.layers if layer.kind == "conv"},
        "resources": est.resources(),
        "fit_criterion": "estimate and calibration band" if cfg.fit_with_band else "estimate",
        "fits_device": (est.fits and st.report.get("plan_error") is None
                        and (est.fits_with_band or not cfg.fit_with_band)),
        "fits_with_band": est.fits_with_band,
        "over": {n: {"estimate": v, "allowed": round(a)} for n, (v, a) in est.over().items()},
        "over_with_band": {n: {"band_high": v, "allowed": round(a)} for n, (v, a) in est.over_with_band().items()},
        "ii_cycles": ii, "ii_cycles_slowest_stage": est.ii_cycles, "bottleneck": est.bottleneck,
        "latency_cycles": sim.get("latency_cycles") or est.latency_cycles,
        "throughput_fps_estimate": round(cfg.clock_mhz * 1e6 / ii, 1),
        "multipliers": sum(layer.block_factor for layer in est.layers),
        "max_multipliers_in_a_layer": max(layer.block_factor for layer in est.layers),
        "weight_bits": est.weight_bits, "fifo_bits": est.fifo_bits, "line_buffer_bits": est.line_buffer_bits,
        "onchip_memory_bits": est.onchip_memory_bits,
        "fifo_depths": {f.name: {"depth": f.depth, "width": f.width, "impl": f.impl} for f in est.fifos},
        "layers": [{**layer.to_dict(), "module": labels.get(layer.name)} for layer in est.layers],
        "estimate_source": "analytic, fpga/estimate.py (hls4ml 1.3.0 templates, FINN-R, UG473/UG474/UG479/"
                           "UG901/UG1399); not a synthesis result",
    })
    table = format_estimate(est, sim, labels)
    (out / "estimate.txt").write_text(table + "\n")
    plot_estimate(est, out / "layers.png", labels)
    print(table)


def module_labels(pipeline, config) -> dict[str, str]:
    """hls4ml names convs after their ONNX nodes (Conv2D_Conv_7); name them after the model's modules
    too (fire3.squeeze). The ONNX node order is the model's forward order, which the config-built pipeline
    follows as well; the shapes must agree, or no labels are given."""
    if config is None:
        return {}
    by_index = sorted(pipeline.convs, key=lambda s: int(s.config_key.rsplit("_", 1)[-1])
                      if s.config_key.rsplit("_", 1)[-1].isdigit() else -1)
    reference = pipeline_from_config(config).convs
    if len(by_index) != len(reference) or any((a.n_in, a.n_out) != (b.n_in, b.n_out)
                                              for a, b in zip(by_index, reference)):
        return {}
    return {a.name: b.name for a, b in zip(by_index, reference)}


def step_storage(st: BuildState) -> None:
    table = hls_storage_table(st.hls_model, st.cfg.budget_bytes)
    quant_table = storage_table(st.quant.model, st.cfg.budget_bytes)
    st.report.update(table.to_dict())
    st.report["quantize_storage_bytes"] = quant_table.total_bytes
    st.report["storage_agrees_with_quantize"] = table.weight_storage_bytes == quant_table.total_bytes
    (st.out / "storage.txt").write_text(table.format() + "\n")
    print(table.format())


def reference_io(st: BuildState, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` test images as the FPGA receives them (the input quantizer's grid, NHWC), the
    Brevitas model's logits for them, and their labels."""
    qm, test = st.quant, st.test
    norm = qm.normalization
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
    st.report["csim"] = {"parent": "brevitas", "runtime": "the HLS code compiled with g++",
                         **compare(got, expected, labels),
                         "seconds": round(seconds, 2), "images_per_second": round(n / seconds, 2)}
    st.report["accuracy_brevitas"] = round(float((expected.argmax(1) == labels).mean()), 6)
    np.save(st.out / "csim_outputs.npy", got)


STEPS = [Step("export_qonnx", step_export_qonnx), Step("prepare", step_prepare), Step("probe", step_probe),
         Step("plan", step_plan), Step("fifo_sizing", step_fifo_sizing), Step("convert", step_convert),
         Step("compile", step_compile), Step("estimate", step_estimate), Step("storage", step_storage),
         Step("csim", step_csim)]


def build(cfg: FpgaConfig, skip: tuple[str, ...] = ()) -> dict:
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    st = BuildState(cfg, out)
    if not {"compile", "csim"} <= set(skip):  # data that does not fit, or a damaged file, fails before any step
        st.quant = load_quant_model(cfg.checkpoint)
        st.test, cfg.dataset, cfg.data_dir = load_checkpoint_data(st.quant.payload, cfg.checkpoint, "test",
                                                                  cfg.dataset, cfg.data_dir)
    t_all = time.time()
    st.timings = run_steps(STEPS, st, log=lambda line: print(f"[fpga] {line}", flush=True), skip=skip)
    st.report.update({"checkpoint": cfg.checkpoint, "checkpoint_sha256": sha256_of(cfg.checkpoint),
                      "step_seconds": st.timings,
                      "total_seconds": round(time.time() - t_all, 2), "config": asdict(cfg),
                      "hls_project": str(out / "hls_project")})
    write_json(out / "fpga_config.json", asdict(cfg))
    write_json(out / "report.json", st.report)
    return st.report
