"""Pixel-level simulation of the io_stream dataflow pipeline, and FIFO sizing from it.

C simulation cannot tell whether the hardware deadlocks or stalls: ``hls::stream`` is unbounded there.
This simulation runs every stage of the real graph (``fpga.pipeline``) as a process with its own
consumption and production pattern and the timing of ``fpga.estimate`` (a conv reads one pixel per
PIXEL_CYCLES and spends RF + DENSE_EXTRA more cycles on each pixel that completes a window; other stages
move one token per cycle), joined by FIFOs of bounded depth:

- a write blocks while the FIFO is full; a token written at cycle t can be read from cycle t + 1; a slot
  read at cycle t can be written again from cycle t + 1 (so a depth-1 FIFO moves one token per two
  cycles, as Vitis' FIFOs do);
- a clone writes both copies in the same cycle, a concat or add reads one token of each input in the
  same cycle (``nnet_stream.h``, ``nnet_merge_stream.h``);
- the pipeline deadlocks when no stage can move and not every image is through.

It reports the steady-state interval between images, the latency of the first image, the highest
occupancy of every FIFO, and, on a deadlock, which stages wait on which FIFOs.

FIFO sizing (``size_fifos``) follows hls4ml's own Vitis FIFO optimization (depth = the highest occupancy
seen in simulation, ``backends/vitis/passes/fifo_depth_optimization.py``), with two changes: the input
is fed at the pipeline's own pace instead of all at once (so FIFOs before the slowest stage do not
fill with whole images), and the slack of a chain of same-rate stages is moved to its narrowest FIFO
(the 3x3 branch of a Fire module lags the 1x1 branch by about a row: that row is cheapest to hold as
squeeze outputs, before the 1x1 expand). The depths are then checked by a second simulation with the
input at full speed.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from .cycles import DENSE_EXTRA, LATENCY_DEPTH, STREAM_DEPTH, STREAM_II, pixel_cycles, stage_cycles
from .pipeline import Pipeline, Stage

UNBOUNDED = 1 << 40


class _Fifo:
    __slots__ = ("key", "depth", "ready", "frees", "waiting_reader", "waiting_writer", "max_occupancy", "full_stalls")

    def __init__(self, key: str, depth: int):
        self.key = key
        self.depth = depth
        self.ready: deque[int] = deque()  # cycle from which each stored token can be read
        self.frees: deque[int] = deque()  # cycle from which each slot read recently can be written again
        self.waiting_reader = None
        self.waiting_writer = None
        self.max_occupancy = 0
        self.full_stalls = 0

    def occupied(self, now: int) -> int:
        while self.frees and self.frees[0] <= now:
            self.frees.popleft()
        return len(self.ready) + len(self.frees)


@dataclass
class SimResult:
    images: int
    completed: int
    deadlock: bool
    cycles_per_image: int | None  # steady-state interval between the last two images
    latency_cycles: int | None  # first input token to the first image's output
    max_occupancy: dict[str, int]
    blocked: list[str] = field(default_factory=list)  # on deadlock: "stage waits to read/write FIFO"
    output_times: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"images": self.images, "completed": self.completed, "deadlock": self.deadlock,
                "cycles_per_image": self.cycles_per_image, "latency_cycles": self.latency_cycles,
                "blocked": self.blocked, "max_fifo_occupancy": dict(self.max_occupancy)}


def _window_done(r: int, c: int, k: int, s: int) -> bool:
    return r >= k - 1 and c >= k - 1 and (r - k + 1) % s == 0 and (c - k + 1) % s == 0


def _process(stage: Stage, images: int, rf: int, source_ii: int):
    """The stage's sequence of operations for ``images`` images: ('r', keys) read one token from each,
    ('w', keys) write one token to each, ('t', n) spend n cycles."""
    ins, outs = stage.inputs, stage.outputs
    h, w, _ = stage.in_shape
    kind = stage.kind
    for _ in range(images):
        if kind == "input":
            for _ in range(stage.out_tokens):
                yield ("w", outs)
                yield ("t", source_ii)
        elif kind == "conv":
            k, s = stage.kernel, stage.stride
            latency = stage.strategy == "latency"
            for r in range(h):
                for c in range(w):
                    yield ("r", ins)
                    yield ("t", max(1, rf) if latency else pixel_cycles(stage))
                    if _window_done(r, c, k, s):
                        if not latency:
                            yield ("t", rf + DENSE_EXTRA)
                        yield ("w", outs)
            if latency:
                yield ("t", LATENCY_DEPTH)
        elif kind == "pad":
            oh, ow, _ = stage.out_shape
            top, left = (oh - h) // 2, (ow - w) // 2
            for r in range(oh):
                for c in range(ow):
                    if top <= r < top + h and left <= c < left + w:
                        yield ("r", ins)
                    yield ("t", STREAM_II)
                    yield ("w", outs)
            yield ("t", STREAM_DEPTH)
        elif kind in ("maxpool", "avgpool"):
            for r in range(h):
                for c in range(w):
                    yield ("r", ins)
                    yield ("t", STREAM_II)
                    if _window_done(r, c, stage.kernel, stage.stride):
                        yield ("w", outs)
            yield ("t", STREAM_DEPTH)
        elif kind in ("global_avgpool", "global_maxpool", "dense", "softmax"):  # read all, then write
            for _ in range(stage.in_tokens):
                yield ("r", ins)
                yield ("t", STREAM_II)
            yield ("t", max(0, stage_cycles(stage, rf) - stage.in_tokens - stage.out_tokens))
            for _ in range(stage.out_tokens):
                yield ("w", outs)
                yield ("t", STREAM_II)
        else:  # cast, clone, concat, add: one token of every input -> one token on every output
            for _ in range(stage.out_tokens):
                yield ("r", ins)
                yield ("t", STREAM_II)
                yield ("w", outs)
            if stage.out_tokens > 1:  # as stage_cycles: a one-token loop has no fill to flush
                yield ("t", STREAM_DEPTH)


def _sink(key: str, tokens: int, images: int, times: list[int], clock: list[int]):
    for _ in range(images):
        for _ in range(tokens):
            yield ("r", [key])
        times.append(clock[0])


def _read_blocker(fifos: dict[str, _Fifo], keys, now: int, reader: str) -> int | None:
    """None when every FIFO in ``keys`` has a token readable now; otherwise the cycle to retry at, or -1 to
    wait until a writer wakes ``reader``."""
    for key in keys:
        f = fifos[key]
        if not f.ready:
            f.waiting_reader = reader
            return -1
        if f.ready[0] > now:
            return f.ready[0]
    return None


def _write_blocker(fifos: dict[str, _Fifo], keys, now: int, writer: str) -> int | None:
    """None when every FIFO in ``keys`` has room now; otherwise the cycle a slot frees, or -1 to wait until
    a reader wakes ``writer``."""
    for key in keys:
        f = fifos[key]
        if f.occupied(now) >= f.depth:
            f.full_stalls += 1
            if f.frees:
                return f.frees[0]
            f.waiting_writer = writer
            return -1
    return None


def _read(fifos: dict[str, _Fifo], keys, now: int) -> list[str]:
    """Take one token from each FIFO; returns the writers that were waiting for the room."""
    woken = []
    for key in keys:
        f = fifos[key]
        f.ready.popleft()
        f.frees.append(now + 1)
        if f.waiting_writer:
            woken.append(f.waiting_writer)
            f.waiting_writer = None
    return woken


def _write(fifos: dict[str, _Fifo], keys, now: int) -> list[str]:
    """Put one token into each FIFO (readable next cycle); returns the readers that were waiting for it."""
    woken = []
    for key in keys:
        f = fifos[key]
        f.ready.append(now + 1)
        f.max_occupancy = max(f.max_occupancy, f.occupied(now))
        if f.waiting_reader:
            woken.append(f.waiting_reader)
            f.waiting_reader = None
    return woken


def simulate(pipeline: Pipeline, plan: dict[str, int], depths: dict[str, int], *, images: int = 3,
             source_ii: int = 1, max_cycles: int | None = None) -> SimResult:
    """Run ``images`` images through the pipeline with these FIFO depths (stream key -> depth)."""
    fifos = {key: _Fifo(key, UNBOUNDED if s.interface else max(1, depths.get(key, 2)))
             for key, s in pipeline.streams.items()}
    output = [s for s in pipeline.streams.values() if s.interface and s.consumer == ""]
    if len(output) != 1:
        raise ValueError(f"{pipeline.name}: expected one output port, found {len(output)}")
    clock = [0]
    out_times: list[int] = []
    procs = {}
    for stage in pipeline.stages:
        rf = plan.get(stage.name, stage.reuse_factor)
        procs[stage.name] = _process(stage, images, rf, source_ii)
    procs["<sink>"] = _sink(output[0].key, output[0].tokens, images, out_times, clock)
    pending = {name: None for name in procs}  # the operation a process is blocked on
    heap = [(0, i, name) for i, name in enumerate(procs)]
    heapq.heapify(heap)
    seq = len(heap)
    finished = set()
    limit = max_cycles or 50 * images * max(stage_cycles(s, plan.get(s.name, s.reuse_factor))
                                            for s in pipeline.stages) + 10_000

    def wake(name: str, at: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (at, seq, name))

    while heap:
        now, _, name = heapq.heappop(heap)
        if name in finished or now > limit:
            continue
        clock[0] = now
        gen = procs[name]
        op = pending[name]
        while True:
            if op is None:
                try:
                    op = next(gen)
                except StopIteration:
                    finished.add(name)
                    break
            kind, arg = op
            if kind == "t":
                pending[name] = None
                wake(name, now + arg)
                break
            blocker = (_read_blocker if kind == "r" else _write_blocker)(fifos, arg, now, name)
            if blocker is not None:
                pending[name] = op
                if blocker >= 0:
                    wake(name, blocker)
                break
            for woken in (_read if kind == "r" else _write)(fifos, arg, now):
                wake(woken, now + 1)
            op = None

    deadlock = len(finished) < len(procs)
    blocked = []
    if deadlock:
        for name, op in pending.items():
            if name in finished or op is None:
                continue
            verb = "read from" if op[0] == "r" else "write to"
            keys = [k for k in op[1] if (op[0] == "r" and not fifos[k].ready)
                    or (op[0] == "w" and len(fifos[k].ready) >= fifos[k].depth)]
            blocked.append(f"{name} waits to {verb} {', '.join(keys or op[1])}")
    steady = out_times[-1] - out_times[-2] if len(out_times) >= 2 else None
    return SimResult(images, len(out_times), deadlock, steady, out_times[0] if out_times else None,
                     {key: f.max_occupancy for key, f in fifos.items() if not pipeline.streams[key].interface},
                     blocked, out_times)


def _chains(pipeline: Pipeline) -> list[list[str]]:
    """Maximal runs of FIFOs joined by stages that pass one token on per token taken (casts, 1x1 stride-1
    convs): the tokens such a run holds can sit in any of its FIFOs."""
    producer = {s.key: pipeline.stage(s.producer) for s in pipeline.fifos()}
    consumer = {s.key: pipeline.stage(s.consumer) for s in pipeline.fifos()}

    def passes_through(stage: Stage) -> bool:
        one_to_one = stage.kind == "cast" or (stage.kind == "conv" and stage.kernel == 1 and stage.stride == 1)
        return one_to_one and len(stage.inputs) == 1 and len(stage.outputs) == 1

    chains, seen = [], set()
    for key in producer:
        if key in seen or (passes_through(producer[key]) and producer[key].inputs[0] in producer):
            continue
        chain = [key]
        while passes_through(consumer[chain[-1]]) and consumer[chain[-1]].outputs[0] in consumer:
            chain.append(consumer[chain[-1]].outputs[0])
        seen.update(chain)
        chains.append(chain)
    return chains


@dataclass
class FifoSizing:
    depths: dict[str, int]
    check: SimResult  # the simulation of the chosen depths, input at full speed
    reference_interval: int  # steady-state interval with unbounded FIFOs
    relocated: bool

    def to_dict(self) -> dict:
        return {"depths": dict(self.depths), "reference_interval": self.reference_interval,
                "relocated_to_narrowest": self.relocated, "check": self.check.to_dict()}


def size_fifos(pipeline: Pipeline, plan: dict[str, int], images: int = 3) -> FifoSizing:
    """FIFO depths that keep the planned rate and never deadlock (see the module docstring)."""
    bottleneck = max(stage_cycles(s, plan.get(s.name, s.reuse_factor)) for s in pipeline.stages)
    source = next(s for s in pipeline.stages if s.kind == "input")
    pace = max(1, bottleneck // max(1, source.out_tokens))
    unbounded = {s.key: UNBOUNDED for s in pipeline.fifos()}
    paced = simulate(pipeline, plan, unbounded, images=images, source_ii=pace)
    reference = simulate(pipeline, plan, unbounded, images=images)
    measured = {key: max(1, occ) for key, occ in paced.max_occupancy.items()}
    relocated = dict(measured)
    for chain in _chains(pipeline):
        if len(chain) < 2:
            continue
        total = sum(measured[k] for k in chain)
        narrowest = min(chain, key=lambda k: pipeline.streams[k].width)
        for k in chain:
            relocated[k] = 1
        relocated[narrowest] = total - (len(chain) - 1)
    target = reference.cycles_per_image or bottleneck
    for depths, moved in ((relocated, True), (measured, False)):
        check = simulate(pipeline, plan, depths, images=images)
        if not check.deadlock and check.cycles_per_image <= 1.02 * target:
            return FifoSizing(depths, check, target, moved)
    # Neither held the rate: grow every FIFO that ever filled up until it does (or give up after 8 rounds).
    depths = dict(measured)
    for _ in range(8):
        check = simulate(pipeline, plan, depths, images=images)
        if not check.deadlock and check.cycles_per_image <= 1.02 * target:
            break
        for key, occ in check.max_occupancy.items():
            if occ >= depths[key]:
                depths[key] *= 2
    return FifoSizing(depths, check, target, False)
