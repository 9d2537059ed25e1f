"""The files the export hands the Pi: the metadata JSON beside the .tflite (format ``squeezenet-tflite/1``:
labels, input size, colour and quantization, the pixel -> int8 lookup table, output quantization, the
known answers, and the exactness the export measured with which kernels), and the description of those
kernels (``Kernels``) that both sides compute from an interpreter.

The export writes it (``metadata_document``), the Pi reads it (``read_metadata``); standard library only, so
it ships to the Pi with the rest of the contract.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from contract import METADATA_FORMAT, UserError, sha256_of


@dataclass(frozen=True)
class ModelMetadata:
    json_path: Path
    tflite_path: Path
    sha256: str
    labels: list
    height: int
    width: int
    channels: int
    color: str
    input_scale: float
    input_zero_point: int
    lut: list  # (channels, 256) int8 codes, one row per channel
    output_scale: float
    output_zero_point: int
    exactness: dict | None = None  # how the export measured the model against its parent, and with which kernels


def metadata_document(*, model_file: str, model_sha256: str, labels: list, height: int, width: int,
                      channels: int, input_dtype: str, input_scale: float, input_zero_point: int, mean: list, std: list,
                      lut: list, output_dtype: str, output_scale: float, output_zero_point: int, known_answers: dict,
                      exactness: dict) -> dict:
    """The metadata JSON the export writes beside the .tflite (``read_metadata`` reads it back): the format
    is defined here, on the side that has to live with it."""
    return {
        "format": METADATA_FORMAT,
        "model_file": model_file,
        "model_sha256": model_sha256,
        "labels": list(labels),
        "input": {"layout": "NHWC", "height": height, "width": width, "channels": channels, "dtype": input_dtype,
                  "scale": float(input_scale), "zero_point": int(input_zero_point),
                  "color": "gray" if channels == 1 else "rgb", "resize": "bilinear",
                  "mean": list(mean), "std": list(std), "lut": [[int(v) for v in row] for row in lut]},
        "output": {"dtype": output_dtype, "scale": float(output_scale), "zero_point": int(output_zero_point),
                   "kind": "logits"},
        "known_answers": known_answers,
        "exactness": exactness,
    }


def find_metadata(path: str | Path) -> Path:
    """``path`` is the metadata JSON itself or a directory holding exactly one such JSON."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = sorted(p for p in path.glob("*.json") if _is_metadata(p))
        if len(candidates) != 1:
            found = "none" if not candidates else ", ".join(p.name for p in candidates)
            raise UserError(f"{path} must hold exactly one {METADATA_FORMAT} JSON, found {found}")
        return candidates[0]
    if not path.is_file():
        raise UserError(f"model metadata {path} does not exist (pass the export's squeezenet_int8.json "
                       f"or its directory)")
    return path


