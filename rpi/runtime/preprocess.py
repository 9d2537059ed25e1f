"""Camera frame -> the model's int8 input tensor, exactly as training prepared its images.

Training images went through PIL: ``convert("L")`` (or ``"RGB"``), then ``resize((W, H), BILINEAR)`` when
not already W x H, then ``(pixel / 255 - mean) / std`` and the input quantizer. The Pi has no PIL, so this
module reproduces PIL's integer arithmetic with numpy, bit for bit (the tests compare with PIL itself):

- luma: ``L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`` (ITU-R 601-2, PIL's fixed point);
- resize: PIL's separable triangle filter whose support widens with the reduction factor (so a large
  camera frame is averaged, not sampled), coefficients rounded to 22 fractional bits, a horizontal pass
  rounded to uint8, then a vertical pass rounded to uint8;
- normalisation and quantization: the per-channel lookup table the exporter computed (pixel -> int8 code).

Camera frames are first center-cropped to the model's aspect ratio, so a 640x480 frame keeps its middle
480x480 square instead of being squashed.
"""
from __future__ import annotations

import numpy as np

from .errors import RpiError

PRECISION_BITS = 32 - 8 - 2  # PIL's Resample.c, 8-bit images
CHANNEL_ORDERS = ("bgr", "rgb")  # OpenCV and picamera2's RGB888 give BGR; PIL/numpy images are RGB


def _bilinear(x: float) -> float:
    x = -x if x < 0.0 else x
    return 1.0 - x if x < 1.0 else 0.0


def pil_bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's BILINEAR resample along one axis as taps: for each output pixel, the input indices and the
    integer coefficients (22 fractional bits) that PIL's ``precompute_coeffs`` and
    ``normalize_coeffs_8bpc`` compute, operation by operation, so even the float rounding matches.
    Shapes (out_size, K); unused taps have weight 0. int32 holds every product: 255 * 2**22 < 2**31."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    inverse = 1.0 / filterscale
    rows = []
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - xmin
        weights = [_bilinear((x + xmin - center + 0.5) * inverse) for x in range(count)]
        total = 0.0
        for w in weights:  # a plain loop: Python 3.12+'s sum() compensates, C's loop does not
            total += w
        fixed = []
        for w in weights:
            k = w / total if total != 0.0 else w
            fixed.append(int(k * (1 << PRECISION_BITS) - 0.5) if k < 0 else int(k * (1 << PRECISION_BITS) + 0.5))
        rows.append((xmin, fixed))
    width = max(len(fixed) for _, fixed in rows)
    index = np.zeros((out_size, width), np.intp)
    coeffs = np.zeros((out_size, width), np.int32)
    for xx, (xmin, fixed) in enumerate(rows):
        index[xx, :len(fixed)] = np.arange(xmin, xmin + len(fixed))
        coeffs[xx, :len(fixed)] = fixed
    return index, coeffs


