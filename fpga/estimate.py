"""Analytic resource and throughput estimates of an hls4ml io_stream pipeline, layer by layer.

These are estimates, not synthesis results: no HLS or Vivado run is involved. They predict Vivado's
post-synthesis utilization (what decides whether a design fits), and are checked against published
syntheses of hls4ml designs (``python -m fpga.calibrate``, fpga/calibration/): every total carries the band
that calibration gives (``load_bands``), and docs/RESULTS.md lists every point. Each formula names its
source: a template, a user guide, or a calibration point; a constant that is neither is marked an
assumption.

Kernels (conv and dense: a dense kernel n_in x n_out at reuse factor RF):
- Resource (``nnet_dense_resource.h``): ``block_factor = ceil(n_in * n_out / RF)`` multipliers; the
  ``ReuseLoop`` runs RF iterations at II=1. Zero weights are not pruned. Weights: ``ARRAY_RESHAPE`` into a
  ROM RF words deep and block_factor x W bits wide (``weight_rom``: block RAM in the cheapest RAMB18
  shape of UG473, or LUTs where the templates leave shallow ROMs to Vivado).
- Latency (``nnet_dense_latency.h``): at RF 1 every non-zero weight is a constant multiplier, costed from
  its canonical-signed-digit count when the project ships its weights (``constant_weights``); at RF > 1
  ``ALLOCATION`` shares ``multiplier_limit`` generic multipliers but not the adders.
- A generic product goes to a DSP when the weight is at least 9 bits wide, and to LUTs otherwise (hls4ml's
  own DSP rule, ``optimization/dsp_aware_pruning/objectives/vivado_objectives.py``), or to a DSP whatever
  its width where the project binds it there (``BIND_OP op=mul impl=dsp``, ``--multipliers dsp``): ceil(max/25) x
  ceil(min/18) DSP48E1 (UG479; 27 x 18 DSP48E2, UG579), or FINN-R's LUT multiplier
  ``(2 * ceil((A + W) / 6) - 1) * (A + W)``, an adder one LUT a bit, the datapath sum x 1.1 plus 300 LUTs of
  control per layer (Blott et al., ACM TRETS 2018; FINN's ``MVAU_hls.lut_estimation``).
- Operand selection: with RF <= n_in each of the n_in / RF input slices is an RF:1 multiplexer; with
  RF > n_in one n_in:1 input multiplexer and an accumulator select per multiplier; an N:1 multiplexer bit
  costs ceil(N / 4) LUT6 (UG474).
- Registers: the window and the kernel's own copy of it (Resource: the dense call is a separate function,
  INLINE OFF), the accumulators, the cast results, the operands of LUT products (a DSP keeps its own).
- Line buffers (K > 1): ``ap_shift_reg`` per channel and kernel row: ceil(in_width / 32) SRLC32E per bit
  (UG474; the calibration's "LUT as Memory" is matched exactly on the pominiq designs).

Cycles per image, from the templates' loops and the calibration (each constant names its points below):
Resource conv: the pixel loop is not pipelined, PIXEL_CYCLES a pixel plus RF + DENSE_EXTRA per window;
Latency conv: the pixel loop at II = RF; Dense: its reads, the call, its write; II=1 stages: a token a
cycle plus their pipeline depth, flushed per image (csynth's interval equals their latency).

FIFOs (one per stream between two stages; Vivado HLS splits an ``nnet::array`` stream into one FIFO per
element, Vitis HLS keeps one):
- depth <= 2: Vitis' shift-register FIFO (``fifo_w*_d*_S``), which Vivado keeps in flip-flops below its
  SRL inference threshold (``synth_design -shreg_min_size``, default 3, UG901): depth x width FFs, plus a
  width/2-LUT read multiplexer at depth 2;
- 3 <= depth <= SRL_MAX_DEPTH: SRLC32E shift registers, width x ceil(depth / 32) LUTs as memory; our
  projects bind these with ``BIND_STORAGE type=fifo impl=srl`` so Vitis cannot choose otherwise;
- deeper: block RAM (``impl=bram``), same geometry rule as the weights.
Vitis' own default (``config_storage fifo -auto_srl_max_bits 1024``, UG1399) would put most of our
shallow but wide FIFOs (512-2,048 bits per element) in block RAM, where one costs 15-57 RAMB18s whatever
its depth.

Small stages (stream copies, casts, concat, add, pad) cost a few LUT/FF per output bit and 40 LUT / 40 FF of
control each (assumption); a max pool a comparator and a select per window element and bit.
"""
from __future__ import annotations

