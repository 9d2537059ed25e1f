"""The board driver: runs on the PYNQ-Z2's Arm (PYNQ 3.x image: Python 3.10, numpy and ``pynq<4``; no torch).

``Accelerator`` loads the overlay, allocates its DMA buffers once, packs int8 input codes into the IP's
32-bit stream words (the layout in the package's board.json, written from the same StreamLayout as the IP
top and the Tcl), sends a batch in one transfer (batches split so a transfer stays under the DMA's length
register) and receives each image's logits in a transfer of its own (the IP raises TLAST once per image).
Every wait has a deadline: a missing TLAST or a stalled IP is one error line, never a hang.

    python3 driver.py --package DIR --selftest          # the known answers: bit-exact with the C simulation
    python3 driver.py --package DIR --codes codes.npy   # (N, values) int8 codes -> predictions, images/s

Standard library and numpy; ``pynq`` is imported when the overlay is loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BOARD_FORMAT = "squeezenet-fpga-board/1"


class BoardError(Exception):
    """Something on the board failed in a way the user can act on: printed as one line, exit status 2."""


def pack_words(codes: np.ndarray, port: dict) -> np.ndarray:
    """(N, values) integer codes -> N * words little-endian uint32 words, ``per_word`` values a word."""
    codes = np.asarray(codes)
    n = len(codes)
    lanes = np.zeros((n, port["words"] * port["per_word"]), np.int64)
    lanes[:, :port["elements"]] = codes.reshape(n, -1)
    lane_type = np.uint8 if port["lane_bits"] == 8 else np.uint16
    mask = (1 << port["bits"]) - 1
    return np.ascontiguousarray((lanes & mask).astype(lane_type)).view("<u4").reshape(-1)


def unpack_words(words: np.ndarray, port: dict, n: int) -> np.ndarray:
    """N * words uint32 words -> (N, values) integer codes (sign-extended from ``bits`` where signed)."""
    lane_type = np.uint8 if port["lane_bits"] == 8 else np.uint16
    lanes = np.ascontiguousarray(words[:n * port["words"]]).view(lane_type).reshape(n, -1)[:, :port["elements"]]
    codes = lanes.astype(np.int64) & ((1 << port["bits"]) - 1)
    if port["signed"]:
        codes = np.where(codes >= 1 << (port["bits"] - 1), codes - (1 << port["bits"]), codes)
    return codes


def read_package(directory: str | Path) -> tuple[dict, Path]:
    """(board.json, the bitstream's path) of a board package."""
    directory = Path(directory)
    meta_path = directory / "board.json"
    if not meta_path.is_file():
        raise BoardError(f"{meta_path} does not exist: not a board package (make fpga-board writes one)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise BoardError(f"{meta_path} is not valid JSON: {exc}") from None
    if meta.get("format") != BOARD_FORMAT:
        raise BoardError(f"{meta_path} is not {BOARD_FORMAT} (format {meta.get('format')!r})")
    bitfile = directory / meta["bitstream"]
    if not bitfile.is_file():
        raise BoardError(f"the bitstream {bitfile} is missing from the package")
    return meta, bitfile


class Accelerator:
    """The overlay's IP behind its AXI DMA. ``timeout_s``: how long one transfer may take before the
    driver gives up (an image takes well under a millisecond on the IP)."""

    def __init__(self, meta: dict, bitfile: Path, timeout_s: float = 2.0, max_batch: int | None = None):
        try:
            from pynq import Overlay, allocate
        except ImportError:
            raise BoardError("pynq is not installed: this driver runs on a PYNQ image (pip install 'pynq<4')") \
                from None
        layout = meta["layout"]
        self.input, self.output = layout["input"], layout["output"]
        self.timeout_s = timeout_s
        self.batch = max(1, min(layout["max_batch"], max_batch or layout["max_batch"]))
        try:
            self.overlay = Overlay(str(bitfile))
        except Exception as exc:  # pynq raises several kinds for a missing or foreign bitstream
            raise BoardError(f"cannot load the overlay {bitfile.name}: {exc}") from None
        dma = self.overlay
        for part in meta["dma"].split("."):
            dma = getattr(dma, part, None)
            if dma is None:
                raise BoardError(f"the overlay {bitfile.name} has no DMA {meta['dma']!r} (its .hwh does not "
                                 f"match the package)")
        self.send, self.recv = dma.sendchannel, dma.recvchannel
        self.in_buffer = allocate(shape=(self.batch * self.input["words"],), dtype=np.uint32)
        self.out_buffer = allocate(shape=(self.batch * self.output["words"],), dtype=np.uint32)
        self.transfers = 0

    def _wait(self, channel, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not channel.idle:
            if time.monotonic() > deadline:
                raise BoardError(f"the DMA's {what} did not complete within {self.timeout_s:g} s: the IP never "
                                 f"raised TLAST, or stalled (reload the overlay before trying again)")
            time.sleep(0)

    def raw(self, codes: np.ndarray) -> np.ndarray:
        """(N, values) int8 input codes -> (N, logits) raw output codes."""
        codes = np.asarray(codes).reshape(len(codes), -1)
        if codes.shape[1] != self.input["elements"]:
            raise BoardError(f"an image has {codes.shape[1]} values; the IP takes {self.input['elements']}")
        results = np.zeros((len(codes), self.output["elements"]), np.int64)
        in_bytes, out_bytes = self.input["words"] * 4, self.output["words"] * 4
        for start in range(0, len(codes), self.batch):
            chunk = codes[start:start + self.batch]
            n = len(chunk)
            self.in_buffer[:n * self.input["words"]] = pack_words(chunk, self.input)
            self.in_buffer.flush()
            self.send.transfer(self.in_buffer, start=0, nbytes=n * in_bytes)
            for k in range(n):  # the IP ends each image with TLAST: one receive transfer an image
                self.recv.transfer(self.out_buffer, start=k * out_bytes, nbytes=out_bytes)
                self._wait(self.recv, f"receive of image {start + k}")
            self._wait(self.send, f"send of images {start}..{start + n - 1}")
            self.transfers += 1
            self.out_buffer.invalidate()
            results[start:start + n] = unpack_words(np.asarray(self.out_buffer), self.output, n)
        return results

    def logits(self, codes: np.ndarray) -> np.ndarray:
        return self.raw(codes) / float(2 ** self.output["frac"])


def selftest(accelerator: Accelerator, meta: dict) -> dict:
    """The package's known answers (test images and the C simulation's raw outputs for them) through the
    board: every output bit-exact, or the first image that is not."""
    answers = meta["known_answers"]
    codes, expected = np.asarray(answers["codes"]), np.asarray(answers["raw"])
    got = accelerator.raw(codes)
    off = np.flatnonzero((got != expected).any(axis=1))
    return {"images": int(len(codes)), "exact": not len(off), "different": int(len(off)),
            "first_mismatch": int(off[0]) if len(off) else None}


def measure(accelerator: Accelerator, codes: np.ndarray) -> dict:
    """Images per second batched, and the latency of one image sent alone (the median of ten)."""
    t0 = time.perf_counter()
    raw = accelerator.raw(codes)
    batched = time.perf_counter() - t0
    single = []
    for image in codes[:10]:
        t0 = time.perf_counter()
        accelerator.raw(image[None])
        single.append(time.perf_counter() - t0)
    return {"images": int(len(codes)), "images_per_second": round(len(codes) / batched, 1),
            "latency_ms": round(1000 * float(np.median(single)), 3), "raw": raw}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 driver.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=".", help="the board package: board.json, the .bit and its .hwh")
    p.add_argument("--selftest", action="store_true", help="run the known answers; exit 1 unless bit-exact")
    p.add_argument("--codes", help="an .npy of (N, values) int8 input codes to classify")
    p.add_argument("--raw-out", help="with --codes: save the raw output codes, (N, logits), to this .npy")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds one DMA transfer may take (default 2)")
    p.add_argument("--max-batch", type=int, default=None, help="images per send transfer (default: the most "
                                                                  "the DMA's length register allows)")
    args = p.parse_args(argv)
    try:
        meta, bitfile = read_package(args.package)
        accelerator = Accelerator(meta, bitfile, args.timeout, args.max_batch)
        if args.selftest:
            result = selftest(accelerator, meta)
            verdict = "bit-exact" if result["exact"] else f"DIFFERENT from image {result['first_mismatch']}"
            print(f"known answers: {result['images']} images, {verdict} with the C simulation")
            return 0 if result["exact"] else 1
        if args.codes:
            result = measure(accelerator, np.load(args.codes))
            if args.raw_out:
                np.save(args.raw_out, result["raw"])
            labels = meta.get("labels") or []
            for i, row in enumerate(result.pop("raw")):
                top = int(np.argmax(row))
                print(f"image {i}: {labels[top] if top < len(labels) else top}")
            print(f"{result['images']} images: {result['images_per_second']:,} images/s batched, "
                  f"{result['latency_ms']} ms for one image alone")
        return 0
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
