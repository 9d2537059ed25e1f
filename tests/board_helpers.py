"""Shared pieces of the board tests: the board package with a stand-in bitstream (a .bit that the stand-in
pynq in tests/standin_pynq loads as a compiled IP top), the driver run as the board runs it, and the test
images as the IP takes them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from model.data import load_dataset
from model.inference import to_input
from model.squeezenet import plain
from quantize.qat import FPGA_QUANT, load_quant_model

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin_pynq"
DRIVER = ROOT / "fpga" / "board" / "runtime" / "driver.py"
TLFRT_PYTHON = ROOT / ".venv-tflite-runtime" / "bin" / "python"  # numpy 1.26, no torch: the board's kind


def standin_package(board_dir, tmp_path, library, **board_changes):
    """The board package with a stand-in "bitstream": a .bit the stand-in pynq loads as ``library``."""
    package = tmp_path / "package"
    shutil.copytree(board_dir / "package", package)
    meta = json.loads((package / "board.json").read_text())
    meta["layout"].update(board_changes)
    (package / "board.json").write_text(json.dumps(meta))
    (package / meta["bitstream"]).write_bytes(b"stand-in bitstream")
    (package / meta["hwh"]).write_text("<!-- stand-in hardware handoff -->\n")
    spec = {"library": str(library), "dma": meta["dma"], "in_words": meta["layout"]["input"]["words"],
            "out_words": meta["layout"]["output"]["words"],
            "max_transfer_bytes": meta["layout"]["max_transfer_bytes"]}
    (package / (meta["bitstream"][:-4] + ".standin.json")).write_text(json.dumps(spec))
    return package, meta


def run_driver(package, *args, python=sys.executable, timeout=1200):
    """The driver as the board runs it: its own file, with numpy and (stand-in) pynq only on the path."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(STANDIN)}
    return subprocess.run([str(python), "-B", str(DRIVER), "--package", str(package), *args],
                          cwd=package, env=env, capture_output=True, text=True, timeout=timeout)


def board_inputs(n):
    """The first ``n`` test images as the IP takes them (the input quantizer's int8 codes, HWC) and the
    Brevitas model's logits for them."""
    qm = load_quant_model(ROOT / FPGA_QUANT)
    test = load_dataset("fashion-mnist", "test")
    with torch.no_grad():
        x = to_input(torch.from_numpy(test.images[:n]), qm.normalization)
        quantized = qm.model.input_quant(x)  # its scale is the quantizer's own (QAT may move it), a power of two
        codes = (plain(quantized) / quantized.scale).permute(0, 2, 3, 1).reshape(n, -1).numpy()
        logits = plain(qm.model.eval()(x)).numpy().astype(np.float64)
    return np.round(codes).astype(np.int8), logits


