"""The suite's own machinery: `make test` runs on two pytest-xdist workers, and tests/conftest.py puts the
tests that share the committed FPGA design or the repository's artifacts/ in one group, on one worker."""
import subprocess
import sys

from .conftest import ROOT

# The inner project takes tests/conftest.py's own hook, and a stand-in for the committed design's fixture.
INNER_CONFTEST = '''
import pytest

from tests.conftest import pytest_itemcollected  # noqa: F401

@pytest.fixture
def board():
    return None
'''
RECORD = '''
import os, pathlib

def test_{name}_{i}({fixture}):
    (pathlib.Path(os.environ["RECORD_DIR"]) / "{name}_{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])
'''


def test_xdist_keeps_a_group_on_one_worker(tmp_path):
    """With the installed pytest and pytest-xdist, tests/conftest.py's groups hold: two files that run make
    in the repository and a test that uses the committed design's board share one worker. On pytest 9.2
    xdist 3.8 drops the groups without a word (pytest-xdist issue 1386): the committed FPGA design would be
    built twice and two makes would write one artifacts/."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(INNER_CONFTEST)
    files = {"rpi_deploy": "", "rpi_view": "", "uses_board": "board", "free": "", "other": ""}
    for name, fixture in files.items():
        (project / f"test_{name}.py").write_text("".join(RECORD.format(name=name, i=i, fixture=fixture)
                                                         for i in range(4)))
    records = tmp_path / "records"
    records.mkdir()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                        str(project)], cwd=project, capture_output=True, text=True, timeout=300,
                       env={"RECORD_DIR": str(records), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    workers = {p.name: p.read_text() for p in records.iterdir()}
    assert len(workers) == 4 * len(files) and set(workers.values()) <= {"gw0", "gw1"}
    shared = {w for name, w in workers.items() if name.startswith(("rpi_", "uses_board"))}
    assert len(shared) == 1, workers
    for name in ("free", "other"):  # a file is a group of its own
        assert len({w for n, w in workers.items() if n.startswith(name)}) == 1, workers


def test_make_test_runs_two_grouped_workers():
    """`make test` passes the workers and the group scheduling (TEST_WORKERS=0: one process)."""
    r = subprocess.run(["make", "-n", "--no-print-directory", "test"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pytest -q -n 2 --dist loadgroup" in r.stdout
