"""``python -m fpga.estimate`` on any hls4ml project, and the calibration against published syntheses."""
import json
import shutil

import pytest

from fpga.calibrate import DESIGNS, HELDOUT, bands_document, calibration_point, designs, summarize
from fpga.costs import BANDS, load_bands
from fpga.project_pipeline import pipeline_from_project
from fpga.synth_reports import read_csynth, read_vivado_utilization

from .conftest import run_module

MODEL_01 = DESIGNS / "model_01"


def test_reports_are_read_as_published():
    """pominiq/DNNonSilicon model_01: the figures its vivado_synth.rpt and csynth.rpt print."""
    vivado = read_vivado_utilization((MODEL_01 / "vivado_synth.rpt").read_text())
    assert vivado == {"lut": 9964, "lutram": 992, "ff": 10881, "dsp": 76, "bram18k": 8}
    csynth = read_csynth((MODEL_01 / "csynth.rpt").read_text())
    assert (csynth.part, csynth.clock_ns, csynth.latency_max) == ("xc7z020-clg400-1", 10.0, 14182)
    assert csynth.totals == {"bram18k": 45, "dsp": 76, "ff": 16975, "lut": 25632}
    assert {i.config: i.latency_max for i in csynth.instances}["config5"] == 1656


def test_old_project_is_read_from_its_files():
    pipeline, project = pipeline_from_project(MODEL_01)
    assert (project.part, project.clock_mhz, project.splits_streams) == ("xc7z020clg400-1", 100.0, True)
    kinds = [(s.kind, s.strategy) for s in pipeline.stages if s.kind in ("conv", "dense")]
    assert kinds == [("conv", "resource"), ("conv", "resource"), ("dense", "resource")]
    conv = pipeline.stage("conv2d_1")
    assert (conv.n_in, conv.n_out, conv.reuse_factor, conv.weight_bits, conv.in_shape) == (36, 8, 9, 16, (6, 6, 4))
    assert {s.key: s.tokens for s in pipeline.streams.values()}["layer2_out"] == 26 * 26


def test_every_calibration_point_lies_within_the_band_results_states():
    """The band in bands.json (and docs/RESULTS.md) holds every design, calibration and held-out; a formula
    change that moves a point out of it, or a stale bands.json, fails here."""
    points = [calibration_point(d) for d in designs(DESIGNS) + designs(HELDOUT)]
    assert len(points) >= 16
    bands = load_bands()
    for p in points:
        for resource, (low, high) in bands.items():
            actual = p.vivado[resource]
            est = getattr(p.estimate.totals, resource)
            if (actual == 0 and est == 0) or not p.comparable(resource):
                continue
            assert est * low * 0.999 <= actual <= est * high * 1.001, (p.name, resource, est, actual, (low, high))
    fresh = bands_document(summarize(points), points)
    assert json.loads(BANDS.read_text()) == json.loads(json.dumps(fresh)), \
        "fpga/calibration/bands.json is stale: run python -m fpga.calibrate --write"


def test_estimate_cli_prints_table_json_and_band(tmp_path):
    r = run_module("fpga.estimate", str(MODEL_01))
    assert r.returncode == 0, r.stderr
    assert "conv2d_1" in r.stdout and "post-synthesis range" in r.stdout and "estimate" in r.stdout
    r = run_module("fpga.estimate", str(MODEL_01), "--json")
    data = json.loads(r.stdout)
    assert data["totals"]["dsp"] == 76 and data["fits"] is True and data["unmodeled"] == []
    assert set(data["band"]) >= {"lut", "ff", "dsp", "bram18k"}
    r = run_module("fpga.estimate", str(MODEL_01), "--resources", "dsp=10,lut=1000,ff=1000,bram18k=4", "--json")
    assert json.loads(r.stdout)["fits"] is False


def test_a_layer_without_a_model_is_named_not_guessed(tmp_path):
    project = tmp_path / "p"
    shutil.copytree(MODEL_01, project)
    cpp = project / "firmware" / "myproject.cpp"
    cpp.write_text(cpp.read_text().replace("nnet::relu<layer5_t", "nnet::hard_swish<layer5_t"))
    r = run_module("fpga.estimate", str(project))
    assert r.returncode == 0, r.stderr
    assert "NOT MODELLED" in r.stdout and "conv2d_1_relu (hard_swish)" in r.stdout


@pytest.mark.parametrize("breakage,message", [
    ("missing", "does not exist"),
    ("no_params", "parameters.h is missing"),
])
def test_bad_project_is_one_error_line(tmp_path, breakage, message):
    project = tmp_path / "p"
    if breakage == "no_params":
        shutil.copytree(MODEL_01, project)
        (project / "firmware" / "parameters.h").unlink()
    r = run_module("fpga.estimate", str(project))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr


