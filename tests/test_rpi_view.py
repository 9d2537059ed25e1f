"""The live view (rpi.runtime.app --serve, rpi/runtime/view.py): the page in a real headless chromium, /stats
against the prediction log, viewers that read, two at once, one that stalls, the port and the address it
listens on, and the tunnel of `make rpi VIEW=1` / the view command through a real sshd on 127.0.0.1. Only
ever connects to 127.0.0.1."""
import json
import os
import re
import socket
import sys
import time

import numpy as np
import pytest

from tests.browser import Browser, find_chromium
from tests.rpi_helpers import ROOT, fashion_frames, read_log, write_video
from tests.sshd import free_port
from tests.view_helpers import (
    Running,
    StreamReader,
    get_json,
    listening_addresses,
    rss_bytes,
    stalled_client,
    wait_closed,
    wait_json,
)

APP = [sys.executable, "-m", "rpi.runtime.app"]
URL = r"live view: (http://127\.0\.0\.1:(\d+)/)"
PREDICTION_FIELDS = ("frame", "label", "index", "score", "top_k")


def same_predictions(log: list) -> list:
    return [tuple(json.dumps(r[k]) for k in PREDICTION_FIELDS) for r in log]


def logged(log_path, frame: int) -> dict:
    """The log's record of ``frame`` (written before the view is given the frame, so it is there)."""
    return next(r for r in read_log(log_path) if r["frame"] == frame)


@pytest.fixture(scope="module")
def big_video(tmp_path_factory):
    """Fashion-MNIST frames scaled to 448x448: big enough that frames queued for a viewer would show in memory."""
    return write_video(tmp_path_factory.mktemp("view") / "big.avi", fashion_frames(40, scale=16))


def test_viewers_never_change_a_prediction_and_a_stalled_one_holds_no_memory(tiny_model, big_video, tmp_path):
    """One run without --serve, one with two reading viewers and one that never reads, the view sending as
    fast as it can encode: the logged predictions are the same frame by frame, /stats shows the logged
    record, the readers see many frames, the memory stays flat and nothing listens beyond 127.0.0.1."""
    frames = 2500
    common = ["--model", tiny_model, "--source", big_video, "--loop", "--frames", frames, "--every", 0]
    plain = Running([*APP, *common, "--log", tmp_path / "plain.jsonl"], cwd=ROOT)
    assert plain.wait() == 0, plain.stderr
    with Running([*APP, *common, "--log", tmp_path / "served.jsonl", "--serve", 0, "--serve-fps", 1000],
                 cwd=ROOT) as served:
        url, port = served.wait_for(URL, timeout=120).groups()
        port = int(port)
        assert listening_addresses(port) == {"127.0.0.1"}
        readers = [StreamReader(url + "stream") for _ in range(2)]
        for reader in readers:
            reader.start()
        stalled = stalled_client("127.0.0.1", port)
        stats = wait_json(url + "stats", until=lambda s: s["viewers"] == 3 and s["frames"] > 0)
        first_rss, peak_rss = rss_bytes(served.proc.pid), 0
        while served.proc.poll() is None:
            try:
                peak_rss = max(peak_rss, rss_bytes(served.proc.pid))
                stats = get_json(url + "stats")
            except (OSError, AssertionError):
                break
            time.sleep(0.05)
        assert served.wait() == 0, served.stderr
        stalled.close()
        for reader in readers:
            reader.done.set()
            reader.join(timeout=10)
    plain_log, served_log = read_log(tmp_path / "plain.jsonl"), read_log(tmp_path / "served.jsonl")
    assert len(plain_log) == len(served_log) == frames
    assert same_predictions(served_log) == same_predictions(plain_log)
    assert stats["prediction"] == logged(tmp_path / "served.jsonl", stats["frames"])
    assert stats["interpreter"] and stats["kernels"] and stats["top_k"] == 3
    assert 0 < stats["latency_ms"]["p50"] <= stats["latency_ms"]["p90"]
    for reader in readers:
        assert reader.error is None, reader.error
        # enough frames that a queue for the stalled viewer would exceed the bound below (1,200 x ~7 KiB)
        assert reader.count >= 1200 and len(set(reader.jpegs)) > 1 and reader.jpegs[0][:2] == b"\xff\xd8"
        for prediction in reader.predictions:  # each part carries its own frame's record
            assert prediction == served_log[prediction["frame"] - 1]
    # the readers take ~2,500 JPEGs of ~7 KiB each (1.5 GB of raw frames): queued for the stalled viewer, they
    # would add 17 MiB or more; measured growth 1.5 MiB (85.8 -> 87.3 MiB)
    assert peak_rss - first_rss < 8 * 2**20, (first_rss, peak_rss)