import math

from .costs import Cost, Estimate, FifoEstimate, LayerEstimate
from .cycles import (
    stage_cycles,
    stage_latency,
)
from .devices import RESOURCES, Device
from .pipeline import Pipeline, Stage

# Timing (cycles per stage) lives in fpga/cycles.py.

# --- resource rules ---
DSP_MIN_WEIGHT_BITS = 9  # hls4ml's DSP estimator: narrower weights are multiplied in LUTs
FINN_LUT_C0, FINN_LUT_C1 = 300, 1.1  # FINN-R: per-layer control LUTs, datapath overhead factor
SMALL_STAGE_LUT, SMALL_STAGE_FF = 40, 40  # assumption: FSM, counters, handshakes of a simple stage
CONV_CONTROL_FF = 150  # assumption: counters, FSM and pipeline valid bits of a conv
SRL_MAX_DEPTH = 64  # FIFOs up to this depth are bound to SRLs, deeper ones to block RAM
ROM_BRAM_MIN_DEPTH = 64  # weight ROMs shallower than this end up in LUTs (``weight_rom``)
CSD_DSP_MIN_DIGITS = 3  # a constant weight with fewer signed digits is shifts and adds (``constant_weights``)
FIFO_CONTROL_LUT, FIFO_CONTROL_FF = 8, 4  # assumption: counters and full/empty flags of one FIFO
BRAM18K_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
BRAM18K_BITS = 18 * 1024
KERNEL_KINDS = ("conv", "dense")  # stages with a dense kernel (weights, reuse factor, strategy)


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


def _dsp_per_multiplier(a: int, w: int, device: Device) -> int:
    hi, lo = max(a, w), min(a, w)
    return math.ceil(hi / device.dsp_a_bits) * math.ceil(lo / device.dsp_b_bits)


def constant_multiplier_luts(a_bits: int, w_bits: int) -> int:
    """LUTs one constant weight adds to its output's sum (Strategy Latency at RF 1: the weights are
    constants in the logic). Each non-zero bit of the constant is a shifted copy of the A-bit input, about
    half of the W bits of a weight; Vivado sums all the copies of one dot product in one tree of ternary
    adders, one LUT6 per bit adding two more operands (UG474), so a weight costs about (W / 2) * (A + W) / 2
    LUTs, its share of the final adder included."""
    return math.ceil(math.ceil(w_bits / 2) * (a_bits + w_bits) / 2)


