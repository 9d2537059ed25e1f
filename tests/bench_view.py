"""``python -m tests.bench_view``: what the live view costs the classifier, and how soon a page shows a frame.

Runs the Pi app (rpi.runtime.app, the exported model) on the sample video, side by side in one sitting and
interleaved round by round (each round starts with the next configuration): without --serve, with --serve and nobody watching, with one viewer and with two
viewers reading /stream (a viewer is a plain HTTP client here: on a real Pi the browser runs on the laptop,
so the Pi only encodes and sends). Prints each configuration's FPS (the app's own summary: frames over wall
time, capture included), its median over the rounds and its ratio to the run without --serve. Then the time
from opening the page in headless chromium to its first frame (``window.firstFrameMs``), over several page
loads, and with --screenshot a PNG of the page (the README's). Only ever connects to 127.0.0.1. Not a test
(pytest does not collect it).
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.browser import Browser, find_chromium
from tests.rpi_helpers import ROOT
from tests.view_helpers import Running, StreamReader

APP = [sys.executable, "-m", "rpi.runtime.app"]
CONFIGS = {"no --serve": None, "--serve, no viewer": 0, "--serve, 1 viewer": 1, "--serve, 2 viewers": 2}


def one_run(args, tmp: Path, viewers: int | None) -> float:
    report = tmp / "report.json"
    argv = [*APP, "--model", args.model, "--source", args.video, "--loop", "--frames", args.frames, "--every", 0,
            "--threads", args.threads, "--report", report]
    if viewers is not None:
        argv += ["--serve", 0]
    app = Running(argv, cwd=ROOT)
    readers = []
    if viewers is not None:
        url = app.wait_for(r"live view: (http://\S+/)", timeout=120).group(1)
        readers = [StreamReader(url + "stream") for _ in range(viewers)]
        for reader in readers:
            reader.start()
    if app.wait(timeout=600) != 0:
        raise SystemExit(f"the app failed: {app.stderr[-2000:]}")
    for reader in readers:
        reader.done.set()
        reader.join(timeout=10)
        if reader.error is not None or reader.count == 0:
            raise SystemExit(f"a viewer got no frames: {reader.error}")
    return json.loads(report.read_text())["fps"]


def first_frames(args) -> list:
    app = Running([*APP, "--model", args.model, "--source", args.video, "--loop", "--every", 0, "--threads",
                   args.threads, "--serve", 0], cwd=ROOT)
    url = app.wait_for(r"live view: (http://\S+/)", timeout=120).group(1)
    times = []
    try:
        for _ in range(args.page_loads):
            browser = Browser(find_chromium())
            try:
                browser.open(url)
                deadline = time.monotonic() + 10
                while browser.evaluate("window.firstFrameMs") is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                times.append(browser.evaluate("window.firstFrameMs"))
                if args.screenshot:
                    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=900, height=400,
                                 deviceScaleFactor=1, mobile=False)
                    time.sleep(1.0)  # a few refreshes of the panel
                    shot = browser.call("Page.captureScreenshot", session=True, format="png")
                    Path(args.screenshot).write_bytes(base64.b64decode(shot["data"]))
                    args.screenshot = None
            finally:
                browser.close()
    finally:
        app.stop()
    return times


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench_view", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "artifacts/export/squeezenet_int8.json"),
                   help="the export's metadata JSON (default: artifacts/export)")
    p.add_argument("--video", default=str(ROOT / "artifacts/rpi/sample.avi"),
                   help="the source (default: the sample video of make rpi-sample)")
    p.add_argument("--frames", type=int, default=3000, help="frames per run (default 3000; the video loops)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all configurations, interleaved (default 3)")
    p.add_argument("--page-loads", type=int, default=5, help="page loads timed in chromium (default 5; 0: none)")
    p.add_argument("--screenshot", metavar="PNG", help="also save the page as PNG (900x400)")
    args = p.parse_args()
    fps = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="bench_view.") as tmp:
        names = list(CONFIGS)
        for round_ in range(1, args.rounds + 1):
            order = names[round_ - 1:] + names[:round_ - 1]  # each round starts with another configuration
            for name in order:
                viewers = CONFIGS[name]
                fps[name].append(one_run(args, Path(tmp), viewers))
                print(f"round {round_}: {name}: {fps[name][-1]:.1f} fps", file=sys.stderr, flush=True)
    base = statistics.median(fps["no --serve"])
    print(f"the app on {Path(args.video).name}, {args.frames} frames a run, {args.threads} interpreter thread(s), "
          f"{args.rounds} rounds interleaved, rotated")
    print(f"{'configuration':<22} {'FPS per round':<28} {'median':>8} {'ratio':>7}")
    for name, values in fps.items():
        median = statistics.median(values)
        print(f"{name:<22} {' '.join(f'{v:7.1f}' for v in values):<28} {median:8.1f} {median / base:7.3f}")
    if args.page_loads and find_chromium():
        times = first_frames(args)
        print(f"page to first frame in headless chromium, {len(times)} loads: median {statistics.median(times):.0f} ms, "
              f"max {max(times):.0f} ms ({', '.join(f'{t:.0f}' for t in times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
