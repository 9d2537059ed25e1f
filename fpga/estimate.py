"""Analytic resource and throughput estimates of an hls4ml io_stream pipeline, layer by layer.

These are estimates, not synthesis results: no HLS or Vivado run is involved. Each formula below names
its source; the constants that are not read from a source are marked as assumptions. docs/RESULTS.md
says how far off we expect them to be.

Compute, for a conv with dense kernel n_in x n_out and reuse factor RF (Strategy Resource,
``nnet_dense_resource.h``):
- ``block_factor = ceil(n_in * n_out / RF)`` multipliers work in parallel; the ``ReuseLoop`` runs RF
  iterations at II=1. Zero weights are not pruned under Resource (parameters.h's ``multiplier_limit``
  subtracts them, but only as a report).
- A product goes to a DSP when the weight is at least 9 bits wide, and to LUTs otherwise: the rule of
  hls4ml's own DSP estimator (``optimization/dsp_aware_pruning/objectives/vivado_objectives.py``). A DSP
  product of an A-bit input and a W-bit weight takes ceil(max/25) x ceil(min/18) DSP48E1 slices (25x18
  multiplier, UG479; 27x18 DSP48E2 on UltraScale+, UG579).
- A LUT multiplier costs ``(2 * ceil((A + W) / 6) - 1) * (A + W)`` LUTs, an adder or accumulator one LUT
  per bit, the datapath sum times 1.1 plus 300 LUTs of control per layer: FINN-R's MVAU model (Blott et
  al., ACM TRETS 2018), as FINN's ``MVAU_hls.lut_estimation`` applies it.
- The operand selection of the folded kernel: with RF <= n_in each of the n_in / RF distinct input
  slices is an RF:1 multiplexer of A bits; with RF > n_in one n_in:1 input multiplexer, and each
  multiplier selects which of its RF / n_in accumulators it adds to. An N:1 multiplexer bit costs ceil(N / 4)
  LUT6 (a slice makes a 16:1 multiplexer from 4 LUTs and its F7/F8 muxes, UG474).
- Weights: ``ARRAY_RESHAPE block factor=block_factor`` + ``RESOURCE core=ROM_nP_BRAM`` (RF > 1) make a
  ROM RF words deep and block_factor x W bits wide; it takes the cheapest of the RAMB18 shapes 16Kx1,
  8Kx2, 4Kx4, 2Kx9, 1Kx18, 512x36 (UG473): ceil(width / w) x ceil(depth / d) blocks. Biases are
  partitioned into registers (constants).
- Registers: the accumulators (n_out x accumulator bits), the kernel window (K*K*C x A) and one product
  register per multiplier (A + W); the output word goes straight into the FIFO.
- Line buffers (K > 1): ``ap_shift_reg<T, in_width>`` per channel and kernel row, partitioned by channel:
  shift registers of in_width words, i.e. ceil(in_width / 32) SRLC32E LUTs per bit (UG474).
- Cycles per image (hls4ml's ``conv_2d_buffer_resource_cl``: the pixel loop is not pipelined): every
  input pixel costs PIXEL_CYCLES (stream read, line-buffer shift), every output pixel RF + DENSE_EXTRA
  more (the ReuseLoop, its pipeline depth and the output write). PIXEL_CYCLES and DENSE_EXTRA are
  assumptions read from the template structure, not measured.

FIFOs (one per stream between two stages; hls::stream, Vitis HLS):
- depth <= 2: Vitis' shift-register FIFO (``fifo_w*_d*_S``), which Vivado keeps in flip-flops below its
  SRL inference threshold (``synth_design -shreg_min_size``, default 3, UG901): depth x width FFs, plus a
  width/2-LUT read multiplexer at depth 2;
- 3 <= depth <= SRL_MAX_DEPTH: the same FIFO in SRLC32E shift registers: width x ceil(depth / 32) LUTs as
  memory; the project binds these with ``BIND_STORAGE type=fifo impl=srl`` so Vitis cannot choose
  otherwise;
- deeper: block RAM (``impl=bram``), same geometry rule as the weights.
Vitis' own default (``config_storage fifo -auto_srl_max_bits 1024``, UG1399) would put most of our
shallow but wide FIFOs (512-2,048 bits per element) in block RAM, where one costs 15-57 RAMB18s whatever
its depth.

Small stages (stream copies, casts, concat, add, pad, pools) cost a few LUT/FF per output bit and 40 LUT /
40 FF of control each (assumption).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .devices import RESOURCES, Device
from .pipeline import Pipeline, Stage

# --- timing assumptions (cycles) ---
PIXEL_CYCLES = 2  # conv: read one pixel and shift the line buffer (pixel loop not pipelined)
DENSE_EXTRA = 5  # conv: ReuseLoop pipeline depth + result cast + stream write, per output pixel
STREAM_II = 1  # every other stage: PIPELINE II=1 per token

# --- resource rules ---
DSP_MIN_WEIGHT_BITS = 9  # hls4ml's DSP estimator: narrower weights are multiplied in LUTs
FINN_LUT_C0, FINN_LUT_C1 = 300, 1.1  # FINN-R: per-layer control LUTs, datapath overhead factor
SMALL_STAGE_LUT, SMALL_STAGE_FF = 40, 40  # assumption: FSM, counters, handshakes of a simple stage
CONV_CONTROL_FF = 150  # assumption: counters, FSM and pipeline valid bits of a conv
SRL_MAX_DEPTH = 64  # FIFOs up to this depth are bound to SRLs, deeper ones to block RAM
FIFO_CONTROL_LUT, FIFO_CONTROL_FF = 8, 4  # assumption: counters and full/empty flags of one FIFO
BRAM18K_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM18K_BITS = 18 * 1024


def bram18k(depth: int, width: int) -> int:
    """RAMB18s for a memory ``depth`` words deep and ``width`` bits wide (UG473 aspect ratios)."""
    if depth <= 0 or width <= 0:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in BRAM18K_SHAPES)


def mux_luts(inputs: int) -> int:
    """LUT6 per bit of an ``inputs``:1 multiplexer (a slice: 16:1 from 4 LUTs + F7/F8, UG474)."""
    return 0 if inputs <= 1 else math.ceil(inputs / 4)


def lut_multiplier(a_bits: int, w_bits: int) -> int:
    """FINN-R's LUT cost of one A x W multiplier (FINN ``MVAU_hls.lut_estimation``)."""
    return (2 * math.ceil((a_bits + w_bits) / 6) - 1) * (a_bits + w_bits)


