"""``python -m fpga.board.runtime.health``: the board release's known-answer test, run after a switch.

The package's known answers are test images as the IP takes them (int8 codes) and the C simulation's raw
outputs for them. Every one must come back bit for bit; the result is one line for people and one
``RPI-JSON`` line in the shape the release manager (rpi/remote.py) reads for the Pi's health check.
Exit status 0 when all are exact, 1 when one is not, 2 when the package or the overlay cannot be used.
"""
from __future__ import annotations

import argparse
import json
import time

from contract import run_cli
from rpi.runtime.errors import RpiError

from .driver import Accelerator, BoardError, read_package, selftest

JSON_PREFIX = "RPI-JSON "


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.board.runtime.health", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the board package")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds one DMA transfer may take (default 2)")
    args = p.parse_args(argv)
    try:
        meta, bitfile = read_package(args.model)
        accelerator = Accelerator(meta, bitfile, args.timeout)
        started = time.perf_counter()
        result = selftest(accelerator, meta)
    except BoardError as exc:
        raise RpiError(str(exc)) from None
    seconds = time.perf_counter() - started
    n = result["images"]
    wrong = [] if result["exact"] else [{"test_index": result["first_mismatch"], "expected": "the C simulation's "
                                         "raw output", "got": "a different output"}]
    outcome = {"known_answers": n, "passed": n - result["different"], "wrong": wrong, "backend": "fpga",
               "mean_latency_ms": round(1000 * seconds / max(n, 1), 3)}
    verdict = "ok" if result["exact"] else "FAILED"
    print(f"known answers {verdict}: {outcome['passed']}/{n} images bit-exact with the C simulation on the "
          f"FPGA ({outcome['mean_latency_ms']:.3f} ms per image, batched)", flush=True)
    print(JSON_PREFIX + json.dumps(outcome), flush=True)
    return 0 if result["exact"] else 1


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
