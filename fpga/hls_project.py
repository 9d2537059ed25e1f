"""Read any written hls4ml ``io_stream`` project into a ``Pipeline``: the estimator's input without hls4ml.

Everything comes from the four files every hls4ml release writes (0.5 to 1.3, Vivado, Vitis and
VivadoAccelerator backends alike):

- ``hls4ml_config.yml``: the part, the clock period, the I/O type, the backend;
- ``firmware/defines.h``: the C++ types (``typedef nnet::array<ap_fixed<16,6>, 4*1> layer2_t;``);
- ``firmware/parameters.h``: one ``struct configN : nnet::..._config { static const ... }`` per layer,
  with the shapes, reuse factor, strategy, zero weights, and the types of weights and accumulators;
- ``firmware/myproject.cpp``: the dataflow, one ``nnet::function<types, configN>(streams, weights);
  // layer`` call per layer, and a ``#pragma HLS STREAM variable=X depth=N`` per FIFO.

A call the estimator has no model for becomes a stage of kind ``unmodeled`` that keeps its function name,
so the estimate can name it instead of guessing.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

from rpi.contract import UserError

from .pipeline import Pipeline, Stage, Stream

# nnet functions -> stage kinds (templates/vivado/nnet_utils, io_stream overloads)
FUNCTION_KINDS = {
    "conv_2d_cl": "conv", "pointwise_conv_2d_cl": "conv", "conv_1d_cl": "conv", "pointwise_conv_1d_cl": "conv",
    "dense": "dense",
    "relu": "cast", "linear": "cast", "relu6": "cast", "relu1": "cast",
    "leaky_relu": "activation", "elu": "activation", "selu": "activation", "sigmoid": "activation",
    "tanh": "activation", "hard_sigmoid": "activation", "hard_tanh": "activation", "softplus": "activation",
    "softsign": "activation", "prelu": "activation", "thresholded_relu": "activation",
    "softmax": "softmax",
    "normalize": "batchnorm",
    "pooling2d_cl": "pool", "pooling1d_cl": "pool",
    "global_pooling2d_cl": "global_pool", "global_pooling1d_cl": "global_pool",
    "clone_stream": "clone",
    "concatenate3d": "concat", "concatenate2d": "concat", "concatenate1d": "concat",
    "add": "add", "subtract": "add", "average": "add", "maximum": "add", "minimum": "add", "multiply": "mul",
    "zeropad2d_cl": "pad", "zeropad1d_cl": "pad",
    "repack_stream": "repack",
}


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<W,I>`` / ``ap_ufixed`` / ``ap_int`` / ``ap_uint``: the width is what the estimator needs."""

    width: int
    integer: int
    signed: bool


@dataclass
class Call:
    function: str
    templates: list[str]
    args: list[str]
    layer: str  # the comment after the call: the model's layer name

    @property
    def config(self) -> str:
        return self.templates[-1] if self.templates else ""


@dataclass
class HlsProject:
    path: Path
    config: dict
    types: dict[str, FixedType]  # scalar typedefs
    arrays: dict[str, tuple[FixedType, int]]  # array typedefs: element type, elements per token
    structs: dict[str, dict]  # config struct -> {"base": ..., field: value, "types": {name: typedef}}
    streams: dict[str, str]  # stream variable -> its element typedef
    depths: dict[str, int]  # stream variable -> STREAM pragma depth
    inputs: list[str]
    outputs: list[str]
    calls: list[Call] = field(default_factory=list)
    serial_line_buffer: bool = False
    weights_bound_to_bram: bool = True


    @property
    def part(self) -> str:
        return str(self.config.get("Part") or self.config.get("XilinxPart") or "")

    @property
    def clock_mhz(self) -> float:
        period = float(self.config.get("ClockPeriod") or 5)
        return 1000.0 / period

    @property
    def splits_streams(self) -> bool:
        """Vivado HLS (the Vivado and VivadoAccelerator backends) gives every element of an ``nnet::array``
        stream its own FIFO; Vitis HLS keeps the array in one."""
        return "vitis" not in str(self.config.get("Backend", "Vivado")).lower()

    @property
    def io_type(self) -> str:
        return str(self.config.get("IOType", "io_stream"))


# --- the files ----------------------------------------------------------------------------------------

def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        raise UserError(f"{path.parent.parent if path.parent.name == 'firmware' else path.parent} is not a written "
                        f"hls4ml project: {path.name} is missing") from None


def read_config(path: Path) -> dict:
    """hls4ml_config.yml as a dict. hls4ml writes YAML with custom tags (``!keras_model``); some old
    projects hold a Python dict literal under ``config:``. Only what the estimator reads is needed."""
    import yaml

    text = _read(path)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    Loader.add_multi_constructor("tag:", lambda loader, suffix, node: None)
    try:
        data = yaml.load(text, Loader=Loader) or {}
    except yaml.YAMLError:
        data = {}
    if isinstance(data, dict) and set(data) == {"config"}:  # an old writer's ``config: {...}``
        data = data["config"] if isinstance(data["config"], dict) else _dict_literal(str(data["config"]))
    if not isinstance(data, dict) or not data:
        data = _dict_literal(text.partition(":")[2]) if text.lstrip().startswith("config:") else {}
    if not data:
        raise UserError(f"cannot read {path}: neither YAML nor a dict literal")
    return data