def block_factor(n_in: int, n_out: int, reuse_factor: int) -> int:
    """Parallel multipliers of hls4ml's Resource dense kernel (``nnet_dense_resource.h``)."""
    return math.ceil(n_in * n_out / reuse_factor)


@dataclass
class Cost:
    dsp: int = 0
    lut: int = 0
    ff: int = 0
    bram18k: int = 0
    lutram: int = 0  # LUTs used as memory (SRLs); also counted in ``lut``

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(*(getattr(self, n) + getattr(other, n) for n in RESOURCES))

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

    def resources(self) -> dict[str, dict]:
        avail = self.device.available()
        return {name: {"estimate": int(getattr(self.totals, name)), "available": avail[name],
                       "share": round(getattr(self.totals, name) / avail[name], 4) if avail[name] else None}
                for name in RESOURCES}


def conv_cycles(stage: Stage, reuse_factor: int) -> int:
    return stage.in_tokens * PIXEL_CYCLES + stage.out_tokens * (reuse_factor + DENSE_EXTRA)


def stage_cycles(stage: Stage, reuse_factor: int = 1) -> int:
    """Cycles one stage needs per image at its own pace."""
    if stage.kind == "conv":
        return conv_cycles(stage, reuse_factor)
    if stage.kind == "input":
        return stage.out_tokens * STREAM_II
    if stage.kind == "pad":
        return stage.out_tokens * STREAM_II
    return max(stage.in_tokens, stage.out_tokens) * STREAM_II


