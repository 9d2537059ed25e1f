"""Bring your own data: a small RGB image folder (3 classes, 32x32) that the tests make themselves, through
every stage with the documented CLI. Checkpoints record their data and later stages default to it, data that
does not fit is one clear error before any work, fidelity checks are gates, and the int8 TFLite model is
exact on a shape whose global average has half-way ties (8x8 = 64 values)."""
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract import UserError
from export import tflite_run
from export.build import compare, mismatch_line, torch_logits
from export.tflite_build import convert_to_tflite
from export.tflite_check import pixel_lookup_table, tflite_inputs
from model import small_image_config
from model.checkpoint import load_checkpoint
from model.data import Normalization, load_dataset
from model.exactness import check_tflite_exactness, exact_input_sizes, global_pool_kind
from model.inference import to_input
from model.squeezenet import plain
from quantize.layers import QuantSettings, build_quant_model
from quantize.qat import calibrate
from rpi.runtime.preprocess import dequantize

from .conftest import ROOT, needs_fashion, run_module
from .helpers import SMALL, TFLITE_RUNTIME_PYTHON, write_fashion_folder

CLASSES = ["cat", "cup", "dog"]
SIZE = 32  # the last feature map of SMALL is 8x8 = 64 values: an even count, so means can be half-way ties
SMALL_ARGS = ["--set", "base_e=16", "--set", "incr_e=16", "--set", "freq=2", "--set", "num_fire=3",
              "--set", "pool_after=[0,2]", "--set", "stem_channels=16"]


