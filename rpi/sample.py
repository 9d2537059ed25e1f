"""``python -m rpi.sample``: the sample video that ``make rpi-local`` classifies (no external media).

The first N Fashion-MNIST test images, each one frame, scaled up (nearest neighbour) to look like a small
camera frame and written with OpenCV as FFV1, a lossless codec: every machine that reads the file back (an
x86 host, an aarch64 Pi) gets exactly these pixels, so their predictions can be compared frame by frame
(a lossy MJPG decodes to different pixels on aarch64 and x86). The video is read back and compared before
it is kept. The runtime crops, converts and resizes each frame to the model's input like any camera frame.
Beside it, ``<name>.json`` lists each frame's true label, so a test or a user can score the predictions in
the --log file against it. Host side: imports model.data.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from .errors import RpiError, run_cli


CODEC = "FFV1"


def frame_of(image: np.ndarray, scale: int) -> np.ndarray:
    """One 28x28 gray image -> the BGR frame stored for it (scale*H x scale*W)."""
    big = np.kron(image, np.ones((scale, scale), np.uint8))
    return np.repeat(big[:, :, None], 3, axis=2)


def write_video(path: Path, images: np.ndarray, scale: int, fps: float) -> None:
    """(N, H, W) uint8 gray -> lossless FFV1 video of BGR frames, checked by reading it back, written
    atomically (a temporary name, renamed when complete and checked)."""
    from .sources import import_cv2

    cv2 = import_cv2()
    height, width = images.shape[1] * scale, images.shape[2] * scale
    temporary = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")  # cv2 picks the container by suffix
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*CODEC), fps, (width, height))
    if not writer.isOpened():
        raise RpiError(f"OpenCV cannot write an {CODEC} video to {temporary} (an OpenCV without FFmpeg?)")
    try:
        for image in images:
            writer.write(frame_of(image, scale))
    finally:
        writer.release()
    try:
        check_lossless(temporary, images, scale)
    except RpiError:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def check_lossless(path: Path, images: np.ndarray, scale: int) -> None:
    from .sources import import_cv2

    capture = import_cv2().VideoCapture(str(path))
    try:
        for index, image in enumerate(images):
            ok, frame = capture.read()
            if not ok or not np.array_equal(frame, frame_of(image, scale)):
                raise RpiError(f"OpenCV does not read back from {path.name} the pixels it wrote (frame {index + 1}): "
                               f"its {CODEC} codec is not lossless here")
    finally:
        capture.release()


def score(log_path: Path, labels_path: Path) -> str:
    """Top-1 accuracy of the last run in an rpi.app --log file against the sample's true labels."""
    try:
        truth = {f["frame"]: f["label"] for f in json.loads(labels_path.read_text())["frames"]}
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError) as exc:
        raise RpiError(f"cannot score {log_path} against {labels_path}: {exc}") from None
    starts = [i for i, r in enumerate(records) if r.get("frame") == 1]
    if not starts:
        raise RpiError(f"{log_path} holds no run (no record with frame 1)")
    run = [r for r in records[starts[-1]:] if r.get("frame") in truth]
    right = sum(r["label"] == truth[r["frame"]] for r in run)
    return f"top-1 on {labels_path.with_suffix('.avi').name}: {right}/{len(run)} = {right / max(len(run), 1):.1%} (last run in {log_path})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rpi.sample", description=__doc__)
    p.add_argument("--out", default="artifacts/rpi/sample.avi", help="the video (default artifacts/rpi/sample.avi)")
    p.add_argument("--count", type=int, default=1000, help="test images, one per frame (default 1000)")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor of each 28x28 image (default 4)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate stored in the file (default 30)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST directory (default $DATA_DIR)")
    p.add_argument("--score", metavar="LOG", help="instead of writing the video, score the last run in this "
                                                  "rpi.app --log file against the video's labels")
    args = p.parse_args(argv)
    if args.score:
        print(score(Path(args.score), Path(args.out).with_suffix(".json")))
        return 0
    if args.count < 1 or args.scale < 1:
        raise RpiError("--count and --scale must be >= 1")
    from model.data import DataError, load_dataset

    try:
        data = load_dataset("fashion-mnist", "test", args.data_dir)
    except DataError as exc:
        raise RpiError(str(exc)) from None
    count = min(args.count, len(data))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, data.images[:count, 0], args.scale, args.fps)
    labels = {"video": out.name, "source": "Fashion-MNIST test images 0..%d" % (count - 1), "scale": args.scale,
              "classes": data.classes,
              "frames": [{"frame": i + 1, "test_index": i, "label": data.classes[int(k)], "index": int(k)}
                         for i, k in enumerate(data.labels[:count])]}
    labels_path = out.with_suffix(".json")
    temporary = labels_path.with_name(f".{labels_path.name}.tmp")
    temporary.write_text(json.dumps(labels, indent=1) + "\n")
    os.replace(temporary, labels_path)
    print(f"wrote {out} ({count} frames, {out.stat().st_size:,} bytes) and {labels_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