def stage_latency(stage: Stage, reuse_factor: int = 1) -> int:
    """Cycles from a stage's first input to its first output when inputs come at full rate."""
    h, w, _ = stage.in_shape
    if stage.kind == "conv":
        window = (stage.kernel - 1) * w + stage.kernel
        return window * PIXEL_CYCLES + reuse_factor + DENSE_EXTRA
    if stage.kind == "maxpool":
        return (stage.kernel - 1) * w + stage.kernel
    if stage.kind == "global_avgpool":
        return stage.in_tokens + 1
    return STREAM_II


def conv_cost(stage: Stage, rf: int, device: Device) -> tuple[Cost, int, bool]:
    """Resources of one conv at reuse factor ``rf``; also its block factor and DSP mapping."""
    a, wb, acc = stage.in_bits, stage.weight_bits, stage.accum_bits
    bf = block_factor(stage.n_in, stage.n_out, rf)
    on_dsp = wb >= DSP_MIN_WEIGHT_BITS
    hi, lo = max(a, wb), min(a, wb)
    dsp = bf * math.ceil(hi / device.dsp_a_bits) * math.ceil(lo / device.dsp_b_bits) if on_dsp else 0
    mult_luts = 0 if on_dsp else bf * lut_multiplier(a, wb)
    adder_luts = bf * acc
    if rf <= 1:
        select_luts = 0
    elif rf <= stage.n_in:
        select_luts = (stage.n_in // rf) * a * mux_luts(rf)
    else:
        select_luts = a * mux_luts(stage.n_in) + bf * acc * mux_luts(rf // stage.n_in)
    cast_luts = stage.n_out * stage.out_bits  # rounding + saturation of every output
    lut = math.ceil(FINN_LUT_C1 * (mult_luts + adder_luts + select_luts + cast_luts)) + FINN_LUT_C0
    lutram = 0
    if stage.kernel > 1:  # line buffer: (K-1) rows x channels shift registers of in_width words
        channels = stage.n_in // (stage.kernel * stage.kernel)
        lutram = (stage.kernel - 1) * channels * a * math.ceil(stage.in_shape[1] / 32)
    ff = stage.n_out * acc + stage.n_in * a + bf * (a + wb) + CONV_CONTROL_FF
    # RF 1: no ROM pragma (``if (reuse_factor > 1)``), the weights become registers
    bram = bram18k(rf, bf * wb) if rf > 1 else 0
    if rf <= 1:
        ff += stage.weights * wb
    return Cost(dsp, lut + lutram, ff, bram, lutram), bf, on_dsp


def small_stage_cost(stage: Stage) -> tuple[Cost, int]:
    """Resources of a non-conv stage, and its line-buffer bits."""
    c = stage.out_shape[2]
    out_bits = c * stage.out_bits
    if stage.kind in ("input", "clone"):
        return Cost(0, SMALL_STAGE_LUT // 2, SMALL_STAGE_FF // 2), 0
    if stage.kind == "maxpool":
        k, a = stage.kernel, stage.in_bits
        line = (k - 1) * c * a * math.ceil(stage.in_shape[1] / 32)
        compare = c * (k * k - 1) * a  # compare + select per channel and window element
        return Cost(0, compare + line + SMALL_STAGE_LUT, k * k * c * a + out_bits + SMALL_STAGE_FF, 0,
                    line), (k - 1) * c * a * stage.in_shape[1]
    if stage.kind == "global_avgpool":
        acc = stage.accum_bits
        # accumulate every channel, then divide by H*W (``data_window[i] / (in_height * in_width)``,
        # pipelined and unrolled over the channels). Assumption: HLS instantiates a pipelined divider for
        # the constant divisor, about acc^2 LUTs and acc^2 FFs per channel.
        return Cost(0, c * acc + c * acc * acc + SMALL_STAGE_LUT, c * acc + c * acc * acc + SMALL_STAGE_FF), 0
    if stage.kind == "add":  # adder + rounding/saturation per channel, straight into the FIFO
        return Cost(0, c * (stage.out_bits + 2) + SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    if stage.kind == "cast":
        return Cost(0, out_bits + SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    if stage.kind == "pad":
        return Cost(0, out_bits // 4 + SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    if stage.kind == "concat":  # wires from the two FIFOs into the third
        return Cost(0, SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    raise ValueError(f"unknown stage kind {stage.kind}")


def fifo_impl(depth: int) -> str:
    if depth <= 2:
        return "reg"
    return "srl" if depth <= SRL_MAX_DEPTH else "bram"


def fifo_cost(width: int, depth: int) -> tuple[str, Cost]:
    impl = fifo_impl(depth)
    if impl == "reg":
        lut = (width // 2 if depth == 2 else 0) + FIFO_CONTROL_LUT
        return impl, Cost(0, lut, depth * width + FIFO_CONTROL_FF)
    if impl == "srl":
        lutram = width * math.ceil(depth / 32)
        return impl, Cost(0, lutram + FIFO_CONTROL_LUT, FIFO_CONTROL_FF, 0, lutram)
    return impl, Cost(0, 4 * FIFO_CONTROL_LUT, 4 * FIFO_CONTROL_FF, bram18k(depth, width))


def default_depths(pipeline: Pipeline) -> dict[str, int]:
    """Depth 2 everywhere (Vitis' default for an hls::stream); the FIFO sizing replaces these."""
    return {s.key: 2 for s in pipeline.fifos()}


def estimate(pipeline: Pipeline, plan: dict[str, int], device: Device, *, depths: dict[str, int] | None = None,
             share: float = 0.8, clock_mhz: float = 100.0) -> Estimate:
    """Per-layer and total estimates for ``pipeline`` folded by ``plan`` (conv name -> reuse factor; a
    conv not in the plan keeps the reuse factor its stage holds) with FIFO ``depths``."""
    depths = depths or default_depths(pipeline)
    layers = []
    for stage in pipeline.stages:
        if stage.kind == "conv":
            rf = plan.get(stage.name, stage.reuse_factor)
            cost, bf, on_dsp = conv_cost(stage, rf, device)
            channels = stage.n_in // (stage.kernel * stage.kernel)
            line_bits = (stage.kernel - 1) * channels * stage.in_bits * stage.in_shape[1] if stage.kernel > 1 else 0
            layers.append(LayerEstimate(stage.name, stage.kind, rf, bf, on_dsp, stage_cycles(stage, rf),
                                        stage_latency(stage, rf), cost,
                                        stage.weights * stage.weight_bits + stage.n_out * stage.bias_bits,
                                        line_bits))
        else:
            cost, line_bits = small_stage_cost(stage)
            layers.append(LayerEstimate(stage.name, stage.kind, 1, 0, False, stage_cycles(stage),
                                        stage_latency(stage), cost, 0, line_bits))
    fifos = []
    for stream in pipeline.fifos():
        depth = depths.get(stream.key, 2)
        impl, cost = fifo_cost(stream.width, depth)
        fifos.append(FifoEstimate(stream.key, stream.name, stream.width, depth, impl, cost))
    slowest = max(layers, key=lambda layer: layer.cycles)
    totals = Cost()
    for item in layers + fifos:
        totals = totals + item.cost
    return Estimate(pipeline.name, layers, fifos, device, share, clock_mhz, slowest.cycles, slowest.name,
                    critical_path_latency(pipeline, layers), totals)


def critical_path_latency(pipeline: Pipeline, layers: list[LayerEstimate]) -> int:
    """First input to first output along the slowest path (stage latencies added; an estimate that ignores
    back-pressure, which the dataflow simulation includes)."""
    by_name = {layer.name: layer for layer in layers}
    ready: dict[str, int] = {}
    for stage in pipeline.stages:
        start = max((ready.get(k, 0) for k in stage.inputs), default=0)
        for k in stage.outputs:
            ready[k] = start + by_name[stage.name].latency
    return max(ready.values(), default=0)
