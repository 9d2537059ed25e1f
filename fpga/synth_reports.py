"""Read the two reports a synthesized hls4ml project leaves: Vivado's post-synthesis utilization
(``vivado_synth.rpt``, ``report_utilization``) and the HLS tool's ``myproject_csynth.rpt``.

Both formats are the tools' fixed-width tables; Vivado 2019-2024 and Vivado HLS 2019-2020 / Vitis HLS
2020-2024 write them the same way for what is read here (7-series "Slice" and UltraScale "CLB" names).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from contract import UserError


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _row(text: str, names: tuple[str, ...]) -> int | None:
    """The ``Used`` column of the first table row whose site type is one of ``names``."""
    for line in text.splitlines():
        cells = _cells(line)
        if len(cells) >= 2 and cells[0].rstrip("*").strip() in names:
            try:
                return int(float(cells[1]))
            except ValueError:
                continue
    return None


def read_vivado_utilization(text: str) -> dict[str, int]:
    """Post-synthesis totals: lut (of which lutram: LUT as memory), ff, dsp, bram18k (RAMB36 count twice)."""
    lut = _row(text, ("Slice LUTs", "CLB LUTs"))
    ff = _row(text, ("Slice Registers", "CLB Registers"))
    if lut is None or ff is None:
        raise UserError("not a Vivado utilization report: no 'Slice LUTs'/'CLB LUTs' or registers row")
    ramb36 = _row(text, ("RAMB36/FIFO", "RAMB36/FIFO*")) or 0
    ramb18 = _row(text, ("RAMB18",)) or 0
    return {"lut": lut, "lutram": _row(text, ("LUT as Memory",)) or 0, "ff": ff,
            "dsp": _row(text, ("DSPs",)) or 0, "bram18k": 2 * ramb36 + ramb18}


@dataclass
class CsynthInstance:
    instance: str
    module: str
    latency_min: int
    latency_max: int
    interval_min: int
    interval_max: int
    config: str = ""  # hls4ml's configN the module is specialized on, when its name carries one


@dataclass
class Csynth:
    part: str
    clock_ns: float
    latency_min: int
    latency_max: int
    interval_min: int
    interval_max: int
    totals: dict[str, int]  # bram18k, dsp, ff, lut: the HLS tool's own estimate
    instances: list[CsynthInstance] = field(default_factory=list)


def _int(cell: str) -> int | None:
    try:
        return int(cell.replace(",", ""))
    except ValueError:
        return None


def read_csynth(text: str) -> Csynth:
    part = re.search(r"\* Target device:\s*(\S+)", text)
    clock = re.search(r"\|ap_clk\s*\|\s*([\d.]+)\s*ns", text)
    if not part or not clock:
        raise UserError("not an HLS synthesis report: no target device or ap_clk row")
    top = None
    perf = text.split("== Utilization Estimates")[0]
    for line in perf.splitlines():
        cells = _cells(line)
        nums = [_int(c) for c in cells]
        if top is None and len(cells) >= 7 and all(n is not None for n in (nums[0], nums[1], nums[4], nums[5])):
            top = (nums[0], nums[1], nums[4], nums[5])
    if top is None:
        raise UserError("HLS synthesis report has no latency summary")
    instances = []
    detail = perf.split("* Instance:")[1] if "* Instance:" in perf else ""
    for line in detail.split("* Loop:")[0].splitlines():
        cells = _cells(line)
        if len(cells) >= 8 and cells[0] and _int(cells[2]) is not None and _int(cells[3]) is not None:
            instances.append(CsynthInstance(cells[0], cells[1], _int(cells[2]), _int(cells[3]),
                                            _int(cells[6]) or 0, _int(cells[7]) or 0,
                                            _config_of(cells[1])))
    totals = {}
    usage = text.split("== Utilization Estimates")[1] if "== Utilization Estimates" in text else ""
    for line in usage.splitlines():
        cells = _cells(line)
        if cells and cells[0] == "Total" and len(cells) >= 5:
            totals = {"bram18k": _int(cells[1]) or 0, "dsp": _int(cells[2]) or 0, "ff": _int(cells[3]) or 0,
                      "lut": _int(cells[4]) or 0}
            break
    return Csynth(part.group(1), float(clock.group(1)), *top, totals, instances)


def _config_of(module: str) -> str:
    """``conv_2d_cl_array_..._config5_s`` -> ``config5``; ``relu_..._relu_config3_s`` -> ``relu_config3``."""
    found = re.findall(r"((?:[a-z]+_)?config\d+)", module)
    if not found:
        return ""
    last = found[-1]
    prefix, _, number = last.rpartition("config")
    return f"{prefix}config{number}" if prefix in ("relu_", "softmax_", "linear_", "sigmoid_", "tanh_") else \
        f"config{number}"
