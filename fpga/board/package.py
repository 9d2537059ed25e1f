"""The board package: what goes to the PYNQ-Z2. ``board.json`` (format ``squeezenet-fpga-board/1``: the
stream layout, the quantization of input and output, the labels, the DMA's name, the known answers and the
exactness the C simulation measured), the driver, and, once Vivado has built them, ``<name>.bit`` and
``<name>.hwh``."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from contract import write_json

from .axis_top import TOP
from .layout import StreamLayout
from .runtime.driver import BOARD_FORMAT

DRIVER = Path(__file__).resolve().parent / "runtime" / "driver.py"
DMA_CELL = "axi_dma_0"  # the block design's DMA (fpga/board/tcl writes it under this name)


def board_document(name: str, layout: StreamLayout, labels: list, pixels: dict, codes: np.ndarray,
                   raw: np.ndarray, fpga_report: dict) -> dict:
    csim = fpga_report.get("csim") or {}
    return {
        "format": BOARD_FORMAT, "name": name, "bitstream": f"{name}.bit", "hwh": f"{name}.hwh", "top": TOP,
        "dma": DMA_CELL, "layout": layout.to_json(), "labels": list(labels),
        # a camera frame -> the IP's input codes: the Pi app's preprocessing with this table (rpi/runtime/preprocess.py)
        "input": pixels,
        "part": fpga_report["device"]["part"], "clock_mhz": fpga_report["hls_config"]["clock_mhz"],
        "checkpoint": fpga_report.get("checkpoint"), "checkpoint_sha256": fpga_report.get("checkpoint_sha256"),
        # What the board's outputs are checked against: these test images' raw codes from the C simulation.
        "known_answers": {"codes": np.asarray(codes).astype(int).tolist(), "raw": np.asarray(raw).astype(int).tolist()},
        "exactness": {key: csim.get(key) for key in ("samples", "exact", "top1", "top1_agreement", "max_abs_diff")},
    }


def write_package(out: Path, document: dict) -> Path:
    """board.json and the driver as ``out``, complete or not at all: written beside, then renamed over the
    old package (whose bitstream, from an earlier network, goes with it; the Vivado build adds the new
    one). The .bit and .hwh join them after the Vivado build."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_json(staging / "board.json", document)
        shutil.copyfile(DRIVER, staging / "driver.py")
        staging.chmod(0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
