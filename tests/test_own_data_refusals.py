"""Own data: bad input refused before the work, and nothing of the user's overwritten (checkpoints, exports,
the export's stamp), by the CLIs and by make."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model import small_image_config
from model.data import load_dataset
from quantize.layers import QuantSettings

from .conftest import ROOT, run_module
from .helpers import SMALL
from .test_own_data import CLASSES, SIZE, SMALL_ARGS, one_error_line, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("photos"))


# --- refusals before the work, and nothing of the user's overwritten ------------------------------------

def sha256s(directory: Path) -> dict:
    import hashlib

    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", ["zero-byte image", "empty test split", "missing data directory", "size 24"])
def test_bad_data_is_refused_before_the_first_epoch_and_the_old_model_stays(tmp_path, damage):
    folder = write_folder(tmp_path / "photos", train=4, test=2)
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.pt").write_bytes(b"the user's earlier model")
    before = sha256s(out)
    args = ["--dataset", "folder", "--data-dir", str(folder), "--input-size", str(SIZE), "--channels", "3",
            *SMALL_ARGS, "--epochs", "1", "--out", str(out), "--no-eval"]
    expect = {"zero-byte image": "cannot read image", "empty test split": "needs at least two class sub-directories",
              "missing data directory": "data directory", "size 24": "cannot be bit-exact at input size 24"}[damage]
    if damage == "zero-byte image":
        (folder / "test" / "dog" / "zero.png").write_bytes(b"")
    elif damage == "empty test split":
        shutil.rmtree(folder / "test")
        (folder / "test").mkdir()
    elif damage == "missing data directory":
        args[3] = str(tmp_path / "nowhere")
    else:
        args[5] = "24"
    r = run_module("model.train", *args)
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and expect in line, line
    assert "epoch" not in r.stdout and sha256s(out) == before
    if damage == "missing data directory":
        assert line == f"error: data directory {tmp_path / 'nowhere'} does not exist"
    if damage == "size 24":
        assert "make train: INPUT_SIZE=" in line and "near 24: " in line


def test_an_unknown_part_is_refused_before_any_evaluation():
    import subprocess
    import time

    t0 = time.time()
    r = subprocess.run(["make", "--no-print-directory", "fpga", "FPGA_PART=xc7z999"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "unknown FPGA part 'xc7z999'" in errors[0], r.stderr
    assert "FPGA_RESOURCES=" in errors[0] and "quantize" not in r.stdout and time.time() - t0 < 60


def make_in(tmp_path, *goals, **variables):
    """make as a user runs it: DATA_DIR left to the Makefile (a test session may export its own)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    return subprocess.run(["make", "--no-print-directory", *goals, *(f"{k}={v}" for k, v in variables.items())],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_rpi_local_refuses_an_export_of_another_checkpoint_and_changes_nothing(tmp_path):
    """`make rpi-local` without CHECKPOINT= after `make export CHECKPOINT=mine.pt`: an error naming both,
    never a rebuild of the committed model's export over the user's."""
    export = tmp_path / "export"
    export.mkdir()
    (export / ".inputs").write_text("artifacts/quantize/mine.pt\n")
    (export / "report.json").write_text("{}")
    (export / "squeezenet_int8.tflite").write_bytes(b"the user's model")
    (export / "squeezenet_int8.json").write_text("{}")
    before = sha256s(export)
    r = make_in(tmp_path, "rpi-local", EXPORT_DIR=export, RPI_MODEL=export / "squeezenet_int8.json",
                RPI_SAMPLE=tmp_path / "s.avi")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stdout + r.stderr
    assert errors[0] == (f"error: {export} holds the export of artifacts/quantize/mine.pt and this make uses "
                         f"quantize/checkpoints/default.pt: add CHECKPOINT=artifacts/quantize/mine.pt to use that "
                         f"one or replace it with make export")
    assert sha256s(export) == before and not (tmp_path / "s.avi").exists()


def test_a_failed_export_leaves_the_export_directory_and_its_stamp_as_they_were(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / ".inputs").write_text("quantize/checkpoints/default.pt\n")
    (export / "report.json").write_text("{}")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((ROOT / "quantize/checkpoints/default.pt").read_bytes()[:5000])
    before = sha256s(export)
    r = make_in(tmp_path, "export", EXPORT_DIR=export, CHECKPOINT=cut)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and f"cannot load checkpoint {cut}" in errors[0], r.stderr
    assert sha256s(export) == before


def test_the_sample_video_is_made_from_the_exported_models_own_test_images(folder, tmp_path):
    from tests.rpi_helpers import read_video

    export = tmp_path / "export"
    export.mkdir()
    (export / "report.json").write_text(json.dumps({"dataset": "folder", "data_dir": str(folder)}))
    (export / "squeezenet_int8.json").write_text(json.dumps({"labels": CLASSES, "input": {
        "height": SIZE, "width": SIZE, "channels": 3}}))
    out = tmp_path / "sample.avi"
    r = run_module("rpi.sample", "--export-dir", str(export), "--out", str(out), "--scale", "2")
    assert r.returncode == 0, r.stderr
    test = load_dataset("folder", "test", str(folder), SIZE, 3)
    frames = read_video(out)
    assert len(frames) == len(test)
    for image, frame in zip(test.images, frames):  # RGB images, stored as BGR frames, every pixel
        np.testing.assert_array_equal(frame[::2, ::2, ::-1], image.transpose(1, 2, 0))
    labels = json.loads(out.with_suffix(".json").read_text())
    assert labels["classes"] == CLASSES and labels["data"]["dataset"] == "folder"
    assert [f["label"] for f in labels["frames"]] == [CLASSES[k] for k in test.labels]
    r = run_module("rpi.sample", "--export-dir", str(export), "--out", str(out), "--scale", "2")
    assert r.returncode == 0 and "already made from these images" in r.stdout
    (export / "report.json").write_text(json.dumps({"dataset": "folder", "data_dir": str(tmp_path / "gone")}))
    r = run_module("rpi.sample", "--export-dir", str(export), "--out", str(tmp_path / "other.avi"))
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "the model's own test images (folder in" in line and "SOURCE=" in line
    assert not (tmp_path / "other.avi").exists()


def test_weights_wider_than_the_bias_can_carry_are_named():
    from quantize.layers import conv_layer_names

    names = conv_layer_names(small_image_config(**SMALL))
    assert QuantSettings().short_biases(names) == []  # 8-bit first/last layers with 8-bit inputs: 16 bits
    short = QuantSettings(weight_bits=12).short_biases(names)
    assert len(short) == len(names) - 2 and short[0].endswith("(8+12 bits)")
    assert QuantSettings(weight_bits=12, bias_bits=16, overrides={}).short_biases(names)[0].startswith("features.0 ")