def test_a_port_in_use_is_one_error_line_and_status_2(tiny_model, big_video):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = Running([*APP, "--model", tiny_model, "--source", big_video, "--serve", port], cwd=ROOT)
        assert result.wait(timeout=120) == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot serve the live view on 127.0.0.1:{port}: the port is in use (choose another "
                     f"with --serve PORT)"], result.stderr
    assert "summary:" not in result.stdout  # stopped before any frame


def test_serving_beyond_loopback_warns(tiny_model, big_video):
    result = Running([*APP, "--model", tiny_model, "--source", big_video, "--frames", 3, "--serve", 0,
                      "--serve-host", "0.0.0.0"], cwd=ROOT)
    assert result.wait(timeout=120) == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: --serve-host 0.0.0.0")]
    assert len(warnings) == 1 and "no password" in warnings[0], result.stderr
    quiet = Running([*APP, "--model", tiny_model, "--source", big_video, "--frames", 3, "--serve", 0], cwd=ROOT)
    assert quiet.wait(timeout=120) == 0 and "warning" not in quiet.stderr, quiet.stderr


# --- slow: the real export in chromium, and the tunnels through a real sshd ---------------------------------

@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (make report-test-tools)")
def test_make_rpi_local_view_in_headless_chromium(tmp_path):
    """`make rpi-local VIEW=1` on the sample video: the page shows the first frame, the image and the label
    change, /stats matches the log, no console errors."""
    port = free_port()
    log = tmp_path / "predictions.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "BUDGET_BYTES"}
    with Running(["make", "--no-print-directory", "rpi-local", "VIEW=1", f"VIEW_PORT={port}",
                  f"RPI_ARGS=--log {log} --every 0"], cwd=ROOT, env=env) as make:
        make.wait_for(rf"live view: open http://localhost:{port}/", timeout=900)
        url = make.wait_for(URL, timeout=120).group(1)
        assert url == f"http://127.0.0.1:{port}/" and listening_addresses(port) == {"127.0.0.1"}
        first_frame_ms, changes, panel, width, errors = look_at_the_page(url)
        stats = get_json(url + "stats")
        make.stop()
    assert first_frame_ms is not None and first_frame_ms > 0
    assert width >= 240  # the 112x112 sample frames are scaled up for the eye
    assert len({h for h, _, _ in changes}) > 1, changes  # the image changes
    assert len({frame for _, frame, _ in changes}) > 1, changes  # new frames come
    log_records = {r["frame"]: r for r in read_log(log)}
    for _, frame, label in changes:  # the panel describes the very frame on screen, which the log agrees with
        assert label == log_records[int(frame)]["label"], (frame, label)
    assert len(panel) == 3
    assert errors == []
    assert stats["prediction"] == logged(log, stats["frames"])
    assert "stopped=SIGINT" in make.stdout, (make.stdout[-2000:], make.stderr[-2000:])
    assert listening_addresses(port) == set()


def look_at_the_page(url: str):
    """Open the page in headless chromium: the first frame's time, 8 samples 250 ms apart of (a hash of the
    image's pixels, the frame number shown, the panel's label), the top-k panel, the image's width and the
    console errors."""
    browser = Browser(find_chromium())
    try:
        browser.open(url)
        first_frame_ms = browser.evaluate("""new Promise(done => { const t0 = performance.now();
            const check = () => window.firstFrameMs !== null || performance.now() - t0 > 10000
                ? done(window.firstFrameMs) : setTimeout(check, 20);
            check(); })""")
        changes = browser.evaluate("""new Promise(done => {
            const video = document.getElementById('video'), g = video.getContext('2d');
            const sample = () => {
                const d = g.getImageData(0, 0, video.width, video.height).data; let h = 0;
                for (let i = 0; i < d.length; i += 3) h = (h * 31 + d[i]) >>> 0;
                return [h, video.dataset.frame, document.getElementById('label').textContent]; };
            const seen = [sample()];
            const timer = setInterval(() => { seen.push(sample()); if (seen.length === 8) { clearInterval(timer); done(seen); } }, 250);
        })""")
        panel = browser.evaluate("[...document.querySelectorAll('#topk li')].map(li => li.textContent)")
        width = browser.evaluate("document.getElementById('video').width")
        errors = browser.errors()
    finally:
        browser.close()
    return first_frame_ms, changes, panel, width, errors


