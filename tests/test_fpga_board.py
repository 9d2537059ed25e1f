"""The board flow without a board or Vivado: the IP top compiled with g++ and checked word by word, the
board driver on a stand-in `pynq` whose DMA drives that compiled top, the Tcl parsed by tclsh with stub
commands, and the failure paths (no vendor tool, no TLAST)."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fpga.board.axis_top import IN_PORT, OUT_PORT, TOP, compile_standin
from fpga.board.layout import LENGTH_WIDTH, read_layout
from fpga.board.tcl import HLS_CELL

from .board_helpers import DRIVER, STANDIN, TLFRT_PYTHON, board_inputs, run_driver, standin_package
from .conftest import needs_fashion, run_module


@pytest.mark.slow
@needs_fashion
def test_the_ip_top_streams_the_known_answers_word_by_word(board):
    out, report = board
    s = report["standin"]
    assert s["exact"] and s["tlast_positions_ok"] and s["beats"] == s["expected_beats"] == 10 * 3
    assert s["test_bench"] == "10 images: every output and TLAST as expected"
    layout = report["layout"]
    assert (layout["input"]["elements"], layout["input"]["words"], layout["output"]["words"]) == (784, 196, 3)
    meta = json.loads((out / "package" / "board.json").read_text())
    assert meta["labels"][0] == "T-shirt/top" and len(meta["known_answers"]["codes"]) == 10
    assert meta["exactness"]["exact"] and meta["exactness"]["samples"] == 1000


@pytest.mark.slow
@needs_fashion
def test_without_vitis_hls_the_build_stops_at_the_vendor_step_with_one_line(committed_fpga, tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    r = run_module("fpga.board", "--fpga-dir", str(committed_fpga), "--out", str(tmp_path / "b"),
                   "--release", "2024.1", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: vitis_hls (Vitis HLS 2024.1) is not on PATH: the board project is written")
    assert (tmp_path / "b" / "package" / "board.json").is_file() and (tmp_path / "b" / "block_design.tcl").is_file()


@pytest.mark.slow
@needs_fashion
def test_the_driver_on_the_standin_board_is_bit_exact_on_1000_images(board, committed_fpga, tmp_path):
    """1,000 test images through the real driver and the compiled top: every output equal to the C
    simulation's and to Brevitas's, in batches that respect the DMA's length register."""
    out, report = board
    codes, brevitas = board_inputs(1000)
    np.save(tmp_path / "codes.npy", codes)
    package, meta = standin_package(out, tmp_path, report["standin"]["library"])
    r = run_driver(package, "--codes", str(tmp_path / "codes.npy"), "--raw-out", str(tmp_path / "raw.npy"),
                   "--max-batch", "300")
    assert r.returncode == 0, r.stderr[-3000:]
    logits = np.load(tmp_path / "raw.npy") / 2 ** meta["layout"]["output"]["frac"]
    assert np.array_equal(logits, np.load(committed_fpga / "csim_outputs.npy"))
    assert np.array_equal(logits, brevitas)
    assert re.search(r"^1000 images: [\d,.]+ images/s batched, [\d.]+ ms for one image alone$", r.stdout, re.M)
    assert "image 0: Ankle boot" in r.stdout
    selftest = run_driver(package, "--selftest")
    assert selftest.returncode == 0 and "10 images, bit-exact with the C simulation" in selftest.stdout