def test_a_keras_project_of_hls4ml_1_3_is_estimated_whole(tmp_path):
    """Not one of ours: a Keras model written by hls4ml 1.3.0's Vitis backend, with layer kinds our
    SqueezeNet never has (Conv1D, batchnorm, tanh, dense, softmax). Every layer is modelled, the shapes
    follow the stream through the 1D pool, and the project's own part and clock are used."""
    out = tmp_path / "prj"
    r = run_module("tests.keras_project", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_module("fpga.estimate", str(out), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["unmodeled"] == [] and data["part"] == "xc7z020clg400-1" and data["clock_mhz"] == 200.0
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert {layers[n]["kind"] for n in ("c1", "p1", "t1", "gap", "d1", "sm")} == \
        {"conv", "maxpool", "activation", "global_avgpool", "dense", "softmax"}
    assert layers["c1"]["strategy"] == "resource" and layers["d1"]["strategy"] == "latency"
    assert layers["c1"]["line_buffer_bits"] == 0  # a 1D conv shifts its window, it keeps no rows
    # c2 reads the pool's 31 pixels and writes 29: 31 x 2 + 29 x (RF 3 + 3) cycles
    assert layers["c2"]["cycles"] == 31 * 2 + 29 * (3 + 3)
    assert data["totals"]["dsp"] > 0 and data["totals"]["bram18k"] > 0


def test_multipliers_bound_to_dsp_are_written_read_back_and_estimated(tmp_path):
    """Lever 4 (``--multipliers dsp``): the pass gives every plain product the DSP-bound one and includes its
    header once; a project read back from its files carries the binding; the estimate moves each bound
    product from LUTs to one DSP48 (operands within 25 x 18 bits) and keeps the rest of the design."""
    from contract import UserError
    from fpga.design import design_point
    from fpga.devices import resolve_device
    from fpga.estimate import estimate, lut_multiplier
    from fpga.pipeline import BitWidths, pipeline_from_config
    from fpga.project import bind_multipliers_to_dsp
    from model.checkpoint import load_checkpoint
    from model.squeezenet import SqueezeNetConfig
    from quantize.qat import FPGA_QUANT

    from .conftest import ROOT

    project = tmp_path / "p"
    shutil.copytree(MODEL_01, project)
    assert bind_multipliers_to_dsp(project) == 3 and bind_multipliers_to_dsp(project) == 0
    params = (project / "firmware" / "parameters.h").read_text()
    assert params.count('#include "nnet_utils/nnet_mult_dsp.h"') == 1 and "product::mult<" not in params
    assert "BIND_OP variable=p op=mul impl=dsp" in (project / "firmware/nnet_utils/nnet_mult_dsp.h").read_text()
    kernels = lambda p: [s.multipliers_bound_to_dsp for s in p.stages if s.kind in ("conv", "dense")]  # noqa: E731
    assert kernels(pipeline_from_project(project)[0]) == [True] * 3
    assert kernels(pipeline_from_project(MODEL_01)[0]) == [False] * 3

    # The committed pynq_z2 design: 4-bit weights multiply in LUTs unless bound.
    ckpt = load_checkpoint(ROOT / FPGA_QUANT)
    q = ckpt["quant"]
    bits = BitWidths(weight_bits=q["weight_bits"], act_bits=q["act_bits"],
                     classifier_act_bits=q["classifier_act_bits"], act_overrides=tuple(q["act_overrides"].items()))
    tools = pipeline_from_config(SqueezeNetConfig.from_dict(ckpt["config"]), bits)
    bound = tools.with_multipliers_on_dsp()
    assert kernels(tools) == [False] * len(tools.convs) and kernels(bound) == [True] * len(tools.convs)
    assert tools.with_multipliers_on_dsp(frozenset()) is tools  # nothing chosen: the pipeline as it is
    device = resolve_device("xc7z020clg400-1", None)
    auto = design_point(tools, device=device, with_band=True, multipliers="auto")
    plan = auto["reuse_factors"]
    a, d = estimate(tools, plan, device), estimate(bound, plan, device)
    products = sum(layer.block_factor for layer in d.layers if layer.kind == "conv")
    lut_products = sum(layer.block_factor * lut_multiplier(s.in_bits, s.weight_bits)
                       for layer, s in zip(d.layers, bound.stages) if layer.kind == "conv" and s.weight_bits < 9)
    assert d.totals.dsp - a.totals.dsp == products > 0  # (the average pool's divider keeps its DSPs)
    assert a.totals.lut - d.totals.lut >= lut_products and d.totals.ff <= a.totals.ff
    assert (d.totals.bram18k, d.fifo_bits) == (a.totals.bram18k, a.fifo_bits)
    # The planner binds the convs it chooses, within the DSPs the band leaves: a faster plan that fits.
    faster = design_point(tools, device=device, with_band=True, multipliers="dsp")
    assert faster["fits"] and faster["images_per_second"] > auto["images_per_second"] > 0
    assert 0 < len(faster["dsp_layers"]) <= len(tools.convs) and faster["resources"]["dsp"]["estimate"] <= 0.8 * 220

    # Only the named layers' kernels are bound in a project; a name it does not call is one error line.
    project = tmp_path / "q"
    shutil.copytree(MODEL_01, project)
    assert bind_multipliers_to_dsp(project, ["conv2d_1"]) == 1
    assert kernels(pipeline_from_project(project)[0]) == [False, True, False]  # conv2d, conv2d_1, dense
    with pytest.raises(UserError, match="calls no layer named conv2d_9"):
        bind_multipliers_to_dsp(project, ["conv2d_9"])
