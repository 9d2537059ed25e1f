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
