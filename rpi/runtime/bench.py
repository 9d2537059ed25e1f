"""``rpi.runtime.app --bench`` (``make rpi-bench``): the model's speed on this machine, per thread count.

Reads up to --frames frames of --source into memory first (capture is not timed), then for each thread
count classifies them one at a time, as the app does (preprocessing + inference, batch 1), once with the
interpreter's default kernels (XNNPACK) and once with its built-in kernels, after one warm-up frame. Prints
the same table as ``make bench`` (export/bench.py): median and p90 latency per frame, frames per second over
the run, and the speed-up over the built-in kernels at the same thread count. Pi side: numpy, the
interpreter and OpenCV only.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time

import numpy as np

from .errors import RpiError
from .model import Classifier
from .sources import frames, make_source, parse_size

DEFAULT_FRAMES = 300


def machine_name() -> str:
    """The board's name where the kernel tells it (a Pi's /proc/cpuinfo ends with ``Model : ...``)."""
    for path in ("/proc/device-tree/model", "/proc/cpuinfo"):
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        if path.endswith("model"):
            return text.strip("\x00\n ")
        for line in text.splitlines():
            if line.startswith("Model") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.machine()


def load_frames(args: argparse.Namespace, count: int) -> tuple[list, str, str]:
    source = make_source(args.source, loop=True, size=parse_size(args.capture_size))
    source.open()
    try:
        stream = frames(source, threading.Event(), args.retries)
        loaded = [frame for _, frame in zip(range(count), stream)]
    finally:
        source.close()
    if not loaded:
        raise RpiError(f"{source.name} gave no frame to time")
    return loaded, source.order, source.name


def time_frames(classifier: Classifier, images: list, order: str) -> list[float]:
    classifier.classify(images[0], order)  # warm-up: the first call allocates and picks kernels
    seconds = []
    for image in images:
        started = time.perf_counter()
        classifier.classify(image, order)
        seconds.append(time.perf_counter() - started)
    return seconds


def summarize(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "images_per_s": float(len(ms) / (ms.sum() / 1e3))}


def table(rows: list[dict]) -> str:
    """export/bench.py's layout; the last column is the speed-up over the built-in kernels."""
    width = max(28, *(len(r["backend"]) for r in rows))
    lines = [f"{'backend':<{width}} {'threads':>7} {'median ms':>10} {'p90 ms':>8} {'img/s':>8} {'x built-in':>12}"]
    for r in rows:
        lines.append(f"{r['backend']:<{width}} {r['threads']:>7} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f} "
                     f"{r['images_per_s']:>8.1f} {r['speedup_vs_builtin']:>12.2f}")
    return "\n".join(lines)


def bench(args: argparse.Namespace, classifier: Classifier) -> int:
    count = args.frames or DEFAULT_FRAMES
    images, order, source_name = load_frames(args, count)
    thread_counts = [args.threads] if args.threads else list(range(1, (os.cpu_count() or 1) + 1))
    kernels = classifier.kernels
    print(f"bench: {len(images)} frames of {source_name}, {classifier.meta.tflite_path.name} under "
          f"{kernels.runtime} {kernels.version} on {machine_name()} ({platform.machine()}, "
          f"{os.cpu_count()} CPUs); preprocessing + inference per frame, batch 1", flush=True)
    rows = []
    for threads in thread_counts:
        timed = {}
        for xnnpack in (True, False):
            timed_classifier = Classifier(classifier.meta, threads, args.runtime, xnnpack)
            name = f"tflite int8 {timed_classifier.backend} {timed_classifier.kernels.tag()}"
            print(f"[bench] {name}, {threads} thread(s)", file=sys.stderr, flush=True)
            timed[xnnpack] = {"backend": name, "threads": threads,
                              **summarize(time_frames(timed_classifier, images, order))}
        for row in (timed[True], timed[False]):
            row["speedup_vs_builtin"] = timed[False]["median_ms"] / row["median_ms"]
            rows.append(row)
    print(table(rows), flush=True)
    return 0
