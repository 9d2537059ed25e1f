"""Run an int8 TFLite model under a TFLite interpreter: numpy and the interpreter only.

This file imports nothing from the project, so it also runs as a plain script inside the tflite-runtime
environment (``tflite-runtime`` 2.14 needs numpy < 2 and lives in its own venv)::

    .venv-tflite-runtime/bin/python export/tflite_run.py MODEL.tflite INPUT.npy OUTPUT.npy

INPUT.npy holds int8 codes in the model's input layout (N, H, W, C); OUTPUT.npy gets the int8 outputs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# The project's one order for choosing an interpreter, rpi.runtime.model.AUTO_ORDER; this file is a standalone script
# (it runs in the tflite-runtime venv and on the Pi without the project), so it holds a copy that a test
# keeps equal.
RUNTIMES = ("tflite_runtime", "ai_edge_litert")


class TFLiteError(Exception):
    """A model file the interpreter cannot use, or no interpreter installed."""


def interpreter_class(runtime: str | None = None):
    """The Interpreter class of ``runtime`` (or of the first installed one) and the runtime's name."""
    for name in ([runtime] if runtime else RUNTIMES):
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter
            elif name == "tflite_runtime":
                from tflite_runtime.interpreter import Interpreter
            else:
                raise TFLiteError(f"unknown TFLite runtime {name!r}; choose from {', '.join(RUNTIMES)}")
            return Interpreter, name
        except ImportError:
            continue
    raise TFLiteError(f"no TFLite interpreter installed (tried {', '.join([runtime] if runtime else RUNTIMES)})")


def load(path: str | Path, threads: int | None = None, runtime: str | None = None,
         preserve_all_tensors: bool = False, delegates: bool = True):
    """A ready interpreter for ``path``; a missing, truncated or corrupt file is one TFLiteError.
    ``delegates=False`` keeps the graph as written (no XNNPACK), for inspecting its operators."""
    path = Path(path)
    if not path.is_file():
        raise TFLiteError(f"{path}: no such model file")
    blob = path.read_bytes()
    # A .tflite is a FlatBuffer with the file identifier "TFL3" at bytes 4..8.
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise TFLiteError(f"{path} is not a TFLite model (no TFL3 identifier; truncated or another format?)")
    cls, name = interpreter_class(runtime)
    kwargs = {"num_threads": threads} if threads else {}
    if not delegates:
        resolver = __import__(f"{name}.interpreter", fromlist=["OpResolverType"]).OpResolverType
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    try:
        interp = cls(model_path=str(path), **kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise TFLiteError(f"{path} cannot be loaded by the TFLite interpreter: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    return interp


def run(interp, x: np.ndarray) -> np.ndarray:
    """Invoke the one-input, one-output model once per row of ``x``; returns the raw output tensors."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if tuple(x.shape[1:]) != tuple(inp["shape"][1:]) or x.dtype != inp["dtype"]:
        raise TFLiteError(f"input {x.dtype}{list(x.shape[1:])} does not fit the model's "
                          f"{np.dtype(inp['dtype'])}{list(inp['shape'][1:])}")
    results = np.empty((len(x), *out["shape"][1:]), dtype=out["dtype"])
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i:i + 1])
        interp.invoke()
        results[i] = interp.get_tensor(out["index"])[0]
    return results


def time_invocations(interp, x: np.ndarray) -> list[float]:
    """Seconds per invoke (set input, invoke, read output) for each row of ``x``, after one warm-up run."""
    import time

    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    interp.set_tensor(inp, x[:1])
    interp.invoke()
    seconds = []
    for i in range(len(x)):
        t = time.perf_counter()
        interp.set_tensor(inp, x[i:i + 1])
        interp.invoke()
        interp.get_tensor(out)
        seconds.append(time.perf_counter() - t)
    return seconds


def describe(interp) -> dict:
    """Operators and tensor types: what the export's checks (no Flex ops, integer compute path) read."""
    ops = interp._get_ops_details()  # the public API has no operator list
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    op_names = sorted({op["op_name"] for op in ops})
    activation_types = set()
    for op in ops:
        for index in list(op["outputs"]) + list(op["inputs"]):
            if index >= 0 and index in tensors:
                activation_types.add(np.dtype(tensors[index]["dtype"]).name)
    return {"ops": op_names, "tensor_types": sorted(activation_types)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an int8 TFLite model over int8 inputs stored in .npy.")
    parser.add_argument("model")
    parser.add_argument("inputs", help=".npy of int8 input codes, shape (N, H, W, C)")
    parser.add_argument("outputs", help=".npy written with the raw int8 outputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runtime", choices=RUNTIMES, help="default: the first installed of " + ", ".join(RUNTIMES))
    parser.add_argument("--time", action="store_true", help="write seconds per image instead of the outputs")
    parser.add_argument("--no-xnnpack", action="store_true",
                        help="keep the interpreter from applying XNNPACK (its built-in kernels run every op)")
    args = parser.parse_args(argv)
    try:
        interp = load(args.model, args.threads, args.runtime, delegates=not args.no_xnnpack)
        x = np.load(args.inputs)
        raw = np.asarray(time_invocations(interp, x)) if args.time else run(interp, x)
    except (TFLiteError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    np.save(args.outputs, raw)
    _, name = interpreter_class(args.runtime)
    out = interp.get_output_details()[0]
    print(json.dumps({"runtime": name, "numpy": np.__version__, "output_quantization": list(out["quantization"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
