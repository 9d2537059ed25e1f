"""An hls4ml project read by fpga.hls_project, as the Pipeline the estimator, the planner and the dataflow
simulation take: one Stage per nnet call, with its streams, shapes, precisions and kernel facts."""
from __future__ import annotations

import math
import re
from pathlib import Path

from contract import UserError

from .hls_project import FUNCTION_KINDS, Call, HlsProject, parse_fixed, read_project, read_source, read_weight_digits
from .pipeline import Pipeline, Stage, Stream
from .project import DSP_PRODUCT


def _type_width(project: HlsProject, name: str | None) -> int:
    if not name:
        return 0
    fixed = project.types.get(name) or parse_fixed(name)
    return fixed.width if fixed else 0


def pipeline_from_project(path: str | Path, name: str | None = None) -> tuple[Pipeline, HlsProject]:
    """The stages and FIFOs of a written hls4ml io_stream project, read from its files alone."""
    project = read_project(path)
    streams: dict[str, Stream] = {}
    stages: list[Stage] = []

    def stream(var: str, producer: str, tokens: int | None = None) -> Stream:
        type_name = project.streams.get(var)
        if type_name not in project.arrays:
            raise UserError(f"{project.path}: stream {var} has type {type_name}, not an nnet::array in defines.h")
        element, channels = project.arrays[type_name]
        if var not in streams:
            streams[var] = Stream(var, var, channels, element.width, tokens or 1, producer=producer,
                                  interface=var in project.inputs or var in project.outputs)
        elif tokens:
            streams[var].tokens = tokens
        return streams[var]

    for port in project.inputs:
        s = stream(port, "input")
        total = _input_elements(project, s.channels)
        s.tokens = max(1, total // s.channels)
        stages.append(Stage("input", "input", [], [port], (1, s.tokens, s.channels), (1, s.tokens, s.channels),
                            s.element_bits, s.element_bits))
    for call in project.calls:
        stages.append(_stage(project, call, stream, streams))
    for stage in stages:
        if stage.kind == "input":
            port = streams[stage.outputs[0]]
            stage.in_shape = stage.out_shape = (1, port.tokens, port.channels)
    pipeline = Pipeline(name or project.path.name, stages, streams,
                        source=f"hls4ml project {project.path} (parameters.h, defines.h, myproject.cpp)")
    for s in streams.values():
        if s.interface and s.key in project.outputs:
            s.consumer = ""
    pipeline.check()
    return pipeline, project


def _input_elements(project: HlsProject, channels: int) -> int:
    defines = read_source(project.path / "firmware" / "defines.h")
    sizes = [int(v) for v in re.findall(r"#define N_INPUT_\d+_1\s+(\d+)", defines)]
    return math.prod(sizes) if sizes else channels


def _stage(project: HlsProject, call: Call, stream, streams: dict[str, Stream]) -> Stage:
    cfg = project.structs.get(call.config, {})
    kind = FUNCTION_KINDS.get(call.function, "unmodeled")
    stream_args = [a for a in call.args if a in project.streams]
    produced = [a for a in stream_args if a not in streams]
    ins = [a for a in stream_args if a in streams]
    if not ins:
        raise UserError(f"{project.path}: {call.layer} ({call.function}) reads no stream written before it")
    first = streams[ins[0]]
    if first.interface and first.producer == "input":  # the port's length comes from its reader's config
        first.tokens = max(1, _elements_read(cfg, first) // first.channels)
    for key in ins:
        streams[key].consumer = call.layer
    in_shape = _in_shape(cfg, first)
    out_shape, out_tokens = _out_shape(kind, cfg, in_shape, call, project, produced)
    outs = []
    for var in produced:
        s = stream(var, call.layer, out_tokens)
        outs.append(var)
        out_shape = (out_shape[0], out_shape[1], s.channels) if kind not in ("dense",) else (1, 1, s.channels)
    out_bits = streams[outs[0]].element_bits if outs else first.element_bits
    stage = Stage(call.layer, kind, ins, outs, in_shape, out_shape, first.element_bits, out_bits,
                  reuse_factor=int(cfg.get("reuse_factor", 1) or 1), config_key=call.layer)
    stage.function = call.function
    stage.hls_config = call.config
    stage.serial_line_buffer = project.serial_line_buffer and kind == "conv"
    stage.weights_bound_to_bram = project.weights_bound_to_bram
    stage.strategy = str(cfg.get("strategy", "latency")).lower()
    types = cfg.get("types", {})
    if kind in ("conv", "dense"):
        mult = project.structs.get(types.get("mult_config", ""), cfg)
        stage.kernel = int(cfg.get("filt_height", cfg.get("filt_width", 1)) or 1) if kind == "conv" else 1
        if call.function.endswith("1d_cl"):
            stage.kernel = int(cfg.get("filt_width", 1))
        stage.stride = int(cfg.get("stride_height", cfg.get("stride_width", 1)) or 1) if kind == "conv" else 1
        stage.n_in = int(mult.get("n_in", cfg.get("n_in", 0)))
        stage.n_out = int(mult.get("n_out", cfg.get("n_out", 0)))
        stage.reuse_factor = int(mult.get("reuse_factor", stage.reuse_factor) or 1)
        stage.strategy = str(mult.get("strategy", stage.strategy)).lower()
        stage.multipliers_bound_to_dsp = mult.get("product") == DSP_PRODUCT
        stage.zero_weights = int(mult.get("n_zeros", cfg.get("n_zeros", 0)) or 0)
        stage.weight_bits = _type_width(project, types.get("weight_t") or mult.get("types", {}).get("weight_t"))
        stage.bias_bits = _type_width(project, types.get("bias_t") or mult.get("types", {}).get("bias_t"))
        stage.accum_bits = _type_width(project, mult.get("types", {}).get("accum_t") or types.get("accum_t"))
        if kind == "dense":
            stage.in_shape = (1, first.tokens, first.channels)
        weight_arg = next((a for a in call.args if re.fullmatch(r"w\d+", a)), None)
        weight_type = project.types.get(types.get("weight_t") or mult.get("types", {}).get("weight_t") or "")
        if weight_arg and weight_type:
            stage.weight_digits = read_weight_digits(project.path / "firmware" / "weights" / f"{weight_arg}.txt",
                                                     weight_type)
    elif kind == "pool":
        stage.kernel = int(cfg.get("pool_height", cfg.get("pool_width", 1)) or 1)
        if call.function == "pooling1d_cl":
            stage.kernel = int(cfg.get("pool_width", 1))
        stage.stride = int(cfg.get("stride_height", cfg.get("stride_width", stage.kernel)) or 1)
        op = str(cfg.get("pool_op", "Max"))
        stage.kind = "maxpool" if op.lower().startswith("max") else "avgpool"
        stage.accum_bits = _type_width(project, types.get("accum_t")) or out_bits
    elif kind == "global_pool":
        op = str(cfg.get("pool_op", "Average"))
        stage.kind = "global_avgpool" if not op.lower().startswith("max") else "global_maxpool"
        stage.accum_bits = _type_width(project, types.get("accum_t")) or out_bits
    elif kind == "softmax":
        stage.table_size = int(cfg.get("table_size", 1024) or 1024)
        stage.implementation = str(cfg.get("implementation", "stable"))
        stage.table_bits = _type_width(project, types.get("exp_table_t") or types.get("table_t")) or 18
    elif kind == "activation":
        stage.table_size = int(cfg.get("table_size", 1024) or 1024)
        stage.table_bits = _type_width(project, types.get("table_t")) or 18
    elif kind == "batchnorm":
        stage.weight_bits = _type_width(project, types.get("scale_t"))
        stage.bias_bits = _type_width(project, types.get("bias_t"))
    return stage


def _elements_read(cfg: dict, first: Stream) -> int:
    h, w, c = cfg.get("in_height"), cfg.get("in_width"), cfg.get("n_chan", first.channels)
    if isinstance(w, int) and isinstance(c, int):
        return (h if isinstance(h, int) else 1) * w * c
    n_in = cfg.get("n_in")
    return n_in if isinstance(n_in, int) else first.tokens * first.channels


def _in_shape(cfg: dict, first: Stream) -> tuple[int, int, int]:
    h = cfg.get("in_height")
    w = cfg.get("in_width")
    c = cfg.get("n_chan", first.channels)
    if isinstance(h, int) and isinstance(w, int):
        return (h, w, int(c))
    if isinstance(w, int):  # 1D
        return (1, w, int(c))
    return (1, first.tokens, first.channels)


def _out_shape(kind: str, cfg: dict, in_shape, call: Call, project: HlsProject, produced: list[str]):
    h, w, c = in_shape
    if kind in ("conv", "pool", "pad"):
        oh = cfg.get("out_height", 1 if "1d" in call.function else h)
        ow = cfg.get("out_width", cfg.get("n_out", w) if call.function == "pooling1d_cl" else w)
        return (int(oh), int(ow), c), int(oh) * int(ow)
    if kind in ("dense", "global_pool"):
        return (1, 1, c), 1
    return (h, w, c), h * w
