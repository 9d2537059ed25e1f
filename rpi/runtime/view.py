"""The live view (``--serve``): the frames, their labels and the run's figures in a browser, while the app
classifies.

- ``/``       a small page (no external assets): the video with its overlay, the top-k labels, the score, the
              latency and the FPS, refreshed from ``/stats``;
- ``/stream`` multipart MJPEG (``multipart/x-mixed-replace``) of the frames, the top-1 label, its score and
              the FPS drawn on each, and each part's ``X-Prediction`` header the frame's record (the page
              reads it, so its panel describes the very frame it shows);
- ``/stats``  JSON: the last frame's prediction (the very record ``--log`` writes), a rolling FPS, latency
              p50/p90 over the last frames, the interpreter, the kernels and the frame count.

Standard library (``http.server`` in threads) and OpenCV's JPEG encoder, both already on the Pi and the board.
The classify loop only hands over references (``publish``: no copy, no encoding, no lock held across
anything slow); one encoder thread, awake only while someone watches, turns the latest frame into a JPEG
at most ``fps`` times a second, and each viewer is sent the newest JPEG when it can take one. A slow or
stalled browser therefore skips frames; it never slows the classifier or queues frames in memory, and a
viewer that takes nothing for ``SEND_TIMEOUT_S`` is dropped. The view only reads the frame, so what is
classified and logged is the same with and without it.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from .errors import RpiError

DEFAULT_PORT = 8080       # --serve without a port; make rpi VIEW=1 forwards it to the same port here
BOUNDARY = "squeezenet-frame"
MAX_VIEWERS = 8            # streams served at once; more get 503 (each is a thread and one JPEG)
SEND_TIMEOUT_S = 10.0      # a viewer that takes nothing for this long is dropped
LATENCY_WINDOW = 300       # frames the latency percentiles of /stats cover
MIN_VIEW_HEIGHT = 240      # small frames (a 28x28 model's sample video) are scaled up, nearest, for the eye
JPEG_QUALITY = 80
PAGE = Path(__file__).with_name("view.html")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LiveView:
    """``start()`` binds the server (a port in use is one RpiError, before any frame is read); the loop calls
    ``publish`` per frame; ``close()`` ends the streams and the server."""

    def __init__(self, host: str, port: int, fps: float, info: dict):
        self.host, self.port, self.fps, self.info = host, port, fps, info
        self.closed = threading.Event()
        self.viewers = 0
        self._latest = None            # (frame, order, record, fps): replaced whole, so readers see one frame's
        self._latencies = deque(maxlen=LATENCY_WINDOW)
        self._fresh = threading.Event()
        self._part = (0, b"")          # (sequence, multipart part) of the newest encoded frame
        self._part_ready = threading.Condition()
        self._viewers_lock = threading.Lock()
        self._watched = threading.Event()
        self._server = None
        self._threads = []
        self.encoded = 0

    # --- the classify loop's side ---------------------------------------------------------------------

    def start(self) -> str:
        from .sources import import_cv2

        self._cv2 = import_cv2()
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), self._handler())
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RpiError(f"cannot serve the live view on {self.host}:{self.port}: the port is in use "
                               f"(choose another with --serve PORT)") from None
            raise RpiError(f"cannot serve the live view on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        for target in (lambda: self._server.serve_forever(poll_interval=0.1), self._encode_forever):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}/"

    def publish(self, frame: np.ndarray, order: str, record: dict, fps: float) -> None:
        """One classified frame: ``record`` is what --log writes for it. Only references are kept."""
        self._latest = (frame, order, record, fps)
        self._latencies.append(record["latency_ms"])
        if self.viewers:
            self._fresh.set()

    def close(self) -> None:
        self.closed.set()
        self._fresh.set()
        self._watched.set()
        with self._part_ready:
            self._part_ready.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # --- what viewers get -----------------------------------------------------------------------------

    def stats(self) -> dict:
        latest = self._latest
        latencies = np.asarray(list(self._latencies) or [0.0])
        record = latest[2] if latest else None
        return {**self.info, "frames": record["frame"] if record else 0, "prediction": record,
                "fps": round(latest[3], 1) if latest else 0.0,
                "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 3),
                               "p90": round(float(np.percentile(latencies, 90)), 3),
                               "window": len(self._latencies)},
                "viewers": self.viewers, "running": not self.closed.is_set()}

    def overlay(self, frame: np.ndarray, order: str, record: dict, fps: float) -> np.ndarray:
        """A new BGR image (the frame itself is never written to): scaled up when small, with the top-1
        label, its score and the FPS on a dark band."""
        cv2 = self._cv2
        if frame.ndim == 2 or frame.shape[2] == 1:
            image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif order == "rgb":
            image = cv2.cvtColor(frame[:, :, :3], cv2.COLOR_RGB2BGR)
        else:
            image = np.array(frame[:, :, :3])
        scale = -(-MIN_VIEW_HEIGHT // image.shape[0])
        if scale > 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        height, width = image.shape[:2]
        text_scale = max(0.45, min(1.0, width / 640))
        band = int(34 * text_scale) + 6
        image[:band] //= 3
        cv2.putText(image, f"{record['label']} {record['score']:.2f}", (8, band - 10), cv2.FONT_HERSHEY_SIMPLEX,
                    text_scale, (80, 255, 80), 2, cv2.LINE_AA)
        rate = f"{fps:.0f} fps"
        (text_width, _), _ = cv2.getTextSize(rate, cv2.FONT_HERSHEY_SIMPLEX, text_scale * 0.8, 1)
        cv2.putText(image, rate, (width - text_width - 8, band - 10), cv2.FONT_HERSHEY_SIMPLEX, text_scale * 0.8,
                    (255, 255, 255), 1, cv2.LINE_AA)
        return image

    def _encode_forever(self) -> None:
        """While someone watches: the latest frame as a JPEG, at most ``fps`` a second."""
        period, last_frame = 1.0 / self.fps, None
        while not self.closed.is_set():
            if not self.viewers:
                self._watched.wait(timeout=1.0)
                continue
            self._fresh.wait(timeout=1.0)
            self._fresh.clear()
            latest = self._latest
            if latest is None or latest[2]["frame"] == last_frame or self.closed.is_set():
                continue
            started = time.monotonic()
            ok, jpeg = self._cv2.imencode(".jpg", self.overlay(*latest), [self._cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                last_frame = latest[2]["frame"]
                # the frame's own prediction travels with it, so the page's panel shows what the image shows
                part = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                        f"X-Prediction: {json.dumps(latest[2])}\r\n\r\n").encode() + jpeg.tobytes() + b"\r\n"
                with self._part_ready:
                    self._part = (self._part[0] + 1, part)
                    self._part_ready.notify_all()
                self.encoded += 1
            self.closed.wait(max(0.0, period - (time.monotonic() - started)))

    def next_part(self, after: int, timeout: float = 1.0) -> tuple[int, bytes]:
        """The newest frame's multipart part (headers, X-Prediction among them, and the JPEG) once its
        sequence number is past ``after`` (or the same one after ``timeout``)."""
        with self._part_ready:
            self._part_ready.wait_for(lambda: self._part[0] > after or self.closed.is_set(), timeout=timeout)
            return self._part

    def _watch(self, change: int) -> bool:
        with self._viewers_lock:
            if change > 0 and self.viewers >= MAX_VIEWERS:
                return False
            self.viewers += change
        if self.viewers:
            self._watched.set()
            self._fresh.set()
        else:
            self._watched.clear()
        return True

    def _handler(self):
        view = self

        class Handler(BaseHTTPRequestHandler):
            timeout = SEND_TIMEOUT_S  # socket timeout: a stalled viewer's send fails and the viewer is dropped
            server_version = "squeezenet-view"

            def log_message(self, *args):  # the app's stdout is its predictions
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self.reply(200, "text/html; charset=utf-8", PAGE.read_bytes())
                elif path == "/stats":
                    self.reply(200, "application/json", json.dumps(view.stats()).encode())
                elif path == "/stream":
                    self.stream()
                else:
                    self.reply(404, "text/plain", b"not found: the live view serves /, /stream and /stats\n")

            def reply(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def stream(self) -> None:
                if not view._watch(+1):
                    self.reply(503, "text/plain", f"{MAX_VIEWERS} viewers already watch\n".encode())
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    sent = 0
                    while not view.closed.is_set():
                        sequence, part = view.next_part(sent)
                        if sequence == sent:
                            continue
                        self.wfile.write(part)
                        sent = sequence
                except OSError:  # the viewer left, or took nothing for SEND_TIMEOUT_S
                    pass
                finally:
                    view._watch(-1)

        return Handler
