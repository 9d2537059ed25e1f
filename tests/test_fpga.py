import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from contract import UserError
from fpga.devices import resolve_device
from fpga.pipeline import BitWidths, pipeline_from_config
from fpga.project import read_dense_configs, stream_depths
from model import small_image_config
from model.checkpoint import load_checkpoint
from model.data import load_dataset
from model.inference import to_input
from model.squeezenet import SqueezeNetConfig, plain
from quantize.qat import DEFAULT_QUANT, FPGA_QUANT, load_quant_model

from .conftest import ROOT, needs_fashion, run_module
from .helpers import tiny_quant_checkpoint

# A small SqueezeNet (squeeze layers of 2 channels: with 1, hls4ml adds per-element ApplyAlpha arrays
# the model does not have, which the storage table counts but the cross-check rejects): fire1 and fire2 with identity bypass (Concat + Add), fire3 widening without one.
SMALL = dict(base_e=16, incr_e=16, freq=2, num_fire=3, pool_after=(0, 2), stem_channels=16)


# The fastest plan that fits (small reuse factors), and a slow one (reuse factors above n_in: hls4ml's
# other Resource kernel, DenseResource_rf_gt_nin_rem0).
# The first also narrows the activations inside the network to 5 bits with 8-bit logits (issue 26's lever 2),
# and mixes widths: fire1's squeeze output at 8 bits, the bypass sums at 6 (quantize's --act-override); it
# binds every multiplier to a DSP48 (lever 4, --multipliers dsp), and its weight scales are the MSE-chosen,
# learned powers of two (quantize --weight-scale mse).
MIXED = {"features.4.squeeze_activation": 8, "features.*.bypass_quant": 6}


@pytest.mark.slow
@pytest.mark.parametrize("bypass,target_fps,with_band,acts,multipliers,weight_scale",
                         [("simple", None, True, (5, 8, MIXED), "dsp", "mse"),
                          ("complex", "3000", False, (8, None, {}), "auto", "max")])
