"""The exported model on the Pi: its metadata JSON, the TFLite interpreter, and one classify() call.

The export stage writes ``squeezenet_int8.tflite`` and ``squeezenet_int8.json`` (format
``squeezenet-tflite/1``: labels, input size/colour/quantization and the pixel -> int8 lookup table, output
quantization). Everything here is read from those two files; nothing about the model is typed twice.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import METADATA_FORMAT, sha256_of
from .errors import RpiError
from .preprocess import Preprocessor, dequantize, softmax


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
    lut: np.ndarray  # (channels, 256) int8
    output_scale: float
    output_zero_point: int
    exactness: dict | None = None  # how the export measured the model against its parent, and with which kernels


def metadata_document(*, model_file: str, model_sha256: str, labels: list, height: int, width: int,
                      channels: int, input_dtype: str, input_scale: float, input_zero_point: int, mean: list, std: list,
                      lut: np.ndarray, output_dtype: str, output_scale: float, output_zero_point: int, known_answers: dict,
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
                  "mean": list(mean), "std": list(std), "lut": np.asarray(lut).astype(int).tolist()},
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
            raise RpiError(f"{path} must hold exactly one {METADATA_FORMAT} JSON, found {found}")
        return candidates[0]
    if not path.is_file():
        raise RpiError(f"model metadata {path} does not exist (pass the export's squeezenet_int8.json "
                       f"or its directory)")
    return path


def _is_metadata(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == METADATA_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _field(data: dict, key: str, kind, where: str):
    if key not in data:
        raise RpiError(f"{where} lacks the field {key!r}")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RpiError(f"{where}: field {key!r} should be {kind.__name__}, got {value!r:.60}")
    return value


def read_metadata(path: str | Path) -> ModelMetadata:
    """Parse and check the metadata JSON, and check the model file against its sha256 (a truncated or
    corrupted copy fails here, with a message that says so, before the interpreter sees it)."""
    json_path = find_metadata(path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RpiError(f"cannot read model metadata {json_path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != METADATA_FORMAT:
        raise RpiError(f"{json_path} is not {METADATA_FORMAT} metadata (its 'format' field is "
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
        lut=np.asarray(_field(inp, "lut", list, where + " input")),
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
        raise RpiError(f"{where}: this runtime feeds NHWC int8 inputs and reads int8 outputs; the metadata "
                       f"says layout {inp.get('layout')!r}, input {inp.get('dtype')!r}, output {out.get('dtype')!r}")
    if inp.get("resize", "bilinear") != "bilinear":
        raise RpiError(f"{where}: input resize {inp.get('resize')!r} is not supported (only PIL 'bilinear')")
    if min(meta.height, meta.width, meta.channels) <= 0 or not meta.labels:
        raise RpiError(f"{where}: input size {meta.height}x{meta.width}x{meta.channels} with "
                       f"{len(meta.labels)} labels cannot be right")
    for name, value in (("input scale", meta.input_scale), ("output scale", meta.output_scale)):
        if not math.isfinite(value) or value <= 0:
            raise RpiError(f"{where}: {name} must be a positive number, got {value}")


def _check_model_file(meta: ModelMetadata) -> None:
    if not meta.tflite_path.is_file():
        raise RpiError(f"model file {meta.tflite_path} does not exist (named by {meta.json_path.name})")
    actual = sha256_of(meta.tflite_path)
    if actual != meta.sha256:
        raise RpiError(f"model file {meta.tflite_path} ({meta.tflite_path.stat().st_size:,} bytes) does not match "
                       f"the sha256 in {meta.json_path.name}: truncated, corrupted or from another export")


# The one order in which "auto" picks a TFLite interpreter, everywhere in the project (export/tflite_run.py,
# a standalone script, keeps the same tuple; a test holds them equal): tflite_runtime first, the small
# classic wheel a Pi image may bring, else ai_edge_litert, what requirements-pi.txt installs.
AUTO_ORDER = ("tflite_runtime", "ai_edge_litert")
RUNTIMES = ("auto", *AUTO_ORDER)
INSTALL_HINT = {"tflite_runtime": "pip install tflite-runtime", "ai_edge_litert": "pip install ai-edge-litert"}


def interpreter_class(runtime: str = "auto"):
    """(the Interpreter class, its runtime's name). ``auto``: the first installed of AUTO_ORDER.
    ai-edge-litert's XNNPACK kernels reproduce the quantized model exactly (measured on x86, and on aarch64
    under emulation); tflite-runtime 2.14's built-in kernels round some ties differently (see the export
    report): ``--runtime`` picks. ``Kernels`` says which kernels actually run."""
    if runtime not in RUNTIMES:
        raise RpiError(f"unknown TFLite runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    for name in AUTO_ORDER if runtime == "auto" else (runtime,):
        try:
            module = __import__(f"{name}.interpreter", fromlist=["Interpreter"])
        except ImportError:
            continue
        return module.Interpreter, name
    if runtime != "auto":
        raise RpiError(f"{runtime.replace('_', '-')} is not installed ({INSTALL_HINT[runtime]})")
    raise RpiError("no TFLite interpreter: install ai-edge-litert (pip install ai-edge-litert) or "
                   "tflite-runtime")


@contextmanager
def native_stderr(lines: list):
    """Hold back the C-level stderr while the interpreter loads and collect its lines into ``lines``: its C++
    code prints "INFO: Created TensorFlow Lite XNNPACK delegate" (or cpuinfo's errors when XNNPACK cannot
    start) with no switch to turn it off. The caller decides what to pass on; an error is raised as an
    exception and reported by the caller."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines.extend(ln for ln in captured.read().decode(errors="replace").splitlines() if ln.strip())


