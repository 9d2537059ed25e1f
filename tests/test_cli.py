import re

import pytest

from .conftest import run_module

# Each entry point's help: its own name in the usage line, its sections, and the options a user comes for.
HELP = {
    "model": ([], ["train", "evaluate"]),
    "model.train": (["options:", "schedule:", "recipe:", "where it runs:"], ["--epochs", "--lr", "--device", "--out"]),
    "model.evaluate": (["options:"], ["--checkpoint", "--dataset", "--out"]),
    "quantize": (["options:", "schedule:", "recipe:", "where it runs:"],
                 ["--weight-bits", "--override", "--budget-bytes", "--checkpoint"]),
    "quantize.evaluate": (["options:"], ["--checkpoint", "--float-checkpoint"]),
    "quantize.sweep": (["positional arguments:", "options:"], ["--bits", "--out"]),
    "fpga": (["options:"], ["--part", "--clock-mhz", "--samples", "--resource-share", "--target-fps", "--no-csim"]),
    "budget": (["options:"], ["--tflite", "--fpga", "--no-device", "--budget-bytes", "--part"]),
    "fpga.synth": (["options:"], ["--project", "--cosim"]),
    "fpga.design": (["options:"], ["--widths", "--parts", "--resource-share"]),
    "export": (["options:"], ["--checkpoint", "--float-checkpoint", "--samples", "--tflite-runtime-python"]),
    "export.bench": (["options:"], ["--export-dir", "--images"]),
}


@pytest.mark.parametrize("module", sorted(HELP))
def test_every_entry_point_explains_itself(module):
    sections, words = HELP[module]
    r = run_module(module, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m {module} "), r.stdout[:100]
    headings = [line for line in r.stdout.splitlines() if re.fullmatch(r"[a-z][a-z ]*:", line)]
    assert headings == sections, headings
    for word in words:
        assert re.search(rf"(^|\s){re.escape(word)}\b", r.stdout, re.M), f"{module} --help lacks {word}"


def test_synth_without_project_or_tool_is_one_line(tmp_path):
    r = run_module("fpga.synth", "--project", str(tmp_path))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
