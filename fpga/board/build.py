"""``make fpga-board`` / ``python -m fpga.board``: the board project for the PYNQ-Z2, next to the HLS project
that ``make fpga`` wrote.

  check     the FPGA report: the design is for the PYNQ-Z2's xc7z020 and its C simulation was exact
  top       the IP top (AXI4-Stream, TLAST per image), its test bench and the stand-in bridge, written into
            the HLS project (fpga/board/axis_top.py)
  standin   g++: the top linked with the compiled network; its test bench runs the known answers, and the
            bridge checks beat counts, TLAST positions and outputs against the C simulation
  scripts   hls.tcl, block_design.tcl, bitstream.tcl (fpga/board/tcl.py)
  package   board.json and the driver (fpga/board/package.py)
  vendor    vitis_hls (synthesis, optional co-simulation, IP export), then vivado (block design,
            bitstream, .hwh into the package). Without the tools this step stops with one line naming
            the tool and the release; everything before it is written (--no-vendor skips it).
"""
from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

import contract
from contract import UserError, read_json, run_cli, write_json

from .axis_top import INCLUDE, TOP, compile_standin, write_top
from .layout import StreamLayout, read_layout
from .package import DMA_CELL, board_document, write_package
from .tcl import PART, bitstream_tcl, block_design_tcl, hls_tcl

DEFAULT_RELEASE = "2023.2"  # the free Vitis HLS / Vivado release the scripts are written for


def check_design(report: dict) -> None:
    part = report.get("device", {}).get("part")
    if part != PART:
        raise UserError(f"the board flow builds for the PYNQ-Z2 ({PART}); this design is for {part} "
                        f"(make fpga FPGA_PART={PART})")
    csim = report.get("csim")
    if not csim:
        raise UserError("the FPGA report has no C simulation (make fpga ran with --no-csim): the board package "
                        "needs its known answers")
    if not csim.get("exact"):
        raise UserError(f"the C simulation differs from Brevitas on {csim.get('rows_off')} of {csim.get('samples')} "
                        f"images: fix the design before building it for the board")


def known_answers(fpga_dir: Path, layout: StreamLayout) -> tuple[np.ndarray, np.ndarray]:
    """The test-bench images the FPGA build saved (the input quantizer's grid) and the Brevitas outputs,
    equal to the C simulation's, as raw codes."""
    x, y = np.load(fpga_dir / "tb_input.npy"), np.load(fpga_dir / "tb_output.npy")
    codes = np.round(x * 2 ** layout.input.frac).astype(np.int64)
    raw = np.round(y * 2 ** layout.output.frac).astype(np.int64)
    if not (np.array_equal(codes / 2 ** layout.input.frac, x) and np.array_equal(raw / 2 ** layout.output.frac, y)):
        raise UserError(f"the test-bench data in {fpga_dir} are not on the IP's fixed-point grid")
    return codes, raw


def pixel_contract(report: dict, layout: StreamLayout) -> tuple[dict, list]:
    """(board.json's input block, the labels): the pixel -> int8 table the export computes for the Pi
    (export.tflite_check.pixel_lookup_table, the model's own input quantizer), checked to be the IP's input
    grid, so a frame takes the same path to the IP as to the TFLite model."""
    import torch

    from export.tflite_check import pixel_lookup_table
    from model.inference import to_input
    from model.squeezenet import plain
    from quantize.qat import load_quant_model

    qm = load_quant_model(contract.REPO_ROOT / report["checkpoint"])
    norm = qm.normalization
    with torch.no_grad():
        lut = pixel_lookup_table(qm.model, norm)
        ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).repeat(1, norm.channels, 1, 1)
        values = plain(qm.model.input_quant(to_input(ramp, norm))).view(norm.channels, 256).numpy()
    if not np.array_equal(values * 2 ** layout.input.frac, lut):
        raise UserError(f"the input quantizer's codes are not the IP's input grid (2^-{layout.input.frac})")
    block = {"height": norm.input_size, "width": norm.input_size, "channels": norm.channels,
             "color": "gray" if norm.channels == 1 else "rgb", "mean": list(norm.mean), "std": list(norm.std),
             "layout": "HWC", "lut": lut.astype(int).tolist()}
    return block, list(qm.classes)


