"""`make report`: the page built from real stage outputs, checked in a real headless chromium: no console
errors, every image decodes, and every figure on the page equals the one in its stage's JSON."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from .browser import Browser, find_chromium
from .conftest import ROOT, run_module
from .rpi_helpers import write_video

CHROMIUM = find_chromium()


def stage_outputs(root, tiny_export, tmp_path):
    """artifacts/<stage>/ as the stages write them, for a small model; no fpga (it says so)."""
    export_dir, data_dir, ckpts = tiny_export
    shutil.copytree(export_dir, root / "export")
    runs = [("model.evaluate", "--checkpoint", ckpts / "float.pt", "--data-dir", data_dir, "--out", root / "model"),
            ("quantize.evaluate", "--checkpoint", ckpts / "quant.pt", "--data-dir", data_dir,
             "--out", root / "quantize"),
            ("export.bench", "--export-dir", root / "export", "--images", "2", "--data-dir", data_dir,
             "--tflite-runtime-python", "none"),
            ("budget", "--tflite", root / "export" / "squeezenet_int8.tflite", "--checkpoint", ckpts / "quant.pt",
             "--fpga-report", tmp_path / "none.json", "--work-dir", root / "budget", "--no-device")]
    for args in runs:
        r = run_module(*map(str, args))
        assert r.returncode == 0, f"{args[0]}: {r.stderr[-2000:]}"
    video = write_video(tmp_path / "cam.avi", [np.full((60, 80, 3), 40 * i, np.uint8) for i in range(5)])
    r = subprocess.run([sys.executable, "-m", "rpi.runtime.app", "--model", str(root / "export" / "squeezenet_int8.json"),
                        "--source", str(video), "--report", str(root / "rpi" / "report.json"), "--every", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def value_at(data, path):
    for part in path.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make test installs Debian's: make report-test-tools)")
def test_report_page_in_a_headless_browser(tiny_export, tmp_path):
    root = tmp_path / "artifacts"
    stage_outputs(root, tiny_export, tmp_path)
    r = run_module("report", "--artifacts", str(root))
    assert r.returncode == 0, r.stderr
    page = root / "report" / "index.html"
    assert "<script" not in page.read_text() and "http" not in page.read_text().split("<body>")[1]

    browser = Browser(CHROMIUM)
    try:
        browser.open(page.as_uri())
        decoded = browser.evaluate("Promise.all([...document.images].map(i => i.decode().then("
                                   "() => [i.alt, i.naturalWidth, i.naturalHeight], () => [i.alt, 0, 0])))")
        cells = browser.evaluate("[...document.querySelectorAll('[data-path]')]"
                                 ".map(e => [e.dataset.file, e.dataset.path, e.textContent])")
        derived = browser.evaluate("[...document.querySelectorAll('[data-derived]')]"
                                   ".map(e => [e.dataset.file, e.dataset.derived, e.textContent])")
        sections = browser.evaluate("[...document.querySelectorAll('section')].map(s => [s.id, s.innerText])")
        errors = browser.errors()
    finally:
        browser.close()

    assert errors == []
    # the two confusion matrices, each a real PNG the browser decoded
    assert [alt for alt, width, height in decoded if width > 100 and height > 100] == [
        "confusion matrix of the float model", "confusion matrix of the quantized model"], decoded
    files = {}
    for file, path, text in cells:
        data = files.setdefault(file, json.loads((root / file).read_text()))
        value = value_at(data, path)
        assert (text == value) if isinstance(value, str) else (json.loads(text) == value), (file, path, text)
    shown = {(file, path) for file, path, _ in cells}
    for figure in [("model/report.json", "top1"), ("quantize/report.json", "weight_storage_bytes"),
                   ("quantize/report.json", "quant"), ("export/report.json", "tflite/bytes"),
                   ("export/report.json", "qonnx/top1_agreement"), ("export/bench.json", "results/0/median_ms"),
                   ("rpi/report.json", "fps"), ("rpi/report.json", "mean_latency_ms"),
                   ("budget/report.json", "artifacts/0/within_budget")]:
        assert figure in shown, figure
    assert files["quantize/report.json"]["float_top1"] is None and derived == []  # no float parent measured
    assert [s for s, _ in sections] == ["model", "quantize", "export", "fpga", "rpi", "budget"]
    assert "not built yet: make fpga writes artifacts/fpga/report.json" in dict(sections)["fpga"]
    assert files["rpi/report.json"]["frames"] == 5


def test_the_top1_drop_is_the_difference_of_the_two_figures(tmp_path):
    from report.page import build_page

    (tmp_path / "quantize").mkdir()
    (tmp_path / "quantize" / "report.json").write_text(json.dumps({"top1": 0.9351, "float_top1": 0.9373}))
    page = build_page(tmp_path)
    assert '<span data-derived="float_top1 - top1" data-file="quantize/report.json">0.0022</span>' in page
    assert 'data-path="float_top1">0.9373</td>' in page
    assert "not built yet: <code>make export</code>" in page
