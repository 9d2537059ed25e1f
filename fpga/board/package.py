"""The board package: what goes to the PYNQ-Z2. ``board.json`` (format ``squeezenet-fpga-board/1``: the
stream layout, the quantization of input and output, the labels, the DMA's name, the known answers and the
exactness the C simulation measured), the driver, and, once Vivado has built them, ``<name>.bit`` and
``<name>.hwh``."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from contract import write_json

from .axis_top import TOP
from .driver import BOARD_FORMAT
from .layout import StreamLayout

DRIVER = Path(__file__).resolve().parent / "driver.py"
DMA_CELL = "axi_dma_0"  # the block design's DMA (fpga/board/tcl writes it under this name)


def board_document(name: str, layout: StreamLayout, labels: list, codes: np.ndarray, raw: np.ndarray,
                   fpga_report: dict) -> dict:
    csim = fpga_report.get("csim") or {}
    return {
        "format": BOARD_FORMAT, "name": name, "bitstream": f"{name}.bit", "hwh": f"{name}.hwh", "top": TOP,
        "dma": DMA_CELL, "layout": layout.to_json(), "labels": list(labels),
        "part": fpga_report["device"]["part"], "clock_mhz": fpga_report["hls_config"]["clock_mhz"],
        "checkpoint": fpga_report.get("checkpoint"), "checkpoint_sha256": fpga_report.get("checkpoint_sha256"),
        # What the board's outputs are checked against: these test images' raw codes from the C simulation.
        "known_answers": {"codes": np.asarray(codes).astype(int).tolist(), "raw": np.asarray(raw).astype(int).tolist()},
        "exactness": {key: csim.get(key) for key in ("samples", "exact", "top1", "top1_agreement", "max_abs_diff")},
    }


def write_package(out: Path, document: dict) -> Path:
    """board.json and the driver into ``out`` (the bitstream and .hwh join them after the Vivado build)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "board.json", document)
    shutil.copyfile(DRIVER, out / "driver.py")
    return out
