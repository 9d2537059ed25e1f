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

from contract import UserError

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

def read_source(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        raise UserError(f"{path.parent.parent if path.parent.name == 'firmware' else path.parent} is not a written "
                        f"hls4ml project: {path.name} is missing") from None


def read_config(path: Path) -> dict:
    """hls4ml_config.yml as a dict. hls4ml writes YAML with custom tags (``!keras_model``); some old
    projects hold a Python dict literal under ``config:``. Only what the estimator reads is needed."""
    import yaml

    text = read_source(path)

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
_PRODUCT = re.compile(r"using product = nnet::product::(\w+)\s*<")
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
        product = _PRODUCT.search(body)
        if product:
            fields["product"] = product.group(1)
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
    scalars, arrays = read_types(read_source(firmware / "defines.h"))
    structs = read_structs(read_source(firmware / "parameters.h"))
    inputs, outputs, streams, depths, calls = read_dataflow(read_source(firmware / "myproject.cpp"))
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


