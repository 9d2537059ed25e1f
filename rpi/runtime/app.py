"""``python -m rpi.runtime.app``: classify camera frames on the Raspberry Pi with the int8 TFLite SqueezeNet.

Reads frames from a source (the Pi camera, a webcam, a stream, a video file or a directory of images),
prepares each one exactly as training prepared its images (size, colour, normalisation and input
quantization all come from the model's metadata JSON), runs the TFLite interpreter and reports the top-k
labels, the per-frame latency (preprocessing + inference) and a rolling FPS (frames per second of wall
time, capture included). It says which interpreter and which kernels run the model (XNNPACK, or the
interpreter's built-in kernels), and warns once when they are not the kernels the export measured its
bit-exactness with (--strict makes that an error).

Headless by default (a line per frame on stdout, or every N frames); --log appends one JSON object per
frame; --preview opens a window when a display and a GUI build of OpenCV exist; --serve shows the frames,
their labels and the figures in a browser (rpi/runtime/view.py), on 127.0.0.1 unless --serve-host says
otherwise. Ctrl-C or SIGTERM stops cleanly. The last line is always the summary:
``summary: frames=N fps=F mean_latency_ms=M p90_latency_ms=P interpreter=I kernels=K source=S stopped=REASON``
(K: ``xnnpack:USED/OPS`` or ``builtin``). --bench times the model instead, per thread count (make rpi-bench).

Exit status: 0 after the requested frames, the end of the source or a signal; 1 when a live camera was
lost for good; 2 for bad input (model, source, options), with one ``error:`` line on stderr, and with
--strict for a video file that ends before the frame count it announces (``stopped=truncated``, a warning
without --strict).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from contract import run_cli, write_json
from contract.tflite_model import measured_exactness

from .errors import RpiError
from .model import RUNTIMES, Classifier, Prediction, load_classifier
from .sources import CameraLost, frames, make_source, parse_size
from .view import DEFAULT_PORT as DEFAULT_VIEW_PORT
from .view import LiveView, is_loopback


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of the classify loop (``run``): the Pi's app and the FPGA board's app both take them."""
    p.add_argument("--source", default="auto",
                   help="auto (the Pi camera when picamera2 imports, else webcam 0) | picamera2 | a webcam "
                        "index | a stream URL | a video file | a directory of images (default: auto)")
    p.add_argument("--frames", type=int, default=0, help="stop after N frames (default 0: until the source ends)")
    p.add_argument("--top-k", type=int, default=3, help="labels shown and logged per frame (default 3)")
    p.add_argument("--every", type=int, default=1, help="print every Nth frame (default 1; 0: only the summary)")
    p.add_argument("--log", help="append one JSON object per frame to this file (frame, label, score, "
                                 "latency_ms, top_k, time)")
    p.add_argument("--report", metavar="FILE", help="write the run's summary (frames, FPS, latency) as JSON")
    p.add_argument("--preview", action="store_true",
                   help="show the frames with label and FPS in a window (needs a display and a GUI OpenCV)")
    p.add_argument("--loop", action="store_true", help="start a video file or image directory over at its end")
    p.add_argument("--retries", type=int, default=5,
                   help="times a live camera that stops is reopened, with back-off, before giving up (default 5)")
    p.add_argument("--capture-size", default="640x480", help="frame size asked of a camera (default 640x480)")
    p.add_argument("--stop-on-eof", action="store_true",
                   help="stop when standard input ends: make rpi passes it when it has no terminal, so the app "
                        "ends with the ssh session that started it (with a terminal, the hangup signal does)")
    p.add_argument("--serve", type=int, nargs="?", const=DEFAULT_VIEW_PORT, metavar="PORT",
                   help=f"serve a live view while classifying: http://HOST:PORT/ shows the frames with their labels, "
                        f"the top-k, latency and FPS; /stream is the MJPEG stream, /stats the figures as JSON "
                        f"(PORT default {DEFAULT_VIEW_PORT}; 0: any free port). Watch a Pi's from your machine with "
                        f"make rpi VIEW=1, which forwards the port over ssh")
    p.add_argument("--serve-host", default="127.0.0.1",
                   help="address the live view listens on (default 127.0.0.1: this machine only, reach it through "
                        "ssh -L; 0.0.0.0 opens it to the network, without a password, and warns)")
    p.add_argument("--serve-fps", type=float, default=15.0,
                   help="frames per second sent to viewers at most (default 15; the classifier runs at its own rate)")