def test_fire_network_is_bit_exact_in_csim(bypass, target_fps, with_band, acts, multipliers, weight_scale,
                                           tiny_idx_dir, tmp_path):
    """The whole route on a small Fire network: QONNX, layout pass, folding plan (Strategy Resource, reuse
    factors > 1; the fastest plan that fits with its calibration band, or the plan for a target rate), FIFO
    sizing, hls4ml write (multipliers bound to DSPs or left to the tools) + g++ compile, C-sim."""
    from quantize import QuantSettings

    ckpt = tmp_path / "q.pt"
    qs = QuantSettings(act_bits=acts[0], classifier_act_bits=acts[1], act_overrides=acts[2],
                       weight_scale=weight_scale)
    tiny_quant_checkpoint(ckpt, tiny_idx_dir, small_image_config(bypass=bypass, **SMALL), qs)
    out = tmp_path / "fpga"
    fps = ["--target-fps", target_fps] if target_fps else []
    r = run_module("fpga", "--checkpoint", str(ckpt), "--data-dir", str(tiny_idx_dir), "--samples", "200",
                   "--out", str(out), *fps, *(["--fit-with-band"] if with_band else []), "--multipliers", multipliers)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["csim"]["samples"] == 200 and report["csim"]["exact"]
    assert report["csim"]["top1_agreement"] == 1.0
    assert report["csim"]["max_abs_diff"] == 0.0
    assert report["storage_agrees_with_quantize"] and report["within_budget"]
    assert report["strategy"] == "Resource" and report["fits_device"] and report["plan_error"] is None
    assert report["fit_criterion"] == ("estimate and calibration band" if with_band else "estimate")
    if with_band:
        assert report["fits_with_band"] and report["over_with_band"] == {}
        assert "with the calibration band's upper edge: fits within 80%" in (out / "estimate.txt").read_text()
    assert report["dataflow_sim"]["deadlock"] is False and report["dataflow_sim"]["cycles_per_image"] > 0
    config = small_image_config(bypass=bypass, **SMALL)
    bits = BitWidths(act_bits=acts[0], classifier_act_bits=acts[1], act_overrides=tuple(acts[2].items()))
    assert pipeline_from_config(config, bits).signature() == report["pipeline"]["signature"]

    # The estimator used the reuse and block factors hls4ml wrote into parameters.h, for every conv.
    written = read_dense_configs(out / "hls_project")
    convs = [layer for layer in report["layers"] if layer["kind"] == "conv"]
    assert len(convs) == len(written) == len(report["reuse_factors"])
    for layer in convs:
        w = written[layer["name"]]
        assert (w["reuse_factor"], w["block_factor"], w["strategy"]) == \
            (layer["reuse_factor"], layer["block_factor"], "resource")
        assert w["reuse_factor"] > 1
        # the convs the plan bound multiply with the DSP-bound product, one DSP a product in the estimate
        bound = layer["name"] in report["dsp_layers"]
        assert w["product"] == ("mult_dsp" if bound else "mult")
        if bound:
            assert layer["multipliers_on_dsp"] and layer["cost"]["dsp"] == layer["block_factor"]
    assert report["multiplier_binding"] == multipliers
    assert report["kernels_bound_to_dsp"] == len(report["dsp_layers"]) and (multipliers == "dsp") == bool(
        report["dsp_layers"])
    if multipliers == "dsp":
        header = (out / "hls_project" / "firmware" / "nnet_utils" / "nnet_mult_dsp.h").read_text()
        assert "#pragma HLS BIND_OP variable=p op=mul impl=dsp" in header
    if target_fps:
        assert any(w["reuse_factor"] > w["n_in"] for w in written.values())
    # The sized FIFO depths are the ones in the project, bound to the storage the estimate counted.
    depths = stream_depths(out / "hls_project")
    assert {name: d["depth"] for name, d in report["fifo_depths"].items()} == depths
    assert max(depths.values()) > 2 and min(depths.values()) == 1
    cpp = (out / "hls_project" / "firmware" / "myproject.cpp").read_text()
    bound = [name for name, d in report["fifo_depths"].items() if d["impl"] in ("srl", "bram")]
    assert cpp.count("BIND_STORAGE") == len(bound) > 0
    # python -m fpga.estimate reads the same design back from the written files alone: the same figures.
    r = run_module("fpga.estimate", str(out / "hls_project"), "--json")
    assert r.returncode == 0, r.stderr
    read_back = json.loads(r.stdout)
    assert read_back["totals"] == {name: v["estimate"] for name, v in report["resources"].items()}
    assert read_back["ii_cycles"] == report["ii_cycles_slowest_stage"] and read_back["unmodeled"] == []
    assert (out / "layers.png").stat().st_size > 10_000 and "images/s" in (out / "estimate.txt").read_text()
    assert (out / "hls_project" / "build_prj.tcl").is_file()
    assert (out / "hls_project" / "firmware" / "myproject.cpp").is_file()
    assert len((out / "hls_project" / "tb_data" / "tb_input_features.dat").read_text().splitlines()) == 10
    defines = (out / "hls_project" / "firmware" / "defines.h").read_text()
    assert "ap_fixed<8," in defines  # the input arrives on the 8-bit quantizer's grid

    # A second build of the same checkpoint reuses the compiled project.
    r = run_module("fpga", "--checkpoint", str(ckpt), "--data-dir", str(tiny_idx_dir), "--samples", "20",
                   "--out", str(out), *fps, *(["--fit-with-band"] if with_band else []), "--multipliers", multipliers)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["compile_cached"] is True

    # The budget gate on the same artifact: a budget below its storage fails with the table.
    small_budget = report["weight_storage_bytes"] - 1
    r = run_module("budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--budget-bytes", str(small_budget), "--work-dir", str(tmp_path / "budget"))
    assert r.returncode != 0
    assert "OVER by 1 bytes" in r.stdout and "over budget" in r.stderr
    r = run_module("budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--work-dir", str(tmp_path / "budget"), env={"BUDGET_BYTES": str(small_budget)})
    assert r.returncode != 0 and "OVER by 1 bytes" in r.stdout  # BUDGET_BYTES=N make budget
    r = run_module("budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--work-dir", str(tmp_path / "budget"))
    assert r.returncode == 0, r.stderr
    assert "the FPGA design fits xc7z020clg400-1" in r.stdout

    # The device gate: the same design on a tiny part fails, naming each resource and by how much.
    r = run_module("budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--work-dir", str(tmp_path / "budget"), "--resources", "dsp=0,lut=2000,ff=4000,bram18k=2")
    assert r.returncode == 2
    lut = report["resources"]["lut"]["estimate"]
    assert f"FPGA LUT estimate {lut:,} exceeds 80% of custom's 2,000 by {lut - 1600:,}" in r.stderr
    assert "OVER by" in r.stdout and "BRAM18K" in r.stderr


