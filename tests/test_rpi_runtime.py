"""The Pi-side runtime (rpi.app and what it imports), run here: imports, preprocessing against PIL, model
checks, camera sources, signals and the command line's errors. Real OpenCV, real TFLite, no mocks."""
import http.server
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rpi.errors import RpiError
from rpi.model import Kernels, interpreter_class, load_classifier, read_metadata
from rpi.preprocess import Preprocessor, pil_resize
from rpi.sources import (CameraLost, CaptureSource, ImageDirSource, default_source, frames, make_source,
                         picamera2_available)
from tests.conftest import needs_fashion
from tests.rpi_helpers import (ROOT, fashion_frames, pil_input, read_log, read_video, reference_predictions,
                               write_video)

PI_MODULES = ["rpi.app", "rpi.model", "rpi.preprocess", "rpi.sources", "rpi.errors", "rpi.contract", "rpi.remote",
              "rpi.bench", "rpi.health"]
TFLITE_RUNTIME_PYTHON = ROOT / ".venv-tflite-runtime" / "bin" / "python"
HOST_ONLY = ["torch", "brevitas", "tensorflow", "keras", "tf_keras", "PIL", "model", "quantize", "export", "fpga"]


def run_app(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "rpi.app", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def error_lines(stderr: str) -> list:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def test_pi_modules_import_nothing_from_the_host_side():
    code = (f"import sys, importlib\nfor m in {PI_MODULES!r}: importlib.import_module(m)\n"
            "import rpi.model; rpi.model.interpreter_class()\nimport rpi.sources; rpi.sources.import_cv2()\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HOST_ONLY!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_bundle_holds_every_rpi_module_the_pi_runtime_imports():
    """The Pi gets rpi/ as listed in deploy.PI_MODULES: every rpi module the Pi-side entry points load must be
    in that list (a new shared module left out would fail only on the Pi)."""
    from rpi.deploy import PI_MODULES as BUNDLED

    code = ("import sys, importlib\nfor m in ('rpi.app', 'rpi.health', 'rpi.bench'): importlib.import_module(m)\n"
            "print(' '.join(sorted(m for m in sys.modules if m == 'rpi' or m.startswith('rpi.'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = {"__init__.py" if m == "rpi" else m.split(".", 1)[1] + ".py" for m in result.stdout.split()}
    assert "contract.py" in loaded and loaded <= set(BUNDLED), loaded - set(BUNDLED)


# --- preprocessing ---------------------------------------------------------------------------------------

def gray_meta(height=28, width=28, color="gray"):
    channels = 1 if color == "gray" else 3
    rng = np.random.default_rng(1)
    lut = [sorted(rng.integers(-128, 128, 256).tolist()) for _ in range(channels)]
    return {"input": {"height": height, "width": width, "channels": channels, "color": color, "lut": lut}}


def preprocessor(meta):
    inp = meta["input"]
    return Preprocessor(inp["height"], inp["width"], inp["channels"], inp["color"], np.asarray(inp["lut"]))


FRAME_CASES = [  # (height, width, channels or None for 2-D gray, order)
    (28, 28, None, "bgr"), (28, 28, 3, "bgr"), (480, 640, 3, "bgr"), (640, 480, 3, "rgb"), (480, 640, 4, "bgr"),
    (1080, 1920, 3, "bgr"), (37, 91, 1, "bgr"), (29, 28, 3, "rgb"), (3, 5, None, "bgr"), (112, 112, 3, "bgr"),
]


@pytest.mark.parametrize("height,width,channels,order", FRAME_CASES)
@pytest.mark.parametrize("model_size,color", [((28, 28), "gray"), ((32, 32), "rgb"), ((24, 40), "gray")])
def test_any_frame_becomes_exactly_the_input_pil_would_make(height, width, channels, order, model_size, color):
    rng = np.random.default_rng(height * width + (channels or 0))
    shape = (height, width) if channels is None else (height, width, channels)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    meta = gray_meta(*model_size, color=color)
    got = preprocessor(meta)(frame, order)
    assert got.dtype == np.int8 and got.shape == (1, *model_size, 1 if color == "gray" else 3)
    np.testing.assert_array_equal(got, pil_input(frame, order, meta))


def test_resize_matches_pil_for_many_sizes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = rng.integers(1, 300, 2)
        out_h, out_w = rng.integers(1, 64, 2)
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(image).resize((int(out_w), int(out_h)), Image.BILINEAR))
        np.testing.assert_array_equal(pil_resize(image[None], int(out_h), int(out_w))[0], expected,
                                      err_msg=f"{h}x{w} -> {out_h}x{out_w}")


@pytest.mark.parametrize("frame", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 5), np.uint8),
                                   np.zeros((0, 4, 3), np.uint8), "not an array"])
