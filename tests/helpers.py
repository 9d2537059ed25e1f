"""Builders of small quantized checkpoints for the tests (real Brevitas models, no mocks)."""
import torch

from model.artifacts import save_checkpoint
from model.data import Normalization, load_dataset
from quantize.layers import QuantSettings, build_quant_model
from quantize.qat import calibrate


def tiny_quant_checkpoint(path, data_dir, cfg, qs=None, seed=0):
    """A calibrated (untrained) Brevitas SqueezeNet with non-zero biases, saved like `make qat` does."""
    torch.manual_seed(seed)
    qs = qs or QuantSettings(overrides={"features.0": 8, "classifier.1": 8})
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