def run_bridge(library: Path, layout: StreamLayout, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All images through the compiled top in one stream: (the words it wrote, their TLAST flags)."""
    from .runtime.driver import pack_words

    run = getattr(ctypes.CDLL(str(library)), f"{TOP}_run")
    run.restype = ctypes.c_int
    words = np.ascontiguousarray(pack_words(codes, layout.to_json()["input"]))
    last = np.zeros(len(words), np.uint8)
    last[-1] = 1
    capacity = len(codes) * layout.output.words + 1
    out, out_last = np.zeros(capacity, np.uint32), np.zeros(capacity, np.uint8)
    ptr = ctypes.c_void_p
    n = run(words.ctypes.data_as(ptr), last.ctypes.data_as(ptr), len(words), len(codes), out.ctypes.data_as(ptr),
            out_last.ctypes.data_as(ptr), capacity)
    if n < 0:
        raise UserError(f"the IP top's bridge returned {n}")
    return out[:n], out_last[:n]


def check_standin(project: Path, out: Path, layout: StreamLayout, codes: np.ndarray, raw: np.ndarray) -> dict:
    """Compile the top two ways and check it: its test bench (exit 0) and the bridge (beats, TLAST, values)."""
    from .runtime.driver import unpack_words

    network = next((project / "firmware").glob("myproject-*.so"), None)
    if network is None:
        raise UserError(f"{project} has no compiled network (firmware/myproject-*.so): run make fpga first")
    standin = out / "standin"
    standin.mkdir(parents=True, exist_ok=True)
    library = compile_standin(project, network, standin / f"{TOP}.so")
    bench = standin / f"{TOP}_test"
    network = network.resolve()
    result = subprocess.run(["g++", "-O2", "-std=c++14", f"-I{INCLUDE}", f"-I{project / 'firmware' / 'ap_types'}",
                             f"-I{project / 'firmware'}", f"-I{project}", str(project / "firmware" / f"{TOP}.cpp"),
                             str(project / f"{TOP}_test.cpp"), str(network), f"-Wl,-rpath,{network.parent}", "-o",
                             str(bench)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"g++ could not compile the test bench: {(result.stderr.splitlines() or ['?'])[-1]}")
    ran = subprocess.run([str(bench)], capture_output=True, text=True, cwd=project)
    if ran.returncode != 0:
        raise UserError(f"the IP top's test bench failed: {ran.stdout.strip().splitlines()[-1:] or ran.returncode}")
    words, last = run_bridge(library, layout, codes)
    beats = len(codes) * layout.output.words
    tlast_at = np.flatnonzero(last).tolist()
    expected_tlast = list(range(layout.output.words - 1, beats, layout.output.words))
    got = unpack_words(words, layout.to_json()["output"], len(codes)) if len(words) == beats else None
    facts = {"images": int(len(codes)), "beats": int(len(words)), "expected_beats": beats,
             "tlast_positions_ok": tlast_at == expected_tlast,
             "exact": got is not None and bool(np.array_equal(got, raw)), "library": str(library),
             "test_bench": ran.stdout.strip()}
    if not (facts["beats"] == beats and facts["tlast_positions_ok"] and facts["exact"]):
        raise UserError(f"the IP top is wrong on the known answers: {facts['beats']} words for {beats}, TLAST at "
                        f"{tlast_at[:5]}..., outputs {'equal' if facts['exact'] else 'different'}")
    return facts


def vendor_step(tool: str, release: str, argv: list, cwd: Path) -> None:
    if shutil.which(tool) is None:
        raise UserError(f"{tool} ({'Vitis HLS' if tool == 'vitis_hls' else 'Vivado'} {release}) is not on PATH: "
                        f"the board project is written up to this step; install the free {release} release and "
                        f"source its settings64.sh, or pass --no-vendor")
    result = subprocess.run([tool, *argv], cwd=cwd)
    if result.returncode != 0:
        raise UserError(f"{tool} {' '.join(argv)} failed (exit status {result.returncode}); its log is in {cwd}")


def build(fpga_dir: Path, out: Path, name: str, release: str, cosim: bool, vendor: bool) -> dict:
    fpga_dir, out = fpga_dir.resolve(), out.resolve()
    report = read_json(fpga_dir / "report.json")
    check_design(report)
    project = Path(report["hls_project"])
    if not project.is_absolute():
        project = contract.REPO_ROOT / project
    layout = read_layout(project)
    codes, raw = known_answers(fpga_dir, layout)
    write_top(project, layout, known=(codes, raw))
    standin = check_standin(project, out, layout, codes, raw)
    clock = float(report["hls_config"]["clock_mhz"])
    package = out / "package"
    scripts = {project / "hls.tcl": hls_tcl(clock, cosim),
               out / "block_design.tcl": block_design_tcl(layout, clock, DMA_CELL,
                                                          str(project / f"{TOP}_prj" / "solution1" / "impl" / "ip")),
               out / "bitstream.tcl": bitstream_tcl(name, str(package))}
    for path, text in scripts.items():
        path.write_text(text)
    pixels, labels = pixel_contract(report, layout)
    write_package(package, {**board_document(name, layout, labels, pixels, codes, raw, report),
                             "vendor_release": release})
    summary = {"part": PART, "release": release, "layout": layout.to_json(), "standin": standin,
               "scripts": [str(p) for p in scripts], "package": str(package), "vendor": "skipped (--no-vendor)"}
    write_json(out / "report.json", summary)
    if vendor:
        vendor_step("vitis_hls", release, ["-f", "hls.tcl"], project)
        vendor_step("vivado", release, ["-mode", "batch", "-source", "block_design.tcl"], out)
        vendor_step("vivado", release, ["-mode", "batch", "-source", "bitstream.tcl"], out)
        summary["vendor"] = "built"
        write_json(out / "report.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.board", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fpga-dir", default=contract.stage_dir("fpga"), help="what make fpga wrote (default %(default)s)")
    p.add_argument("--out", default=f"{contract.stage_dir('fpga')}/board", help="the board project (default %(default)s)")
    p.add_argument("--name", default="squeezenet", help="the overlay's name: NAME.bit, NAME.hwh (default %(default)s)")
    p.add_argument("--release", default=DEFAULT_RELEASE,
                   help="the Vitis HLS / Vivado release the scripts are for (default %(default)s)")
    p.add_argument("--cosim", action="store_true", help="run C/RTL co-simulation after synthesis (slow; catches "
                                                        "stream deadlocks the C simulation cannot)")
    p.add_argument("--no-vendor", action="store_true", help="stop before vitis_hls and vivado")
    args = p.parse_args(argv)
    summary = build(Path(args.fpga_dir), Path(args.out), args.name, args.release, args.cosim, not args.no_vendor)
    s = summary["standin"]
    print(f"IP top: {s['images']} known answers through g++, {s['beats']} words, TLAST once per image, outputs "
          f"bit-exact with the C simulation; package: {summary['package']}; vendor steps: {summary['vendor']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