def check_run_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    for name in ("frames", "every", "retries"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.top_k < 1:
        p.error("--top-k must be >= 1")
    if args.serve is not None and not 0 <= args.serve <= 65535:
        p.error("--serve PORT must be 0..65535")
    if args.serve_fps <= 0:
        p.error("--serve-fps must be > 0")
    return args


def start_view(args: argparse.Namespace, classifier, source_name: str):
    """--serve: bind the live view before any frame is read (a port in use stops the app with one line)."""
    if args.serve is None:
        return None
    view = LiveView(args.serve_host, args.serve, args.serve_fps,
                    {"model": classifier.name, "interpreter": classifier.backend, "kernels": classifier.kernels_tag(),
                     "source": source_name, "top_k": args.top_k})
    url = view.start()
    print(f"live view: {url} (the page; {url}stream is the MJPEG stream, {url}stats the figures)", flush=True)
    if not is_loopback(args.serve_host):
        warn(f"--serve-host {args.serve_host}: the live view (the camera's frames, no password) is open to every "
             f"machine that reaches this one on port {view.port}; the default 127.0.0.1 with ssh -L keeps it private")
    return view


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rpi.runtime.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="the export's squeezenet_int8.json, or the directory holding it and the .tflite")
    add_run_options(p)
    p.add_argument("--threads", type=int, default=None,
                   help="TFLite interpreter threads (default: the interpreter's own choice)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="TFLite interpreter: auto (tflite_runtime when installed, else ai_edge_litert), or "
                        "name one (ai_edge_litert reproduces the quantized model bit for bit on x86)")
    p.add_argument("--no-xnnpack", action="store_true",
                   help="keep the interpreter from applying XNNPACK: its built-in kernels run every op (for "
                        "comparison; not the kernels the export measured bit-exact, so the app warns)")
    p.add_argument("--strict", action="store_true",
                   help="exit with an error instead of a warning when this machine runs other kernels than those "
                        "the export measured its bit-exactness with (the model metadata records them), or when "
                        "a video file ends before the frame count it announces (stopped=truncated)")
    p.add_argument("--check", action="store_true",
                   help="load the model, classify one blank frame, print one line naming the interpreter and "
                        "its kernels, and exit (the deploy's smoke test)")
    p.add_argument("--bench", action="store_true",
                   help="instead of classifying, time preprocessing + inference on --frames frames of --source "
                        "(default 300) for each thread count (--threads, default 1 to the CPU count), with XNNPACK "
                        "and with the built-in kernels, and print a table (make rpi-bench)")
    args = check_run_options(p, p.parse_args(argv))
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.serve is not None and (args.check or args.bench):
        p.error("--serve shows a classification run; it does not go with --check or --bench")
    return args


class StopFlag:
    """SIGINT, SIGTERM and SIGHUP (the ssh session of `make rpi` closed) set an event instead of raising, so
    the current frame finishes, the live view's port is released and the summary is printed."""

    def __init__(self):
        self.event = threading.Event()
        self.reason = ""

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.reason = self.reason or signal.Signals(signum).name
        self.event.set()

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def on_eof(self) -> None:
        """Stop when standard input ends (--stop-on-eof)."""
        def watch():  # os.read, not sys.stdin: a daemon thread inside a buffered reader aborts the exit
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            self.set("hangup")

        threading.Thread(target=watch, daemon=True).start()