def test_a_frame_the_runtime_cannot_read_is_one_clear_error(frame):
    with pytest.raises(RpiError, match="frame"):
        preprocessor(gray_meta())(frame)


# --- the model and its metadata -----------------------------------------------------------------------------

def copy_model(meta_json: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    meta = json.loads(meta_json.read_text())
    shutil.copy(meta_json, directory / meta_json.name)
    shutil.copy(meta_json.parent / meta["model_file"], directory / meta["model_file"])
    return directory / meta_json.name


def rewrite(meta_json: Path, change) -> None:
    meta = json.loads(meta_json.read_text())
    change(meta)
    meta_json.write_text(json.dumps(meta))


def test_classifier_matches_the_pil_reference_on_real_images(tiny_model):
    frames_ = fashion_frames(20, scale=3)
    classifier = load_classifier(tiny_model)
    expected = reference_predictions(tiny_model, frames_)
    for frame, (label, score) in zip(frames_, expected):
        prediction = classifier.classify(frame)
        assert prediction.label == label and abs(prediction.score - score) < 1e-12


def test_model_given_as_a_directory(tiny_model):
    assert read_metadata(tiny_model.parent).json_path == tiny_model


def test_truncated_model_is_refused_before_the_interpreter(tiny_model, tmp_path):
    meta_json = copy_model(tiny_model, tmp_path / "m")
    tflite = read_metadata(meta_json).tflite_path
    tflite.write_bytes(tflite.read_bytes()[: tflite.stat().st_size // 2])
    with pytest.raises(RpiError, match="does not match the sha256.*truncated"):
        read_metadata(meta_json)


@pytest.mark.parametrize("garbage,says", [
    (b"this is not a flatbuffer" * 100, "is not a TFLite model (no TFL3 identifier in its header)"),
    (b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 8, "cannot load "),  # the header right, the body not
])
def test_corrupt_model_with_a_matching_sha_is_one_line_under_both_interpreters(tiny_model, tmp_path, garbage, says):
    """ai-edge-litert here, and tflite-runtime (the Pi's classic wheel, in its own venv): one clear line each
    (tflite-runtime once said "'utf-8' codec can't decode" about a damaged file)."""
    import hashlib

    meta_json = copy_model(tiny_model, tmp_path / "m")
    read_metadata(meta_json).tflite_path.write_bytes(garbage)
    rewrite(meta_json, lambda m: m.update(model_sha256=hashlib.sha256(garbage).hexdigest()))
    with pytest.raises(RpiError, match=re.escape(says)) as caught:
        load_classifier(meta_json)
    assert "codec" not in str(caught.value)
    if not TFLITE_RUNTIME_PYTHON.exists() or says == "cannot load ":
        return  # tflite-runtime 2.14 does not verify the flatbuffer: a right header on a garbage body crashes it
    code = ("import sys\nfrom rpi.model import load_classifier\nfrom rpi.errors import RpiError\n"
            "try:\n    load_classifier(sys.argv[1], runtime='tflite_runtime')\n"
            "except RpiError as exc:\n    print(exc)\n")
    r = subprocess.run([str(TFLITE_RUNTIME_PYTHON), "-c", code, str(meta_json)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and says in r.stdout and "codec" not in r.stdout, r.stdout + r.stderr
    assert len(r.stdout.strip().splitlines()) == 1, r.stdout


def test_input_shape_the_metadata_does_not_describe_is_refused(tiny_model, tmp_path):
    meta_json = copy_model(tiny_model, tmp_path / "m")
    rewrite(meta_json, lambda m: m["input"].update(height=m["input"]["height"] + 4))
    with pytest.raises(RpiError, match="preprocessing cannot feed this model"):
        load_classifier(meta_json)


def test_input_quantization_that_differs_from_the_metadata_is_refused(tiny_model, tmp_path):
    meta_json = copy_model(tiny_model, tmp_path / "m")
    rewrite(meta_json, lambda m: m["input"].update(scale=m["input"]["scale"] * 2))
    with pytest.raises(RpiError, match="quantization"):
        load_classifier(meta_json)


def test_metadata_of_another_format_is_refused(tiny_model, tmp_path):
    meta_json = copy_model(tiny_model, tmp_path / "m")
    rewrite(meta_json, lambda m: m.update(format="something-else/9"))
    with pytest.raises(RpiError, match="not squeezenet-tflite/1"):
        read_metadata(meta_json)


# --- sources -------------------------------------------------------------------------------------------------

def numbered_frames(count, height=60, width=80):
    """Frames whose mean brightness tells their number, robust to MJPG's loss."""
    return [np.full((height, width, 3), 10 + 20 * (i % 12), np.uint8) for i in range(count)]


def test_video_file_source_reads_every_frame_then_ends(tmp_path):
    video = write_video(tmp_path / "v.avi", numbered_frames(8))
    source = make_source(str(video))
    source.open()
    got = list(frames(source, threading.Event()))
    source.close()
    assert [round((f.mean() - 10) / 20) for f in got] == list(range(8))
    assert got[0].shape == (60, 80, 3)


def test_video_file_source_loops_when_asked(tmp_path):
    video = write_video(tmp_path / "v.avi", numbered_frames(3))
    source = make_source(str(video), loop=True)
    source.open()
    stream = frames(source, threading.Event())
    got = [round((next(stream).mean() - 10) / 20) for _ in range(7)]
    source.close()
    assert got == [0, 1, 2, 0, 1, 2, 0]


def test_image_directory_source_reads_images_in_name_order_and_skips_unreadable(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 30), 50, np.uint8))               # gray
    cv2.imwrite(str(tmp_path / "b.png"), np.full((20, 30, 3), 100, np.uint8))           # BGR
    cv2.imwrite(str(tmp_path / "c.png"), np.full((20, 30, 4), 150, np.uint8))           # BGRA
    (tmp_path / "d.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    warnings = []
    source = ImageDirSource(tmp_path, warn=warnings.append)
    source.open()
    got = list(frames(source, threading.Event()))
    assert [f.shape for f in got] == [(20, 30), (20, 30, 3), (20, 30, 4)]
    assert [int(f.mean()) for f in got] == [50, 100, 150]
    assert len(warnings) == 1 and "d.png" in warnings[0]


def test_empty_image_directory_is_one_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(RpiError, match="holds no images"):
        make_source(str(tmp_path)).open()


def stand_in_picamera2(monkeypatch, tmp_path, body: str | None) -> None:
    """Make ``import picamera2`` find a package whose __init__ is ``body``; None: no such package at all.
    Detection is a question of what imports, so the test decides that, not the machine it runs on."""
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    if body is None:
        monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
        return
    (tmp_path / "picamera2").mkdir()
    (tmp_path / "picamera2" / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("body, available", [
    (None, False),  # not installed (any machine but a Pi with python3-picamera2)
    ("import libcamera_bindings_that_do_not_exist\n", False),  # installed, its libcamera bindings missing
    ("raise RuntimeError('libcamera: no cameras')\n", False),  # imports fail another way
    ("class Picamera2:\n    pass\n", True)])  # imports: the camera is the default source
def test_picamera2_is_the_default_source_exactly_when_it_imports(monkeypatch, tmp_path, body, available):
    stand_in_picamera2(monkeypatch, tmp_path, body)
    assert picamera2_available() is available
    assert default_source() == ("picamera2" if available else "0")
    if not available:
        source = make_source("auto")
        assert isinstance(source, CaptureSource) and source.target == 0 and source.live


def test_asking_for_picamera2_where_it_cannot_import_says_what_to_install(monkeypatch, tmp_path):
    stand_in_picamera2(monkeypatch, tmp_path, None)
    with pytest.raises(RpiError, match="python3-picamera2"):
        make_source("picamera2").open()


def test_a_live_camera_that_comes_back_is_reopened(tmp_path):
    video = write_video(tmp_path / "cam.avi", numbered_frames(3))
    source, reports = CaptureSource(str(video), live=True), []  # a file read as a live camera: its end is a drop-out
    source.open()
    stream = frames(source, threading.Event(), retries=3, backoff_s=0.01, report=reports.append)
    got = [round((next(stream).mean() - 10) / 20) for _ in range(5)]
    source.close()
    assert got == [0, 1, 2, 0, 1]
    assert reports == [f"warning: {video} stopped delivering frames; retry 1/3 in 0.0 s", f"{video} is back after 1 retry"]


def test_a_live_camera_that_stays_away_is_reported_lost_after_the_retries(tmp_path):
    video = write_video(tmp_path / "cam.avi", numbered_frames(2))
    source, reports = CaptureSource(str(video), live=True), []
    source.open()
    stream = frames(source, threading.Event(), retries=3, backoff_s=0.01, report=reports.append)
    next(stream), next(stream)
    video.unlink()  # the camera is unplugged
    with pytest.raises(CameraLost, match="lost: no frame after 3 retries"):
        next(stream)
    assert [r.split(";")[1] for r in reports] == [" retry 1/3 in 0.0 s", " retry 2/3 in 0.0 s", " retry 3/3 in 0.0 s"]


# --- the command line ------------------------------------------------------------------------------------------

def test_app_classifies_a_video_logs_json_lines_and_ends_with_a_summary(tiny_model, tmp_path):
    frames_ = fashion_frames(12)
    video = write_video(tmp_path / "v.avi", frames_)
    log = tmp_path / "logs" / "predictions.jsonl"
    log.parent.mkdir()
    log.write_text('{"frame": 0, "note": "an earlier run"}\n')
    result = run_app("--model", tiny_model, "--source", video, "--frames", 10, "--every", 5, "--log", log)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("summary: frames=10 fps=") and "stopped=frames" in lines[-1]
    assert sum(ln.startswith("frame ") for ln in lines) == 2
    records = read_log(log)
    assert records[0]["note"] == "an earlier run" and [r["frame"] for r in records[1:]] == list(range(1, 11))
    expected = reference_predictions(tiny_model, read_video(video)[:10])
    for record, (label, score) in zip(records[1:], expected):
        assert record["label"] == label and abs(record["score"] - score) <= 1e-6 and record["latency_ms"] > 0


def test_app_stops_cleanly_on_sigterm_and_sigint(tiny_model, tmp_path):
    video = write_video(tmp_path / "v.avi", numbered_frames(5))
    for sig in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen([sys.executable, "-m", "rpi.app", "--model", str(tiny_model), "--source", str(video),
                                    "--loop", "--every", "50"], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert process.stdout.readline().startswith("classifying")
        assert process.stdout.readline().startswith("frame 50:")
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert out.splitlines()[-1].startswith("summary: frames=") and f"stopped={sig.name}" in out
        assert "Traceback" not in err


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_stream_that_disappears_mid_run_is_retried_then_reported_without_a_traceback(tiny_model, tmp_path):
    write_video(tmp_path / "stream.avi", numbered_frames(30))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.avi"
    process = subprocess.Popen([sys.executable, "-m", "rpi.app", "--model", str(tiny_model), "--source", url,
                                "--every", "30", "--retries", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("classifying")
        assert process.stdout.readline().startswith("frame 30:")
    finally:
        server.shutdown()
        server.server_close()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"warning: {url} stopped delivering frames; retry 1/2" in err
    assert f"error: {url} lost: no frame after 2 retries" in err and "Traceback" not in err
    assert out.splitlines()[-1].startswith("summary: frames=") and "stopped=camera-lost" in out


@pytest.mark.parametrize("case,expected", [
    ("missing-model", "model metadata .* does not exist"),
    ("truncated-model", "does not match the sha256"),
    ("unreadable-video", "cannot read video"),
    ("empty-image-dir", "holds no images"),
    ("no-such-source", "is not a camera"),
    ("no-webcam", "cannot read camera webcam 7"),
])
def test_bad_input_gives_one_error_line_and_exit_status_2(case, expected, tiny_model, tmp_path):
    model, source = tiny_model, "auto"
    if case == "missing-model":
        model = tmp_path / "nowhere" / "squeezenet_int8.json"
    elif case == "truncated-model":
        model = copy_model(tiny_model, tmp_path / "m")
        tflite = read_metadata(model).tflite_path
        tflite.write_bytes(tflite.read_bytes()[:100])
    elif case == "unreadable-video":
        source = tmp_path / "broken.mp4"
        source.write_bytes(os.urandom(5000))
    elif case == "empty-image-dir":
        source = tmp_path / "images"
        source.mkdir()
    elif case == "no-such-source":
        source = tmp_path / "missing.avi"
    elif case == "no-webcam":
        source = "7"
    result = run_app("--model", model, "--source", source, "--frames", 3)
    assert result.returncode == 2
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert re.search(expected, errors[0]), errors[0]


def test_check_mode_and_help(tiny_model):
    result = run_app("--model", tiny_model, "--check")
    assert result.returncode == 0 and result.stdout.startswith("ok: ")
    help_text = run_app("--help").stdout
    for option in ("--source", "--frames", "--threads", "--top-k", "--every", "--log", "--preview", "summary:"):
        assert option in help_text


def test_preview_without_a_display_runs_headless_with_a_warning(tiny_model, tmp_path):
    video = write_video(tmp_path / "v.avi", numbered_frames(3))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = run_app("--model", tiny_model, "--source", video, "--preview", env=env)
    assert result.returncode == 0
    assert "warning: --preview: no display" in result.stderr and "summary: frames=3" in result.stdout


def choice_in(python, runtime: str) -> str:
    """What rpi.model.interpreter_class picks under ``python`` (its own set of installed interpreters)."""
    code = ("import sys\nfrom rpi.model import interpreter_class\nfrom rpi.errors import RpiError\n"
            "try:\n    print(interpreter_class(sys.argv[1])[1])\nexcept RpiError as exc:\n    print('error:', exc)")
    result = subprocess.run([str(python), "-c", code, runtime], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runtime_choice_follows_the_one_documented_order():
    """'auto' takes tflite_runtime when it is installed, else ai_edge_litert (rpi.model.AUTO_ORDER), and the
    standalone export/tflite_run.py holds the same order. Both branches run: the host venv has only
    ai-edge-litert, the tflite-runtime venv only tflite-runtime."""
    from export import tflite_run
    from rpi.model import AUTO_ORDER

    assert AUTO_ORDER == ("tflite_runtime", "ai_edge_litert") and tflite_run.RUNTIMES == AUTO_ORDER
    assert interpreter_class("ai_edge_litert")[1] == "ai_edge_litert"
    with pytest.raises(RpiError, match="unknown TFLite runtime"):
        interpreter_class("tensorflow")
    host = {runtime: choice_in(sys.executable, runtime) for runtime in ("auto", "tflite_runtime")}
    assert host == {"auto": "ai_edge_litert",
                    "tflite_runtime": "error: tflite-runtime is not installed (pip install tflite-runtime)"}
    if not TFLITE_RUNTIME_PYTHON.exists():
        pytest.skip("no .venv-tflite-runtime (make setup creates it)")
    classic = {runtime: choice_in(TFLITE_RUNTIME_PYTHON, runtime) for runtime in ("auto", "ai_edge_litert")}
    assert classic == {"auto": "tflite_runtime",
                       "ai_edge_litert": "error: ai-edge-litert is not installed (pip install ai-edge-litert)"}


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
