import json
import subprocess

import numpy as np
import pytest

from model import small_image_config
from quantize.qat import DEFAULT_QUANT

from .conftest import ROOT, needs_fashion, run_module
from .helpers import tiny_quant_checkpoint

# A small SqueezeNet (squeeze layers of 2 channels: with 1, hls4ml adds per-element ApplyAlpha arrays
# the model does not have, which the storage table counts but the cross-check rejects): fire1 and fire2 with identity bypass (Concat + Add), fire3 widening without one.
SMALL = dict(base_e=16, incr_e=16, freq=2, num_fire=3, pool_after=(0, 2), stem_channels=16)


@pytest.mark.parametrize("bypass", ["simple", "complex"])
def test_fire_network_is_bit_exact_in_csim(bypass, tiny_idx_dir, tmp_path):
    """The whole route on a small Fire network: QONNX, layout pass, hls4ml write + g++ compile, C-sim."""
    ckpt = tmp_path / "q.pt"
    tiny_quant_checkpoint(ckpt, tiny_idx_dir, small_image_config(bypass=bypass, **SMALL))
    out = tmp_path / "fpga"
    r = run_module("fpga", "--checkpoint", str(ckpt), "--data-dir", str(tiny_idx_dir), "--samples", "200",
                   "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["csim_samples"] == 200
    assert report["csim_top1_agreement"] == 1.0
    assert report["csim_max_abs_diff"] == 0.0
    assert report["storage_agrees_with_quantize"] and report["within_budget"]
    assert (out / "hls_project" / "build_prj.tcl").is_file()
    assert (out / "hls_project" / "firmware" / "myproject.cpp").is_file()
    assert len((out / "hls_project" / "tb_data" / "tb_input_features.dat").read_text().splitlines()) == 10
    defines = (out / "hls_project" / "firmware" / "defines.h").read_text()
    assert "ap_fixed<8," in defines  # the input arrives on the 8-bit quantizer's grid

    # A second build of the same checkpoint reuses the compiled project.
    r = run_module("fpga", "--checkpoint", str(ckpt), "--data-dir", str(tiny_idx_dir), "--samples", "20",
                   "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["compile_cached"] is True

    # The budget gate on the same artifact: a budget below its storage fails with the table.
    small_budget = report["weight_storage_bytes"] - 1
    r = run_module("fpga.budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--budget-bytes", str(small_budget), "--work-dir", str(tmp_path / "budget"))
    assert r.returncode != 0
    assert "OVER by 1 bytes" in r.stdout and "over budget" in r.stderr
    r = run_module("fpga.budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--work-dir", str(tmp_path / "budget"), env={"BUDGET_BYTES": str(small_budget)})
    assert r.returncode != 0 and "OVER by 1 bytes" in r.stdout  # BUDGET_BYTES=N make budget
    r = run_module("fpga.budget", "--checkpoint", str(ckpt), "--fpga-report", str(out / "report.json"),
                   "--work-dir", str(tmp_path / "budget"))
    assert r.returncode == 0, r.stderr


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


def test_budget_gate_passes_for_the_committed_default(tmp_path):
    """CI's guard: a change that inflates the default model past 0.5 MiB fails here."""
    r = run_module("fpga.budget", "--checkpoint", str(ROOT / DEFAULT_QUANT),
                   "--fpga-report", str(tmp_path / "none.json"), "--work-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["budget_bytes"] == 524_288
    assert all(row["within_budget"] for row in report["artifacts"])


@pytest.mark.slow
@needs_fashion
def test_default_model_csim_is_bit_exact_on_the_test_set(tmp_path):
    out = tmp_path / "fpga"
    r = run_module("fpga", "--checkpoint", str(ROOT / DEFAULT_QUANT), "--samples", "1000", "--out", str(out),
                   timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["csim_samples"] == 1000
    assert report["csim_top1_agreement"] == 1.0 and report["csim_max_abs_diff"] == 0.0
    assert report["storage_agrees_with_quantize"] and report["within_budget"]
