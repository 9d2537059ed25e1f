"""Shared pieces of the rpi tests: the tiny exported model, test videos, and an independent reference for
the preprocessing (PIL, as training used it) and for the predictions (the TFLite interpreter run here)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DATA_DIR", "/usr/share/datasets/fashion-mnist"))


@pytest.fixture(scope="module")
def tiny_model(tiny_export) -> Path:
    """The metadata JSON of a tiny int8 TFLite model made by the export stage (its .tflite beside it), from
    the session's one export of the small model (conftest's ``tiny_export``)."""
    return tiny_export[0] / "squeezenet_int8.json"


def write_video(path: Path, frames: list, fps: float = 30.0, fourcc: str = "FFV1") -> Path:
    """Lossless FFV1 by default, so every decoder (the app's, the reference's, an aarch64 Pi's) reads back
    exactly these pixels; ``fourcc="MJPG"`` for the lossy camera codec."""
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for frame in frames:
        writer.write(frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def fashion_frames(count: int, scale: int = 3) -> list:
    """The first test images, upscaled and BGR, like rpi.sample's video."""
    from model.data import load_dataset

    images = load_dataset("fashion-mnist", "test", str(DATA_DIR)).images[:count, 0]
    return [np.repeat(np.kron(im, np.ones((scale, scale), np.uint8))[:, :, None], 3, axis=2) for im in images]


def read_video(path: Path) -> list:
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def pil_input(frame: np.ndarray, order: str, meta: dict) -> np.ndarray:
    """The model input made the way training made it, with PIL: center crop to the model's aspect,
    convert("L"/"RGB"), resize BILINEAR when the size differs, then the exporter's lookup table."""
    inp = meta["input"]
    height, width, color = inp["height"], inp["width"], inp["color"]
    if frame.ndim == 2 or frame.shape[2] == 1:
        image = Image.fromarray(frame.reshape(frame.shape[:2]), "L")
    elif frame.shape[2] == 3:
        image = Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1] if order == "bgr" else frame), "RGB")
    else:
        rgba = frame[:, :, [2, 1, 0, 3]] if order == "bgr" else frame
        image = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
    w, h = image.size
    if w * height > h * width:
        keep = int(h * width / height + 0.5)
        image = image.crop(((w - keep) // 2, 0, (w - keep) // 2 + keep, h))
    else:
        keep = int(w * height / width + 0.5)
        image = image.crop((0, (h - keep) // 2, w, (h - keep) // 2 + keep))
    image = image.convert("L" if color == "gray" else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    pixels = np.asarray(image).reshape(height, width, -1)
    lut = np.asarray(inp["lut"], np.int64)
    return np.stack([lut[c][pixels[:, :, c]] for c in range(pixels.shape[2])], axis=-1)[None].astype(np.int8)


def reference_predictions(meta_json: Path, frames: list) -> list:
    """(label, score) per frame: PIL preprocessing + the TFLite interpreter in this process."""
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads(Path(meta_json).read_text())
    interpreter = Interpreter(model_path=str(Path(meta_json).parent / meta["model_file"]))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for frame in frames:
        interpreter.set_tensor(inp["index"], pil_input(frame, "bgr", meta))
        interpreter.invoke()
        q = interpreter.get_tensor(out["index"])[0].astype(np.float64)
        logits = (q - meta["output"]["zero_point"]) * meta["output"]["scale"]
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        best = int(np.argmax(scores))
        results.append((meta["labels"][best], float(scores[best])))
    return results


def read_log(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_log_matches(log: list, expected: list) -> None:
    assert len(log) == len(expected)
    for record, (label, score) in zip(log, expected):
        assert {"frame", "label", "score", "latency_ms"} <= set(record)
        assert record["label"] == label, record
        assert abs(record["score"] - score) <= 1e-6, (record, score)


def model_variant(model_json: Path, directory: Path, tag: str) -> Path:
    """A copy of an exported model whose metadata JSON differs by one inert field: the same network, but
    another bundle and so another release name (release names are content digests)."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = json.loads(Path(model_json).read_text())
    (directory / meta["model_file"]).write_bytes((Path(model_json).parent / meta["model_file"]).read_bytes())
    (directory / Path(model_json).name).write_text(json.dumps({**meta, "variant": tag}, indent=1) + "\n")
    return directory / Path(model_json).name
