"""The Pi side on aarch64: `make rpi` against an emulated 64-bit Raspberry Pi OS (tests/arm64_pi.py: arm64
Debian bookworm under qemu-user, a Pi 4's Cortex-A72 and a Pi 5's Cortex-A76, behind a loopback sshd).

pip installs rpi/runtime/requirements-pi.txt there from the package index, the deploy's smoke test names the kernels,
and the sample video's 1,000 frames give the same predictions and scores as the same bundle on this host.
Skips with one line only where qemu-user cannot run at all (no root, no binfmt_misc)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.arm64_pi import BOARDS, PiRootError, stand_ins, unavailable
from tests.rpi_helpers import ROOT, fashion_frames, write_video
from tests.sshd import start_sshd, stop_sshd

pytestmark = [pytest.mark.slow, pytest.mark.arm64]

MODEL = ROOT / "artifacts/export/squeezenet_int8.json"
SAMPLE = ROOT / "artifacts/rpi/sample.avi"
PI_DIR = "/root/squeezenet"  # the default PI_DIR, ~/squeezenet, as the emulated Pi's root user sees it


def make(*args, env=None, timeout=1500):
    env = {k: v for k, v in (env or os.environ).items() if k not in ("PI_DIR", "PI_PYTHON", "BUDGET_BYTES")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def pi_args(login) -> list:
    return [f"PI_HOST={login.host}", f"PI_PORT={login.port}", f"PI_SSH_OPTS={login.ssh_opts}"]


def last_run(path) -> list:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    starts = [i for i, r in enumerate(records) if r["frame"] == 1]
    return records[starts[-1]:]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """{"pi4": (EmulatedPi, LoopbackPi), "pi5": ...}: one arm64 root, two loopback sshds."""
    try:
        reason = unavailable()
    except PiRootError as exc:
        pytest.fail(str(exc))
    if reason:
        pytest.skip(f"qemu-user cannot run here: {reason}")
    directory = tmp_path_factory.mktemp("arm64")
    try:
        pis = stand_ins(directory, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except PiRootError as exc:
        pytest.fail(str(exc))
    started = {}
    try:
        for name, pi in pis.items():
            process, login = start_sshd(directory / f"sshd-{name}", extra_config=pi.sshd_config())
            started[name] = (process, pi, login)
        yield {name: (pi, login) for name, (_, pi, login) in started.items()}
    finally:
        for process, _, _ in started.values():
            stop_sshd(process)
        # every mount lived in a login's own namespace, so the host sees plain directories here
        shutil.rmtree(directory / "root", ignore_errors=True)


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    """The exported model and the sample video (built when missing), and the same bundle's predictions on
    this host: what every emulated Pi must reproduce."""
    built = make("artifacts/export/squeezenet_int8.tflite", "artifacts/rpi/sample.avi")
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    work = tmp_path_factory.mktemp("host")
    result = subprocess.run([sys.executable, "-m", "rpi.deploy", "local", "--model", str(MODEL), "--work-dir",
                             str(work), "--source", str(SAMPLE), "--app-args", "--every 0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = last_run(work / "predictions.jsonl")
    assert len(records) == 1000
    return records


@pytest.mark.parametrize("board", ["pi4", "pi5"])
def test_make_rpi_on_an_emulated_pi_gives_the_hosts_predictions_frame_by_frame(emulated, host_run, board):
    pi, login = emulated[board]
    result = make("rpi", *pi_args(login), f"SOURCE={SAMPLE}", "RPI_ARGS=--every 0")
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert re.search(r"python 3\.11\.\d+ on aarch64", out), out[:2000]
    assert "pi: preparing venv" in out or "prepared by an earlier deploy" in out  # the Pi 4 makes it, the Pi 5 reuses it
    smoke = re.search(r"^ok: squeezenet_int8\.tflite .* runs with ai_edge_litert 2\.3\.0, XNNPACK for \d+ of \d+ ops.*: "
                      r"the kernels of the export's check \(bit-exact with the quantized model on 10,000 images\)", out, re.M)
    assert smoke, out[-3000:]
    assert not re.search(r"^(pi: )?warning: ", result.stderr, re.M), result.stderr[-2000:]
    summary = re.search(r"^summary: frames=1000 fps=([0-9.]+) .* interpreter=ai_edge_litert kernels=xnnpack:\d+/\d+ "
                        rf"source={PI_DIR}/media/sample\.avi stopped=end$", out, re.M)
    assert summary, out[-2000:]
    print(f"{board} ({BOARDS[board].qemu_cpu}) under emulation: {summary.group(0)}")
    print("\n".join(ln for ln in out.splitlines() if ln.startswith(("pi: ", "ok: ", "uploaded", "sent", "raspberry"))))

    on_pi = last_run(pi.root / PI_DIR.lstrip("/") / "predictions.jsonl")
    fields = ("frame", "label", "index", "score", "top_k")
    same = sum(all(a[k] == b[k] for k in fields) for a, b in zip(on_pi, host_run))
    assert (len(on_pi), same) == (1000, 1000), f"{same} of {len(on_pi)} frames match the host's"


def ensure_deployed(pi, login) -> None:
    if not (pi.root / PI_DIR.lstrip("/") / "current/run-app").exists():  # this test run alone
        result = make("rpi", *pi_args(login), "FRAMES=1")
        assert result.returncode == 0, result.stderr[-2000:]


def test_without_sys_xnnpack_cannot_start_and_the_app_warns_or_with_strict_refuses(emulated):
    pi, login = emulated["pi4"]
    ensure_deployed(pi, login)
    check = "squeezenet/current/run-app --check"
    good = pi.run(check + " --strict")
    assert good.returncode == 0 and "XNNPACK for" in good.stdout, good.stderr

    fallback = pi.run(check, without_sys=True)  # as when /sys is missing: XNNPACK's CPU probe fails
    assert fallback.returncode == 0, fallback.stderr
    warnings = [ln for ln in fallback.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: this machine runs ai_edge_litert 2.3.0 with "
                                                         "built-in kernels for all"), fallback.stderr
    assert "XNNPACK did not start: Error in cpuinfo: failed to parse" in warnings[0]
    assert "NOT the kernels of the export's check" in fallback.stdout

    strict = pi.run(check + " --strict", without_sys=True)
    lines = [ln for ln in strict.stderr.splitlines() if ln.strip()]
    assert strict.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: this machine runs"), strict.stderr


FRAME_HASHES = """
import hashlib, json, sys, threading
import cv2
from rpi.runtime.sources import frames, make_source
source = make_source(sys.argv[1])
source.open()
app = [hashlib.sha256(f.tobytes()).hexdigest() for f in frames(source, threading.Event())]
capture, ffmpeg = cv2.VideoCapture(sys.argv[1]), []
while True:
    ok, frame = capture.read()
    if not ok:
        break
    ffmpeg.append(hashlib.sha256(frame.tobytes()).hexdigest())