@pytest.mark.slow
def test_deploy_view_forwards_the_pis_view_over_ssh_and_the_view_command_reaches_a_running_app(
        loopback_pi, tiny_model, tmp_path):
    """deploy --view (what make rpi VIEW=1 runs): the app serves on the 'Pi''s 127.0.0.1:REMOTE, ssh -L brings
    it to 127.0.0.1:LOCAL here, and the figures there are the Pi's log. Then the view command alone (make
    rpi-view), to an app that already serves, as the service does."""
    from tests.test_rpi_deploy import pi_env

    video = write_video(tmp_path / "camera.avi", fashion_frames(30))
    pi_dir, local, remote = tmp_path / "pi", free_port(), free_port()
    env = pi_env(loopback_pi, pi_dir)
    with Running([sys.executable, "-m", "rpi.deploy", "deploy", "--model", tiny_model, "--work-dir",
                  tmp_path / "work", "--python", sys.executable, "--source", video, "--app-args", "--every 0",
                  "--view", local, "--view-remote-port", remote], cwd=ROOT, env=env) as deploy:
        deploy.wait_for(rf"live view: open http://localhost:{local}/ here", timeout=300)
        stats = wait_json(f"http://127.0.0.1:{local}/stats", until=lambda s: s["frames"] > 0)
        assert listening_addresses(local) == {"127.0.0.1"} and listening_addresses(remote) == {"127.0.0.1"}
        assert stats["prediction"] == logged(pi_dir / "predictions.jsonl", stats["frames"])
        assert stats["source"].endswith("media/camera.avi")
    # the app ends with its ssh session (--stop-on-eof: no terminal here, so no hangup signal) and frees the port
    assert wait_closed(remote) == set() and listening_addresses(local) == set()
    assert read_log(pi_dir / "predictions.jsonl")[-1]["frame"] > stats["frames"]

    with Running([*APP, "--model", tiny_model, "--source", video, "--loop", "--every", 0, "--serve", remote],
                 cwd=ROOT) as app:
        app.wait_for(URL, timeout=120)
        with Running([sys.executable, "-m", "rpi.deploy", "view", "--view", local, "--view-remote-port", remote],
                     cwd=ROOT, env=env) as tunnel:
            tunnel.wait_for(rf"live view: open http://localhost:{local}/ here", timeout=60)
            stats = wait_json(f"http://127.0.0.1:{local}/stats", until=lambda s: s["frames"] > 0)
            assert stats["model"] == tiny_model.name.replace(".json", ".tflite")
            assert tunnel.stop() == 0 and "tunnel closed" in tunnel.stdout, tunnel.stderr
    assert "stopped=SIGINT" in app.stdout


def test_the_local_port_of_the_tunnel_in_use_is_refused_before_anything_is_sent(loopback_pi, tiny_model, tmp_path):
    from tests.test_rpi_deploy import deploy, one_error_line, pi_env

    pi_dir = tmp_path / "pi"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work", "--python", sys.executable,
                        "--view", port, env=pi_env(loopback_pi, pi_dir))
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith(f"error: cannot forward the live view to port {port} here: ")
    assert not pi_dir.exists()


def test_the_views_overlay_leaves_the_frame_alone():
    """The view draws on its own copy: the frame the classifier was given is not changed."""
    from rpi.runtime.view import LiveView

    view = LiveView("127.0.0.1", 0, 15, {})
    from rpi.runtime.sources import import_cv2

    view._cv2 = import_cv2()
    rng = np.random.default_rng(0)
    for frame, order in ((rng.integers(0, 256, (112, 112, 3), np.uint8), "bgr"),
                         (rng.integers(0, 256, (480, 640, 3), np.uint8), "rgb"),
                         (rng.integers(0, 256, (28, 28), np.uint8), "bgr")):
        before = frame.copy()
        image = view.overlay(frame, order, {"label": "Sneaker", "score": 0.5}, 30.0)
        assert np.array_equal(frame, before)
        assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 240


def test_stop_on_eof_ends_the_app_with_the_session_that_started_it(tiny_model, big_video):
    """What the deploy passes when it has no terminal: the app's stdin closing (ssh gone) stops it cleanly."""
    import subprocess

    app = subprocess.Popen([*APP, "--model", tiny_model, "--source", big_video, "--loop", "--every", "0", "--serve",
                            "0", "--stop-on-eof"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    port = None
    while port is None:
        line = app.stdout.readline()
        assert line, app.stderr.read()
        found = re.match(URL, line)
        port = int(found.group(2)) if found else None
    assert wait_json(f"http://127.0.0.1:{port}/stats", until=lambda s: s["frames"] > 0)["running"]
    out, err = app.communicate(timeout=60)  # closes the app's stdin: its end of the "session"
    assert app.returncode == 0, err
    assert "stopped=hangup" in out.splitlines()[-1] and listening_addresses(port) == set()


def test_view_options_that_make_no_sense_are_refused(tiny_model):
    import subprocess

    for args, says in ((["--serve", "70000"], "--serve PORT must be 0..65535"),
                       (["--serve", "--serve-fps", "0"], "--serve-fps must be > 0"),
                       (["--serve", "--check"], "--serve shows a classification run")):
        result = subprocess.run([*APP, "--model", str(tiny_model), *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2 and says in result.stderr, (args, result.stderr)
