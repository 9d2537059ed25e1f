"""Evaluate a float checkpoint on a test set: ``python -m model.evaluate`` (part of ``make eval``).

Writes ``<out>/report.json`` (top-1, per-class accuracy, confusion matrix, parameter count) and
``<out>/confusion.png``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import contract
from contract import UserError, atomic_path, run_cli, write_json

from .checkpoint import load_checkpoint
from .data import DATASETS, Normalization, load_checkpoint_data
from .inference import accuracy, predict_logits
from .squeezenet import SqueezeNet, SqueezeNetConfig, count_macs, count_parameters, folded_copy
from .training import Teacher

DEFAULT_CHECKPOINT = "model/checkpoints/default.pt"


@dataclass
class LoadedModel:
    model: SqueezeNet
    config: SqueezeNetConfig
    normalization: Normalization
    classes: list[str]
    payload: dict


def load_float_model(path: str | Path) -> LoadedModel:
    payload = load_checkpoint(path)
    if payload.get("kind") != "float":
        raise UserError(f"{path} is a {payload.get('kind')!r} checkpoint, expected a float one")
    cfg = SqueezeNetConfig.from_dict(payload["config"])
    model = SqueezeNet(cfg)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return LoadedModel(model, cfg, Normalization.from_dict(payload["normalization"]),
                       list(payload["classes"]), payload)


def load_teacher(path: str | Path, classes: list[str], channels: int, input_size: int) -> Teacher:
    """A float checkpoint as a distillation teacher; it must see the same images and predict the same
    classes as its student (its own normalisation is kept)."""
    loaded = load_float_model(path)
    norm = loaded.normalization
    if list(loaded.classes) != list(classes) or (norm.channels, norm.input_size) != (channels, input_size):
        raise UserError(f"teacher {path} was trained on {len(loaded.classes)} classes of {norm.channels}x"
                        f"{norm.input_size}x{norm.input_size} images, the student on {len(classes)} classes of "
                        f"{channels}x{input_size}x{input_size}")
    return Teacher(loaded.model, norm)


def classification_report(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    pred = logits.argmax(1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {c: float(confusion[i, i] / max(1, confusion[i].sum())) for i, c in enumerate(classes)}
    # Images whose highest logit is shared by another class: the argmax takes the first. Near zero for a
    # float model; a quantized model's coarse logit grid can tie many (13% at 4-bit logits, RESULTS).
    tied = (logits == logits.max(1, keepdims=True)).sum(1) > 1
    return {"top1": accuracy(logits, labels), "samples": int(len(labels)), "per_class": per_class,
            "confusion": confusion.tolist(), "tied_top1": round(float(tied.mean()), 4)}


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def evaluate_checkpoint(checkpoint: str | Path, dataset: str | None, data_dir: str | None, out: str | Path) -> dict:
    """``dataset`` / ``data_dir`` None: the data the checkpoint was trained on."""
    out = Path(out)
    loaded = load_float_model(checkpoint)
    test, dataset, data_dir = load_checkpoint_data(loaded.payload, str(checkpoint), "test", dataset, data_dir)
    t0 = time.time()
    logits = predict_logits(loaded.model, test, loaded.normalization, progress=True, desc="test")
    report = classification_report(logits, test.labels, loaded.classes)
    report.update({"checkpoint": str(checkpoint), "dataset": dataset, "data_dir": str(data_dir),
                   "params": count_parameters(loaded.model),
                   # what inference stores: BatchNorm folded into the convs (the quantize stage does this)
                   "params_deployed": count_parameters(folded_copy(loaded.model)),
                   "macs_per_image": count_macs(loaded.model, (loaded.config.in_channels, loaded.config.input_size,
                                                               loaded.config.input_size)),
                   "config": loaded.config.to_dict(),
                   "normalization": loaded.normalization.to_dict(),
                   "eval_seconds": round(time.time() - t0, 2),
                   "training": {k: v for k, v in loaded.payload.get("meta", {}).items() if k != "history"}})
    plot_confusion(report["confusion"], loaded.classes, out / "confusion.png",
                   f"float SqueezeNet, top-1 {report['top1']:.4f}")
    write_json(out / "report.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="default: the data set the checkpoint was trained on")
    p.add_argument("--data-dir", default=None, help="default: the checkpoint's data directory, else $DATA_DIR or "
                                                    "the Debian package's directory")
    p.add_argument("--out", default=contract.stage_dir("model"))
    args = p.parse_args(argv)
    report = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.out)
    print(f"{args.checkpoint}: top-1 {report['top1']:.4f} on {report['samples']:,} {report['dataset']} test images, "
          f"{report['params']:,} parameters -> {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
