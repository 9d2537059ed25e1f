"""Quantization-aware fine-tuning of a float SqueezeNet: ``python -m quantize`` (``make qat``).

Steps: load the float checkpoint -> fold BatchNorm into the convs -> build the Brevitas twin with the same
builder -> calibrate the activation scales on training images -> QAT -> evaluate -> write the quantized
checkpoint and ``<out>/report.json`` (accuracy, bit widths, per-layer storage against the budget).

QAT runs on ``--device`` in full fp32 (no autocast, no TF32), under torchrun on several processes like
``python -m model.train``. ``--kd-alpha`` distils the float parent (or ``--teacher``) into the twin.
The reported accuracies are computed on the CPU, the reference every later stage compares with.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import contract
from contract import (
    FLOAT_CHECKPOINT,
    FPGA_FLOAT_CHECKPOINT,
    FPGA_QUANT_CHECKPOINT,
    QUANT_CHECKPOINT,
    UserError,
    run_cli,
    sha256_of,
    write_json,
)
from model import SqueezeNet, SqueezeNetConfig, fold_batch_norm
from model.checkpoint import load_checkpoint, save_checkpoint
from model.data import (
    DATASETS,
    ImageSet,
    Normalization,
    checkpoint_data,
    data_identity,
    load_checkpoint_data,
    train_val_split,
)
from model.evaluate import classification_report, load_float_model, load_teacher, plot_confusion
from model.inference import accuracy, model_device, predict_logits, to_input
from model.progress import progress as progress_bar
from model.runtime import Runtime, runtime
from model.train_settings import STOPPED_EXIT_CODE, TrainSettings, add_training_arguments, settings_from_args
from model.training import fit

from .layers import (  # noqa: F401 (DEFAULT_OVERRIDES: re-export)
    DEFAULT_OVERRIDES,
    WEIGHT_SCALES,
    QuantSettings,
    build_quant_model,
    conv_layer_names,
    init_weight_scales,
)
from .storage import storage_table

DEFAULT_FLOAT, DEFAULT_QUANT = FLOAT_CHECKPOINT, QUANT_CHECKPOINT  # the names the other modules import
FPGA_FLOAT, FPGA_QUANT = FPGA_FLOAT_CHECKPOINT, FPGA_QUANT_CHECKPOINT


@dataclass
class QuantModel:
    model: SqueezeNet
    config: SqueezeNetConfig
    settings: QuantSettings
    normalization: Normalization
    classes: list[str]
    payload: dict


def twin_from_float(float_checkpoint: str | Path, qs: QuantSettings) -> tuple[SqueezeNet, object]:
    """The Brevitas twin carrying the float model's (BatchNorm-folded) weights."""
    loaded = load_float_model(float_checkpoint)
    folded = fold_batch_norm(loaded.model) if loaded.config.batch_norm else loaded.model.state_dict()
    twin = build_quant_model(loaded.config, qs)
    missing, unexpected = twin.load_state_dict(folded, strict=False)
    not_quantizer = [k for k in missing if "_quant" not in k]
    if not_quantizer or unexpected:
        raise UserError(f"float weights do not fit the quantized twin: missing {not_quantizer[:5]}, "
                        f"unexpected {unexpected[:5]}")
    return twin, loaded


@torch.no_grad()
def calibrate(model: SqueezeNet, data: ImageSet, norm: Normalization, batches: int = 20,
              batch_size: int = 256, progress: bool = True) -> None:
    """Set every activation scale from the statistics of real training images before QAT starts (on the
    model's device; every torchrun process sees the same images, so all get the same scales), and every
    learned weight scale from the weights."""
    from brevitas.graph.calibrate import calibration_mode

    init_weight_scales(model)
    model.eval()
    device = model_device(model)
    images = torch.from_numpy(data.images)
    with calibration_mode(model):
        for start in progress_bar(range(0, min(len(data), batches * batch_size), batch_size), desc="calibrate",
                          leave=False, disable=None if progress else True):
            model(to_input(images[start:start + batch_size].to(device), norm))