def _dict_literal(text: str) -> dict:
    cleaned = re.sub(r"<[^<>]*object at 0x[0-9a-f]+>", "None", text.strip())
    try:
        value = ast.literal_eval(cleaned)
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


_FIXED = re.compile(r"ap_(u?)(fixed|int)<\s*(\d+)\s*(?:,\s*(-?\d+))?[^>]*>")


def parse_fixed(text: str) -> FixedType | None:
    m = _FIXED.search(text)
    if not m:
        return None
    unsigned, kind, width, integer = m.groups()
    width = int(width)
    return FixedType(width, width if kind == "int" else int(integer), not unsigned)


def read_types(text: str) -> tuple[dict[str, FixedType], dict[str, tuple[FixedType, int]]]:
    scalars, arrays = {}, {}
    for body, name in re.findall(r"typedef\s+(.+?)\s+(\w+)\s*;", text):
        array = re.match(r"nnet::array<\s*(.+>)\s*,\s*([\d*\s]+)>$", body.strip())
        if array:
            element = parse_fixed(array.group(1))
            if element:
                arrays[name] = (element, _product(array.group(2)))
        else:
            fixed = parse_fixed(body)
            if fixed:
                scalars[name] = fixed
    return scalars, arrays


def _product(text: str) -> int:
    return math.prod(int(x) for x in text.split("*") if x.strip())


_STRUCT = re.compile(r"struct\s+(\w+)\s*:\s*([\w:]+)\s*\{(.*?)\n\s*\};", re.S)
_STATIC = re.compile(r"static const\s+([\w:<>\s*]+?)\s+(\w+)\s*=\s*([^;]+);")
_TYPEDEF = re.compile(r"typedef\s+([\w:<>,\s]+?)\s+(\w+)\s*;")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
        ast.Div: operator.floordiv, ast.Mod: operator.mod}


