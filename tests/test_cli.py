import re
import subprocess
import sys

import pytest

from .conftest import ROOT, run_module

# Each entry point's help: its own name in the usage line, its sections, and the options a user comes for.
HELP = {
    "model": ([], ["train", "evaluate"]),
    "model.train": (["options:", "schedule:", "recipe:", "where it runs:"], ["--epochs", "--lr", "--device", "--out"]),
    "model.evaluate": (["options:"], ["--checkpoint", "--dataset", "--out"]),
    "quantize": (["options:", "schedule:", "recipe:", "where it runs:"],
                 ["--weight-bits", "--override", "--budget-bytes", "--checkpoint"]),
    "quantize.evaluate": (["options:"], ["--checkpoint", "--float-checkpoint"]),
    "quantize.sweep": (["positional arguments:", "options:"], ["--bits", "--out"]),
    "quantize.sensitivity": (["options:"], ["--per-layer", "--samples"]),
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


def _on_a_terminal(code: str, columns: int) -> str:
    """Run ``code`` with stdout and stderr on a pseudo-terminal of ``columns`` columns; what it drew."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if columns else 0, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out
    return out.decode(errors="replace")


def test_progress_degrades_to_lines_on_a_terminal_with_no_width():
    """A terminal that reports zero columns: tqdm alone draws an empty line; the progress display prints
    whole lines instead (the C simulation's, training's and calibration's bars all come from it)."""
    code = ("import time\nfrom model.progress import progress\n"
            "for _ in progress(range(3), desc='C simulation', unit='img'):\n    time.sleep(0.01)\n")
    drawn = _on_a_terminal(code, columns=0)
    lines = [ln for ln in drawn.replace("\r\n", "\n").split("\n") if ln.strip()]
    assert lines and all("C simulation" in ln for ln in lines) and "\r" not in drawn.replace("\r\n", ""), repr(drawn)
    assert "3/3" in lines[-1]
    drawn = _on_a_terminal(code, columns=80)  # a normal terminal keeps tqdm's bar, redrawn in place
    assert "C simulation" in drawn and "\r" in drawn.replace("\r\n", "")


def test_the_system_package_script_installs_nothing_present_and_explains_what_is_missing(tmp_path):
    """scripts/install-system-packages.sh, which every make target that needs a Debian package calls: silent
    when every probe passes; as a user without root (PATH without apt-get, `id` saying uid 1000) a missing
    optional package is a note and exit 0, a missing required one an error line with the install command."""
    script = ROOT / "scripts" / "install-system-packages.sh"
    present = subprocess.run([str(script), "required", "the tests", "bash=bash", f"python={sys.executable}"],
                             capture_output=True, text=True)
    assert (present.returncode, present.stdout, present.stderr) == (0, "", "")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    (fake / "id").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}  # our `id` first: this run is not root, whoever runs the tests
    optional = subprocess.run(["/bin/bash", str(script), "optional", "the page test", "chromium=no-such-tool-x"],
                              capture_output=True, text=True, env=env)
    assert optional.returncode == 0 and optional.stdout.startswith("note: the page test: chromium missing")
    required = subprocess.run(["/bin/bash", str(script), "required", "the deploy tests", "rsync=no-such-tool-y",
                               "openssh-server=/no/such/sshd"], capture_output=True, text=True, env=env)
    assert required.returncode == 2
    assert required.stderr.strip().startswith("error: the deploy tests: rsync openssh-server missing: ")
    wrong = subprocess.run(["/bin/bash", str(script), "maybe", "x", "a=b"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "required or optional" in wrong.stderr
