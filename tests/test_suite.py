"""The suite's own machinery: `make test` runs on two pytest-xdist workers, and tests/conftest.py puts the
tests that share the committed FPGA design or the repository's artifacts/ in one group, on one worker."""
import subprocess
import sys

from .conftest import ROOT

GROUPING_CONFTEST = '''
import pytest

def pytest_itemcollected(item):  # as tests/conftest.py adds its groups
    item.add_marker(pytest.mark.xdist_group("shared" if item.path.stem != "test_free" else item.path.stem))
'''
RECORD = '''
import os, pathlib

def test_{name}_{i}(tmp_path_factory):
    out = pathlib.Path(os.environ["RECORD_DIR"]) / "{name}_{i}"
    out.write_text(os.environ["PYTEST_XDIST_WORKER"])
'''


def test_xdist_keeps_a_group_on_one_worker(tmp_path):
    """With the installed pytest and pytest-xdist, a group added at collection (what tests/conftest.py does)
    runs on one worker. On pytest 9.2 xdist 3.8 drops the groups without a word (pytest-xdist issue 1386):
    the committed FPGA design would be built twice and two makes would write one artifacts/."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(GROUPING_CONFTEST)
    for name in ("shared_a", "shared_b", "free"):
        (project / f"test_{name}.py").write_text("".join(RECORD.format(name=name, i=i) for i in range(4)))
    records = tmp_path / "records"
    records.mkdir()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                        str(project)], cwd=project, env={"RECORD_DIR": str(records), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    workers = {p.name: p.read_text() for p in records.iterdir()}
    assert len(workers) == 12 and set(workers.values()) <= {"gw0", "gw1"}
    assert len({w for name, w in workers.items() if name.startswith("shared")}) == 1, workers
    assert len({w for name, w in workers.items() if name.startswith("free")}) == 1, workers


def test_make_test_runs_two_grouped_workers():
    """`make test` passes the workers and the group scheduling (TEST_WORKERS=0: one process)."""
    r = subprocess.run(["make", "-n", "--no-print-directory", "test"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "pytest -q -n 2 --dist loadgroup" in r.stdout