def multipliers(stage: Stage, rf: int) -> tuple[int, bool]:
    """Parallel multipliers of a conv / dense kernel, and whether each multiplies by a constant.

    Resource: ``block_factor`` (``nnet_dense_resource.h``; zero weights are not pruned). Latency at RF 1:
    every non-zero weight is its own constant multiplier (``nnet_dense_latency.h`` fully unrolls; HLS
    removes a multiplication by zero). Latency at RF > 1: ``ALLOCATION ... limit=multiplier_limit`` shares
    ``ceil(n_in * n_out / RF) - n_zeros / RF`` generic multipliers (parameters.h's ``multiplier_limit``)."""
    if stage.strategy == "latency":
        if rf <= 1:
            return max(0, stage.weights - stage.zero_weights), True
        return max(1, block_factor(stage.n_in, stage.n_out, rf) - stage.zero_weights // rf), False
    return block_factor(stage.n_in, stage.n_out, rf), False


def constant_weights(stage: Stage) -> tuple[int, int, int]:
    """(multiplications on DSPs, multiplications in LUTs, LUTs of those) of a constant-weight kernel
    (Latency at RF 1). With the weights known (``weight_digits``): a zero weight costs nothing; a constant
    of at most CSD_DSP_MIN_DIGITS - 1 signed digits is shifts and adds in LUTs; a wider one goes to a DSP
    when the weight type is wide enough for hls4ml's rule (DSP_MIN_WEIGHT_BITS). Calibration: MNIST_original's
    644 weights (16-bit) have 79 with at most two digits; Vivado used 565 DSPs, 555 of them outside the
    softmax, and the rule gives 565. Without the values every non-zero weight counts: on a DSP when the type
    is wide enough, else ``constant_multiplier_luts`` (half its bits taken as non-zero)."""
    a, wb = stage.in_bits, stage.weight_bits
    wide = wb >= DSP_MIN_WEIGHT_BITS or stage.multipliers_bound_to_dsp
    if stage.weight_digits is not None:
        digits = [d for d in stage.weight_digits if d > 0]
        dsp = sum(1 for d in digits if wide and d >= CSD_DSP_MIN_DIGITS)
        lut_digits = [d for d in digits if not (wide and d >= CSD_DSP_MIN_DIGITS)]
        return dsp, len(lut_digits), sum(math.ceil(d * (a + wb) / 2) for d in lut_digits)
    nonzero = max(0, stage.weights - stage.zero_weights)
    if wide:
        return nonzero, 0, 0
    return 0, nonzero, nonzero * constant_multiplier_luts(a, wb)


def conv_cost(stage: Stage, rf: int, device: Device) -> tuple[Cost, int, bool]:
    """Resources of one conv or dense kernel at reuse factor ``rf``; also its multipliers and DSP mapping."""
    a, wb, acc = stage.in_bits, stage.weight_bits, stage.accum_bits
    bf, constant = multipliers(stage, rf)
    if constant:
        on_dsp_count, in_luts, mult_luts = constant_weights(stage)
        bf = on_dsp_count + in_luts
        on_dsp = on_dsp_count > 0
        dsp = on_dsp_count * _dsp_per_multiplier(a, wb, device)
    else:
        on_dsp = wb >= DSP_MIN_WEIGHT_BITS or stage.multipliers_bound_to_dsp
        dsp = bf * _dsp_per_multiplier(a, wb, device) if on_dsp else 0
        mult_luts = 0 if on_dsp else bf * lut_multiplier(a, wb)
    if stage.strategy == "latency":
        # LUT constants: the sum is part of their compressor tree (above); DSP products and shared
        # multipliers: an adder tree per output in the fabric, one adder fewer than its products
        # (II = RF shares the multipliers only, ``ALLOCATION ... mul``: every product keeps its own adder)
        products = dsp // max(1, _dsp_per_multiplier(a, wb, device)) if constant \
            else max(0, stage.weights - stage.zero_weights)
        adder_luts = max(0, products - stage.n_out) * acc
        select_luts = 0 if rf <= 1 else bf * (a + wb) * mux_luts(rf)
    else:
        # every product is added into an accumulator. A DSP does one add itself (P = A * B + C, UG479); at
        # RF <= n_in each accumulator takes n_in / RF products a cycle, so the others need fabric adders.
        # Not where the project binds the product (BIND_OP keeps Vitis HLS from matching a multiply-add
        # into one DSP, UG1399 "BIND_OP"): every add of a bound product is in the fabric.
        if on_dsp and not stage.multipliers_bound_to_dsp:
            adder_luts = max(0, bf - stage.n_out) * acc if rf <= stage.n_in else 0
        else:
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
    if stage.kind == "conv" and stage.kernel > 1 and stage.in_shape[0] > 1:
        # 2D line buffer: (K-1) rows x channels SRLs of in_width words (a 1D conv shifts its window only)
        channels = stage.n_in // (stage.kernel * stage.kernel)
        lutram = (stage.kernel - 1) * channels * a * math.ceil(stage.in_shape[1] / 32)
    # Registers: the window (kernel_data) and the kernel's own copy of it (the dense call's data argument,
    # sampled into its pipeline), the accumulators, the cast results, and for LUT products the operand
    # registers (a DSP takes its operands and product into its own A/B/M registers, UG479); constant
    # weights have no second operand.
    # Latency: the kernel is inlined into the pipelined pixel loop, one copy of the window.
    product_regs = 0 if on_dsp or constant else bf * (a + wb)
    windows = 1 if stage.strategy == "latency" else 2
    ff = windows * stage.n_in * a + stage.n_out * (acc + stage.out_bits) + product_regs + CONV_CONTROL_FF
    if stage.strategy == "latency" and rf > 1:
        # II = RF with shared multipliers: each product comes out in its own cycle and is held until the
        # adder tree takes it (MNIST_R16 has 9,129 more registers than the same network at RF 1)
        ff += max(0, stage.weights - stage.zero_weights) * acc
    # Resource at RF > 1: a ROM RF words deep (``if (reuse_factor > 1)``: ARRAY_RESHAPE + ROM_nP_BRAM);
    # RF 1 or Latency: the weights are constants or registers
    bram = rom_luts = 0
    if rf > 1 and stage.strategy != "latency":
        bram, rom_luts = weight_rom(rf, bf * wb, stage.weights_bound_to_bram)
    if rf <= 1 and stage.strategy != "latency":
        ff += stage.weights * wb
    return Cost(dsp, lut + lutram + rom_luts, ff, bram, lutram), bf, on_dsp


def weight_rom(depth: int, width: int, bound_to_bram: bool = True) -> tuple[int, int]:
    """(RAMB18s, LUTs) of a Resource kernel's weight ROM, ``depth`` (= RF) words deep.

    hls4ml >= 1.0 binds it to block RAM (``core=ROM_nP_BRAM``), which the RTL carries to Vivado: block RAM
    whatever the depth (an assumption: no synthesis of a >= 1.0 project is in the calibration set). Where the
    templates leave the choice to the tools (hls4ml <= 0.8), Vivado builds a ROM shallower than
    ROM_BRAM_MIN_DEPTH from LUT6s (64 x 1 each): the 9- and 8-deep ROMs of pominiq model_01 (csynth: 33
    RAMB18) took no block RAM after synthesis (8 RAMB18, all FIFOs), model_02's 64- and 72-deep ones did."""
    if depth < ROM_BRAM_MIN_DEPTH and not bound_to_bram:
        return 0, width * math.ceil(depth / 64)
    return bram18k(depth, width), 0


def small_stage_cost(stage: Stage, device: Device | None = None) -> tuple[Cost, int]:
    """Resources of a non-conv stage, and its line-buffer bits."""
    c = stage.out_shape[2]
    out_bits = c * stage.out_bits
    if stage.kind in ("input", "clone"):
        return Cost(0, SMALL_STAGE_LUT // 2, SMALL_STAGE_FF // 2), 0
    if stage.kind in ("maxpool", "avgpool"):
        k, a = stage.kernel, stage.in_bits
        rows = k - 1 if stage.in_shape[0] > 1 else 0  # a 1D pool keeps no line buffer
        line = rows * c * a * math.ceil(stage.in_shape[1] / 32)
        # a max is a comparator and a 2:1 select of the larger (2 LUTs a bit: the carry chain cannot also
        # select); an average an adder (1 LUT a bit)
        compare = c * (k * k - 1) * (2 * a if stage.kind == "maxpool" else stage.accum_bits)
        # registers: the window (kernel_data) and the reduction's own copy (pool_window), as in the convs
        window = (k * k if stage.in_shape[0] > 1 else k) * c * a
        compare = compare if stage.in_shape[0] > 1 else c * (k - 1) * (2 * a if stage.kind == "maxpool"
                                                                      else stage.accum_bits)
        return Cost(0, compare + line + SMALL_STAGE_LUT, 2 * window + out_bits + SMALL_STAGE_FF, 0,
                    line), rows * c * a * stage.in_shape[1]
    if stage.kind == "global_avgpool":
        acc = stage.accum_bits
        # accumulate every channel, then ``data_window[i] / (in_height * in_width)`` (nnet_pooling_stream.h),
        # unrolled over the channels. A division by a constant is strength-reduced by the compiler (LLVM, under
        # both HLS tools) to a multiplication by its reciprocal and shifts; the reciprocal is a dense constant,
        # so by the rule of ``constant_weights`` each channel's multiplication goes to DSPs (a power-of-two
        # divisor is a plain shift). Not calibrated: no design of the calibration set has a global average.
        pixels = stage.in_tokens
        dsp = 0 if pixels & (pixels - 1) == 0 else \
            c * (_dsp_per_multiplier(acc, acc + 1, device) if device else 2)
        return Cost(dsp, 2 * c * acc + SMALL_STAGE_LUT, c * (2 * acc + stage.out_bits) + SMALL_STAGE_FF), 0
    if stage.kind == "global_maxpool":
        return Cost(0, c * stage.in_bits + SMALL_STAGE_LUT, c * stage.in_bits + SMALL_STAGE_FF), 0
    if stage.kind in ("add", "mul"):  # adder + rounding/saturation per channel, straight into the FIFO
        if stage.kind == "mul":
            return Cost(c * _dsp_per_multiplier(stage.in_bits, stage.in_bits, device) if device else c,
                        c * stage.out_bits + SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
        return Cost(0, c * (stage.out_bits + 2) + SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    if stage.kind == "cast":  # rounding/saturation into the output register
        return Cost(0, out_bits + SMALL_STAGE_LUT, out_bits + SMALL_STAGE_FF), 0
    if stage.kind == "batchnorm":  # y = x * scale + bias per channel, every channel in parallel
        wb = stage.weight_bits or stage.in_bits
        if wb >= DSP_MIN_WEIGHT_BITS and device is not None:
            return Cost(c * _dsp_per_multiplier(stage.in_bits, wb, device), out_bits + SMALL_STAGE_LUT,
                        out_bits + SMALL_STAGE_FF), 0
        return Cost(0, c * lut_multiplier(stage.in_bits, wb) + out_bits + SMALL_STAGE_LUT,
                    c * (stage.in_bits + wb) + out_bits + SMALL_STAGE_FF), 0
    if stage.kind == "activation":  # a lookup table per channel read in parallel (dual-port ROMs)
        copies = math.ceil(c / 2)
        return Cost(0, out_bits + SMALL_STAGE_LUT, out_bits + SMALL_STAGE_FF,
                    copies * bram18k(stage.table_size, stage.table_bits)), 0
    if stage.kind == "softmax":  # exp table read by every input at once, one inverse table, n multipliers
        n, bits = c, stage.table_bits or 18
        # ``ALLOCATION ... mul limit=multiplier_limit``: ceil(n / RF) multipliers (MNIST_R16: 1 at RF 16),
        # PIPELINE II = n / that; the n exp lookups of one II share dual-port copies of the table
        mults = -(-n // max(1, stage.reuse_factor))
        ii = max(1, n // mults)
        tables = math.ceil(n / (2 * ii)) * bram18k(stage.table_size, bits) + bram18k(stage.table_size, bits)
        dsp = mults * (_dsp_per_multiplier(bits, bits, device) if device else 1)
        return Cost(dsp, n * bits + out_bits + SMALL_STAGE_LUT, n * bits + out_bits + SMALL_STAGE_FF, tables), 0
    if stage.kind == "repack":
        return Cost(0, out_bits // 4 + SMALL_STAGE_LUT, out_bits + SMALL_STAGE_FF), 0
    if stage.kind == "pad":
        return Cost(0, out_bits // 4 + SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    if stage.kind == "concat":  # wires from the two FIFOs into the third
        return Cost(0, SMALL_STAGE_LUT, SMALL_STAGE_FF), 0
    if stage.kind == "unmodeled":
        return Cost(), 0
    raise ValueError(f"unknown stage kind {stage.kind}")


def fifo_impl(depth: int) -> str:
    if depth <= 2:
        return "reg"
    return "srl" if depth <= SRL_MAX_DEPTH else "bram"


def fifo_cost(width: int, depth: int, parts: int = 1) -> tuple[str, Cost]:
    """One stream's FIFO, or ``parts`` FIFOs of width / parts bits each: Vivado HLS splits an
    ``nnet::array`` stream into one FIFO per element (``layer2_out_V_data_0_V`` ...), Vitis HLS keeps one."""
    impl = fifo_impl(depth)
    width = max(1, width // parts)
    if impl == "reg":
        lut = (width // 2 if depth == 2 else 0) + FIFO_CONTROL_LUT
        one = Cost(0, lut, depth * width + FIFO_CONTROL_FF)
    elif impl == "srl":
        lutram = width * math.ceil(depth / 32)
        # address counter + empty/full flags (Vivado HLS's fifo_w*_d*_A: log2(depth) + 3 registers)
        one = Cost(0, lutram + FIFO_CONTROL_LUT, math.ceil(math.log2(depth)) + 3, 0, lutram)
    else:  # read and write pointers and counters (Vivado HLS's BRAM FIFO: 48 registers at depth 676)
        one = Cost(0, 4 * FIFO_CONTROL_LUT, 4 * math.ceil(math.log2(depth + 1)) + 8, bram18k(depth, width))
    return impl, Cost(*(getattr(one, n) * parts for n in RESOURCES))


def default_depths(pipeline: Pipeline) -> dict[str, int]:
    """Depth 2 everywhere (Vitis' default for an hls::stream); the FIFO sizing replaces these."""
    return {s.key: 2 for s in pipeline.fifos()}


def estimate(pipeline: Pipeline, plan: dict[str, int], device: Device, *, depths: dict[str, int] | None = None,
             share: float = 0.8, clock_mhz: float = 100.0, split_streams: bool = False) -> Estimate:
    """Per-layer and total estimates for ``pipeline`` folded by ``plan`` (conv name -> reuse factor; a
    conv not in the plan keeps the reuse factor its stage holds) with FIFO ``depths``."""
    depths = depths or default_depths(pipeline)
    layers = []
    for stage in pipeline.stages:
        if stage.kind in KERNEL_KINDS:
            rf = plan.get(stage.name, stage.reuse_factor)
            cost, bf, on_dsp = conv_cost(stage, rf, device)
            channels = stage.n_in // (stage.kernel * stage.kernel)
            line_bits = (stage.kernel - 1) * channels * stage.in_bits * stage.in_shape[1] \
                if stage.kind == "conv" and stage.kernel > 1 and stage.in_shape[0] > 1 else 0
            layers.append(LayerEstimate(stage.name, stage.kind, rf, bf, on_dsp, stage_cycles(stage, rf),
                                        stage_latency(stage, rf), cost,
                                        stage.weights * stage.weight_bits + stage.n_out * stage.bias_bits,
                                        line_bits, stage.function, stage.strategy))
        else:
            cost, line_bits = small_stage_cost(stage, device)
            layers.append(LayerEstimate(stage.name, stage.kind, 1, 0, False, stage_cycles(stage, stage.reuse_factor),
                                        stage_latency(stage), cost, 0, line_bits, stage.function))
    fifos = []
    for stream in pipeline.fifos():
        depth = depths.get(stream.key, 2)
        impl, cost = fifo_cost(stream.width, depth, stream.channels if split_streams else 1)
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


if __name__ == "__main__":
    from contract import run_cli

    from .estimate_cli import main

    run_cli(main)
