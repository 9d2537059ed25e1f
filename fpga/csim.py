"""Run hls4ml's compiled C simulation in worker processes.

A C++ assertion in the simulation (hls4ml aborts on some unsupported shapes) kills the process that runs
it; running it in workers turns that into a clear error instead of a dead tool, and spreads the slow
fixed-point simulation over the cores.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from contract import UserError
from model.progress import progress as progress_bar

ROOT = Path(__file__).resolve().parents[1]


class CSimError(UserError):
    """The C simulation crashed or returned something unusable."""


def run_library(lib_path: str, inputs: np.ndarray, n_out: int, function: str = "myproject_double") -> np.ndarray:
    """Call the hls4ml bridge function once per input; ``inputs`` is (N, ...) float64, channels-last."""
    lib = ctypes.CDLL(lib_path)
    fn = getattr(lib, function)
    fn.restype = None
    fn.argtypes = [np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")] * 2
    outputs = np.zeros((len(inputs), n_out), dtype=np.float64)
    for i, x in enumerate(inputs):
        out = np.zeros(n_out, dtype=np.float64)
        fn(np.ascontiguousarray(x, dtype=np.float64).ravel(), out)
        outputs[i] = out
    return outputs


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def run_csim(lib_path: str | Path, inputs: np.ndarray, n_out: int, workers: int | None = None,
             chunk: int = 50, progress: bool = True) -> tuple[np.ndarray, float]:
    """Simulate every input; returns (outputs, seconds). Raises CSimError if any worker dies."""
    lib_path = Path(lib_path)
    if not lib_path.is_file():
        raise CSimError(f"C simulation library {lib_path} does not exist; was the project compiled?")
    workers = workers or os.cpu_count() or 1
    chunks = [(s, min(s + chunk, len(inputs))) for s in range(0, len(inputs), chunk)]
    outputs = np.zeros((len(inputs), n_out))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="csim-") as tmp:
        pending = list(enumerate(chunks))
        running: dict[int, tuple[subprocess.Popen, tuple[int, int], Path]] = {}
        bar = progress_bar(total=len(inputs), desc="C simulation", unit="img", disable=None if progress else True)
        try:
            while pending or running:
                while pending and len(running) < workers:
                    idx, (s, e) = pending.pop(0)
                    in_path, out_path = Path(tmp) / f"in{idx}.npy", Path(tmp) / f"out{idx}.npy"
                    np.save(in_path, inputs[s:e].astype(np.float64))
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "fpga.csim", str(lib_path), str(in_path), str(out_path), str(n_out)],
                        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        env={**os.environ, "PYTHONPATH": str(ROOT)})
                    running[idx] = (proc, (s, e), out_path)
                for idx in list(running):
                    proc, (s, e), out_path = running[idx]
                    if proc.poll() is None:
                        continue
                    del running[idx]
                    err = proc.stderr.read().decode(errors="replace").strip()
                    proc.stderr.close()
                    if proc.returncode != 0:
                        tail = err.splitlines()[-1] if err else "no message"
                        raise CSimError(f"the C simulation crashed on inputs {s}..{e - 1} "
                                        f"({_signal_name(proc.returncode)}): {tail}")
                    outputs[s:e] = np.load(out_path)
                    bar.update(e - s)
                time.sleep(0.02)
        finally:
            bar.close()
            for proc, _, _ in running.values():
                proc.kill()
    return outputs, time.time() - t0


if __name__ == "__main__":  # worker: python -m fpga.csim LIB IN.npy OUT.npy N_OUT
    lib, in_path, out_path, n_out = sys.argv[1:5]
    result = run_library(lib, np.load(in_path), int(n_out))
    np.save(out_path, result)
