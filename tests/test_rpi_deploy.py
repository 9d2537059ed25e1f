"""Deploying to a stand-in Raspberry Pi: a real sshd on 127.0.0.1 (tests/sshd.py), real ssh, rsync and scp,
the real rpi/remote.py release manager, the real app. Only ever connects to 127.0.0.1."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rpi.bundle import shipped_files
from tests.rpi_helpers import (
    ROOT,
    assert_log_matches,
    fashion_frames,
    model_variant,
    read_log,
    read_video,
    reference_predictions,
    write_video,
)
from tests.sshd import closed_port, keygen

# a bundle: rpi/runtime/ and contract/ (with requirements-pi.txt), the .tflite, its .json and manifest.json
BUNDLE_FILES = len(shipped_files()) + 3


def pi_env(pi, pi_dir, **extra) -> dict:
    """What `make rpi PI_HOST=... PI_PORT=... PI_SSH_OPTS=... PI_DIR=...` puts in the environment."""
    env = {**os.environ, "PI_HOST": pi.host, "PI_PORT": str(pi.port), "PI_SSH_OPTS": pi.ssh_opts,
           "PI_DIR": str(pi_dir)}
    env.pop("BUDGET_BYTES", None)
    env.pop("PI_PYTHON", None)
    return {**env, **{k: str(v) for k, v in extra.items()}}


def deploy(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "rpi.deploy", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def make(*args, env, timeout=900):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def current(pi_dir: Path) -> str:
    return os.readlink(pi_dir / "current")


def releases(pi_dir: Path) -> list:
    return sorted(p.name for p in (pi_dir / "releases").iterdir())


def release_of(stdout: str) -> str:
    return re.search(r"^release (\S+)$", stdout, re.M).group(1)


def quick_deploy(tiny_model, tmp_path, env) -> str:
    """Deploy without running the app, with this interpreter instead of a venv (fast)."""
    result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work", "--python", sys.executable,
                    "--no-run", env=env)
    assert result.returncode == 0, result.stderr
    return release_of(result.stdout)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_deploy_runs_the_app_on_the_pi_with_the_local_predictions(loopback_pi, tiny_model, tmp_path):
    video = write_video(tmp_path / "camera.avi", fashion_frames(30))
    pi_dir = tmp_path / "pi"
    result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work", "--python", sys.executable,
                    "--source", video, "--frames", 25, "--app-args", "--every 5", env=pi_env(loopback_pi, pi_dir))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^summary: frames=25 fps=[0-9.]+ ", result.stdout, re.M), result.stdout
    assert f"uploaded {BUNDLE_FILES} files" in result.stdout and "with rsync" in result.stdout
    assert f"sent the local source {video} with rsync to {loopback_pi.host}:{pi_dir}/media/camera.avi" in result.stdout
    # the service follows the release; where there is none, one line says why it was not restarted
    assert ("pi: no systemd on this machine: no squeezenet.service to restart" in result.stdout
            or "pi: squeezenet.service is not installed and enabled: nothing to restart" in result.stdout)
    release = release_of(result.stdout)
    assert current(pi_dir) == f"releases/{release}" and releases(pi_dir) == [release]
    manifest = json.loads((pi_dir / "current" / "manifest.json").read_text())
    assert {"rpi/runtime/app.py", "rpi/runtime/requirements-pi.txt", "contract/__init__.py", f"model/{tiny_model.name}"} <= set(manifest["files"])
    assert not any(name.startswith(("rpi/deploy", "rpi/sample", "rpi/fleet")) for name in manifest["files"])  # host side stays here
    expected = reference_predictions(tiny_model, read_video(video)[:25])
    assert_log_matches(read_log(pi_dir / "predictions.jsonl"), expected)


def test_second_deploy_then_make_rpi_rollback(loopback_pi, tiny_model, tmp_path):
    pi_dir = tmp_path / "pi"
    env = pi_env(loopback_pi, pi_dir)
    first = quick_deploy(tiny_model, tmp_path, env)
    second = quick_deploy(model_variant(tiny_model, tmp_path / "v2", "v2"), tmp_path, env)
    assert first != second and current(pi_dir) == f"releases/{second}"
    assert releases(pi_dir) == sorted([first, second])
    assert (pi_dir / "history").read_text().split() == [first, second]

    result = make("rpi-rollback", f"PI_HOST={loopback_pi.host}", f"PI_PORT={loopback_pi.port}",
                  f"PI_SSH_OPTS={loopback_pi.ssh_opts}", f"PI_DIR={pi_dir}", env=os.environ)
    assert result.returncode == 0, result.stderr
    assert f"current -> releases/{first} (rolled back from {second})" in result.stdout
    assert current(pi_dir) == f"releases/{first}"
    check = subprocess.run([pi_dir / "current" / "run-app", "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.startswith("ok: ")

    again = deploy("rollback", env=env)
    assert again.returncode == 2
    assert f"no release before {first}" in one_error_line(again.stderr)


def test_the_same_model_is_the_same_release_and_a_redeploy_changes_nothing(loopback_pi, tiny_model, tmp_path):
    """Release names are content digests: two builds of the same files give one name, and deploying the
    current release again verifies and smoke-tests it without switching anything."""
    pi_dir = tmp_path / "pi"
    env = pi_env(loopback_pi, pi_dir)
    first = quick_deploy(tiny_model, tmp_path, env)
    result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "other-work", "--python",
                    sys.executable, "--no-run", "--json-out", tmp_path / "again.json", env=env)
    assert result.returncode == 0, result.stderr
    assert release_of(result.stdout) == first and re.fullmatch(r"[0-9a-f]{12}", first)
    assert f"pi: release {first} is already on this Pi (verified again); reusing it" in result.stdout, result.stdout
    assert f"current is already releases/{first}: nothing to switch" in result.stdout
    outcome = json.loads((tmp_path / "again.json").read_text())
    assert outcome["ok"] and not outcome["changed"] and outcome["before"] == outcome["after"] == first
    assert releases(pi_dir) == [first] and not list((pi_dir / "incoming").iterdir())


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "delete", "add"])
def test_a_corrupted_upload_never_touches_current(loopback_pi, tiny_model, tmp_path, damage):
    pi_dir = tmp_path / "pi"
    env = pi_env(loopback_pi, pi_dir)
    good = quick_deploy(tiny_model, tmp_path, env)
    uploaded = deploy("upload", "--model", tiny_model, "--work-dir", tmp_path / "work", env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    release = release_of(uploaded.stdout)
    incoming = pi_dir / "incoming" / release
    tflite = next((incoming / "model").glob("*.tflite"))
    data = bytearray(tflite.read_bytes())
    if damage == "flip-a-byte":
        data[len(data) // 2] ^= 0xFF
        tflite.write_bytes(bytes(data))
    elif damage == "truncate":
        tflite.write_bytes(bytes(data[:-100]))
    elif damage == "delete":
        (incoming / "rpi" / "runtime" / "app.py").unlink()
    else:
        (incoming / "rpi" / "sitecustomize.py").write_text("print('injected')\n")

    result = deploy("activate", "--release", release, "--work-dir", tmp_path / "work", "--python", sys.executable,
                    env=env)
    assert result.returncode == 2
    assert "checksum verification failed" in result.stderr.splitlines()[-1]
    assert f"current is unchanged ({good})" in result.stdout
    assert current(pi_dir) == f"releases/{good}" and releases(pi_dir) == [good]
    assert not incoming.exists()


def test_scp_when_rsync_is_not_wanted_with_an_image_directory_as_the_camera(loopback_pi, tiny_model, tmp_path):
    import cv2

    images = tmp_path / "shots"
    images.mkdir()
    for i, frame in enumerate(fashion_frames(4)):
        cv2.imwrite(str(images / f"{i:03d}.png"), frame)
    pi_dir = tmp_path / "pi"
    for _ in range(2):  # the second time the folder is already on the Pi: copied over, not nested
        result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work", "--python", sys.executable,
                        "--transfer", "scp", "--source", images, env=pi_env(loopback_pi, pi_dir))
        assert result.returncode == 0, result.stderr
        assert f"uploaded {BUNDLE_FILES} files" in result.stdout and "with scp" in result.stdout
        assert current(pi_dir) == f"releases/{release_of(result.stdout)}"
        assert "summary: frames=4 " in result.stdout
    assert sorted(p.name for p in (pi_dir / "media" / "shots").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]


def test_an_unreachable_pi_is_one_clear_error(loopback_pi, tiny_model, tmp_path):
    pi_dir = tmp_path / "pi"
    result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work",
                    env=pi_env(loopback_pi, pi_dir, PI_PORT=closed_port()))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "cannot ssh to" in line and "Connection refused" in line and "PI_HOST and PI_PORT" in line
    assert not pi_dir.exists()


def test_a_wrong_key_is_one_clear_error(loopback_pi, tiny_model, tmp_path):
    keygen(tmp_path / "stranger")
    pi_dir = tmp_path / "pi"
    opts = (f"-i {tmp_path / 'stranger'} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
    result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work",
                    env=pi_env(loopback_pi, pi_dir, PI_SSH_OPTS=opts))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "Permission denied (publickey)" in line and "ssh-copy-id" in line
    assert not pi_dir.exists()


def test_an_over_budget_model_is_refused_before_anything_is_sent(loopback_pi, tiny_model, tmp_path):
    pi_dir = tmp_path / "pi"
    result = deploy("deploy", "--model", tiny_model, "--work-dir", tmp_path / "work",
                    env=pi_env(loopback_pi, pi_dir, BUDGET_BYTES=1000))
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "over the 1,000-byte budget" in line and "nothing was sent" in line
    assert not pi_dir.exists() and result.stdout == ""  # not even the probe ran


def test_make_rpi_without_pi_host_says_how_to_set_it():
    env = {k: v for k, v in os.environ.items() if k != "PI_HOST"}
    result = make("rpi", env=env, timeout=60)
    assert result.returncode != 0
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "PI_HOST is not set: make rpi PI_HOST=" in lines[0]


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="would install a real service on this machine")
def test_service_writes_a_unit_that_runs_current(loopback_pi, tiny_model, tmp_path):
    pi_dir = tmp_path / "pi"
    env = pi_env(loopback_pi, pi_dir)
    quick_deploy(tiny_model, tmp_path, env)
    units = tmp_path / "units"
    units.mkdir()
    result = deploy("service", "--unit-dir", units, "--source", "picamera2", env=env)
    unit = (units / "squeezenet.service").read_text()
    assert f"ExecStart={pi_dir}/current/run-app --source picamera2 --every 30\n" in unit
    assert "WantedBy=multi-user.target" in unit and "Restart=on-failure" in unit
    assert result.returncode == 2  # this stand-in Pi runs no systemd: said in one line, not hidden
    assert "systemd is not running" in one_error_line(result.stderr)
    # make rpi-service VIEW=1: the service serves its live view, on the Pi's loopback (the app's default)
    deploy("service", "--unit-dir", units, "--source", "picamera2", "--view", "--view-remote-port", 8099, env=env)
    unit = (units / "squeezenet.service").read_text()
    assert f"ExecStart={pi_dir}/current/run-app --source picamera2 --serve 8099 --every 30\n" in unit


def test_local_runs_the_same_bundle_here(tiny_model, tmp_path):
    video = write_video(tmp_path / "camera.avi", fashion_frames(8))
    work = tmp_path / "work"
    result = deploy("local", "--model", tiny_model, "--work-dir", work, "--source", video, env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "summary: frames=8 fps=" in result.stdout.splitlines()[-1]
    bundle = Path(re.search(r"running bundle (\S+) here", result.stdout).group(1))
    assert bundle.parent == work / "bundles" and (bundle / "manifest.json").is_file()
    assert_log_matches(read_log(work / "predictions.jsonl"), reference_predictions(tiny_model, read_video(video)))


def test_deploy_help_explains_exactly_the_commands_it_accepts():
    from tests.helpers import check_subcommands_are_documented

    assert set(check_subcommands_are_documented("rpi.deploy")) >= {"deploy", "local", "rollback", "service"}


# --- slow: the real venv (pip from the package index) and `make rpi` with the exported model ----------------

@pytest.mark.slow
def test_make_rpi_prepares_the_venv_once_and_matches_local_predictions(loopback_pi, tmp_path):
    """The acceptance command against the loopback sshd: the export's model, budget check, a venv made on
    the 'Pi' with requirements-pi.txt (no PI_PYTHON), then the app on a video as the camera."""
    video = write_video(tmp_path / "camera.avi", fashion_frames(120))
    pi_dir = tmp_path / "pi"
    args = [f"PI_HOST={loopback_pi.host}", f"PI_PORT={loopback_pi.port}", f"PI_SSH_OPTS={loopback_pi.ssh_opts}",
            f"PI_DIR={pi_dir}", f"SOURCE={video}", "FRAMES=100"]
    env = {k: v for k, v in os.environ.items() if k not in ("PI_PYTHON", "BUDGET_BYTES")}
    result = make("rpi", *args, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pi: preparing venv" in result.stdout and "pi: venv ready" in result.stdout
    assert re.search(r"^summary: frames=100 fps=[0-9.]+ ", result.stdout, re.M)
    meta_json = ROOT / "artifacts/export/squeezenet_int8.json"
    assert_log_matches(read_log(pi_dir / "predictions.jsonl"), reference_predictions(meta_json, read_video(video)[:100]))

    again = make("rpi", *args[:-1], "FRAMES=5", env=env)  # the same release again: the venv is reused
    assert again.returncode == 0, again.stderr[-3000:]
    assert "prepared by an earlier deploy" in again.stdout and "nothing to switch" in again.stdout
    assert len(releases(pi_dir)) == 1

    refused = make("rpi", *args, "BUDGET_BYTES=1000", env=env)
    assert refused.returncode != 0 and "over" in refused.stdout + refused.stderr
    assert len(releases(pi_dir)) == 1 and not list((pi_dir / "incoming").iterdir())


@pytest.mark.slow
def test_make_rpi_local_on_the_sample_video():
    result = make("rpi-local", "FRAMES=200", env={k: v for k, v in os.environ.items() if k != "BUDGET_BYTES"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^summary: frames=200 fps=[0-9.]+ .*source=\S*artifacts/rpi/sample.avi", result.stdout, re.M)
    assert json.loads((ROOT / "artifacts/rpi/sample.json").read_text())["frames"][0]["frame"] == 1
