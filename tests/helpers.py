"""Builders of small quantized checkpoints for the tests (real Brevitas models, no mocks)."""
from pathlib import Path

import torch

from model import SqueezeNet
from model.checkpoint import save_checkpoint
from model.data import Normalization, load_dataset
from quantize.layers import QuantSettings, build_quant_model
from quantize.qat import calibrate

ROOT = Path(__file__).resolve().parents[1]


def tiny_quant_checkpoint(path, data_dir, cfg, qs=None, seed=0):
    """A calibrated (untrained) Brevitas SqueezeNet with non-zero biases, saved like `make qat` does."""
    torch.manual_seed(seed)
    qs = qs or QuantSettings()  # the CLI default: 8-bit first and last layers
    model = build_quant_model(cfg, qs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    data = load_dataset("fashion-mnist", "train", str(data_dir))
    norm = Normalization.fit(data.images)
    calibrate(model, data, norm, batches=2, batch_size=128)
    save_checkpoint(path, model.state_dict(), kind="quantized", config=cfg.to_dict(), quant=qs.to_dict(),
                    normalization=norm.to_dict(), classes=data.classes, meta={"float_top1": None})
    return model, norm


# Small enough to export in seconds, with every layer kind of the default network (stem, pools, Fire
# modules with and without bypass). The fpga tests use the same shape.
SMALL = dict(base_e=16, incr_e=16, freq=2, num_fire=3, pool_after=(0, 2), stem_channels=16)
TFLITE_RUNTIME_PYTHON = ROOT / ".venv-tflite-runtime" / "bin" / "python"


def tiny_float_checkpoint(path, data_dir, cfg, seed=0):
    """An untrained float SqueezeNet saved like `make train` does (the float ONNX's parent)."""
    torch.manual_seed(seed)
    model = SqueezeNet(cfg).eval()
    data = load_dataset("fashion-mnist", "train", str(data_dir))
    norm = Normalization.fit(data.images)
    save_checkpoint(path, model.state_dict(), kind="float", config=cfg.to_dict(), normalization=norm.to_dict(),
                    classes=data.classes, meta={})
    return model


def tiny_export_dir(root):
    """Run `python -m export` on a small float + quantized pair; returns (export dir, data dir, ckpt dir)."""
    from model import small_image_config

    from .conftest import run_module, write_tiny_idx

    root = Path(root)
    data_dir = write_tiny_idx(root / "data")
    cfg = small_image_config(**SMALL)
    tiny_float_checkpoint(root / "float.pt", data_dir, cfg)
    tiny_quant_checkpoint(root / "quant.pt", data_dir, cfg)
    out = root / "export"
    python = str(TFLITE_RUNTIME_PYTHON) if TFLITE_RUNTIME_PYTHON.exists() else "none"
    r = run_module("export", "--checkpoint", str(root / "quant.pt"), "--float-checkpoint", str(root / "float.pt"),
                   "--data-dir", str(data_dir), "--out", str(out), "--tflite-runtime-python", python)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, data_dir, root


def tiny_tflite_bundle(out_dir, data_dir=None):
    """For the rpi tests: the int8 .tflite and its metadata .json of a small model, in ``out_dir``."""
    export_dir, _, _ = tiny_export_dir(out_dir)
    return export_dir / "squeezenet_int8.tflite", export_dir / "squeezenet_int8.json"


def write_fashion_folder(root, data_dir=None, classes=(0, 1, 2, 3, 4), size=32, train=280, test=60, seed=0):
    """root/{train,test}/<class>/*.png: real images in another shape than the built-in data set, as a user's
    folder would be: the first ``train`` / ``test`` Fashion-MNIST images of each class, resized to
    ``size`` x ``size`` and coloured (a random tint on a random dark background per image)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train), ("test", test)):
        data = load_dataset("fashion-mnist", split, None if data_dir is None else str(data_dir))
        for c in classes:
            directory = root / split / data.classes[c].replace("/", "-")
            directory.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(data.labels == c)[:count]:
                gray = Image.fromarray(data.images[i, 0]).resize((size, size), Image.BILINEAR)
                a = np.asarray(gray, np.float32)[..., None] / 255
                rgb = (a * rng.uniform(0.3, 1.0, 3) + (1 - a) * rng.uniform(0.0, 0.3, 3)) * 255
                Image.fromarray(rgb.astype(np.uint8)).save(directory / f"{i:05d}.png")
    return root


def check_subcommands_are_documented(module: str) -> list[str]:
    """``python -m MODULE --help``: the subcommands its parser accepts (the usage line's {a,b,...}) are exactly
    the ones its description explains (lines "name  what it does"), and each one's own --help works.
    Returns the subcommands."""
    import re
    import subprocess
    import sys

    def helped(*args):
        r = subprocess.run([sys.executable, "-m", module, *args, "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    text = helped()
    accepted = re.search(r"\{([a-z,-]+)\}", text).group(1).split(",")
    described = re.findall(r"^([a-z-]+) {2,}\S", text, re.M)
    assert sorted(described) == sorted(accepted), (described, accepted)
    for command in accepted:
        assert helped(command).startswith(f"usage: python -m {module} {command}"), command
    return accepted