@pytest.mark.slow
def test_csim_gate_fails_a_design_that_differs_from_brevitas(tiny_idx_dir, tmp_path):
    """The C simulation gate on a real mismatch: --layer-precision narrows the global average pool's
    accumulator to fixed<10,4> (the build's exactness fix gives it fixed<24,7>), so the sum of its 49 values
    wraps in the generated project, which g++ compiles and runs as usual. The stage fails with one line and
    the first differing image; --allow-mismatch reports the same figures as a warning and exits 0."""
    ckpt = tmp_path / "q.pt"
    tiny_quant_checkpoint(ckpt, tiny_idx_dir, small_image_config(**SMALL))
    out = tmp_path / "fpga"
    args = ["fpga", "--checkpoint", str(ckpt), "--data-dir", str(tiny_idx_dir), "--samples", "20", "--out", str(out),
            "--layer-precision", "GlobalAveragePool_0.accum=fixed<10,4>"]
    r = run_module(*args)
    assert r.returncode == 2, r.stderr[-3000:]
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the C simulation differs from brevitas (the HLS code compiled with g++) on "), error
    assert error.endswith("(--allow-mismatch reports without failing)")
    report = json.loads((out / "report.json").read_text())
    assert report["csim"]["exact"] is False and report["csim"]["samples"] == 20
    assert report["hls_config"]["layer_precision"] == {"GlobalAveragePool_0": {"accum": "fixed<10,4>"}}
    defines = (out / "hls_project" / "firmware" / "defines.h").read_text()
    assert "typedef ap_fixed<10,4> globalaveragepool_0_accum_t;" in defines
    # The report tells the truth: the C simulation's outputs against the Brevitas model, computed here.
    qm, test = load_quant_model(ckpt), load_dataset("fashion-mnist", "test", str(tiny_idx_dir))
    with torch.no_grad():
        x = to_input(torch.from_numpy(test.images[:20]), qm.normalization)
        brevitas = plain(qm.model.eval()(x)).numpy().astype(np.float64)
    off = np.flatnonzero((np.load(out / "csim_outputs.npy") != brevitas).any(axis=1))
    first = report["csim"]["first_mismatch"]
    assert report["csim"]["rows_off"] == len(off) > 0 and first["index"] == off[0]
    assert f"on {len(off)} of 20 images" in error and f"first: test image {off[0]} " in error

    r = run_module(*args, "--allow-mismatch")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning (--allow-mismatch): the C simulation differs from brevitas (" in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["compile_cached"] is True and report["csim"]["exact"] is False

    # A layer the hls4ml config does not have is one line, once the graph is known.
    r = run_module("fpga", *args[1:-1], "Conv_99.accum=fixed<10,4>")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "error: --layer-precision names Conv_99, which the hls4ml config does not have (its layers besides")


def test_layer_precision_is_checked_first_and_keys_the_compiled_project(tmp_path):
    """A malformed --layer-precision fails before any step; a set one is part of the compile cache's key (a
    project compiled with other precisions is never reused), and the default build's key is unchanged."""
    from fpga.build import BuildState, _project_key
    from fpga.cli import main
    from fpga.config import FpgaConfig

    for spec, message in (("GlobalAveragePool_0=fixed<10,4>", "takes NODE.VARIABLE=TYPE"),
                          ("GlobalAveragePool_0.accum=fixed<10>", "not an hls4ml precision"),
                          ("GlobalAveragePool_0.accum=wide", "not an hls4ml precision")):
        with pytest.raises(UserError, match=message):
            main(["--checkpoint", str(tmp_path / "missing.pt"), "--layer-precision", spec])
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")

    def key(**knobs):
        st = BuildState(FpgaConfig(**knobs), tmp_path)
        st.hls_onnx, st.device, st.reuse_factors, st.depths = onnx, resolve_device("xc7z020clg400-1", None), {}, {}
        return _project_key(st)

    narrowed = key(layer_precision={"GlobalAveragePool_0": {"accum": "fixed<10,4>"}})
    assert key() != narrowed != key(layer_precision={"GlobalAveragePool_0": {"accum": "fixed<12,4>"}})
    assert key() == key(layer_precision={}) == key(multipliers="dsp")  # nothing bound: the same project
    st = BuildState(FpgaConfig(multipliers="dsp"), tmp_path)
    st.hls_onnx, st.device, st.reuse_factors, st.depths = onnx, resolve_device("xc7z020clg400-1", None), {}, {}
    st.dsp_layers = frozenset({"Conv2D_Conv_3"})
    assert _project_key(st) != key()
    with pytest.raises(UserError, match="--multipliers must be one of auto, dsp"):
        FpgaConfig(multipliers="lut").validate()