@pytest.mark.slow
@needs_fashion
def test_a_top_that_never_raises_tlast_fails_the_driver_within_its_deadline(board, no_tlast_library, tmp_path):
    out, report = board
    library = no_tlast_library
    package, _ = standin_package(out, tmp_path, library)
    started = time.monotonic()
    r = run_driver(package, "--selftest", "--timeout", "0.5")
    assert r.returncode == 2 and time.monotonic() - started < 60
    assert r.stderr.strip().startswith("error: the DMA's receive of image 0 did not complete within 0.5 s: the IP "
                                       "never raised TLAST"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@needs_fashion
def test_batches_stay_under_the_length_register_and_a_longer_transfer_halts(board, tmp_path):
    """A DMA whose length register holds 8 images' bytes: the driver splits 20 images into 3 transfers, each
    under the limit; a package that claims a larger limit than the DMA has ends in the deadline error."""
    out, report = board
    codes, _ = board_inputs(20)
    np.save(tmp_path / "codes.npy", codes)
    limit = 8 * 196 * 4
    package, _ = standin_package(out, tmp_path / "a", report["standin"]["library"], max_transfer_bytes=limit,
                                 max_batch=8)
    r = run_driver(package, "--codes", str(tmp_path / "codes.npy"), "--raw-out", str(tmp_path / "raw.npy"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "raw.npy").shape == (20, 10)
    wrong, _ = standin_package(out, tmp_path / "b", report["standin"]["library"], max_batch=20)
    spec = next(wrong.glob("*.standin.json"))
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "max_transfer_bytes": limit}))
    r = run_driver(wrong, "--codes", str(tmp_path / "codes.npy"), "--timeout", "0.5")
    assert r.returncode == 2 and "did not complete within 0.5 s" in r.stderr


