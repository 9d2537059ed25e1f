"""What an estimate is made of: a resource Cost, per layer and per FIFO, and the Estimate of a whole design
(totals, throughput, the fit against its part). fpga/estimate.py computes them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .devices import RESOURCES, Device

BANDS = Path(__file__).parent / "calibration" / "bands.json"  # written by python -m fpga.calibrate --write


def load_bands(path: Path = BANDS) -> dict[str, tuple[float, float]]:
    """resource -> (low, high): on every design of the calibration set (fpga/calibrate.py) the synthesized
    figure lay within estimate x [low, high]. Resources without calibration points carry no band."""
    import json

    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {name: tuple(v["band"]) for name, v in data.get("resources", {}).items()}


@dataclass
class Cost:
    dsp: int = 0
    lut: int = 0
    ff: int = 0
    bram18k: int = 0
    lutram: int = 0  # LUTs used as memory (SRLs); also counted in ``lut``

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, n) + getattr(other, n) for n in RESOURCES))

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, n) - getattr(other, n) for n in RESOURCES))

    def to_dict(self) -> dict[str, int]:
        return {n: int(getattr(self, n)) for n in RESOURCES}


@dataclass
class LayerEstimate:
    name: str
    kind: str
    reuse_factor: int
    block_factor: int  # parallel multipliers
    multipliers_on_dsp: bool
    cycles: int  # per image
    latency: int  # first input to first output, inputs arriving at full rate
    cost: Cost
    weight_bits: int = 0  # weight + bias storage
    line_buffer_bits: int = 0
    function: str = ""  # the nnet:: function, where the pipeline was read from a written project
    strategy: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cost"] = self.cost.to_dict()
        return d


@dataclass
class FifoEstimate:
    stream: str
    name: str
    width: int
    depth: int
    impl: str  # reg | srl | bram
    cost: Cost

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass
class Estimate:
    pipeline: str
    layers: list[LayerEstimate]
    fifos: list[FifoEstimate]
    device: Device
    share: float
    clock_mhz: float
    ii_cycles: int  # the slowest stage, cycles per image
    bottleneck: str
    latency_cycles: int
    totals: Cost = field(default_factory=Cost)

    @property
    def images_per_second(self) -> float:
        return self.clock_mhz * 1e6 / self.ii_cycles

    @property
    def fifo_bits(self) -> int:
        return sum(f.bits for f in self.fifos)

    @property
    def weight_bits(self) -> int:
        return sum(layer.weight_bits for layer in self.layers)

    @property
    def line_buffer_bits(self) -> int:
        return sum(layer.line_buffer_bits for layer in self.layers)

    @property
    def onchip_memory_bits(self) -> int:
        return self.weight_bits + self.fifo_bits + self.line_buffer_bits

    def over(self, share: float | None = None) -> dict[str, tuple[int, float]]:
        """Resources above ``share`` of the part: name -> (estimate, allowed)."""
        share = self.share if share is None else share
        avail = self.device.available()
        out = {}
        for name in RESOURCES:
            allowed = share * avail[name]
            if getattr(self.totals, name) > allowed:
                out[name] = (getattr(self.totals, name), allowed)
        return out

    @property
    def fits(self) -> bool:
        return not self.over()

    def over_with_band(self, share: float | None = None) -> dict[str, tuple[int, float]]:
        """Resources whose calibration band's upper edge (what synthesis may give, at worst, on the
        evidence of the calibration set) is above ``share`` of the part: name -> (that edge, allowed)."""
        share = self.share if share is None else share
        avail, bands = self.device.available(), load_bands()
        out = {}
        for name in RESOURCES:
            high = round(getattr(self.totals, name) * bands.get(name, (1.0, 1.0))[1])
            if high > share * avail[name]:
                out[name] = (high, share * avail[name])
        return out

    @property
    def fits_with_band(self) -> bool:
        return not self.over_with_band()

    def resources(self) -> dict[str, dict]:
        """Per resource: the estimate, the part's count, the share, and ``band``: the range the calibration
        against published Vivado syntheses puts the synthesized figure in (absent for an uncalibrated one)."""
        avail = self.device.available()
        bands = load_bands()
        out = {}
        for name in RESOURCES:
            value = int(getattr(self.totals, name))
            out[name] = {"estimate": value, "available": avail[name],
                         "share": round(value / avail[name], 4) if avail[name] else None}
            if name in bands:
                out[name]["band"] = [round(value * bands[name][0]), round(value * bands[name][1])]
        return out