def load_quant_model(path: str | Path) -> QuantModel:
    payload = load_checkpoint(path)
    if payload.get("kind") != "quantized":
        raise UserError(f"{path} is a {payload.get('kind')!r} checkpoint, expected a quantized one")
    cfg = SqueezeNetConfig.from_dict(payload["config"])
    qs = QuantSettings.from_dict(payload["quant"])
    model = build_quant_model(cfg, qs)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return QuantModel(model, cfg, qs, Normalization.from_dict(payload["normalization"]),
                      list(payload["classes"]), payload)


def evaluate_quant(checkpoint: str | Path, dataset: str | None, data_dir: str | None, out: str | Path,
                   budget_bytes: int = contract.BUDGET_BYTES) -> dict:
    """The quantize stage's report for a quantized checkpoint (``make eval`` calls this); ``dataset`` /
    ``data_dir`` None: the data it was trained on."""
    out = Path(out)
    qm = load_quant_model(checkpoint)
    test, dataset, data_dir = load_checkpoint_data(qm.payload, str(checkpoint), "test", dataset, data_dir)
    logits = predict_logits(qm.model, test, qm.normalization, progress=True, desc="test (quantized)")
    report = classification_report(logits, test.labels, qm.classes)
    table = storage_table(qm.model, budget_bytes)
    meta = qm.payload.get("meta", {})
    float_top1 = meta.get("float_top1")
    if float_top1 is None:  # QAT ran with --no-eval: measure the float parent now, on the same images
        float_top1 = parent_top1(meta, test)
    report.update({
        "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_of(checkpoint), "dataset": dataset,
        "data_dir": str(data_dir),
        "float_top1": float_top1,
        "weight_bits": qm.settings.weight_bits, "quant": qm.settings.to_dict(),
        "weight_storage_bytes": table.total_bytes, "storage": table.to_dict(),
        "params": sum(layer.weights + layer.biases for layer in table.layers),
        "config": qm.config.to_dict(),
        "qat": {k: v for k, v in meta.items() if k != "history"},
    })
    plot_confusion(report["confusion"], qm.classes, out / "confusion.png",
                   f"quantized SqueezeNet ({qm.settings.weight_bits}-bit weights), top-1 {report['top1']:.4f}")
    write_json(out / "report.json", report)
    return report


def float_parent(payload: dict, checkpoint: str | Path) -> str:
    """The float checkpoint a quantized one was trained from, when it is still there unchanged; else a
    UserError that says what to pass instead."""
    parent = payload.get("parent") or {}
    meta = payload.get("meta", {})
    path, digest = parent.get("checkpoint") or meta.get("float_checkpoint"), parent.get("sha256") or meta.get("float_sha256")
    if not path:
        raise UserError(f"{checkpoint} does not record its float parent; pass --float-checkpoint")
    if not Path(path).is_file():
        raise UserError(f"{checkpoint} was trained from {path}, which no longer exists; pass --float-checkpoint")
    if digest and sha256_of(path) != digest:
        raise UserError(f"{path} changed since {checkpoint} was trained from it (sha256 differs); retrain the "
                        f"quantized model or pass --float-checkpoint")
    return str(path)


def parent_top1(meta: dict, test: ImageSet) -> float | None:
    """Test top-1 of the float checkpoint this one was trained from, when that file is still here unchanged."""
    path = meta.get("float_checkpoint")
    if not path or not Path(path).is_file() or sha256_of(path) != meta.get("float_sha256"):
        return None
    parent = load_float_model(path)
    return accuracy(predict_logits(parent.model, test, parent.normalization, progress=True, desc="test (float)"),
                    test.labels)


def parse_overrides(pairs: list[str], flag: str = "--override", metavar: str = "LAYER=BITS") -> dict[str, int]:
    out = {}
    for pair in pairs:
        name, sep, bits = pair.partition("=")
        if not sep:
            raise UserError(f"{flag} expects {metavar}, got {pair!r}")
        try:
            out[name] = int(bits)
        except ValueError:
            raise UserError(f"{flag} {pair!r}: bits must be an integer") from None
    return out


