"""``python -m fpga.board.runtime.app``: classify images, a video or a camera on the PYNQ-Z2's IP.

Frames come from the Pi app's sources (rpi/runtime/sources.py: an image folder, a video file, a USB camera
through OpenCV) and take the Pi app's preprocessing (rpi/runtime/preprocess.py: centre crop, PIL's luma and
bilinear resize in integer arithmetic, then the pixel -> int8 table board.json carries, which the build
computed with the quantized model's own input quantizer). One implementation of the pixel contract for both
devices. The int8 codes go through the driver to the IP; its logits are the C simulation's, bit for bit.

    python -m fpga.board.runtime.app --model PACKAGE --source shots/ --log predictions.jsonl
    python -m fpga.board.runtime.app --model PACKAGE --check     # the deploy's smoke test: known answers

The loop itself is the Pi app's (rpi.runtime.app.run: log, summary, signals, a camera's reconnects); this
module gives it the IP as its classifier. Board side: numpy, pynq, OpenCV for videos and cameras; no torch.
"""
from __future__ import annotations

import argparse

import numpy as np

from contract import run_cli
from rpi.runtime.app import add_run_options, check_run_options, run
from rpi.runtime.errors import RpiError
from rpi.runtime.model import Prediction
from rpi.runtime.preprocess import Preprocessor, softmax

from .driver import Accelerator, BoardError, read_package, selftest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fpga.board.runtime.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the board package: board.json, the .bit and its .hwh")
    add_run_options(p)  # the Pi app's: --source, --frames, --top-k, --every, --log, --report, --loop, ...
    p.add_argument("--strict", action="store_true",
                   help="exit with an error when a video file ends before the frame count it announces")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds one DMA transfer may take (default 2)")
    p.add_argument("--check", action="store_true",
                   help="load the overlay, run the package's known answers through the IP and exit: 0 when every "
                        "output is bit-exact with the C simulation (the deploy's smoke test)")
    return check_run_options(p, p.parse_args(argv))


class BoardClassifier:
    """The IP as the Pi app's classify loop sees a classifier: a frame in, a Prediction out."""

    backend = "fpga"

    def __init__(self, accelerator: Accelerator, meta: dict):
        pixels = meta.get("input")
        if not pixels:
            raise RpiError("board.json has no input block (pixel table): rebuild the package with make fpga-board")
        self.preprocess = Preprocessor(pixels["height"], pixels["width"], pixels["channels"], pixels["color"],
                                       np.asarray(pixels["lut"]))
        self.accelerator, self.meta = accelerator, meta
        self.name, self.labels = meta["bitstream"], list(meta["labels"])

    def describe(self) -> str:
        return f"the {self.meta['top']} IP on the {self.meta['part']} at {self.meta['clock_mhz']:g} MHz"

    def kernels_tag(self) -> str:
        return "fpga-ip"

    def classify(self, frame: np.ndarray, order: str = "bgr") -> Prediction:
        codes = self.preprocess(frame, order).reshape(1, -1)  # (1, H, W, C) int8: the IP's HWC order
        scores = softmax(self.accelerator.logits(codes)[0])
        index = int(np.argmax(scores))
        return Prediction(index, self.labels[index], float(scores[index]), scores)


def check(accelerator: Accelerator, meta: dict) -> int:
    result = selftest(accelerator, meta)
    if not result["exact"]:
        raise BoardError(f"the IP's output for known answer {result['first_mismatch']} differs from the C "
                         f"simulation's: the overlay does not run this package's network")
    print(f"ok: {meta['name']} on the {meta['part']} at {meta['clock_mhz']:g} MHz: {result['images']} known answers "
          f"bit-exact with the C simulation", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta, bitfile = read_package(args.model)
        accelerator = Accelerator(meta, bitfile, args.timeout, max_batch=1)
        return check(accelerator, meta) if args.check else run(args, BoardClassifier(accelerator, meta))
    except BoardError as exc:
        raise RpiError(str(exc)) from None


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