def _evaluate(expr: str, scope: dict):
    """A struct field's value: an integer expression over earlier fields (``DIV_ROUNDUP``, ``MIN``,
    arithmetic), ``true``/``false``, or an enum name (``nnet::resource`` -> ``"resource"``)."""
    expr = expr.strip()
    if expr in ("true", "false"):
        return expr == "true"
    if re.fullmatch(r"[\w:]+", expr) and not expr.isdigit() and expr not in scope:
        return expr.split("::")[-1]

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return int(node.value)
        if isinstance(node, ast.Name):
            if node.id in scope and isinstance(scope[node.id], int):
                return scope[node.id]
            raise ValueError(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = [value(a) for a in node.args]
            if node.func.id == "DIV_ROUNDUP":
                return -(-args[0] // args[1])
            if node.func.id in ("MIN", "min"):
                return min(args)
            if node.func.id in ("MAX", "max"):
                return max(args)
        raise ValueError(ast.dump(node))

    try:
        return value(ast.parse(re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr.replace("::", "_")), mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError):
        return expr


def read_structs(text: str) -> dict[str, dict]:
    structs = {}
    for name, base, body in _STRUCT.findall(text):
        fields: dict = {"base": base.split("::")[-1], "types": {}}
        for _, key, expr in _STATIC.findall(body):
            fields[key] = _evaluate(expr, fields)
        for type_name, alias in _TYPEDEF.findall(body):
            fields["types"][alias] = type_name.strip()
        structs[name] = fields
    return structs


_CALL = re.compile(r"nnet::(\w+)\s*<(.*?)>\s*\(([^;]*?)\)\s*;[ \t]*(?://[ \t]*(\S+))?")


def read_dataflow(text: str) -> tuple[list[str], list[str], dict[str, str], dict[str, int], list[Call]]:
    """The top function's ports, its streams (variable -> element type), FIFO depths and layer calls."""
    top = re.search(r"void\s+\w+\s*\((.*?)\)\s*\{", text, re.S)
    if not top:
        raise UserError("firmware/myproject.cpp has no top function")
    ports = re.findall(r"hls::stream<\s*(\w+)\s*>\s*&\s*(\w+)", top.group(1))
    streams = {name: t for t, name in ports}
    body = text[top.end():]
    streams.update({name: t for t, name in re.findall(r"hls::stream<\s*(\w+)\s*>\s+(\w+)\s*(?:\(|;)", body)})
    aliases = dict(re.findall(r"auto\s*&\s*(\w+)\s*=\s*(\w+)\s*;", body))
    depths = {name: int(d) for name, d in re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\d+)", body)}
    calls = []
    for function, templates, args, layer in _CALL.findall(_strip_csim_only(body)):
        if function.startswith("load_weights") or function in ("print_result", "save_layer_output"):
            continue
        args = [aliases.get(a.strip(), a.strip()) for a in args.split(",") if a.strip()]
        templates = [t.strip() for t in _split_templates(templates)]
        calls.append(Call(function, templates, args, layer or function))
    # a port whose first call reads it is an input; the others that some call uses are outputs
    used = {a for c in calls for a in c.args}
    port_names = [name for _, name in ports]
    inputs = [p for p in port_names if _first_use_is_read(p, calls)]
    outputs = [p for p in port_names if p not in inputs and p in used]
    return inputs, outputs, streams, depths, calls


def _strip_csim_only(body: str) -> str:
    return re.sub(r"#ifndef __SYNTHESIS__.*?#endif", "", body, flags=re.S)


def _split_templates(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _first_use_is_read(port: str, calls: list[Call]) -> bool:
    for call in calls:
        if port in call.args:
            streams = [a for a in call.args if not re.fullmatch(r"[wbsz]\d+", a)]
            return streams.index(port) < len(streams) - 1 or call.function == "clone_stream"
    return False


def read_project(path: str | Path) -> HlsProject:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"hls4ml project {path} does not exist")
    firmware = path / "firmware"
    config = read_config(path / "hls4ml_config.yml")
    scalars, arrays = read_types(_read(firmware / "defines.h"))
    structs = read_structs(_read(firmware / "parameters.h"))
    inputs, outputs, streams, depths, calls = read_dataflow(_read(firmware / "myproject.cpp"))
    if not calls:
        raise UserError(f"{firmware / 'myproject.cpp'} holds no nnet:: layer calls")
    project = HlsProject(path, config, scalars, arrays, structs, streams, depths, inputs, outputs, calls,
                         serial_line_buffer(firmware / "nnet_utils" / "nnet_conv_stream.h"),
                         weights_bound_to_bram(firmware / "nnet_utils" / "nnet_dense_resource.h"))
    if "stream" not in project.io_type:
        raise UserError(f"{path}: IOType is {project.io_type}; the estimator models io_stream projects only")
    return project


def csd_digits(value: int) -> int:
    """Non-zero digits of ``value`` in canonical signed-digit form: the shifted copies a multiplication by
    this constant adds up."""
    value, digits = abs(value), 0
    while value:
        if value & 1:
            digits += 1
            value = value - 1 if value & 3 == 1 else value + 1
        value >>= 1
    return digits


def read_weight_digits(path: Path, weight_type: FixedType) -> list[int] | None:
    """The CSD digit count of every weight in hls4ml's ``wN.txt`` (comma-separated floats), on the grid of
    the weight type (round to nearest, saturate). None when the project does not ship its weights."""
    if not path.is_file():
        return None
    try:
        values = [float(v) for v in path.read_text().replace(",", " ").split()]
    except ValueError:
        return None
    scale = 2 ** (weight_type.width - weight_type.integer)
    high = 2 ** (weight_type.width - 1) - 1 if weight_type.signed else 2 ** weight_type.width - 1
    low = -(2 ** (weight_type.width - 1)) if weight_type.signed else 0
    return [csd_digits(max(low, min(high, round(v * scale)))) for v in values]


def weights_bound_to_bram(dense_resource: Path) -> bool:
    """Whether the project's Resource kernel binds its weight ROM to block RAM (hls4ml >= 1.0:
    ``#pragma HLS RESOURCE variable=weights core=ROM_nP_BRAM``; up to 0.8 the line is commented out and the
    tools choose). Without the template file the project is taken to be a current one."""
    if not dense_resource.is_file():
        return True
    code = re.sub(r"//[^\n]*", "", dense_resource.read_text(errors="replace"))
    return bool(re.search(r"#pragma HLS (RESOURCE|BIND_STORAGE) variable=weights\b.*(BRAM|bram)", code))


def serial_line_buffer(conv_stream: Path) -> bool:
    """Whether the project's own templates inline ``compute_output_buffer_2d`` recursively (hls4ml 0.7.x:
    the line-buffer shift becomes a loop over the channels, PR #800) instead of ``INLINE OFF`` (0.8 on).
    Without the template file the project is taken to be a current one."""
    if not conv_stream.is_file():
        return False
    text = conv_stream.read_text(errors="replace")
    start = text.find("void compute_output_buffer_2d")
    if start < 0:
        return False
    body = text[start:text.find("\nvoid ", start + 1) if "\nvoid " in text[start + 1:] else len(text)]
    body = re.sub(r"//[^\n]*", "", body)
    return "INLINE recursive" in body and "INLINE OFF" not in body


# --- to a Pipeline --------------------------------------------------------------------------------

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
    defines = _read(project.path / "firmware" / "defines.h")
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
