"""Camera sources behind one interface: ``open()``, ``read() -> frame or None``, ``close()``.

- ``picamera2``: the Pi camera (Pi OS's apt package ``python3-picamera2``; the venv must see system
  site-packages). Frames are ``RGB888``, which picamera2 stores in B, G, R order.
- OpenCV ``VideoCapture``: a webcam index (``0``), a stream URL (``rtsp://...``, ``http://...``) or a
  video file. Frames are BGR. An MJPG file or stream is read as JPEG packets and decoded with
  ``cv2.imdecode`` (libjpeg-turbo, whose integer decoding gives the same pixels on every architecture);
  FFmpeg's own MJPG decoder gives different pixels on aarch64 and x86. A webcam's MJPG frames are decoded
  by OpenCV's V4L2 backend, which uses the same libjpeg-turbo path.
- a directory of images, read in name order with OpenCV (BGR, gray or BGRA as stored).

Live sources (camera, webcam, stream) that stop delivering frames are reopened with back-off by
``frames()``; files and directories simply end (or start over with ``loop``).
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import RpiError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_HINT = "OpenCV (cv2) is needed for webcams, streams, video files and image directories: " \
             "pip install opencv-python-headless"


class CameraLost(RpiError):
    """A live source stopped delivering frames and did not come back within the retries."""


def import_cv2():
    # OpenCV's and FFmpeg's own messages about a missing camera or a broken file would only repeat, less
    # clearly, the one error this runtime reports; the variables still override this
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError:
        raise RpiError(VIDEO_HINT) from None
    return cv2


def picamera2_available() -> bool:
    """True when picamera2 imports (on a Pi with Pi OS's python3-picamera2); off a Pi it cannot."""
    try:
        importlib.import_module("picamera2")
    except Exception:  # ImportError, or libcamera bindings that fail to load: either way, not usable
        return False
    return True


def default_source() -> str:
    return "picamera2" if picamera2_available() else "0"


class Source:
    name = "source"
    live = False  # live sources are retried when they stop; files end
    order = "bgr"

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def truncation(self) -> str | None:
        """After the source ended: why its end was early (a file with fewer frames than it announced)."""
        return None


MJPEG_FOURCCS = {"MJPG", "mjpg"}
SKIPPED_PACKETS_LIMIT = 30  # consecutive MJPG packets that do not decode before the source counts as unreadable


def fourcc_of(capture) -> str:
    code = int(capture.get(import_cv2().CAP_PROP_FOURCC)) & 0xFFFFFFFF
    return code.to_bytes(4, "little").decode("latin-1")


class CaptureSource(Source):
    """OpenCV VideoCapture: webcam index, stream URL or video file."""

    def __init__(self, target, live: bool, loop: bool = False, size: tuple[int, int] | None = None):
        self.target, self.live, self.loop, self.size = target, live, loop, size
        self.name = f"webcam {target}" if isinstance(target, int) else str(target)
        self._capture = None
        self._pending: np.ndarray | None = None
        self.jpeg_packets = False  # MJPG read as packets, decoded by cv2.imdecode
        self.announced = 0  # frames a video file's header announces (0: unknown, or a live source)
        self.delivered = 0  # frames read in the current pass through the file
        self.short_pass: tuple[int, int] | None = None  # (delivered, announced) of a pass that ended early

    def open(self) -> None:
        cv2 = import_cv2()
        capture = cv2.VideoCapture(self.target)
        if isinstance(self.target, int) and self.size:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        self.jpeg_packets = (capture.isOpened() and not isinstance(self.target, int)
                             and fourcc_of(capture) in MJPEG_FOURCCS and self._raw_packets(capture))
        ok, frame = self._read(capture) if capture.isOpened() else (False, None)
        if not ok or frame is None:
            capture.release()
            what = "camera" if isinstance(self.target, int) else "stream" if self.live else "video"
            raise RpiError(f"cannot read {what} {self.name}: no frame (not a readable video, device busy, "
                           f"or nothing there)")
        self._capture, self._pending = capture, frame
        if not self.live:
            self.announced = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.delivered = 0

    @staticmethod
    def _raw_packets(capture) -> bool:
        """Ask the FFmpeg backend for the encoded packets instead of decoded frames (CAP_PROP_FORMAT -1)."""
        cv2 = import_cv2()
        return capture.getBackendName() == "FFMPEG" and bool(capture.set(cv2.CAP_PROP_FORMAT, -1))

    def _read(self, capture) -> tuple[bool, np.ndarray | None]:
        cv2 = import_cv2()
        for _ in range(SKIPPED_PACKETS_LIMIT + 1):
            ok, data = capture.read()
            if not ok or not self.jpeg_packets:
                return ok, data
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
            if frame is not None:
                return True, frame
        raise RpiError(f"{self.name}: {SKIPPED_PACKETS_LIMIT + 1} MJPG packets in a row are not JPEG images "
                       f"that OpenCV can decode")

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            self.delivered += 1
            return frame
        ok, frame = self._read(self._capture)
        if not ok and not self.live:
            if self.announced and self.delivered < self.announced and self.short_pass is None:
                self.short_pass = (self.delivered, self.announced)
            if self.loop:
                self._capture.set(import_cv2().CAP_PROP_POS_FRAMES, 0)
                self.delivered = 0
                ok, frame = self._read(self._capture)
        self.delivered += int(bool(ok))
        return frame if ok else None

    def truncation(self) -> str | None:
        if self.short_pass is None:
            return None
        delivered, announced = self.short_pass
        return f"{self.name} ended after {delivered:,} of the {announced:,} frames it announces (a truncated file?)"

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageDirSource(Source):
    def __init__(self, directory: Path, loop: bool = False, warn: Callable[[str], None] | None = None):
        self.directory, self.loop = directory, loop
        self.name = str(directory)
        self.warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        import_cv2()
        self._files = sorted(p for p in self.directory.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise RpiError(f"image directory {self.directory} holds no images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._next = 0

    def read(self) -> np.ndarray | None:
        cv2 = import_cv2()
        misses = 0
        while misses <= len(self._files):
            if self._next >= len(self._files):
                if not self.loop:
                    return None
                self._next = 0
            path = self._files[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is not None and image.dtype == np.uint8:
                return image
            self.warn(f"skipping {path}: not a readable 8-bit image")
            misses += 1
        raise RpiError(f"no image in {self.directory} is readable")


class PiCameraSource(Source):
    """The Pi camera through picamera2; kept small because it can only run on a Pi."""

    name = "picamera2"
    live = True

    def __init__(self, size: tuple[int, int] = (640, 480)):
        self.size = size
        self._camera = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except Exception as exc:
            raise RpiError(f"picamera2 is not available ({type(exc).__name__}: {exc}); on Pi OS run "
                           f"'sudo apt install python3-picamera2' and use a venv made with "
                           f"--system-site-packages, or pick --source 0 for a USB webcam") from None
        try:
            camera = Picamera2()
            camera.configure(camera.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
            camera.start()
        except Exception as exc:  # libcamera reports a missing or busy camera with several types
            raise RpiError(f"cannot start the Pi camera: {exc}") from None
        self._camera = camera

    def read(self) -> np.ndarray | None:
        try:
            return self._camera.capture_array("main")
        except Exception:  # a camera unplugged mid-run; frames() retries
            return None

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.close()
            except Exception:
                pass
            self._camera = None


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise RpiError(f"size {text!r} should look like 640x480") from None
    if width <= 0 or height <= 0:
        raise RpiError(f"size {text!r} must be positive")
    return width, height


def make_source(spec: str, loop: bool = False, size: tuple[int, int] = (640, 480)) -> Source:
    """``auto`` | ``picamera2`` | webcam index | stream URL | video file | image directory."""
    if spec == "auto":
        spec = default_source()
    if spec == "picamera2":
        return PiCameraSource(size)
    if spec.isdigit():
        return CaptureSource(int(spec), live=True, size=size)
    if "://" in spec:
        return CaptureSource(spec, live=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageDirSource(path, loop)
    if path.is_file():
        return CaptureSource(str(path), live=False, loop=loop)
    raise RpiError(f"source {spec!r} is not a camera (picamera2, 0, 1, ...), a stream URL, a video file or "
                   f"an image directory")


def frames(source: Source, stop: threading.Event, retries: int = 5, backoff_s: float = 0.5,
           report: Callable[[str], None] | None = None) -> Iterator[np.ndarray]:
    """Frames until the source ends or ``stop`` is set. A live source that stops delivering frames is
    closed and reopened ``retries`` times, waiting backoff_s, 2 x backoff_s, ... (capped at 10 s) between
    tries; if it stays away, CameraLost."""
    report = report or (lambda msg: print(msg, file=sys.stderr, flush=True))
    while not stop.is_set():
        frame = source.read()
        if frame is None and source.live:
            frame = _reconnect(source, stop, retries, backoff_s, report)
        if frame is None:
            return
        yield frame


def _reconnect(source: Source, stop: threading.Event, retries: int, backoff_s: float,
               report: Callable[[str], None]) -> np.ndarray | None:
    source.close()
    delay = backoff_s
    for attempt in range(1, retries + 1):
        report(f"warning: {source.name} stopped delivering frames; retry {attempt}/{retries} in {delay:.1f} s")
        if stop.wait(delay):
            return None
        try:
            source.open()
            frame = source.read()
        except RpiError:
            frame = None
        if frame is not None:
            report(f"{source.name} is back after {attempt} retr{'y' if attempt == 1 else 'ies'}")
            return frame
        source.close()
        delay = min(delay * 2, 10.0)
    raise CameraLost(f"{source.name} lost: no frame after {retries} retries")
