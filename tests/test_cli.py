import pytest

from .conftest import run_module


@pytest.mark.parametrize("module", ["model", "model.train", "model.evaluate", "quantize", "quantize.evaluate",
                                    "quantize.sweep", "fpga", "budget", "fpga.synth", "fpga.design"])
def test_every_entry_point_explains_itself(module):
    r = run_module(module, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and len(r.stdout) > 200


def test_synth_without_project_or_tool_is_one_line(tmp_path):
    r = run_module("fpga.synth", "--project", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
