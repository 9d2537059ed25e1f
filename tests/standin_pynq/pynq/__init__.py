"""A stand-in for the ``pynq`` library where there is no board: ``Overlay``, ``allocate`` and an AXI DMA
(simple mode: one transfer at a time on each channel) whose stream side is our compiled IP top
(fpga/board/axis_top.py, g++, loaded with ctypes). The board driver runs on it unchanged.

A bitstream ``X.bit`` is "loaded" when ``X.standin.json`` sits beside it: {"library": the compiled top,
"dma": the DMA's name, "in_words" / "out_words": words an image, optionally "max_transfer_bytes"}. Like the real DMA, a receive transfer
completes at TLAST; a receive buffer that fills before TLAST halts the channel (it never becomes idle), as
does a transfer longer than the length register allows. ``DMA.log`` records every transfer's bytes.
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np

__version__ = "3.0.1-standin"
MAX_TRANSFER_BYTES = 2 ** 26 - 1


class PynqBuffer(np.ndarray):
    """allocate()'s array: a numpy array with the methods the driver calls."""

    physical_address = 0

    def flush(self):
        pass

    def invalidate(self):
        pass

    def freebuffer(self):
        pass

    close = freebuffer


def allocate(shape, dtype=np.uint32, **_kwargs) -> PynqBuffer:
    buffer = np.zeros(shape, dtype=dtype).view(PynqBuffer)
    buffer.physical_address = 0x1000_0000
    return buffer


class _IP:
    """The compiled top: words in, words and TLAST flags out, one call for every complete image."""

    def __init__(self, library: str, in_words: int, out_words: int):
        self.run = getattr(ctypes.CDLL(library), "myproject_axis_run")
        self.run.restype = ctypes.c_int
        self.in_words, self.out_words = in_words, out_words
        self.pending = np.zeros(0, np.uint32)
        self.out: list[tuple[int, int]] = []  # (word, TLAST) the IP wrote and no receive has taken yet

    def feed(self, words: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, words.astype(np.uint32)])
        images = len(self.pending) // self.in_words
        if not images:
            return
        take = np.ascontiguousarray(self.pending[:images * self.in_words])
        self.pending = self.pending[images * self.in_words:]
        last = np.zeros(len(take), np.uint8)
        last[-1] = 1  # the DMA's MM2S raises TLAST at the end of the transfer (the top ignores it)
        capacity = images * self.out_words
        out, out_last = np.zeros(capacity, np.uint32), np.zeros(capacity, np.uint8)
        pointer = ctypes.c_void_p
        n = self.run(take.ctypes.data_as(pointer), last.ctypes.data_as(pointer), len(take), images,
                     out.ctypes.data_as(pointer), out_last.ctypes.data_as(pointer), capacity)
        if n < 0:
            raise RuntimeError(f"stand-in IP: the top returned {n}")
        self.out.extend(zip(out[:n].tolist(), out_last[:n].tolist()))


class _Channel:
    def __init__(self, dma: "_DMA", direction: str):
        self.dma, self.direction = dma, direction
        self.halted = False
        self._receive = None  # (array, byte offset, bytes, bytes written) of the receive in progress

    @property
    def idle(self) -> bool:
        self.dma.service()
        return not self.halted and self._receive is None

    @property
    def running(self) -> bool:
        return not self.halted

    def transfer(self, array, start: int = 0, nbytes: int = 0) -> None:
        data = np.asarray(array).view(np.uint8).reshape(-1)
        nbytes = nbytes or len(data) - start
        if not self.idle:
            raise RuntimeError("DMA channel not idle")  # what pynq raises for a second transfer
        self.dma.log.append((self.direction, nbytes))
        if nbytes > self.dma.max_transfer_bytes:
            self.halted = True  # the length register cannot hold it: the channel errors out
            return
        if self.direction == "send":
            self.dma.ip.feed(data[start:start + nbytes].copy().view("<u4"))
        else:
            self._receive = [data, start, nbytes, 0]
        self.dma.service()

    def wait(self) -> None:
        if not self.idle:
            raise RuntimeError("stand-in DMA: this transfer can never complete (a real DMA would hang here)")


class _DMA:
    def __init__(self, ip: _IP, max_transfer_bytes: int = MAX_TRANSFER_BYTES):
        self.ip, self.max_transfer_bytes = ip, max_transfer_bytes
        self.log: list[tuple[str, int]] = []
        self.sendchannel, self.recvchannel = _Channel(self, "send"), _Channel(self, "receive")

    def service(self) -> None:
        """Move the IP's output words into the receive buffer until TLAST or the buffer is full."""
        receive = self.recvchannel._receive
        while receive is not None and self.ip.out:
            data, start, nbytes, written = receive
            word, last = self.ip.out.pop(0)
            data[start + written:start + written + 4] = np.frombuffer(np.uint32(word).tobytes(), np.uint8)
            receive[3] = written = written + 4
            if last:
                self.recvchannel._receive = receive = None
            elif written >= nbytes:
                self.recvchannel.halted = True  # S2MM buffer full before TLAST: DMA internal error, halted
                self.recvchannel._receive = receive = None


class Overlay:
    def __init__(self, bitfile_name, dtbo=None, download=True, ignore_version=False, device=None):
        bitfile = Path(bitfile_name)
        if not bitfile.is_file():
            raise OSError(f"Bitstream file {bitfile} does not exist.")
        spec = bitfile.with_name(bitfile.stem + ".standin.json")
        if not spec.is_file():
            raise RuntimeError(f"the stand-in board has no IP for {bitfile.name} ({spec.name} is missing)")
        data = json.loads(spec.read_text())
        self.bitfile_name = str(bitfile)
        ip = _IP(data["library"], data["in_words"], data["out_words"])
        setattr(self, data["dma"], _DMA(ip, data.get("max_transfer_bytes", MAX_TRANSFER_BYTES)))
