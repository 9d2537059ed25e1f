"""``python -m rpi.sample``: the sample video that ``make rpi-local`` classifies (no external media).

The first N test images of the model's own data, each one frame, scaled up (nearest neighbour) to look like
a small camera frame and written with OpenCV as FFV1, a lossless codec: every machine that reads the file back
(an x86 host, an aarch64 Pi) gets exactly these pixels, so their predictions can be compared frame by frame
(a lossy MJPG decodes to different pixels on aarch64 and x86). The video is read back and compared before
it is kept. The runtime crops, converts and resizes each frame to the model's input like any camera frame.

Which data: with ``--export-dir``, the test split the export recorded (its report.json names the data set
and directory; the images at the model's input size and channels), so a model trained on your folder is
shown your folder's test images, never another data set's; without it, Fashion-MNIST. A sample already made
from the same data is kept. Beside it, ``<name>.json`` lists each frame's true label and the data it came
from, so a test or a user can score the predictions in the --log file against it. Host side: imports
model.data.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

import contract
from contract import run_cli

from .runtime.errors import RpiError

CODEC = "FFV1"


def frame_of(image: np.ndarray, scale: int) -> np.ndarray:
    """One (C, H, W) image, gray (C = 1) or RGB (C = 3) -> the BGR frame stored for it (scale*H x scale*W)."""
    big = np.kron(image, np.ones((1, scale, scale), np.uint8))
    return np.repeat(big[0][:, :, None], 3, axis=2) if len(big) == 1 else np.ascontiguousarray(big[::-1].transpose(1, 2, 0))


def write_video(path: Path, images: np.ndarray, scale: int, fps: float) -> None:
    """(N, C, H, W) uint8 -> lossless FFV1 video of BGR frames, checked by reading it back, written
    atomically (a temporary name, renamed when complete and checked)."""
    from .runtime.sources import import_cv2

    cv2 = import_cv2()
    height, width = images.shape[2] * scale, images.shape[3] * scale
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
    from .runtime.sources import import_cv2

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
    """Top-1 accuracy of the last run in an rpi.runtime.app --log file against the sample's true labels."""
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


def sample_data(export_dir: str | None, data_dir: str | None):
    """The test split to draw frames from and a description of it: the export's data, or Fashion-MNIST."""
    from model.data import DataError, load_dataset

    if export_dir is None:
        source = {"dataset": "fashion-mnist", "data_dir": data_dir, "input_size": None, "channels": None}
    else:
        report_path, meta_path = Path(export_dir) / "report.json", Path(export_dir) / "squeezenet_int8.json"
        try:
            report, meta = json.loads(report_path.read_text()), json.loads(meta_path.read_text())
            source = {"dataset": report["dataset"], "data_dir": report["data_dir"],
                      "input_size": meta["input"]["height"], "channels": meta["input"]["channels"]}
        except (OSError, ValueError, KeyError) as exc:
            raise RpiError(f"cannot tell which data {export_dir} was exported for ({exc}); run make export "
                           f"first, or give the video to classify: SOURCE=") from None
    try:
        data = load_dataset(source["dataset"], "test", source["data_dir"], source["input_size"], source["channels"])
    except DataError as exc:
        raise RpiError(f"the sample video is made from the model's own test images ({source['dataset']} in "
                       f"{source['data_dir']}), which cannot be read: {exc}; give a video instead: SOURCE=") from None
    if export_dir is not None and list(data.classes) != list(meta["labels"]):
        raise RpiError(f"the test split in {source['data_dir']} has classes {list(data.classes)}, the exported model "
                       f"{list(meta['labels'])}; give a video instead: SOURCE=")
    return data, source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rpi.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=f"{contract.stage_dir('rpi')}/sample.avi", help="the video (default %(default)s)")
    p.add_argument("--export-dir", default=None,
                   help="draw the frames from the test split this export was made on (make rpi-local passes "
                        "artifacts/export); default: Fashion-MNIST")
    p.add_argument("--count", type=int, default=1000, help="test images, one per frame (default 1000)")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor of each image (default 4)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate stored in the file (default 30)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST directory without --export-dir (default $DATA_DIR)")
    p.add_argument("--score", metavar="LOG", help="instead of writing the video, score the last run in this "
                                                  "rpi.runtime.app --log file against the video's labels")
    args = p.parse_args(argv)
    if args.score:
        print(score(Path(args.score), Path(args.out).with_suffix(".json")))
        return 0
    if args.count < 1 or args.scale < 1:
        raise RpiError("--count and --scale must be >= 1")
    data, source = sample_data(args.export_dir, args.data_dir)
    count = min(args.count, len(data))
    out = Path(args.out)
    labels_path = out.with_suffix(".json")
    labels = {"video": out.name, "source": f"test images 0..{count - 1} of {source['dataset']}", "data": source,
              "scale": args.scale, "fps": args.fps, "classes": list(data.classes),
              "frames": [{"frame": i + 1, "test_index": i, "label": data.classes[int(k)], "index": int(k)}
                         for i, k in enumerate(data.labels[:count])]}
    try:
        if out.is_file() and json.loads(labels_path.read_text()) == labels:
            os.utime(out)  # newer than the export it was checked against: make keeps it
            print(f"{out} is already made from these images")
            return 0
    except (OSError, ValueError):
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, data.images[:count], args.scale, args.fps)
    temporary = labels_path.with_name(f".{labels_path.name}.tmp")
    temporary.write_text(json.dumps(labels, indent=1) + "\n")
    os.replace(temporary, labels_path)
    print(f"wrote {out} ({count} frames of {source['dataset']}, {out.stat().st_size:,} bytes) and {labels_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
