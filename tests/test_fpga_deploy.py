"""`make fpga-deploy` against a stand-in PYNQ-Z2: a real sshd on 127.0.0.1 (tests/sshd.py), the rpi deploy
machinery with the board as its device, and on the "board" the release's own app and health check with the
stand-in pynq (tests/standin_pynq) whose DMA drives the compiled IP top. Only ever connects to 127.0.0.1."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.board_helpers import STANDIN, board_inputs, standin_package
from tests.rpi_helpers import ROOT
from tests.sshd import closed_port

from .conftest import needs_fashion

pytestmark = [pytest.mark.slow, needs_fashion]


def board_python(tmp_path):
    """The board's interpreter: this one with the stand-in pynq on its path (PYNQ's venv on a real board)."""
    wrapper = tmp_path / "board-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={STANDIN} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def board_env(pi, board_dir, python, **extra) -> dict:
    env = {**os.environ, "PYNQ_HOST": pi.host, "PYNQ_PORT": str(pi.port), "PYNQ_SSH_OPTS": pi.ssh_opts,
           "PYNQ_DIR": str(board_dir), "PYNQ_PYTHON": str(python)}
    env.pop("BUDGET_BYTES", None)
    return {**env, **{k: str(v) for k, v in extra.items()}}


def fpga_deploy(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "fpga.board.deploy", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def current(board_dir):
    return os.readlink(board_dir / "current") if (board_dir / "current").is_symlink() else None


@pytest.fixture
def setup(board, committed_fpga, loopback_pi, tmp_path):
    """(a stand-in board package, the FPGA report, the board's directory, its environment, the work dir)."""
    out, report = board
    package, _ = standin_package(out, tmp_path, report["standin"]["library"])
    board_dir = tmp_path / "pynq"
    env = board_env(loopback_pi, board_dir, board_python(tmp_path))
    return package, committed_fpga / "report.json", board_dir, env, tmp_path / "work"


def deploy_args(package, report, work, *more):
    return ("deploy", "--model", package, "--fpga-report", report, "--work-dir", work, *more)


def release_of(stdout: str) -> str:
    return re.search(r"^release (\S+)$", stdout, re.M).group(1)


def image_folder(tmp_path, count: int):
    """The first ``count`` Fashion-MNIST test images as PNG files: the board's camera in these tests."""
    import cv2

    from model.data import load_dataset

    shots = tmp_path / "shots"
    shots.mkdir()
    for i, image in enumerate(load_dataset("fashion-mnist", "test").images[:count, 0]):
        cv2.imwrite(str(shots / f"{i:03d}.png"), image)
    return shots


def test_make_fpga_deploy_smoke_tests_and_runs_the_board_on_an_image_folder(setup, tmp_path):
    """`make fpga-deploy`: the gate, the upload, the smoke test on the board (the known answers bit-exact with
    the C simulation), the switch, and the app on a folder of test images sent along: each image's label is
    the Brevitas model's for it, through the Pi app's preprocessing."""
    package, report, board_dir, env, work = setup
    codes, logits = board_inputs(12)
    shots = image_folder(tmp_path, 12)
    result = subprocess.run(["make", "--no-print-directory", "fpga-deploy", f"BOARD_PACKAGE={package}",
                             f"FPGA_REPORT={report}", f"SOURCE={shots}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^ok: squeezenet on the xc7z020\S* at 100 MHz: 10 known answers bit-exact with the C "
                     r"simulation$", out, re.M), out
    release = release_of(out)
    assert current(board_dir) == f"releases/{release}"
    assert "summary: frames=12 " in out and "stopped=end" in out
    log = [json.loads(line) for line in (board_dir / "predictions.jsonl").read_text().splitlines()]
    labels = json.loads((package / "board.json").read_text())["labels"]
    assert [r["label"] for r in log] == [labels[k] for k in logits.argmax(axis=1)]
    expected_scores = torch.softmax(torch.from_numpy(logits), dim=1).max(dim=1).values.numpy()
    assert np.allclose([r["score"] for r in log], expected_scores, atol=2e-6)
    # what runs there is the release's own code, under the board's interpreter: no project on its path
    launcher = (board_dir / "current" / "run-app").read_text()
    assert "fpga.board.runtime.app" in launcher and "board-python" in launcher
    health = fpga_deploy("health", env=env)
    assert health.returncode == 0, health.stderr
    assert "known answers ok: 10/10 images bit-exact with the C simulation on the FPGA" in health.stdout


def test_a_second_release_then_rollback(setup, tmp_path):
    package, report, board_dir, env, work = setup
    first = fpga_deploy(*deploy_args(package, report, work, "--no-run"), env=env)
    assert first.returncode == 0, first.stderr
    meta = json.loads((package / "board.json").read_text())
    meta["labels"] = [label.upper() for label in meta["labels"]]  # another package, another release
    (package / "board.json").write_text(json.dumps(meta))
    second = fpga_deploy(*deploy_args(package, report, work, "--no-run"), env=env)
    assert second.returncode == 0, second.stderr
    assert release_of(second.stdout) != release_of(first.stdout)
    assert current(board_dir) == f"releases/{release_of(second.stdout)}"
    back = fpga_deploy("rollback", env=env)
    assert back.returncode == 0, back.stderr
    assert current(board_dir) == f"releases/{release_of(first.stdout)}"
    status = fpga_deploy("status", env=env)
    assert status.returncode == 0 and f"current {release_of(first.stdout)}" in status.stdout


def test_the_gate_refuses_before_anything_is_sent(setup, tmp_path):
    package, report, board_dir, env, work = setup
    over = fpga_deploy(*deploy_args(package, report, work, "--budget-bytes", "1000"), env=env)
    assert over.returncode == 2
    assert "over the 1,000-byte budget" in one_error_line(over.stderr) and "nothing was sent" in over.stderr
    (package / "squeezenet.bit").unlink()
    no_bit = fpga_deploy(*deploy_args(package, report, work), env=env)
    assert no_bit.returncode == 2 and "the package has no squeezenet.bit" in one_error_line(no_bit.stderr)
    assert not board_dir.exists()


def test_a_bad_host_is_one_line(setup):
    package, report, board_dir, env, work = setup
    result = fpga_deploy(*deploy_args(package, report, work), env={**env, "PYNQ_PORT": str(closed_port())})
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "cannot ssh to" in line and "is the PYNQ-Z2 on the network, and are PYNQ_HOST and PYNQ_PORT right?" in line
    assert not board_dir.exists()


@pytest.mark.parametrize("failure", ["no-overlay", "timeout", "checksum"])
def test_a_failed_release_leaves_the_earlier_one_current(setup, no_tlast_library, tmp_path, failure):
    """A board that cannot load the overlay, an IP that never completes a transfer, a corrupted upload:
    one error line, exit status 2, and the release before stays current."""
    package, report, board_dir, env, work = setup
    good = fpga_deploy(*deploy_args(package, report, work, "--no-run"), env=env)
    assert good.returncode == 0, good.stderr
    spec = next(package.glob("*.standin.json"))
    if failure == "no-overlay":
        spec.unlink()
    elif failure == "timeout":
        spec.write_text(json.dumps({**json.loads(spec.read_text()), "library": str(no_tlast_library)}))
    else:
        (package / "board.json").write_text((package / "board.json").read_text() + " ")
    if failure == "checksum":
        uploaded = fpga_deploy("upload", "--model", package, "--fpga-report", report, "--work-dir", work, env=env)
        assert uploaded.returncode == 0, uploaded.stderr
        release = release_of(uploaded.stdout)
        bit = board_dir / "incoming" / release / "model" / "squeezenet.bit"
        bit.write_bytes(bit.read_bytes()[:-3])
        result = fpga_deploy("activate", "--release", release, "--work-dir", work, env=env)
    else:
        result = fpga_deploy(*deploy_args(package, report, work, "--no-run"), env=env)
    assert result.returncode == 2
    said = result.stderr.strip().splitlines()[-1]
    expected = {"no-overlay": "fails its smoke test (run-app --check exit status 2: cannot load the overlay "
                              "squeezenet.bit",
                "timeout": "fails its smoke test (run-app --check exit status 2: the DMA's receive of image 0 did "
                           "not complete within 2 s: the IP never raised TLAST",
                "checksum": "checksum verification failed: model/squeezenet.bit differs"}[failure]
    assert said.startswith("error: ") and expected in said, result.stderr
    assert current(board_dir) == f"releases/{release_of(good.stdout)}"
    assert f"current is unchanged ({release_of(good.stdout)})" in result.stdout
    assert not list((board_dir / "incoming").iterdir())


def test_the_board_side_imports_no_torch_and_parses_as_python_3_10():
    """What the board runs: fpga/board/runtime, rpi/runtime and contract, as Python 3.10, with neither torch
    nor the host side (the layout test checks the imports; this checks the board's Python version)."""
    import ast

    from fpga.board.deploy import BOARD_BUNDLE
    from rpi.bundle import shipped_files

    files = shipped_files(BOARD_BUNDLE)
    assert "fpga/board/runtime/app.py" in files and "rpi/runtime/preprocess.py" in files
    for rel, path in files.items():
        if rel.endswith(".py"):
            ast.parse(path.read_text(), rel, feature_version=(3, 10))


def test_fpga_deploy_help_explains_exactly_the_commands_it_accepts():
    from tests.helpers import check_subcommands_are_documented

    assert set(check_subcommands_are_documented("fpga.board.deploy")) == {"deploy", "upload", "activate", "health",
                                                                         "status", "rollback", "view"}


def test_make_fpga_deploy_view_shows_the_boards_predictions_here(setup, tmp_path):
    """`make fpga-deploy VIEW=1`: the board's app serves the same live view as the Pi's (one module, two apps),
    on the board's 127.0.0.1, forwarded over ssh; its figures are the board's log."""
    from tests.sshd import free_port
    from tests.view_helpers import Running, listening_addresses, wait_closed, wait_json

    package, report, board_dir, env, work = setup
    shots = image_folder(tmp_path, 12)
    local, remote = free_port(), free_port()
    with Running(["make", "--no-print-directory", "fpga-deploy", f"BOARD_PACKAGE={package}", f"FPGA_REPORT={report}",
                  f"SOURCE={shots}", "VIEW=1", f"VIEW_PORT={local}", f"PI_VIEW_PORT={remote}", "RPI_ARGS=--every 0"],
                 cwd=ROOT, env=env) as make:
        make.wait_for(rf"live view: open http://localhost:{local}/ here", timeout=900)
        stats = wait_json(f"http://127.0.0.1:{local}/stats", timeout=120, until=lambda s: s["frames"] > 12)
        assert stats["interpreter"] == "fpga" and listening_addresses(remote) == {"127.0.0.1"}
    assert wait_closed(remote) == set()  # the board's app ended with the ssh session
    log = {r["frame"]: r for r in map(json.loads, (board_dir / "predictions.jsonl").read_text().splitlines())}
    assert stats["prediction"] == log[stats["frames"]]
    _, logits = board_inputs(12)
    labels = json.loads((package / "board.json").read_text())["labels"]
    assert stats["prediction"]["label"] == labels[logits[(stats["frames"] - 1) % 12].argmax()]  # the folder loops
