"""``python -m fpga.board.runtime.app``: classify images, a video or a camera on the PYNQ-Z2's IP.

Frames come from the Pi app's sources (rpi/runtime/sources.py: an image folder, a video file, a USB camera
through OpenCV) and take the Pi app's preprocessing (rpi/runtime/preprocess.py: centre crop, PIL's luma and
bilinear resize in integer arithmetic, then the pixel -> int8 table board.json carries, which the build
computed with the quantized model's own input quantizer). One implementation of the pixel contract for both
devices. The int8 codes go through the driver to the IP; its logits are the C simulation's, bit for bit.

    python -m fpga.board.runtime.app --model PACKAGE --source shots/ --log predictions.jsonl
    python -m fpga.board.runtime.app --model PACKAGE --check     # the deploy's smoke test: known answers

Board side: numpy, pynq, OpenCV for videos and cameras; no torch.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from contract import run_cli, write_json
from rpi.runtime.errors import RpiError
from rpi.runtime.preprocess import Preprocessor, softmax
from rpi.runtime.sources import CameraLost, frames, make_source, parse_size

from .driver import Accelerator, BoardError, read_package, selftest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fpga.board.runtime.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the board package: board.json, the .bit and its .hwh")
    p.add_argument("--source", default="0", help="a USB camera index | a stream URL | a video file | a directory "
                                                 "of images (default 0: the first USB camera)")
    p.add_argument("--frames", type=int, default=0, help="stop after N frames (default 0: until the source ends)")
    p.add_argument("--top-k", type=int, default=3, help="labels shown and logged per frame (default 3)")
    p.add_argument("--every", type=int, default=1, help="print every Nth frame (default 1; 0: only the summary)")
    p.add_argument("--log", help="append one JSON object per frame to this file")
    p.add_argument("--report", metavar="FILE", help="write the run's summary as JSON")
    p.add_argument("--loop", action="store_true", help="start a video file or image directory over at its end")
    p.add_argument("--capture-size", default="640x480", help="frame size asked of a camera (default 640x480)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds one DMA transfer may take (default 2)")
    p.add_argument("--check", action="store_true",
                   help="load the overlay, run the package's known answers through the IP and exit: 0 when every "
                        "output is bit-exact with the C simulation (the deploy's smoke test)")
    args = p.parse_args(argv)
    if args.frames < 0 or args.every < 0 or args.top_k < 1:
        p.error("--frames and --every must be >= 0, --top-k >= 1")
    return args


def preprocessor_of(meta: dict) -> Preprocessor:
    pixels = meta.get("input")
    if not pixels:
        raise RpiError("board.json has no input block (pixel table): rebuild the package with make fpga-board")
    return Preprocessor(pixels["height"], pixels["width"], pixels["channels"], pixels["color"],
                        np.asarray(pixels["lut"]))


def check(accelerator: Accelerator, meta: dict) -> int:
    result = selftest(accelerator, meta)
    if not result["exact"]:
        raise BoardError(f"the IP's output for known answer {result['first_mismatch']} differs from the C "
                         f"simulation's: the overlay does not run this package's network")
    print(f"ok: {meta['name']} on the {meta['part']} at {meta['clock_mhz']:g} MHz: {result['images']} known answers "
          f"bit-exact with the C simulation", flush=True)
    return 0


def run(args, accelerator: Accelerator, meta: dict) -> int:
    from rpi.runtime.app import JsonLog, StopFlag

    prepare, labels = preprocessor_of(meta), meta["labels"]
    source = make_source(args.source, loop=args.loop, size=parse_size(args.capture_size))
    stop = StopFlag()
    stop.install()
    log = JsonLog(args.log)
    source.open()
    print(f"classifying {source.name} on the FPGA ({meta['name']}, {meta['part']}); Ctrl-C stops", flush=True)
    latencies, started, exit_code = [], time.perf_counter(), 0
    try:
        for index, frame in enumerate(frames(source, stop.event), start=1):
            t0 = time.perf_counter()
            codes = prepare(frame, source.order).reshape(1, -1)
            logits = accelerator.logits(codes)[0]
            latency_ms = (time.perf_counter() - t0) * 1000.0
            latencies.append(latency_ms)
            scores = softmax(logits)
            ranked = [(labels[k] if k < len(labels) else str(k), float(scores[k]))
                      for k in np.argsort(-logits, kind="stable")[:args.top_k]]
            log.write({"frame": index, "time": round(time.time(), 3), "label": ranked[0][0],
                       "index": int(np.argmax(logits)), "score": round(ranked[0][1], 6),
                       "latency_ms": round(latency_ms, 3), "top_k": [[k, round(s, 6)] for k, s in ranked]})
            if args.every and index % args.every == 0:
                fps = index / max(time.perf_counter() - started, 1e-9)
                line = " | ".join(f"{k} {s:.3f}" for k, s in ranked)
                print(f"frame {index}: {line}  latency {latency_ms:.2f} ms  fps {fps:.1f}", flush=True)
            if args.frames and index >= args.frames:
                stop.set("frames")
    except CameraLost as exc:
        stop.set("camera-lost")
        print(f"error: {exc}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        source.close()
        log.close()
    n = len(latencies)
    figures = {"frames": n, "fps": round(n / max(time.perf_counter() - started, 1e-9), 2),
               "mean_latency_ms": round(float(np.mean(latencies)), 3) if n else None,
               "source": source.name, "stopped": stop.reason or "end", "transfers": accelerator.transfers}
    if args.report:
        write_json(args.report, {"package": meta["name"], **figures})
    print("summary: " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta, bitfile = read_package(args.model)
        accelerator = Accelerator(meta, bitfile, args.timeout, max_batch=1)
        return check(accelerator, meta) if args.check else run(args, accelerator, meta)
    except BoardError as exc:
        raise RpiError(str(exc)) from None


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