def _is_metadata(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == METADATA_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _field(data: dict, key: str, kind, where: str):
    if key not in data:
        raise UserError(f"{where} lacks the field {key!r}")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{where}: field {key!r} should be {kind.__name__}, got {value!r:.60}")
    return value


def read_metadata(path: str | Path) -> ModelMetadata:
    """Parse and check the metadata JSON, and check the model file against its sha256 (a truncated or
    corrupted copy fails here, with a message that says so, before the interpreter sees it)."""
    json_path = find_metadata(path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read model metadata {json_path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != METADATA_FORMAT:
        raise UserError(f"{json_path} is not {METADATA_FORMAT} metadata (its 'format' field is "
                       f"{data.get('format') if isinstance(data, dict) else None!r})")
    where = json_path.name
    inp = _field(data, "input", dict, where)
    out = _field(data, "output", dict, where)
    tflite_path = json_path.parent / _field(data, "model_file", str, where)
    meta = ModelMetadata(
        json_path=json_path, tflite_path=tflite_path, sha256=_field(data, "model_sha256", str, where),
        labels=[str(x) for x in _field(data, "labels", list, where)],
        height=_field(inp, "height", int, where + " input"), width=_field(inp, "width", int, where + " input"),
        channels=_field(inp, "channels", int, where + " input"), color=_field(inp, "color", str, where + " input"),
        input_scale=_field(inp, "scale", float, where + " input"),
        input_zero_point=_field(inp, "zero_point", int, where + " input"),
        lut=_field(inp, "lut", list, where + " input"),
        output_scale=_field(out, "scale", float, where + " output"),
        output_zero_point=_field(out, "zero_point", int, where + " output"),
        exactness=_exactness(data, where))
    _check_metadata(meta, inp, out)
    _check_model_file(meta)
    return meta


def _exactness(data: dict, where: str) -> dict | None:
    """The optional ``exactness`` record (exports before it was added lack it)."""
    if "exactness" not in data:
        return None
    record = _field(data, "exactness", dict, where)
    kernels = _field(record, "kernels", dict, where + " exactness")
    for key in ("ops", "delegated"):
        _field(kernels, key, list, where + " exactness kernels")
    return record


def _check_metadata(meta: ModelMetadata, inp: dict, out: dict) -> None:
    where = meta.json_path.name
    if inp.get("layout", "NHWC") != "NHWC" or inp.get("dtype") != "int8" or out.get("dtype") != "int8":
        raise UserError(f"{where}: this runtime feeds NHWC int8 inputs and reads int8 outputs; the metadata "
                       f"says layout {inp.get('layout')!r}, input {inp.get('dtype')!r}, output {out.get('dtype')!r}")
    if inp.get("resize", "bilinear") != "bilinear":
        raise UserError(f"{where}: input resize {inp.get('resize')!r} is not supported (only PIL 'bilinear')")
    if min(meta.height, meta.width, meta.channels) <= 0 or not meta.labels:
        raise UserError(f"{where}: input size {meta.height}x{meta.width}x{meta.channels} with "
                       f"{len(meta.labels)} labels cannot be right")
    for name, value in (("input scale", meta.input_scale), ("output scale", meta.output_scale)):
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"{where}: {name} must be a positive number, got {value}")


def _check_model_file(meta: ModelMetadata) -> None:
    if not meta.tflite_path.is_file():
        raise UserError(f"model file {meta.tflite_path} does not exist (named by {meta.json_path.name})")
    actual = sha256_of(meta.tflite_path)
    if actual != meta.sha256:
        raise UserError(f"model file {meta.tflite_path} ({meta.tflite_path.stat().st_size:,} bytes) does not match "
                       f"the sha256 in {meta.json_path.name}: truncated, corrupted or from another export")



# --- which kernels run the model --------------------------------------------------------------------------

XNNPACK = "XNNPACK"


def runtime_version(runtime: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(runtime.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "unknown"


def delegated_ops(interpreter) -> tuple[list, list]:
    """(operator names in graph order, whether a delegate runs each one), read from an interpreter after
    allocate_tensors().

    The Python API does not expose the execution plan. But a delegate that takes over a run of operators
    adds one DELEGATE node whose inputs are the tensors entering the run and whose outputs leave it, and the
    operators it replaced stay in the node list. Walking back from each DELEGATE output through the
    operators that produce it, stopping at that node's inputs, finds the operators it runs; the rest run on
    the interpreter's built-in kernels."""
    nodes = interpreter._get_ops_details()  # the public API has no operator list
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): int(n["index"]) for n in ops for t in n["outputs"]}
    by_index = {int(n["index"]): n for n in ops}
    delegated = set()
    for node in nodes:
        if node["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in node["inputs"]}
        pending = [int(t) for t in node["outputs"]]
        while pending:
            tensor = pending.pop()
            index = producer.get(tensor)
            if tensor in boundary or index is None or index in delegated:
                continue
            delegated.add(index)
            pending.extend(int(t) for t in by_index[index]["inputs"] if int(t) >= 0)
    return [n["op_name"] for n in ops], [int(n["index"]) in delegated for n in ops]


@dataclass(frozen=True)
class Kernels:
    """Which kernels run the model: for each operator, XNNPACK (the interpreter's default delegate; the only
    delegate this runtime ever applies) or the interpreter's built-in kernels. The export records the same
    description for the run that measured its exactness (metadata field ``exactness``), so the Pi can tell
    when it computes with other kernels."""
    runtime: str
    version: str
    ops: tuple
    delegated: tuple  # one bool per op
    notes: tuple = ()  # why XNNPACK is not running, where known (turned off, or cpuinfo's errors)

    @classmethod
    def of(cls, interpreter, runtime: str, notes: tuple = ()) -> "Kernels":
        ops, delegated = delegated_ops(interpreter)
        return cls(runtime, runtime_version(runtime), tuple(ops), tuple(delegated), tuple(notes))

    @property
    def xnnpack_ops(self) -> int:
        return sum(self.delegated)

    @property
    def xnnpack(self) -> bool:
        return self.xnnpack_ops > 0

    def tag(self) -> str:
        """One word for a key=value line: ``xnnpack:19/20`` or ``builtin``."""
        return f"xnnpack:{self.xnnpack_ops}/{len(self.ops)}" if self.xnnpack else "builtin"

    def describe(self) -> str:
        if not self.xnnpack:
            return f"built-in kernels for all {len(self.ops)} ops ({self.notes[0] if self.notes else 'XNNPACK not applied'})"
        rest = sorted({op for op, d in zip(self.ops, self.delegated) if not d})
        return (f"{XNNPACK} for {self.xnnpack_ops} of {len(self.ops)} ops"
                + (f" ({', '.join(rest)} on built-in kernels)" if rest else ""))

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "runtime_version": self.version, "delegate": XNNPACK if self.xnnpack else None,
                "ops": list(self.ops), "delegated": list(self.delegated), "summary": self.describe()}

    def differs_from(self, exactness: dict) -> str | None:
        """None when these are the kernels the export measured its exactness with (same runtime and
        version, same operators, each on the same kind of kernel), else the difference in words."""
        recorded = exactness["kernels"]
        if ((recorded.get("runtime"), recorded.get("runtime_version"), list(recorded["ops"]),
             list(recorded["delegated"])) == (self.runtime, self.version, list(self.ops), list(self.delegated))):
            return None
        return (f"this machine runs {self.runtime} {self.version} with {self.describe()}, but the export's check "
                f"({measured_exactness(exactness)}) ran under {recorded.get('runtime')} "
                f"{recorded.get('runtime_version')} with {recorded.get('summary', '?')} on "
                f"{exactness.get('machine', '?')}")


def measured_exactness(exactness: dict) -> str:
    """``bit-exact with the quantized model on 10,000 images`` (or how far from it)."""
    samples = exactness.get("samples")
    on = f"on {samples:,} images" if isinstance(samples, int) else "on its test images"
    if exactness.get("max_abs_diff") == 0:
        return f"bit-exact with the quantized model {on}"
    return f"max |difference| {exactness.get('max_abs_diff')} from the quantized model {on}"