print(json.dumps({"packets": source.jpeg_packets, "app": app, "ffmpeg": ffmpeg}))
"""


def test_mjpg_frames_decode_to_the_hosts_pixels_on_the_pi(emulated):
    """The app reads MJPG as JPEG packets decoded by cv2.imdecode: the same pixels on aarch64 as here.
    (OpenCV's FFmpeg decoding of the same file is only reported: it differs between the two.)"""
    pi, login = emulated["pi5"]
    ensure_deployed(pi, login)
    video = write_video(pi.root / "root/mjpg.avi", fashion_frames(200), fourcc="MJPG")
    here = json.loads(subprocess.run([sys.executable, "-c", FRAME_HASHES, str(video)], cwd=ROOT, capture_output=True,
                                     text=True, timeout=300, check=True).stdout)
    (pi.root / "root/frame_hashes.py").write_text(FRAME_HASHES)
    inside = pi.run("PYTHONPATH=squeezenet/current squeezenet/venvs/*/bin/python frame_hashes.py mjpg.avi")
    assert inside.returncode == 0, inside.stderr[-2000:]
    there = json.loads(inside.stdout)
    assert here["packets"] and there["packets"] and len(here["app"]) == len(there["app"]) == 200
    same = sum(a == b for a, b in zip(here["app"], there["app"]))
    assert same == 200, f"{same} of 200 MJPG frames decode to the same pixels"
    print(f"MJPG, 200 frames: cv2.imdecode of the packets {same}/200 identical to x86; OpenCV's FFmpeg decoding "
          f"{sum(a == b for a, b in zip(here['ffmpeg'], there['ffmpeg']))}/200")


def test_make_rpi_bench_prints_the_bench_table_per_thread_count(emulated):
    pi, login = emulated["pi5"]
    result = make("rpi-bench", *pi_args(login), "FRAMES=40")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("backend "))
    assert lines[header].split() == ["backend", "threads", "median", "ms", "p90", "ms", "img/s", "x", "built-in"]
    rows = [ln.split() for ln in lines[header + 1:header + 9]]
    assert [int(r[-5]) for r in rows] == [1, 1, 2, 2, 3, 3, 4, 4]  # the stand-in Pi 5 has 4 cores
    assert [r[3] for r in rows] == ["xnnpack:" + rows[0][3].split(":")[1], "builtin"] * 4
    assert "Raspberry Pi 5 Model B Rev 1.0 (aarch64, 4 CPUs)" in result.stdout
    print("\n".join(lines[header - 1:header + 9]))