# The QAT recipe of the committed checkpoint: short, gentle, no warmup (it starts from trained weights).
QAT_DEFAULTS = TrainSettings(epochs=3, batch_size=128, optimizer="adamw", lr=3e-4, weight_decay=0.0,
                             schedule="cosine", warmup_epochs=0.0, amp=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m quantize", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_FLOAT, help="float checkpoint to start from")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="default: the data set the float checkpoint was trained on")
    p.add_argument("--data-dir", default=None, help="default: the float checkpoint's data directory, else "
                                                    "$DATA_DIR or the Debian package's directory")
    q = QuantSettings()  # the defaults, defined once there
    p.add_argument("--weight-bits", type=int, default=q.weight_bits)
    p.add_argument("--act-bits", type=int, default=q.act_bits)
    p.add_argument("--classifier-act-bits", type=int, default=None, metavar="BITS",
                   help="bits of the classifier's activation, the grid of the output logits (default: --act-bits); "
                        "e.g. 8 with --act-bits 4 keeps 256 levels of logits")
    p.add_argument("--input-bits", type=int, default=q.input_bits)
    p.add_argument("--bias-bits", type=int, default=q.bias_bits,
                   help="bits of each bias on the accumulator grid (input scale x weight scale)")
    p.add_argument("--override", action="append", default=None, metavar="LAYER=BITS",
                   help="weight bits for one conv (fnmatch patterns allowed, e.g. 'features.*.squeeze=3'); "
                        f"default: {' '.join(f'{k}={v}' for k, v in q.overrides.items())}; "
                        "'--override none' for none")
    p.add_argument("--weight-scale", choices=WEIGHT_SCALES, default=q.weight_scale,
                   help="how each conv's power-of-two weight scale is chosen: 'max' covers the largest weight "
                        "(recomputed every step); 'mse' takes the power of two with the least squared error, "
                        "clipping the largest few, and learns it during QAT (finer steps at 4 bits)")
    p.add_argument("--act-override", action="append", default=[], metavar="NAME=BITS",
                   help="bits of the matching activation quantizers (fnmatch on module names, e.g. "
                        "'features.4.squeeze_activation=8', 'features.*.bypass_quant=6'; repeatable); the others "
                        "keep --act-bits")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images (smoke runs)")
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"the byte budget (default: ${contract.BUDGET_ENV} or {contract.BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--out", default=contract.stage_dir("quantize"))
    p.add_argument("--no-eval", action="store_true",
                   help="skip the test-set evaluations (float parent before, quantized model after; both on the "
                        "CPU); `python -m quantize.evaluate` makes the report later")
    add_training_arguments(p, QAT_DEFAULTS, amp=False,
                           teacher_help="float checkpoint that teaches the twin when --kd-alpha > 0 "
                                        "(default: the float parent, --checkpoint)")
    return p


def quant_settings_from_args(args: argparse.Namespace) -> QuantSettings:
    overrides = QuantSettings().overrides if args.override is None else (
        {} if args.override == ["none"] else parse_overrides(args.override))
    return QuantSettings(args.weight_bits, args.act_bits, args.input_bits, args.bias_bits, overrides,
                         args.classifier_act_bits, parse_overrides(args.act_override, "--act-override", "NAME=BITS"),
                         args.weight_scale)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.budget_bytes = contract.budget_bytes(args.budget_bytes)  # flag, then $BUDGET_BYTES, then 0.5 MiB
    qs = quant_settings_from_args(args)
    qs.validate()
    settings = settings_from_args(args, amp=False)  # QAT in fp32: fake quantization rounds on exact grids
    if args.teacher and settings.kd_alpha == 0:
        raise UserError("--teacher needs --kd-alpha > 0")
    with runtime(args.device) as rt:
        return quantization_aware_training(args, qs, settings, rt, argv)


