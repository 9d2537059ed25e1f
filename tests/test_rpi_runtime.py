"""The Pi-side runtime (rpi.runtime.app and what it imports), run here: imports, preprocessing against PIL, model
checks, camera sources, signals and the command line's errors. Real OpenCV, real TFLite, no mocks."""
import http.server
import json
import os
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

from contract import UserError
from contract.tflite_model import read_metadata
from rpi.runtime.errors import RpiError
from rpi.runtime.model import interpreter_class, load_classifier
from rpi.runtime.preprocess import Preprocessor, pil_resize
from rpi.runtime.sources import (
    CameraLost,
    CaptureSource,
    ImageDirSource,
    default_source,
    frames,
    make_source,
    picamera2_available,
)
from tests.rpi_helpers import ROOT, fashion_frames, pil_input, read_log, read_video, reference_predictions, write_video

PI_MODULES = ["rpi.runtime.app", "rpi.runtime.model", "rpi.runtime.preprocess", "rpi.runtime.sources",
              "rpi.runtime.errors", "rpi.runtime.bench", "rpi.runtime.health", "rpi.runtime.view", "contract", "contract.tflite_model"]
TFLITE_RUNTIME_PYTHON = ROOT / ".venv-tflite-runtime" / "bin" / "python"
HOST_ONLY = ["torch", "brevitas", "tensorflow", "keras", "tf_keras", "PIL", "model", "quantize", "export", "fpga"]


def run_app(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "rpi.runtime.app", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def error_lines(stderr: str) -> list:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def test_pi_modules_import_nothing_from_the_host_side():
    code = (f"import sys, importlib\nfor m in {PI_MODULES!r}: importlib.import_module(m)\n"
            "import rpi.runtime.model; rpi.runtime.model.interpreter_class()\nimport rpi.runtime.sources; rpi.runtime.sources.import_cv2()\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HOST_ONLY!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_bundle_runs_on_its_own(tmp_path):
    """What the bundle ships (rpi/runtime/ and contract/, chosen by the layout) is all the Pi-side entry
    points load: copied alone into an empty directory, they import, and every rpi or contract module comes
    from that copy (a module left outside those folders would fail only on the Pi)."""
    from rpi.bundle import shipped_files

    for rel, src in shipped_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp_path / rel)
    assert (tmp_path / "rpi/runtime/requirements-pi.txt").is_file() and not (tmp_path / "rpi/deploy.py").exists()
    code = f"""import importlib, sys
sys.path[:] = [p for p in sys.path if p not in ("", {str(ROOT)!r})]
sys.path.insert(0, ".")
for m in ("rpi.runtime.app", "rpi.runtime.health", "rpi.runtime.bench"):
    importlib.import_module(m)
ours = [m for m in sys.modules if m.split(".")[0] in ("rpi", "contract", "model", "quantize", "export", "fpga")]
where = lambda m: [sys.modules[m].__file__] if getattr(sys.modules[m], "__file__", None) else list(sys.modules[m].__path__)
print(sorted(m for m in ours if not all(w.startswith({str(tmp_path)!r}) for w in where(m))))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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
    with pytest.raises(UserError, match="does not match the sha256.*truncated"):
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
    code = ("import sys\nfrom rpi.runtime.model import load_classifier\nfrom rpi.runtime.errors import RpiError\n"
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
    with pytest.raises(UserError, match="not squeezenet-tflite/1"):
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
        process = subprocess.Popen([sys.executable, "-m", "rpi.runtime.app", "--model", str(tiny_model), "--source", str(video),
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
    process = subprocess.Popen([sys.executable, "-m", "rpi.runtime.app", "--model", str(tiny_model), "--source", url,
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
    """What rpi.runtime.model.interpreter_class picks under ``python`` (its own set of installed interpreters)."""
    code = ("import sys\nfrom rpi.runtime.model import interpreter_class\nfrom rpi.runtime.errors import RpiError\n"
            "try:\n    print(interpreter_class(sys.argv[1])[1])\nexcept RpiError as exc:\n    print('error:', exc)")
    result = subprocess.run([str(python), "-c", code, runtime], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runtime_choice_follows_the_one_documented_order():
    """'auto' takes tflite_runtime when it is installed, else ai_edge_litert (rpi.runtime.model.AUTO_ORDER), and the
    standalone export/tflite_run.py holds the same order. Both branches run: the host venv has only
    ai-edge-litert, the tflite-runtime venv only tflite-runtime."""
    from export import tflite_run
    from rpi.runtime.model import AUTO_ORDER

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
