"""Cycles of each pipeline stage, by the loops of hls4ml's io_stream templates (calibrated on csynth's
per-layer latencies of the designs in fpga/calibration/; fpga/estimate.py names the sources)."""
from __future__ import annotations

from .pipeline import Stage

# Resource conv, hls4ml >= 0.8 (shift_line_buffer a pipelined function, compute_output_buffer INLINE OFF):
# every input pixel costs a stream read and a line-buffer shift. Assumption: no calibration design has it.
PIXEL_CYCLES = 2

# Resource conv: a window's dense_resource call costs RF + 3 cycles. csynth's (max - min) / input pixels is
# exactly RF + 3 on all six convs of pominiq model_01/02/03 (RF 3 to 72, both dense_resource variants).
DENSE_EXTRA = 3

# io_stream Dense, Resource: the inputs read one token a cycle, then RF + 5, then the write (model_01/02/03's
# dense: 18, 74 and 14 cycles at RF 8, 64 and 4 over 4 tokens).
STREAM_DENSE_EXTRA = 5

# Latency conv: the pixel loop is pipelined at II = RF (nnet_conv2d_stream.h), plus its fill: csynth shows
# 3-4 cycles over H*W*RF (pruned_cnn 1,027/1,024, 229/225, 40/36; MNIST_original 787/784, 39/36).
LATENCY_DEPTH = 4

# A stage pipelined at II=1 is flushed after every image (csynth's interval equals its latency): tokens plus
# its pipeline depth, 2-5 cycles in the calibration set (relu 679/676, max pool 681/676, 903/900, 20/16).
STREAM_DEPTH = 3
STREAM_II = 1  # every other stage: PIPELINE II=1 per token
SOFTMAX_DEPTH = 6  # one softmax packet: exp lookups, add tree, inverse lookup, multiply (csynth: 5-7)


def pixel_cycles(stage: Stage) -> int:
    """Cycles a Resource conv spends on every input pixel before any dense call. hls4ml 0.7.x inlined the
    line-buffer shift recursively, which made it a loop over the channels (hls4ml PR #800: 3-20x slower): its
    per-pixel cost grows with K*K*C. From the two published points (pominiq model_01: 6 cycles at C=1, 34 at
    C=4, 3x3) this is K*K*C - 3, a fit to an hls4ml release we do not generate, used only to read such
    projects."""
    if stage.serial_line_buffer and stage.kernel > 1:
        channels = stage.n_in // (stage.kernel * stage.kernel)
        return max(PIXEL_CYCLES, stage.kernel * stage.kernel * channels - 3)
    return PIXEL_CYCLES


def conv_cycles(stage: Stage, reuse_factor: int, worst: bool = False) -> int:
    """Cycles per image of a conv. Latency: the pixel loop at II = RF. Resource: the pixel loop is not
    pipelined; each input pixel costs ``pixel_cycles``, each output pixel one dense_resource call (RF +
    DENSE_EXTRA). ``worst``: as the HLS tool's static analysis counts it, every pixel taking the call."""
    if stage.strategy == "latency":
        return stage.in_tokens * max(1, reuse_factor) + LATENCY_DEPTH
    calls = stage.in_tokens if worst else stage.out_tokens
    return stage.in_tokens * pixel_cycles(stage) + calls * (reuse_factor + DENSE_EXTRA)


def stage_cycles(stage: Stage, reuse_factor: int = 1, worst: bool = False) -> int:
    """Cycles one stage needs per image at its own pace (``worst``: the HLS tool's static worst case)."""
    if stage.kind == "conv":
        return conv_cycles(stage, reuse_factor, worst)
    if stage.kind == "dense":
        # DataPrepare and ResWrite are pipelined loops only over more than one token; a single token is a
        # plain read or write inside the call's schedule (csynth: 3 cycles at 1 token in, 7 at 4)
        call = reuse_factor + 1 if stage.strategy == "latency" else reuse_factor + STREAM_DENSE_EXTRA
        return (stage.in_tokens if stage.in_tokens > 1 else 0) + call + stage.out_tokens
    if stage.kind == "input":
        return stage.out_tokens * STREAM_II
    if stage.kind == "softmax":
        # PIPELINE II = size / ceil(size / RF) per packet; at II > 1 the ceil(size / RF) multipliers work
        # through the packet's products one after another, adding II - 1 to the depth (MNIST_R16: 23 cycles)
        size = stage.out_shape[2]
        ii = size // -(-size // max(1, reuse_factor))
        return stage.out_tokens * ii + SOFTMAX_DEPTH + ii - 1
    if stage.kind == "batchnorm":  # PIPELINE II = n_in / multiplier_limit, i.e. about RF per token
        ii = max(1, min(reuse_factor, stage.in_shape[2]))
        return stage.in_tokens * ii + (STREAM_DEPTH if stage.in_tokens > 1 else 0)
    if stage.kind == "pad":
        return stage.out_tokens * STREAM_II + STREAM_DEPTH
    if stage.kind == "unmodeled":
        return 0
    tokens = max(stage.in_tokens, stage.out_tokens)
    # one token: the loop disappears into a pipelined function (csynth: 0-1 cycles for a 1-token ReLU)
    return tokens * STREAM_II + (STREAM_DEPTH if tokens > 1 else 0)


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