# --- which kernels run the model --------------------------------------------------------------------------

XNNPACK = "XNNPACK"
CPUINFO_ERROR = "Error in cpuinfo:"


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


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float
    scores: np.ndarray  # softmax over the classes

    def top(self, k: int, labels: list) -> list:
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(labels[i], float(self.scores[i])) for i in order]


TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of a TFLite model, bytes 4..8


def check_flatbuffer(path: Path) -> None:
    """Refuse a file that is not a TFLite flatbuffer with one line, the same under every interpreter (their
    own errors differ, and tflite-runtime's can fail to decode)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise RpiError(f"{path} is not a TFLite model (no {TFLITE_IDENTIFIER.decode()} identifier in its header): "
                       f"damaged, or another kind of file")


class Classifier:
    """The TFLite interpreter, checked against the metadata, plus the preprocessing it describes.
    ``xnnpack=False`` keeps the interpreter from applying XNNPACK (its built-in kernels run every op)."""

    def __init__(self, meta: ModelMetadata, threads: int | None = None, runtime: str = "auto", xnnpack: bool = True):
        self.meta = meta
        self.preprocess = Preprocessor(meta.height, meta.width, meta.channels, meta.color, meta.lut)
        interpreter, self.backend = interpreter_class(runtime)
        options = {} if xnnpack else {"experimental_op_resolver_type": _resolver_without_xnnpack(self.backend)}
        check_flatbuffer(meta.tflite_path)
        native = []
        try:
            with native_stderr(native):
                self.interpreter = interpreter(model_path=str(meta.tflite_path), num_threads=threads, **options)
                self.interpreter.allocate_tensors()
        except UnicodeDecodeError:  # tflite-runtime decodes its C++ error text, and garbage in, garbage out
            raise RpiError(f"cannot load {meta.tflite_path} with {self.backend}: the interpreter cannot parse it "
                           f"(a damaged model)") from None
        except (ValueError, RuntimeError) as exc:
            raise RpiError(f"cannot load {meta.tflite_path} with {self.backend}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
        _pass_on(native)  # on failure the exception says it all
        self.input, self.output = self._checked_tensors()
        notes = [f"XNNPACK did not start: {ln.strip()}" for ln in native if ln.startswith(CPUINFO_ERROR)]
        self.kernels = Kernels.of(self.interpreter, self.backend, notes if xnnpack else ["XNNPACK turned off"])

    def kernel_mismatch(self) -> str | None:
        """None when this interpreter runs the kernels the export measured exactness with, else why not."""
        if self.meta.exactness is None:
            return (f"{self.meta.json_path.name} does not record which kernels the export measured its exactness "
                    f"with (an older export): re-export to check them")
        return self.kernels.differs_from(self.meta.exactness)

    def _checked_tensors(self) -> tuple[dict, dict]:
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        name = self.meta.tflite_path.name
        if len(inputs) != 1 or len(outputs) != 1:
            raise RpiError(f"{name} has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each")
        inp, out = inputs[0], outputs[0]
        want_in = [1, self.meta.height, self.meta.width, self.meta.channels]
        if list(inp["shape"]) != want_in or inp["dtype"] != np.int8:
            raise RpiError(f"{name} takes a {np.dtype(inp['dtype']).name} input of shape {list(inp['shape'])}, but its "
                           f"metadata describes int8 {want_in}: the preprocessing cannot feed this model")
        _check_quantization(name, "input", inp, self.meta.input_scale, self.meta.input_zero_point)
        want_out = [1, len(self.meta.labels)]
        if list(out["shape"]) != want_out or out["dtype"] != np.int8:
            raise RpiError(f"{name} gives a {np.dtype(out['dtype']).name} output of shape {list(out['shape'])}, its "
                           f"metadata describes int8 {want_out} ({len(self.meta.labels)} labels)")
        _check_quantization(name, "output", out, self.meta.output_scale, self.meta.output_zero_point)
        return inp, out

    def logits_q(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0].copy()

    def classify(self, frame: np.ndarray, order: str = "bgr") -> Prediction:
        scores = softmax(dequantize(self.logits_q(self.preprocess(frame, order)),
                                    self.meta.output_scale, self.meta.output_zero_point))
        index = int(np.argmax(scores))
        return Prediction(index, self.meta.labels[index], float(scores[index]), scores)


def _check_quantization(name: str, which: str, detail: dict, scale: float, zero_point: int) -> None:
    actual_scale, actual_zp = detail["quantization"]
    if not math.isclose(actual_scale, scale, rel_tol=1e-6) or int(actual_zp) != zero_point:
        raise RpiError(f"{name}'s {which} quantization (scale {actual_scale:g}, zero point {actual_zp}) differs "
                       f"from its metadata (scale {scale:g}, zero point {zero_point}): re-export both together")


def _resolver_without_xnnpack(backend: str):
    module = __import__(f"{backend}.interpreter", fromlist=["OpResolverType"])
    return module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _pass_on(native_lines: list) -> None:
    """The interpreter's own stderr lines, less its INFO chatter and cpuinfo's errors (which Kernels keeps
    as the reason XNNPACK did not start, and the app reports once)."""
    sys.stderr.writelines(ln + "\n" for ln in native_lines
                          if not ln.startswith(("INFO: ", CPUINFO_ERROR)))


def load_classifier(model_path: str | Path, threads: int | None = None, runtime: str = "auto",
                    xnnpack: bool = True) -> Classifier:
    return Classifier(read_metadata(model_path), threads, runtime, xnnpack)
