"""The stream layout the IP top, the Tcl and the board driver share: how an image's input codes are packed
into 32-bit AXI4-Stream words, how the logits come back, and how many images one DMA transfer may carry.

Read from the generated project (``firmware/defines.h``: the network's input and output types), so nothing
about the network is typed twice. Standard library only: the driver on the board reads the same JSON.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from contract import UserError

WORD_BITS = 32  # the DMA's stream width: legal (32-1,024) and 4x what the network reads per cycle at 8 bits
# The AXI DMA's buffer length register in simple mode: up to 26 bits (the block design sets 26), so one
# transfer moves at most 2**26 - 1 bytes.
LENGTH_WIDTH = 26
MAX_TRANSFER_BYTES = 2 ** LENGTH_WIDTH - 1

_ARRAY = re.compile(r"typedef\s+nnet::array<\s*ap_(u?)fixed<\s*(\d+)\s*,\s*(-?\d+)[^>]*>\s*,\s*([\d*\s]+)>\s*(\w+)\s*;")


@dataclass(frozen=True)
class Port:
    """One side of the IP: ``elements`` fixed-point values per image, each ``bits`` wide (two's complement when
    signed, ``frac`` fractional bits), packed little-endian ``per_word`` to a 32-bit word."""
    elements: int
    bits: int
    signed: bool
    frac: int

    @property
    def lane_bits(self) -> int:  # a value's slot in a word: 8 or 16 bits
        return 8 if self.bits <= 8 else 16

    @property
    def per_word(self) -> int:
        return WORD_BITS // self.lane_bits

    @property
    def words(self) -> int:
        return math.ceil(self.elements / self.per_word)

    @property
    def bytes(self) -> int:
        return self.words * WORD_BITS // 8


@dataclass(frozen=True)
class StreamLayout:
    input: Port
    output: Port
    word_bits: int = WORD_BITS
    max_transfer_bytes: int = MAX_TRANSFER_BYTES

    @property
    def max_batch(self) -> int:
        """Images per transfer, so the input transfer stays under the DMA's length limit."""
        return self.max_transfer_bytes // self.input.bytes

    def to_json(self) -> dict:
        return {"word_bits": self.word_bits, "max_transfer_bytes": self.max_transfer_bytes,
                "max_batch": self.max_batch,
                **{side: {**asdict(port), "words": port.words, "per_word": port.per_word,
                          "lane_bits": port.lane_bits} for side, port in (("input", self.input), ("output", self.output))}}

    @classmethod
    def from_json(cls, data: dict) -> "StreamLayout":
        ports = {side: Port(**{k: data[side][k] for k in ("elements", "bits", "signed", "frac")})
                 for side in ("input", "output")}
        return cls(ports["input"], ports["output"], data.get("word_bits", WORD_BITS),
                   data.get("max_transfer_bytes", MAX_TRANSFER_BYTES))


_CONVERT = re.compile(r"nnet::convert_data<\s*float\s*,\s*(\w+)\s*,\s*([\d*\s]+)>")
_CONVERT_OUT = re.compile(r"nnet::convert_data<\s*(\w+)\s*,\s*float\s*,\s*([\d*\s]+)>")


def read_layout(project: str | Path) -> StreamLayout:
    """The layout of a written hls4ml io_stream project: the value types of input_t and result_t
    (firmware/defines.h) and the values per image (the Python bridge's conversion of the input)."""
    project = Path(project)
    defines, bridge = project / "firmware" / "defines.h", project / "myproject_bridge.cpp"
    for path in (defines, bridge):
        if not path.is_file():
            raise UserError(f"{path} does not exist: run make fpga first (it writes the HLS project)")
    types = {m.group(5): m for m in _ARRAY.finditer(defines.read_text())}
    ports = {}
    for side, name in (("input", "input_t"), ("output", "result_t")):
        m = types.get(name)
        if m is None:
            raise UserError(f"{defines} has no nnet::array typedef {name}: not an io_stream project of hls4ml")
        width, integer = int(m.group(2)), int(m.group(3))
        if width > 16:
            raise UserError(f"{name} is {width} bits wide; the board top packs values of at most 16 bits")
        ports[side] = dict(bits=width, signed=m.group(1) != "u", frac=width - integer,
                           elements=_product(m.group(4)))
    text = bridge.read_text()
    sizes = {m.group(1): _product(m.group(2)) for m in _CONVERT.finditer(text)}
    sizes.update({m.group(1): _product(m.group(2)) for m in _CONVERT_OUT.finditer(text)})
    if "input_t" not in sizes or "result_t" not in sizes:
        raise UserError(f"{bridge} does not convert input_t and result_t: not a bridge hls4ml wrote")
    # input_t / result_t hold one token (a pixel's channels); the bridge converts whole images.
    ports["input"]["elements"], ports["output"]["elements"] = sizes["input_t"], sizes["result_t"]
    return StreamLayout(Port(**ports["input"]), Port(**ports["output"]))


def _product(text: str) -> int:
    value = 1
    for factor in text.split("*"):
        value *= int(factor)
    return value