def _round_fixed(acc: np.ndarray) -> np.ndarray:
    """PIL's clip8: add half, shift right by PRECISION_BITS (floor), clip to 0..255."""
    return np.clip((acc + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS, 0, 255)


def pil_resize(image: np.ndarray, height: int, width: int, cache: dict | None = None) -> np.ndarray:
    """(C, h, w) uint8 -> (C, height, width) uint8, equal to PIL ``resize((width, height), BILINEAR)``
    of each channel. Each pass is rounded to 8 bits, so the pass order matters: Pillow 13 runs the
    vertical pass first when the height shrinks by more than twice as many pixels as the width (older
    Pillow always ran the horizontal pass first; the two agree on every center-cropped frame of a model
    that is not more than twice as tall as it is wide). Only the taps are computed (a 480-pixel row
    shrunk to 28 needs ~35 per output pixel), in exact integer arithmetic."""
    cache = {} if cache is None else cache
    _, in_h, in_w = image.shape
    out = image.astype(np.int32)  # products stay int32; numpy's sum widens to int64
    vertical_first = (in_h - height) > 0 and (in_h - height) > (in_w - width) * 2
    for axis in (("v", "h") if vertical_first else ("h", "v")):
        if axis == "h" and in_w != width:
            index, coeffs = _cached_taps(cache, in_w, width)
            out = _round_fixed((out[:, :, index] * coeffs).sum(axis=-1))
        elif axis == "v" and in_h != height:
            index, coeffs = _cached_taps(cache, in_h, height)
            out = _round_fixed((out[:, index, :] * coeffs[:, :, None]).sum(axis=2))
    return out.astype(np.uint8)


def _cached_taps(cache: dict, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    if (in_size, out_size) not in cache:
        cache[in_size, out_size] = pil_bilinear_taps(in_size, out_size)
    return cache[in_size, out_size]


def center_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centered region of ``frame`` (H, W, ...) with the aspect ratio width:height."""
    h, w = frame.shape[:2]
    if w * height > h * width:  # too wide: keep the middle columns
        keep = max(1, (h * width + height // 2) // height)
        left = (w - keep) // 2
        return frame[:, left:left + keep]
    keep = max(1, (w * height + width // 2) // width)
    top = (h - keep) // 2
    return frame[top:top + keep]


def as_channels_last(frame: np.ndarray) -> np.ndarray:
    """Check a frame's type and layout; return it as (H, W, C) with C in 1, 3, 4."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        kind = getattr(frame, "dtype", type(frame).__name__)
        raise RpiError(f"a frame must be a uint8 image array, got {kind}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise RpiError(f"a frame must be H x W (gray), H x W x 3 or H x W x 4, got shape {frame.shape}")
    return frame


def to_model_color(frame: np.ndarray, color: str, order: str) -> np.ndarray:
    """(H, W, C) uint8 in ``order`` -> (C', H, W) uint8 in the model's colour: PIL ``convert("L")`` for
    "gray", PIL ``convert("RGB")`` (alpha dropped, gray replicated) for "rgb"."""
    if order not in CHANNEL_ORDERS:
        raise RpiError(f"unknown channel order {order!r}; expected one of {CHANNEL_ORDERS}")
    if frame.shape[2] == 1:
        gray = frame[:, :, 0]
        return gray[None] if color == "gray" else np.stack([gray, gray, gray])
    r, g, b = (2, 1, 0) if order == "bgr" else (0, 1, 2)
    if color == "rgb":
        return np.stack([frame[:, :, r], frame[:, :, g], frame[:, :, b]])
    wide = frame.astype(np.uint32)
    luma = (wide[:, :, r] * 19595 + wide[:, :, g] * 38470 + wide[:, :, b] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[None]


class Preprocessor:
    """Turns frames of any size and colour layout into the model's (1, H, W, C) int8 input."""

    def __init__(self, height: int, width: int, channels: int, color: str, lut: np.ndarray):
        expected_channels = {"gray": 1, "rgb": 3}.get(color)
        if expected_channels is None:
            raise RpiError(f"unknown input colour {color!r}; expected 'gray' or 'rgb'")
        if channels != expected_channels:
            raise RpiError(f"input colour {color!r} needs {expected_channels} channel(s), the model has {channels}")
        lut = np.asarray(lut)
        if lut.shape != (channels, 256):
            raise RpiError(f"the input lookup table must be {channels} x 256, got {lut.shape}")
        if lut.min() < -128 or lut.max() > 127:
            raise RpiError("the input lookup table holds values outside int8")
        self.height, self.width, self.channels, self.color = height, width, channels, color
        self.lut = lut.astype(np.int8)
        self._resize_cache: dict = {}

    def pixels(self, frame: np.ndarray, order: str = "bgr") -> np.ndarray:
        """The model-sized uint8 image (C, H, W) before normalisation: crop, colour, resize."""
        frame = center_crop(as_channels_last(frame), self.height, self.width)
        image = to_model_color(frame, self.color, order)
        if image.shape[1:] != (self.height, self.width):
            image = pil_resize(image, self.height, self.width, self._resize_cache)
        return image

    def __call__(self, frame: np.ndarray, order: str = "bgr") -> np.ndarray:
        image = self.pixels(frame, order)
        return lookup(self.lut, image)[None]


def lookup(lut: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (..., C, H, W) -> the model's int8 input codes (..., H, W, C), through the (C, 256) table
    the export wrote: the one pixel -> int8 step, here on the Pi and in the export's checks."""
    codes = np.stack([lut[c][pixels[..., c, :, :]] for c in range(pixels.shape[-3])], axis=-1)
    return np.ascontiguousarray(codes, dtype=np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int, dtype=np.float64) -> np.ndarray:
    """int8 outputs -> real values. The export passes float32: Brevitas computes in float32, and the
    comparison with it is bit for bit."""
    return (q.astype(dtype) - dtype(zero_point)) * dtype(scale)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()

