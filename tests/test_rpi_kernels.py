"""The Pi runtime's kernels (XNNPACK or the interpreter's built-in ones, and what the app says of them), its
bench, and frames that decode the same everywhere."""
import json
import os
import platform
import re
import subprocess
import sys
import threading

import numpy as np

from contract.tflite_model import Kernels, read_metadata
from rpi.runtime.sources import (
    frames,
    make_source,
)
from tests.conftest import needs_fashion
from tests.rpi_helpers import ROOT, fashion_frames, read_video, write_video
from tests.test_rpi_runtime import copy_model, error_lines, numbered_frames, rewrite, run_app

# --- which kernels run the model ----------------------------------------------------------------------------

def interpreter_for(tiny_model, **options):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(read_metadata(tiny_model).tflite_path), **options)
    interpreter.allocate_tensors()
    return interpreter


def test_kernels_say_which_ops_xnnpack_runs_and_the_export_records_them(tiny_model):
    from ai_edge_litert.interpreter import OpResolverType

    default = Kernels.of(interpreter_for(tiny_model), "ai_edge_litert")
    plain = Kernels.of(interpreter_for(tiny_model, experimental_op_resolver_type=
                                       OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), "ai_edge_litert")
    assert default.ops == plain.ops and len(default.ops) == 20  # the tiny network's operators, in graph order
    # XNNPACK takes every op but the global average pool (int8 AVERAGE_POOL_2D stays on TFLite's kernel)
    assert [op for op, d in zip(default.ops, default.delegated) if not d] == ["AVERAGE_POOL_2D"]
    assert default.tag() == "xnnpack:19/20" and plain.tag() == "builtin" and not any(plain.delegated)
    assert default.describe() == "XNNPACK for 19 of 20 ops (AVERAGE_POOL_2D on built-in kernels)"
    exactness = json.loads(tiny_model.read_text())["exactness"]
    assert exactness["kernels"] == default.to_json() and exactness["machine"] == platform.machine()
    assert exactness["max_abs_diff"] == 0 and exactness["samples"] == 200 and exactness["parent"] == "brevitas"
    assert default.differs_from(exactness) is None
    assert "built-in kernels for all 20 ops" in plain.differs_from(exactness)


def test_check_and_summary_name_the_interpreter_and_its_kernels(tiny_model, tmp_path):
    check = run_app("--model", tiny_model, "--check", "--strict")
    assert check.returncode == 0 and check.stderr == "", check.stderr
    assert ("runs with ai_edge_litert 2.3.0, XNNPACK for 19 of 20 ops (AVERAGE_POOL_2D on built-in kernels): the "
            "kernels of the export's check (bit-exact with the quantized model on 200 images)") in check.stdout
    video = write_video(tmp_path / "v.avi", numbered_frames(3))
    result = run_app("--model", tiny_model, "--source", video)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "(ai_edge_litert, XNNPACK for 19 of 20 ops" in result.stdout.splitlines()[0]
    assert re.search(r"^summary: frames=3 .* interpreter=ai_edge_litert kernels=xnnpack:19/20 source=\S+v\.avi "
                     r"stopped=end$", result.stdout, re.M), result.stdout