def write_folder(root: Path, train: int = 12, test: int = 6) -> Path:
    """root/{train,test}/<class>/*.png: RGB 32x32, class k = stripes of period 3 + k in colour channel k."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grid = np.arange(SIZE)
    for split, count in (("train", train), ("test", test)):
        for k, name in enumerate(CLASSES):
            directory = root / split / name
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 90, (SIZE, SIZE, 3)).astype(np.uint8)
                image[(grid // (3 + k)) % 2 == 0, :, k] = 230
                Image.fromarray(image).save(directory / f"{i:03d}.png")
    return root


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def float_ckpt(folder, tmp_path_factory):
    """A float checkpoint trained (one short epoch) on the folder with `python -m model.train`."""
    out = tmp_path_factory.mktemp("model")
    r = run_module("model.train", "--dataset", "folder", "--data-dir", str(folder), "--input-size", str(SIZE),
                   "--channels", "3", *SMALL_ARGS, "--epochs", "1", "--batch-size", "12", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "model.pt"


@pytest.fixture(scope="module")
def quant_ckpt(float_ckpt, tmp_path_factory):
    """QAT with no data flags at all: the float checkpoint says which data it was trained on."""
    out = tmp_path_factory.mktemp("quantize")
    r = run_module("quantize", "--checkpoint", str(float_ckpt), "--epochs", "1", "--batch-size", "12",
                   "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "model.pt"


# --- the data identity of a checkpoint ----------------------------------------------------------------

def test_a_checkpoint_records_its_data(folder, float_ckpt, quant_ckpt):
    data = load_checkpoint(float_ckpt)["data"]
    assert data["kind"] == "folder" and data["dir"] == str(folder) and data["classes"] == CLASSES
    assert (data["input_size"], data["channels"]) == (SIZE, 3)
    assert data["fingerprint"]["files"] == 3 * (12 + 6) and len(data["fingerprint"]["sha256"]) == 64
    quant = load_checkpoint(quant_ckpt)
    assert quant["data"]["kind"] == "folder" and quant["data"]["dir"] == str(folder)
    assert quant["parent"]["checkpoint"] == str(float_ckpt)
    report = json.loads((quant_ckpt.parent / "report.json").read_text())
    assert report["dataset"] == "folder" and report["samples"] == 3 * 6  # evaluated on the folder's test split


def test_evaluate_defaults_to_the_checkpoints_data(float_ckpt, tmp_path):
    r = run_module("model.evaluate", "--checkpoint", str(float_ckpt), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "on 18 folder test images" in r.stdout


@pytest.mark.slow
def test_data_that_does_not_fit_the_checkpoint_is_one_error(float_ckpt, quant_ckpt, tiny_idx_dir, folder, tmp_path):
    # Fashion-MNIST-shaped data for a 3-class RGB model: refused before any work, naming what differs
    r = run_module("model.evaluate", "--checkpoint", str(float_ckpt), "--dataset", "fashion-mnist",
                   "--data-dir", str(tiny_idx_dir), "--out", str(tmp_path))
    assert r.returncode == 2 and "takes 3x32x32 images" in one_error_line(r.stderr)
    # another folder with other classes
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    for split in ("train", "test"):
        (other / split / "dog").rename(other / split / "fox")
    r = run_module("quantize", "--checkpoint", str(float_ckpt), "--data-dir", str(other), "--out", str(tmp_path / "q"))
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "trained on 3 classes" in line and "'dog' vs 'fox'" in line, line
    assert not (tmp_path / "q").exists()
    # export: nothing written, not even the float ONNX
    out = tmp_path / "export"
    r = run_module("export", "--checkpoint", str(quant_ckpt), "--data-dir", str(other), "--out", str(out),
                   "--tflite-runtime-python", "none")
    assert r.returncode == 2 and "trained on 3 classes" in one_error_line(r.stderr)
    assert not out.exists() or not any(out.iterdir())


def test_files_changed_since_training_is_a_warning(float_ckpt, folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    payload = load_checkpoint(float_ckpt)
    payload["data"]["dir"] = str(copy)
    from model.checkpoint import save_checkpoint

    state = payload.pop("state_dict")
    payload.pop("format")
    save_checkpoint(tmp_path / "moved.pt", state, **payload)
    (copy / "test" / "cat" / "000.png").unlink()
    r = run_module("model.evaluate", "--checkpoint", str(tmp_path / "moved.pt"), "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    assert "warning: the files in" in r.stderr and "(54 files then, 53 now)" in r.stderr


@pytest.mark.slow
def test_export_pairs_the_quantized_model_with_its_own_float_parent(quant_ckpt, float_ckpt, tmp_path):
    out = tmp_path / "export"
    python = str(TFLITE_RUNTIME_PYTHON) if TFLITE_RUNTIME_PYTHON.exists() else "none"
    r = run_module("export", "--checkpoint", str(quant_ckpt), "--out", str(out), "--qonnx-samples", "6",
                   "--tflite-runtime-python", python)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["float_checkpoint"] == str(float_ckpt) and report["dataset"] == "folder"
    assert report["exact"] and report["samples"] == 18
    for key in ("qcdq_onnx", "qonnx", "tflite"):
        assert report[key]["max_abs_diff"] == 0.0 and report[key]["exact"], key
    assert "DEPTHWISE_CONV_2D" in report["tflite"]["ops"] and "AVERAGE_POOL_2D" not in report["tflite"]["ops"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "squeezenet_float.onnx", "squeezenet_qcdq.onnx", "squeezenet.qonnx.onnx",
         "squeezenet_int8.tflite", "squeezenet_int8.json"])  # no staging directory left behind
    meta = json.loads((out / "squeezenet_int8.json").read_text())
    assert meta["labels"] == CLASSES and (meta["input"]["height"], meta["input"]["channels"]) == (SIZE, 3)


# --- TFLite exactness on other shapes -----------------------------------------------------------------

def test_global_average_kind_by_count():
    assert global_pool_kind(49) == "average_pool" and global_pool_kind(1) == "average_pool"
    assert global_pool_kind(64) == "depthwise" and global_pool_kind(4) == "depthwise"
    assert global_pool_kind(36) is None and global_pool_kind(576) is None
    cfg = small_image_config(input_size=96, in_channels=3, num_classes=3)
    assert 28 in exact_input_sizes(cfg) and 32 in exact_input_sizes(cfg) and 96 not in exact_input_sizes(cfg)
    with pytest.raises(UserError, match=r"24x24 = 576 values.*near 96: .*92, 93, 94, 95, 100"):
        check_tflite_exactness(cfg)


def tied_means(model, x) -> int:
    """How many (image, channel) means of the last feature map are exactly half-way between two codes."""
    seen = {}
    hook = model.classifier[2].register_forward_hook(lambda m, i, o: seen.setdefault("x", plain(o)))
    with torch.no_grad():
        model(x)
    hook.remove()
    scale = float(model.classifier[2].act_quant.scale())
    codes = torch.round(seen["x"] / scale).numpy().astype(np.int64)
    count = codes.shape[2] * codes.shape[3]
    return int(((codes.sum(axis=(2, 3)) % count) * 2 == count).sum())


@pytest.mark.slow
def test_tflite_is_exact_where_the_global_average_has_ties(folder, tmp_path):
    """An untrained, calibrated model at 32x32 RGB: its 8x8 means hit half-way ties, which int8
    AVERAGE_POOL_2D rounds away from zero and Brevitas to even. The depthwise average is exact."""
    torch.manual_seed(1)
    cfg = small_image_config(input_size=SIZE, in_channels=3, num_classes=3, **SMALL)
    model = build_quant_model(cfg, QuantSettings(overrides={"features.0": 8, "classifier.1": 8}))
    data = load_dataset("folder", "train", str(folder), SIZE, 3)
    norm = Normalization.fit(data.images)
    calibrate(model, data, norm, batches=1, batch_size=64, progress=False)
    model.eval()
    rng = np.random.default_rng(0)
    images = np.concatenate([data.images, rng.integers(0, 256, (64, 3, SIZE, SIZE), dtype=np.uint8)])
    x = to_input(torch.from_numpy(images), norm)
    assert tied_means(model, x) > 0  # the case the export has to get right
    expected = torch_logits(model, x)
    tflite = convert_to_tflite(model, (3, SIZE, SIZE), tmp_path / "m.tflite")
    x_int8 = tflite_inputs(images, pixel_lookup_table(model, norm))
    interp = tflite_run.load(tflite, threads=1, runtime="ai_edge_litert")
    got = dequantize(tflite_run.run(interp, x_int8), *interp.get_output_details()[0]["quantization"], dtype=np.float32)
    assert np.array_equal(got, expected)
    if TFLITE_RUNTIME_PYTHON.exists():  # runs there too; its reference kernels are not claimed exact
        from export.tflite_check import run_tflite_runtime

        raw = run_tflite_runtime(str(TFLITE_RUNTIME_PYTHON), tflite, x_int8)
        other = dequantize(raw, *interp.get_output_details()[0]["quantization"], dtype=np.float32)
        assert np.abs(other - expected).max() <= 8 * interp.get_output_details()[0]["quantization"][0]


def test_an_input_size_that_cannot_be_exact_is_refused_before_any_work(tmp_path):
    cfg = small_image_config(input_size=24, in_channels=3, num_classes=3, **SMALL)  # 6x6 = 36 values
    model = build_quant_model(cfg, QuantSettings())
    with pytest.raises(UserError, match="cannot be bit-exact at input size 24: the last feature map is 6x6 = 36"):
        convert_to_tflite(model, (3, 24, 24), tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


# --- gates and clean failures -------------------------------------------------------------------------

def test_compare_names_the_first_differing_image():
    parent = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    same = compare(parent.copy(), parent, np.array([1, 0, 1]))
    assert same["exact"] and same["rows_off"] == 0 and "first_mismatch" not in same
    off = parent.copy()
    off[1] = [0.0, 2.5]
    facts = compare(off, parent, np.array([1, 0, 1]))
    assert not facts["exact"] and facts["rows_off"] == 1 and facts["first_mismatch"]["index"] == 1
    line = mismatch_line("squeezenet_int8.tflite", {**facts, "parent": "brevitas", "runtime": "ai_edge_litert"})
    assert "on 1 of 3 images" in line and "first: test image 1 (class 1 vs 0" in line
    assert compare(parent + 1e-5, parent, np.array([1, 0, 1]), tolerance=1e-3)["exact"]


def test_fpga_refuses_data_that_does_not_fit_before_any_step(quant_ckpt, tiny_idx_dir, tmp_path):
    r = run_module("fpga", "--checkpoint", str(quant_ckpt), "--dataset", "fashion-mnist", "--data-dir",
                   str(tiny_idx_dir), "--out", str(tmp_path / "fpga"))
    assert r.returncode == 2 and "takes 3x32x32 images" in one_error_line(r.stderr)
    assert "[fpga]" not in r.stdout


def test_a_truncated_data_file_fails_fpga_before_any_step(tiny_export, tmp_path):
    _, data_dir, root = tiny_export
    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    blob = (bad / "t10k-images-idx3-ubyte.gz").read_bytes()
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(blob[:len(blob) // 2])
    r = run_module("fpga", "--checkpoint", str(root / "quant.pt"), "--data-dir", str(bad), "--out", str(tmp_path / "f"))
    assert r.returncode == 2 and "truncated or corrupt" in one_error_line(r.stderr)
    assert "[fpga]" not in r.stdout


def test_invalid_fpga_fields_are_named(tmp_path):
    r = run_module("fpga", "--samples", "-5", "--out", str(tmp_path))
    assert r.returncode == 2 and one_error_line(r.stderr) == "error: --samples must be >= 0, got -5"
    r = run_module("fpga", "--clock-mhz", "0", "--out", str(tmp_path))
    assert r.returncode == 2 and one_error_line(r.stderr) == "error: --clock-mhz must be positive, got 0"


def test_a_damaged_checkpoint_never_suggests_unsafe_loading(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes((ROOT / "model/checkpoints/default.pt").read_bytes()[:5000])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("evil.pt", "cut.pt", "junk.pt"):
        r = run_module("model.evaluate", "--checkpoint", str(tmp_path / name), "--out", str(tmp_path / "e"))
        line = one_error_line(r.stderr)
        assert r.returncode == 2 and f"cannot load checkpoint {tmp_path / name}" in line
        assert "weights_only" not in line and "will likely succeed" not in line, line


def test_budget_reads_no_data():
    import subprocess

    r = subprocess.run(["make", "-n", "--no-print-directory", "budget", "DATA_DIR=/nonexistent"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "fashion-mnist" not in r.stdout.lower() and "-m budget" in r.stdout


def test_a_truncated_video_is_reported_and_fails_with_strict(tiny_model, tmp_path):
    from tests.rpi_helpers import fashion_frames, write_video

    video = write_video(tmp_path / "v.avi", fashion_frames(40), fourcc="MJPG")
    blob = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(blob[:len(blob) // 2])
    r = run_module("rpi.runtime.app", "--model", str(tiny_model), "--source", str(cut), "--every", "0")
    assert r.returncode == 0, r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    frames = int(re.search(r"frames=(\d+)", summary).group(1))
    assert 0 < frames < 40 and summary.endswith("stopped=truncated"), summary
    assert f"ended after {frames} of the 40 frames it announces" in r.stderr
    r = run_module("rpi.runtime.app", "--model", str(tiny_model), "--source", str(cut), "--every", "0", "--strict")
    assert r.returncode == 2 and r.stdout.strip().splitlines()[-1].endswith("stopped=truncated")
    r = run_module("rpi.runtime.app", "--model", str(tiny_model), "--source", str(video), "--every", "0", "--strict")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].endswith("stopped=end")


def test_failed_bundles_are_pruned_to_the_last_few(tiny_model, tmp_path):
    from rpi.bundle import KEEP_BUNDLES, build_bundle, prune_bundles

    bundles = tmp_path / "bundles"
    for i in range(KEEP_BUNDLES + 3):
        (bundles / f"old{i}").mkdir(parents=True)
    bundle, _ = build_bundle(str(tiny_model), tmp_path, budget=1 << 20)
    kept = sorted(p.name for p in bundles.iterdir())
    assert len(kept) == KEEP_BUNDLES and bundle.name in kept and not any(n.startswith(".") for n in kept)
    prune_bundles(bundles, keep=KEEP_BUNDLES)
    assert len(list(bundles.iterdir())) == KEEP_BUNDLES


# --- the whole path -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_own_rgb_folder_end_to_end(quant_ckpt, folder, loopback_pi, tmp_path):
    """train -> QAT (fixtures) -> export (every artifact exact) -> fpga (C simulation exact) -> deploy to the
    loopback Pi, classifying the folder's test images there: the Pi's labels are the quantized model's."""
    from tests.rpi_helpers import read_log
    from tests.test_rpi_deploy import deploy, pi_env

    export_dir = tmp_path / "export"
    r = run_module("export", "--checkpoint", str(quant_ckpt), "--out", str(export_dir), "--tflite-runtime-python", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((export_dir / "report.json").read_text())["exact"]
    r = run_module("fpga", "--checkpoint", str(quant_ckpt), "--samples", "all", "--out", str(tmp_path / "fpga"),
                   "--workers", "2", timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    fpga = json.loads((tmp_path / "fpga" / "report.json").read_text())
    assert fpga["csim"]["exact"] and fpga["csim"]["samples"] == 18 and fpga["config"]["dataset"] == "folder"

    shots = tmp_path / "shots"  # the test split as a camera would see it: one directory of images, in order
    shots.mkdir()
    files = sorted((folder / "test").rglob("*.png"))
    for i, path in enumerate(files):
        shutil.copyfile(path, shots / f"{i:03d}.png")
    pi_dir = tmp_path / "pi"
    r = deploy("deploy", "--model", export_dir / "squeezenet_int8.json", "--work-dir", tmp_path / "work",
               "--python", sys.executable, "--source", shots, env=pi_env(loopback_pi, pi_dir))
    assert r.returncode == 0, r.stderr
    assert f"summary: frames={len(files)} " in r.stdout
    from quantize.qat import load_quant_model

    qm = load_quant_model(quant_ckpt)
    test = load_dataset("folder", "test", str(folder), SIZE, 3)
    brevitas = torch_logits(qm.model, to_input(torch.from_numpy(test.images), qm.normalization)).argmax(1)
    assert [row["label"] for row in read_log(pi_dir / "predictions.jsonl")] == [CLASSES[i] for i in brevitas]


DEAD_CLASS_RUN = ["--dataset", "folder", "--input-size", "32", "--channels", "3", "--set", "base_e=16",
                  "--set", "incr_e=16", "--set", "stem_channels=16", "--epochs", "8", "--batch-size", "32",
                  "--lr", "3e-3", "--weight-decay", "0.05", "--seed", "2", "--threads", "1"]


@pytest.mark.slow
@needs_fashion
def test_every_class_is_learned_where_the_plain_relu_head_lost_one(tmp_path):
    """Five Fashion-MNIST classes as a 32x32 colour folder, a small SqueezeNet, seed 2: with the plain ReLU
    gradient in the head (--head-leak 0) the 'Dress' channel dies (its logit 0 on every image) and training
    warns, naming it; with the default head leak every class is learned (docs/RESULTS.md, "Bring your own
    data", has the ten-seed study: tests/dead_class_study.py)."""
    folder = write_fashion_folder(tmp_path / "clothes")
    r = run_module("model.train", *DEAD_CLASS_RUN, "--data-dir", str(folder), "--head-leak", "0",
                   "--out", str(tmp_path / "plain"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning: class 'Dress' is lost on the validation split: its logit is 0 on every image" in r.stderr
    r = run_module("model.train", *DEAD_CLASS_RUN, "--data-dir", str(folder), "--out", str(tmp_path / "leak"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "is lost" not in r.stderr, r.stderr
    meta = load_checkpoint(tmp_path / "leak" / "model.pt")["meta"]
    assert meta["settings"]["head_leak"] == 0.1 and meta["lost_classes"] == []
    assert all(acc > 0 for acc in meta["val_per_class"].values()), meta["val_per_class"]
    test = json.loads((tmp_path / "leak" / "report.json").read_text())["per_class"]
    assert all(acc > 0.2 for acc in test.values()), test
