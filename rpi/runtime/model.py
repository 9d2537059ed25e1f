"""The exported model on the Pi: the TFLite interpreter and one classify() call.

The export stage writes ``squeezenet_int8.tflite`` and ``squeezenet_int8.json``, whose format
``contract.tflite_model`` defines and reads (labels, input size/colour/quantization and the pixel -> int8
lookup table, output quantization). Everything here is read from those two files; nothing about the model
is typed twice.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.tflite_model import Kernels, ModelMetadata, read_metadata

from .errors import RpiError
from .preprocess import Preprocessor, dequantize, softmax

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

CPUINFO_ERROR = "Error in cpuinfo:"


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
        self.preprocess = Preprocessor(meta.height, meta.width, meta.channels, meta.color, np.asarray(meta.lut))
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

    # What the classify loop (rpi/runtime/app.py run) reads of any classifier.
    @property
    def name(self) -> str:
        return self.meta.tflite_path.name

    @property
    def labels(self) -> list:
        return self.meta.labels

    def describe(self) -> str:
        return f"{self.backend}, {self.kernels.describe()}"

    def kernels_tag(self) -> str:
        return self.kernels.tag()

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