def test_without_xnnpack_the_app_warns_once_and_strict_refuses(tiny_model, tmp_path):
    video = write_video(tmp_path / "v.avi", numbered_frames(5))
    result = run_app("--model", tiny_model, "--source", video, "--no-xnnpack")
    assert result.returncode == 0
    lines = error_lines(result.stderr)
    assert lines == [  # once, before the first frame, not per frame
        "warning: this machine runs ai_edge_litert 2.3.0 with built-in kernels for all 20 ops (XNNPACK turned off), "
        "but the export's check (bit-exact with the quantized model on 200 images) ran under ai_edge_litert 2.3.0 "
        f"with XNNPACK for 19 of 20 ops (AVERAGE_POOL_2D on built-in kernels) on {platform.machine()}; predictions "
        "may differ from the quantized model's (--strict makes this an error)"]
    assert "kernels=builtin" in result.stdout.splitlines()[-1]
    check = run_app("--model", tiny_model, "--check", "--no-xnnpack")
    assert check.returncode == 0 and "NOT the kernels of the export's check" in check.stdout

    strict = run_app("--model", tiny_model, "--source", video, "--no-xnnpack", "--strict")
    assert strict.returncode == 2 and strict.stdout == ""
    lines = error_lines(strict.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: this machine runs ai_edge_litert 2.3.0 with built-in")


def test_metadata_without_a_kernel_record_is_said_and_strict_refuses(tiny_model, tmp_path):
    meta_json = copy_model(tiny_model, tmp_path / "m")
    rewrite(meta_json, lambda m: m.pop("exactness"))
    check = run_app("--model", meta_json, "--check")
    assert check.returncode == 0 and "(the metadata records no kernels to compare with)" in check.stdout
    assert "does not record which kernels the export measured its exactness with" in check.stderr
    assert run_app("--model", meta_json, "--check", "--strict").returncode == 2


def test_bench_prints_the_bench_table_with_and_without_xnnpack(tiny_model, tmp_path):
    video = write_video(tmp_path / "v.avi", fashion_frames(6))
    result = run_app("--model", tiny_model, "--source", video, "--bench", "--frames", 15, "--threads", 1)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"bench: 15 frames of {video}, squeezenet_int8.tflite under ai_edge_litert 2.3.0 on ")
    assert lines[1].split() == ["backend", "threads", "median", "ms", "p90", "ms", "img/s", "x", "built-in"]
    rows = [ln.split() for ln in lines[2:]]
    assert [r[:5] for r in rows] == [["tflite", "int8", "ai_edge_litert", "xnnpack:19/20", "1"],
                                     ["tflite", "int8", "ai_edge_litert", "builtin", "1"]]
    assert float(rows[1][-1]) == 1.0 and all(float(v) > 0 for r in rows for v in r[5:])


# --- frames that decode the same everywhere ------------------------------------------------------------------

def test_an_mjpg_video_is_decoded_from_its_jpeg_packets(tmp_path):
    import cv2

    video = write_video(tmp_path / "m.avi", fashion_frames(5), fourcc="MJPG")
    capture = cv2.VideoCapture(str(video))
    assert capture.set(cv2.CAP_PROP_FORMAT, -1)  # FFmpeg's packets, undecoded
    packets = [capture.read()[1] for _ in range(5)]
    expected = [cv2.imdecode(packet, cv2.IMREAD_COLOR) for packet in packets]  # libjpeg-turbo, the same on every CPU
    source = make_source(str(video))
    source.open()
    got = list(frames(source, threading.Event()))
    source.close()
    assert source.jpeg_packets and len(got) == 5
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_a_lossless_video_gives_back_exactly_the_frames_written(tmp_path):
    written = fashion_frames(4)
    source = make_source(str(write_video(tmp_path / "f.avi", written)))
    source.open()
    got = list(frames(source, threading.Event()))
    assert not source.jpeg_packets and all(np.array_equal(a, b) for a, b in zip(got, written)) and len(got) == 4


@needs_fashion
def test_the_sample_video_is_lossless(tmp_path):
    from model.data import load_dataset

    out = tmp_path / "sample.avi"
    result = subprocess.run([sys.executable, "-m", "rpi.sample", "--out", str(out), "--count", "12"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = load_dataset("fashion-mnist", "test", os.environ.get("DATA_DIR"))
    got = read_video(out)
    assert len(got) == 12
    for image, frame in zip(data.images[:12, 0], got):  # every pixel, as written: FFV1 is lossless
        np.testing.assert_array_equal(frame, np.repeat(np.kron(image, np.ones((4, 4), np.uint8))[:, :, None], 3, 2))
    labels = [f["index"] for f in json.loads(out.with_suffix(".json").read_text())["frames"]]
    assert labels == data.labels[:12].tolist()