def test_csim_crash_becomes_a_clear_error(tmp_path):
    from fpga.csim import CSimError, run_csim

    src = tmp_path / "crash.cpp"
    src.write_text('#include <cassert>\nextern "C" void myproject_double(double* i, double* o) '
                   '{ assert(i[0] < 0 && "pool size must equal stride"); }\n')
    lib = tmp_path / "libcrash.so"
    subprocess.run(["g++", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    with pytest.raises(CSimError, match="crashed on inputs 0..3 \\(signal SIGABRT\\)"):
        run_csim(lib, np.ones((4, 2, 2, 1)), 10, workers=1, progress=False)


def test_missing_checkpoint_is_one_line(tmp_path):
    r = run_module("fpga", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: checkpoint")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@needs_fashion
def test_budget_gate_passes_the_committed_fpga_default(committed_fpga, tmp_path):
    """CI's guard for `make fpga` / `make budget`: the committed FPGA default (the narrow PYNQ-Z2 model)
    stays within 0.5 MiB and its planned design within 80% of every xc7z020 resource, with no layer past
    4,096 parallel multipliers and no deadlock at the sized FIFO depths. (The gate computing the figures
    itself, with no FPGA report: test_budget_gate_on_the_committed_default.)"""
    work = tmp_path / "b"
    r = run_module("budget", "--checkpoint", str(ROOT / FPGA_QUANT),
                   "--fpga-report", str(committed_fpga / "report.json"), "--work-dir", str(work))
    assert r.returncode == 0, r.stdout + r.stderr
    gate = json.loads((work / "report.json").read_text())
    assert gate["fits_device"] and gate["device"]["part"] == "xc7z020clg400-1"
    assert all(not row["over_by"] for row in gate["device_check"])
    design = json.loads((committed_fpga / "report.json").read_text())
    assert design["fits_device"] and design["strategy"] == "Resource"
    assert design["max_multipliers_in_a_layer"] <= 4096 and design["throughput_fps_estimate"] > 0
    assert design["dataflow_sim"]["deadlock"] is False
    assert "the FPGA design fits xc7z020clg400-1" in r.stdout


@pytest.mark.slow
def test_budget_gate_on_the_committed_default(tmp_path):
    """CI's guard: a change that inflates the default model past 0.5 MiB fails here. The device check of the
    same run says whether the default's FPGA design fits the PYNQ-Z2: the gate fails exactly when the
    estimate is over, naming every resource that is (today it is over: LUT and FF, docs/RESULTS.md)."""
    work = tmp_path / "b"
    r = run_module("budget", "--checkpoint", str(ROOT / DEFAULT_QUANT), "--fpga",
                   "--fpga-report", str(tmp_path / "none.json"), "--work-dir", str(work))
    gate = json.loads((work / "report.json").read_text())
    assert gate["budget_bytes"] == 524_288
    assert all(row["within_budget"] for row in gate["artifacts"]), r.stdout
    assert gate["device"]["part"] == "xc7z020clg400-1"
    over = [row for row in gate["device_check"] if row["over_by"]]
    assert gate["fits_device"] == (not over) == (r.returncode == 0), r.stdout + r.stderr
    for row in over:
        assert f"FPGA {row['resource'].upper()} estimate {row['estimate']:,}" in r.stderr
    design = json.loads((work / "fpga" / "report.json").read_text())
    assert design["fits_device"] == gate["fits_device"]
    # The fast path (a SqueezeNetConfig alone, for design-space exploration) describes the same pipeline as
    # the hls4ml model of the committed checkpoint: stages, shapes, weight and output widths, FIFO widths.
    config = load_checkpoint(ROOT / DEFAULT_QUANT)["config"]
    assert pipeline_from_config(SqueezeNetConfig.from_dict(config)).signature() == design["pipeline"]["signature"]
    # the same design against a part large enough passes; the bytes alone (what `make rpi` checks) pass
    big = "dsp=2000,lut=400000,ff=800000,bram18k=2000,lutram=200000"
    for extra in (["--resources", big], ["--no-device"]):
        r = run_module("budget", "--checkpoint", str(ROOT / DEFAULT_QUANT), *extra,
                       "--fpga-report", str(work / "fpga" / "report.json"), "--work-dir", str(work))
        assert r.returncode == 0, r.stdout + r.stderr
    assert "FPGA xc7z020" not in r.stdout


def test_budget_gate_without_fpga_figures_says_so_and_builds_nothing(tmp_path):
    """`make rpi` (bytes only): without an fpga report of this checkpoint the FPGA figures are unknown, said
    so, and neither hls4ml nor torch is loaded; the TFLite file is still held to the budget. `make budget`
    (the device check asked for) fails on unknown figures, and a missing file it was told to check fails."""
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\0" * 1000)
    code = ("import sys\nfrom budget.gate import main\n"
            f"rc = main(['--tflite', {str(tflite)!r}, '--fpga-report', {str(tmp_path / 'none.json')!r}, "
            f"'--work-dir', {str(tmp_path / 'b')!r}, '--budget-bytes', sys.argv[1], '--no-device'])\n"
            "print('loaded:', sorted(m for m in ('hls4ml', 'torch', 'tensorflow') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, "1000"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "FPGA on-chip weights (hls4ml) and device fit: unknown (no " in r.stdout
    assert "TFLite model m.tflite" in r.stdout and "loaded: []" in r.stdout
    gate = json.loads((tmp_path / "b" / "report.json").read_text())
    assert gate["fpga_known"] is False and [row["bytes"] for row in gate["artifacts"]] == [1000]
    base = ["--fpga-report", str(tmp_path / "none.json"), "--work-dir", str(tmp_path / "b")]
    r = run_module("budget", "--tflite", str(tflite), *base, "--budget-bytes", "999", "--no-device")
    assert r.returncode == 2 and r.stderr == "error: over budget: TFLite model m.tflite by 1 bytes\n"
    r = run_module("budget", "--tflite", str(tflite), *base)  # the device check, with nothing to check it on
    assert r.returncode == 2 and r.stderr.startswith("error: the FPGA design of ") and "was not checked: no " in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = run_module("budget", "--tflite", str(tmp_path / "missing.tflite"), *base, "--no-device")
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'missing.tflite'}: no such TFLite model to check\n"
    r = run_module("budget", "--tflite", str(tflite), *base, "--budget-bytes", "10", "--no-device")
    assert r.returncode == 2
    table = [ln for ln in r.stdout.splitlines() if "m.tflite" in ln][0]
    assert re.search(r" 1,000  +10  +10000\.0%  +OVER by 990 bytes$", table), table  # columns apart


def test_budget_gate_names_the_checkpoint_another_fpga_report_describes(tmp_path):
    """`make budget` after `make fpga CHECKPOINT=mine.pt`: the gate checks the committed model, finds the
    report of another checkpoint, fails, and names both (and the command that checks the other)."""
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\0" * 1000)
    other = tmp_path / "mine.pt"
    other.write_bytes(b"not the committed model")
    (tmp_path / "fpga.json").write_text(json.dumps({"checkpoint": str(other), "checkpoint_sha256": "0" * 64}))
    r = run_module("budget", "--tflite", str(tflite), "--fpga-report", str(tmp_path / "fpga.json"),
                   "--work-dir", str(tmp_path / "b"), "--checkpoint", str(ROOT / FPGA_QUANT))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"describes {other}, not {ROOT / FPGA_QUANT} (make budget CHECKPOINT={other} checks" in r.stderr


@pytest.mark.slow
@needs_fashion
def test_fpga_default_csim_is_bit_exact_on_the_test_set(committed_fpga):
    """What `make fpga` runs: the committed FPGA default, planned for the xc7z020, 1,000 test images."""
    out = committed_fpga
    report = json.loads((out / "report.json").read_text())
    assert report["csim"]["samples"] == 1000 and report["csim"]["exact"]
    assert report["csim"]["top1_agreement"] == 1.0 and report["csim"]["max_abs_diff"] == 0.0
    assert report["storage_agrees_with_quantize"] and report["within_budget"]
    assert report["strategy"] == "Resource" and report["max_multipliers_in_a_layer"] <= 4096
    assert report["estimate_matches_parameters_h"] and report["dataflow_sim"]["deadlock"] is False