def test_the_driver_is_python_3_10_with_numpy_and_pynq_only(tmp_path):
    """The board's Python: the driver parses as 3.10 and imports nothing but the standard library, numpy and
    pynq (run from a directory outside the repository, so no project package can be found)."""
    source = DRIVER.read_text()
    ast.parse(source, feature_version=(3, 10))
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "pynq"}
    shutil.copyfile(DRIVER, tmp_path / "driver.py")
    python = TLFRT_PYTHON if TLFRT_PYTHON.exists() else sys.executable
    r = subprocess.run([str(python), "-c", "import driver; print(driver.BOARD_FORMAT)"], cwd=tmp_path,
                       env={"PATH": os.environ["PATH"], "PYTHONPATH": str(STANDIN)}, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "squeezenet-fpga-board/1", r.stderr
    missing = run_driver(tmp_path, "--selftest")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "board.json does not exist" in missing.stderr


TCL_STUBS = r"""
set calls {}
foreach command {create_project set_property update_ip_catalog create_bd_design apply_bd_automation
                 connect_bd_intf_net validate_bd_design save_bd_design make_wrapper} {
    proc $command args "lappend ::calls \[list $command {*}\$args\]; return {}"
}
proc current_project args { return board }
proc get_files args { return [lindex $args end] }
proc get_board_parts args { return {tul.com.tw:pynq-z2:part0:1.0} }
proc create_bd_cell args { lappend ::calls [list create_bd_cell {*}$args]; return [lindex $args end] }
proc get_bd_cells args { return [lindex $args end] }
proc get_bd_pins args { return [lindex $args end] }
proc get_bd_intf_pins args { return [lindex $args end] }
source [lindex $argv 0]
foreach call $calls { puts $call }
"""


@pytest.mark.slow
@needs_fashion
def test_the_block_design_is_consistent_with_the_top_and_the_driver(board, tmp_path):
    """block_design.tcl run by tclsh with stub Vivado commands: the DMA the driver opens, the IP's two stream
    ports, 32-bit stream and memory sides, a length register that holds the largest batch, the HLS clock."""
    if shutil.which("tclsh") is None:
        pytest.skip("tclsh is not installed (sudo apt-get install tcl)")
    out, report = board
    meta = json.loads((out / "package" / "board.json").read_text())
    (tmp_path / "stubs.tcl").write_text(TCL_STUBS)
    r = subprocess.run(["tclsh", str(tmp_path / "stubs.tcl"), str(out / "block_design.tcl")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls = r.stdout
    assert f"create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:7.1 {meta['dma']}" in calls
    assert f"create_bd_cell -type ip -vlnv squeezenet-edge:hls:{TOP}:1.0 {HLS_CELL}" in calls
    assert f"connect_bd_intf_net {meta['dma']}/M_AXIS_MM2S {HLS_CELL}/{IN_PORT}" in calls
    assert f"connect_bd_intf_net {HLS_CELL}/{OUT_PORT} {meta['dma']}/S_AXIS_S2MM" in calls
    dma = re.search(r"set_property -dict \{(.*?)\} " + meta["dma"], calls).group(1)
    settings = dict(re.findall(r"CONFIG\.(\w+) (\w+)", dma))
    assert settings["c_include_sg"] == "0"
    for key in ("c_m_axi_mm2s_data_width", "c_m_axis_mm2s_tdata_width", "c_m_axi_s2mm_data_width",
                "c_s_axis_s2mm_tdata_width"):
        assert int(settings[key]) == meta["layout"]["word_bits"] == 32
    width = int(settings["c_sg_length_width"])
    assert width == LENGTH_WIDTH
    largest = meta["layout"]["max_batch"] * meta["layout"]["input"]["words"] * 4
    assert largest <= meta["layout"]["max_transfer_bytes"] < 2 ** width
    ps = re.search(r"CONFIG\.PCW_FPGA0_PERIPHERAL_FREQMHZ ([\d.]+)", calls).group(1)
    assert float(ps) == meta["clock_mhz"] == 100.0


TINY_NETWORK = r"""// A stand-in for hls4ml's myproject with the real ports and types: logit k is a bit copy of the image's
// input value k, so every output names its image and its place in the stream.
#include "myproject.h"

void myproject(hls::stream<input_t> &in, hls::stream<result_t> &out) {
    result_t logits;
    for (unsigned t = 0; t < %(tokens)d; t++) {
        input_t token = in.read();
        for (unsigned c = 0; c < input_t::size; c++) {
            unsigned v = t * input_t::size + c;
            if (v < result_t::size) logits[v].range(%(bits)d - 1, 0) = token[c].range(%(bits)d - 1, 0);
        }
    }
    out.write(logits);
}
"""


@pytest.mark.slow
@needs_fashion
def test_the_standin_dma_moves_10000_images_in_batches_under_the_length_limit(board, committed_fpga, tmp_path,
                                                                              monkeypatch):
    """The IP top (as generated for the committed design) around a tiny network with the same ports, so
    10,000 images take seconds: the driver splits them into transfers under a 256-image length register,
    nothing hangs, and every image's outputs come back in its place."""
    out, report = board
    project = committed_fpga / "hls_project"
    layout = read_layout(project)
    bits = min(layout.input.bits, layout.output.bits)
    (tmp_path / "tiny.cpp").write_text(TINY_NETWORK % {"tokens": layout.input.elements, "bits": bits})
    tiny = tmp_path / "libtiny.so"
    subprocess.run(["g++", "-O2", "-fPIC", "-shared", "-std=c++14", f"-I{project / 'firmware' / 'ap_types'}",
                    f"-I{project / 'firmware'}", str(tmp_path / "tiny.cpp"), "-o", str(tiny)], check=True)
    library = compile_standin(project, tiny, tmp_path / "tiny_axis.so")
    limit = 256 * layout.input.words * 4
    package, meta = standin_package(out, tmp_path, library, max_transfer_bytes=limit, max_batch=256)
    monkeypatch.syspath_prepend(str(STANDIN))
    from fpga.board.runtime.driver import Accelerator, read_package

    codes = np.random.default_rng(0).integers(-128, 128, (10_000, layout.input.elements)).astype(np.int8)
    meta, bitfile = read_package(package)
    accelerator = Accelerator(meta, bitfile, timeout_s=5.0)
    raw = accelerator.raw(codes)
    port = meta["layout"]["output"]
    expected = codes[:, :port["elements"]].astype(np.int64) & ((1 << bits) - 1)
    if port["signed"]:
        expected = np.where(expected >= 1 << (bits - 1), expected - (1 << bits), expected)
    assert np.array_equal(raw, expected)
    log = accelerator.overlay.axi_dma_0.log
    sends = [n for direction, n in log if direction == "send"]
    assert len(sends) == accelerator.transfers == 40 and max(sends) <= limit and sum(sends) == 10_000 * limit // 256
    assert sum(1 for direction, _ in log if direction == "receive") == 10_000
