import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.data import DEFAULT_DATA_DIR, write_idx  # noqa: E402

# Fixtures of the rpi tests: the tiny exported model and the loopback sshd that stands in for the Pi.
pytest_plugins = ["tests.rpi_helpers", "tests.sshd"]

FASHION_DIR = Path(os.environ.get("DATA_DIR", DEFAULT_DATA_DIR))
HAVE_FASHION = (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file() or (FASHION_DIR / "t10k-images-idx3-ubyte").is_file()
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason=f"Fashion-MNIST not installed in {FASHION_DIR} "
                                   "(make setup installs Debian's dataset-fashion-mnist)")


# `make test` spreads the suite over two pytest-xdist workers (--dist loadgroup): the tests spend half
# their time in one-threaded subprocesses (g++, TFLite conversion, sshd, qemu, Ansible), so two cores run
# two of them at once. One group runs on one worker. A file is a group, so its module fixtures are built once.
# The tests that share the committed FPGA design (a session fixture that takes minutes: on two workers
# it would be built twice), and the files that run make on the repository's own artifacts/ (two makes
# writing one file would race), form one group.
SHARED_FIXTURES = {"committed_fpga", "board", "no_tlast_library"}
REPO_MAKE_FILES = {"test_fpga_deploy", "test_rpi_arm64", "test_rpi_deploy", "test_rpi_view", "test_own_data_refusals"}


def pytest_itemcollected(item):
    # (at collection, before xdist's own pytest_collection_modifyitems reads the groups into the node ids)
    module = item.path.stem
    shared = module in REPO_MAKE_FILES or SHARED_FIXTURES & set(getattr(item, "fixturenames", ()))
    item.add_marker(pytest.mark.xdist_group("committed-fpga-and-repo-make" if shared else module))


def make_variable(name: str, *assignments: str) -> str:
    """A Makefile variable as make expands it (``assignments`` such as ``MODEL=pynq_z2``)."""
    r = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)", f"print-{name}",
                        *assignments], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def run_module(*args, cwd=ROOT, env=None, timeout=900):
    """Run ``python -m ...`` in the project's interpreter, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def write_tiny_idx(directory: Path) -> Path:
    """A small Fashion-MNIST-shaped IDX data set with learnable classes. Class k is a stripe texture
    (horizontal for k < 5, vertical otherwise, period 2 + k % 5): a global-pooling CNN can tell them apart
    anywhere in the image."""
    rng = np.random.default_rng(0)
    grid = np.arange(28)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            stripes = (grid // (2 + k % 5)) % 2 == 0
            mask = stripes[:, None] if k < 5 else stripes[None, :]
            images[i] = np.where(np.broadcast_to(mask, (28, 28)), 200, images[i])
        return images, labels

    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 600), ("t10k", 200)):
        images, labels = make(n)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


@pytest.fixture
def tiny_idx_dir(tmp_path):
    return write_tiny_idx(tmp_path)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """Every export artifact of a small SqueezeNet, built once per test session by `python -m export`
    (tflite-runtime included when its venv exists): (export dir, data dir, checkpoint dir)."""
    from .helpers import tiny_export_dir

    return tiny_export_dir(tmp_path_factory.mktemp("tiny_export"))


@pytest.fixture(scope="session")
def committed_fpga(tmp_path_factory):
    """What `make fpga` builds, once per session: the committed FPGA default (the narrow PYNQ-Z2 model),
    with the Makefile's own arguments (the planning with the calibration band among them), C-simulated on
    1,000 test images. Returns its output directory."""
    out = tmp_path_factory.mktemp("committed_fpga") / "fpga"
    r = run_module("fpga", *shlex.split(make_variable("FPGA_ARGS")), "--samples", "1000", "--out", str(out),
                   timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def board(committed_fpga, tmp_path_factory):
    """`python -m fpga.board --no-vendor` on the committed design: (its output directory, its report)."""
    out = tmp_path_factory.mktemp("board") / "board"
    r = run_module("fpga.board", "--fpga-dir", str(committed_fpga), "--out", str(out), "--no-vendor")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def no_tlast_library(committed_fpga, tmp_path_factory):
    """The committed network behind a broken IP top that never raises TLAST (the hung-DMA case), compiled."""
    import shutil

    from fpga.board.axis_top import compile_standin, write_top
    from fpga.board.layout import read_layout

    work = tmp_path_factory.mktemp("no_tlast")
    project = work / "project"
    shutil.copytree(committed_fpga / "hls_project", project,
                    ignore=shutil.ignore_patterns("weights", "*.so", "*_prj", "tb_data"))
    write_top(project, read_layout(project), tlast=False)
    network = next((committed_fpga / "hls_project" / "firmware").glob("myproject-*.so"))
    return compile_standin(project, network, work / "no_tlast.so")