def quantization_aware_training(args, qs: QuantSettings, settings: TrainSettings, rt: Runtime,
                                argv: list[str] | None) -> int:
    out = Path(args.out)
    twin, loaded = twin_from_float(args.checkpoint, qs)
    norm = loaded.normalization
    # Both splits are read and checked against the checkpoint before any work (a bad file fails here).
    full, dataset, data_dir = load_checkpoint_data(loaded.payload, args.checkpoint, "train", args.dataset,
                                                   args.data_dir)
    test = None if args.no_eval or not rt.is_main else \
        load_checkpoint_data(loaded.payload, args.checkpoint, "test", dataset, data_dir)[0]
    if args.limit:
        full = full.subset(np.arange(min(args.limit, len(full))))
    train, val = train_val_split(full, 1 / 12, args.seed)
    float_top1 = None
    if test is not None:  # on the CPU, as `make eval` computes it
        float_top1 = accuracy(predict_logits(loaded.model, test, norm), test.labels)
    teacher, run_key, teacher_path = None, {}, args.teacher or args.checkpoint
    if settings.kd_alpha > 0:
        teacher = load_teacher(teacher_path, loaded.classes, norm.channels, norm.input_size)
        run_key = {"teacher_sha256": sha256_of(teacher_path)}

    short = qs.short_biases(conv_layer_names(twin.config))
    if short and rt.is_main:
        print(f"warning: {len(short)} conv(s) take more input and weight bits than their {qs.bias_bits}-bit biases "
              f"can carry, so their biases clip: {', '.join(short[:3])}{' ...' if len(short) > 3 else ''}; "
              f"keep input + weight bits <= {qs.bias_bits} (e.g. --weight-bits {qs.bias_bits - qs.act_bits} or "
              f"fewer) to keep every bias", file=sys.stderr)
    t0 = time.time()
    twin.to(rt.device)
    resuming = args.resume and (out / "last.pt").is_file()  # the saved twin holds its calibrated scales
    if not resuming:
        calibrate(twin, train, norm, progress=rt.is_main)
    if rt.is_main and not resuming:
        print(f"calibrated {qs.weight_bits}-bit twin on {rt.device}: val "
              f"{accuracy(predict_logits(twin, val, norm), val.labels):.4f} before QAT"
              + (f" (float test top-1 {float_top1:.4f})" if float_top1 is not None else ""), flush=True)
    result = fit(twin, train, val, norm, settings, out / "last.pt", resume=args.resume, runtime=rt,
                 teacher=teacher, run_key=run_key)
    if not rt.is_main:
        return 0 if result.finished else STOPPED_EXIT_CODE
    if not result.finished:
        print(f"stopped after epoch {len(result.history)} of {settings.epochs} (--time-limit); "
              f"{out / 'last.pt'} holds the run: add --resume to finish it")
        return STOPPED_EXIT_CODE
    command = "python -m quantize " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    meta = {"command": command, "qat_seconds": round(time.time() - t0, 1), "float_top1": float_top1,
            "float_checkpoint": str(args.checkpoint), "float_sha256": sha256_of(args.checkpoint),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
            "device": result.device, "processes": result.world_size,
            "teacher": {"checkpoint": str(teacher_path), **run_key} if teacher else None,
            "history": [vars(h) for h in result.history]}
    checkpoint = out / "model.pt"
    data = {**checkpoint_data(loaded.payload), **data_identity(dataset, data_dir, loaded.classes, norm)}
    save_checkpoint(checkpoint, twin.state_dict(), kind="quantized", config=loaded.config.to_dict(),
                    quant=qs.to_dict(), normalization=norm.to_dict(), classes=loaded.classes, meta=meta,
                    data=data, parent={"checkpoint": str(args.checkpoint), "sha256": meta["float_sha256"]})
    if args.no_eval:
        print(f"wrote {checkpoint} (val {result.history[-1].val_acc:.4f}; no test evaluation: --no-eval)")
        return 0
    report = evaluate_quant(checkpoint, dataset, data_dir, out, args.budget_bytes)
    print(storage_table(load_quant_model(checkpoint).model, args.budget_bytes).format())
    print(f"wrote {checkpoint}: test top-1 {report['top1']:.4f} (float {float_top1:.4f}), "
          f"{report['weight_storage_bytes']:,} bytes of weights and biases; {report['tied_top1']:.2%} of the test "
          f"images tie on their top logit")
    return 0


if __name__ == "__main__":
    run_cli(main)