class Stats:
    def __init__(self):
        self.latencies_ms: list[float] = []
        self.started = time.perf_counter()
        self.recent = deque(maxlen=30)

    def add(self, latency_ms: float) -> None:
        self.latencies_ms.append(latency_ms)
        self.recent.append(time.perf_counter())

    def rolling_fps(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        return (len(self.recent) - 1) / max(self.recent[-1] - self.recent[0], 1e-9)

    def figures(self, classifier: Classifier, source: str, stopped: str) -> dict:
        """The run's summary, rounded as printed (the --report JSON and the summary line show the same)."""
        n = len(self.latencies_ms)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        lat = np.asarray(self.latencies_ms) if n else np.zeros(1)
        return {"frames": n, "fps": round(n / elapsed, 1), "mean_latency_ms": round(float(lat.mean()), 3),
                "p90_latency_ms": round(float(np.percentile(lat, 90)), 3), "interpreter": classifier.backend,
                "kernels": classifier.kernels_tag(), "source": source, "stopped": stopped}

    def summary(self, figures: dict) -> str:
        f = figures
        return (f"summary: frames={f['frames']} fps={f['fps']:.1f} mean_latency_ms={f['mean_latency_ms']:.3f} "
                f"p90_latency_ms={f['p90_latency_ms']:.3f} interpreter={f['interpreter']} "
                f"kernels={f['kernels']} source={f['source']} stopped={f['stopped']}")


class JsonLog:
    """Appends one JSON line per frame with a single write(2) on an O_APPEND descriptor: lines from
    concurrent writers never interleave, and nothing sits in a buffer if the process is killed."""

    def __init__(self, path: str | None):
        self.fd = None
        if path:
            path = Path(path).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RpiError(f"cannot open log {path}: {exc.strerror}") from None

    def write(self, record: dict) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record) + "\n").encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Preview:
    """An OpenCV window with the label and FPS; disabled with one warning when it cannot open."""

    def __init__(self, enabled: bool):
        self.cv2 = None
        if not enabled:
            return
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            warn("--preview: no display (DISPLAY is unset); running headless")
            return
        from .sources import import_cv2
        self.cv2 = import_cv2()

    def show(self, frame: np.ndarray, text: str) -> bool:
        """False when the user closed the window with q."""
        if self.cv2 is None:
            return True
        cv2 = self.cv2
        image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 or frame.shape[2] == 1 else frame[:, :, :3]
        image = np.ascontiguousarray(image)
        cv2.putText(image, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
        try:
            cv2.imshow("squeezenet", image)
            return (cv2.waitKey(1) & 0xFF) != ord("q")
        except cv2.error:
            warn("--preview: this OpenCV has no GUI support (opencv-python-headless); running headless")
            self.cv2 = None
            return True

    def close(self) -> None:
        if self.cv2 is not None:
            self.cv2.destroyAllWindows()


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def format_line(index: int, prediction: Prediction, labels: list, top_k: int, latency_ms: float, fps: float) -> str:
    ranked = " | ".join(f"{label} {score:.3f}" for label, score in prediction.top(top_k, labels))
    return f"frame {index}: {ranked}  latency {latency_ms:.2f} ms  fps {fps:.1f}"


def check_kernels(classifier: Classifier, strict: bool) -> bool:
    """True when the interpreter runs the kernels the export measured exactness with; otherwise warn once,
    or with --strict stop with an error."""
    problem = classifier.kernel_mismatch()
    if problem is None:
        return True
    message = f"{problem}; predictions may differ from the quantized model's"
    if strict:
        raise RpiError(message + " (--strict)")
    warn(message + " (--strict makes this an error)")
    return False


def kernels_line(classifier: Classifier, as_measured: bool) -> str:
    kernels = classifier.kernels
    line = f"{kernels.runtime} {kernels.version}, {kernels.describe()}"
    if classifier.meta.exactness is None:
        return f"{line} (the metadata records no kernels to compare with)"
    if as_measured:
        return f"{line}: the kernels of the export's check ({measured_exactness(classifier.meta.exactness)})"
    return f"{line}: NOT the kernels of the export's check"


def check_model(classifier: Classifier, as_measured: bool) -> int:
    meta = classifier.meta
    blank = np.zeros((meta.height, meta.width, 3), np.uint8)
    prediction = classifier.classify(blank)
    print(f"ok: {meta.tflite_path.name} ({meta.tflite_path.stat().st_size:,} bytes, input "
          f"{meta.height}x{meta.width}x{meta.channels} {meta.color}, {len(meta.labels)} labels) runs with "
          f"{kernels_line(classifier, as_measured)}; a blank frame gives {prediction.label} {prediction.score:.3f}",
          flush=True)
    return 0


def run(args: argparse.Namespace, classifier) -> int:
    """Classify the frames of --source until it ends, --frames or a signal. ``classifier``: anything with
    ``classify(frame, order) -> Prediction``, ``name``, ``labels``, ``backend``, ``describe()`` and
    ``kernels_tag()``: the TFLite ``Classifier`` here, the FPGA IP in fpga/board/runtime/app.py."""
    source = make_source(args.source, loop=args.loop, size=parse_size(args.capture_size))
    stop = StopFlag()
    stop.install()
    if args.stop_on_eof:
        stop.on_eof()
    log, preview = JsonLog(args.log), Preview(args.preview)
    view = start_view(args, classifier, source.name)
    try:
        source.open()
    except BaseException:
        if view:
            view.close()
        raise
    print(f"classifying {source.name} with {classifier.name} ({classifier.describe()}); Ctrl-C stops", flush=True)
    stats, labels, exit_code = Stats(), classifier.labels, 0
    try:
        for index, frame in enumerate(frames(source, stop.event, args.retries), start=1):
            started = time.perf_counter()
            prediction = classifier.classify(frame, source.order)
            latency_ms = (time.perf_counter() - started) * 1000.0
            stats.add(latency_ms)
            record = {"frame": index, "time": round(time.time(), 3), "label": prediction.label,
                      "index": prediction.index, "score": round(prediction.score, 6),
                      "latency_ms": round(latency_ms, 3),
                      "top_k": [[label, round(score, 6)] for label, score in prediction.top(args.top_k, labels)]}
            log.write(record)
            if view:
                view.publish(frame, source.order, record, stats.rolling_fps())
            if args.every and index % args.every == 0:
                print(format_line(index, prediction, labels, args.top_k, latency_ms, stats.rolling_fps()), flush=True)
            if not preview.show(frame, f"{prediction.label} {prediction.score:.2f}  {stats.rolling_fps():.0f} fps"):
                stop.set("preview-closed")
            if args.frames and index >= args.frames:
                stop.set("frames")
    except CameraLost as exc:
        stop.set("camera-lost")
        print(f"error: {exc}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        source.close()
        log.close()
        preview.close()
        if view:
            view.close()
    truncated = source.truncation()
    if truncated:  # a file cut short is not a clean end: say so, and with --strict fail
        stop.reason = stop.reason or "truncated"
        print(f"{'error' if args.strict else 'warning'}: {truncated}"
              + ("" if args.strict else " (--strict makes this an error)"), file=sys.stderr, flush=True)
        exit_code = exit_code or (2 if args.strict else 0)
    figures = stats.figures(classifier, source.name, stop.reason or "end")
    if args.report:
        write_json(args.report, {"model": classifier.name, **figures})
    print(stats.summary(figures), flush=True)
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classifier = load_classifier(args.model, args.threads, args.runtime, xnnpack=not args.no_xnnpack)
    as_measured = check_kernels(classifier, args.strict)
    if args.check:
        return check_model(classifier, as_measured)
    if args.bench:
        from .bench import bench

        return bench(args, classifier)
    return run(args, classifier)


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
