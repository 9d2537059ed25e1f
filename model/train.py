"""Train a float SqueezeNet: ``python -m model.train`` (``make train``).

Writes ``<out>/model.pt`` (weights + config + normalisation + classes, loadable with weights_only=True),
``<out>/last.pt`` (resume state) and the evaluation report ``<out>/report.json``.

Runs on ``--device`` (CUDA when present, bf16 autocast there). For several GPUs or machines, launch it with
torchrun (``torchrun --nproc-per-node 4 -m model.train ...``; ``make train NPROC=4``): the processes share
the work and rank 0 writes every file. ``--teacher`` with ``--kd-alpha`` distils a (wider) float model.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

import contract
from contract import UserError, run_cli, sha256_of

from .checkpoint import save_checkpoint
from .data import DATASETS, Normalization, data_dir_default, data_identity, load_dataset, train_val_split
from .evaluate import evaluate_checkpoint, load_teacher
from .exactness import check_tflite_exactness
from .inference import class_health, predict_logits
from .runtime import Runtime, runtime
from .squeezenet import PRESETS, SqueezeNet, SqueezeNetConfig, count_macs, count_parameters
from .train_settings import (
    STOPPED_EXIT_CODE,
    TrainSettings,
    add_training_arguments,
    seed_everything,
    settings_from_args,
)
from .training import fit


def parse_overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs for SqueezeNetConfig fields; values are parsed as JSON where they can be."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    known = {f.name for f in fields(SqueezeNetConfig)}
    unknown = sorted(set(out) - known)
    if unknown:
        raise UserError(f"unknown model setting(s) {unknown}; known: {sorted(known)}")
    return out


# On by default for new runs: with the plain ReLU gradient a 5-class folder lost a whole class (its logit 0 on
# every image) in one of four seeds (docs/RESULTS.md, "Bring your own data"). The committed checkpoints
# were trained before it, and their Makefile recipes say --head-leak 0.
HEAD_LEAK = 0.1
# Fewer optimizer steps per epoch than this draws a warning; the recipes were tuned on 55,000 images.
FEW_STEPS_PER_EPOCH = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="fashion-mnist")
    p.add_argument("--data-dir", default=None,
                   help=f"data directory (default: $DATA_DIR or {data_dir_default()})")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="architecture preset; 'small' is the deployable 28x28/32x32 SqueezeNet")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a SqueezeNetConfig field, e.g. --set bypass=complex --set base_e=48")
    p.add_argument("--input-size", type=int, default=None,
                   help="image side for an image folder (IDX and CIFAR use their native size)")
    p.add_argument("--channels", type=int, default=None, help="1 (grayscale) or 3 (RGB) for an image folder")
    p.add_argument("--val-fraction", type=float, default=1 / 12, help="share of the training set held out")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images (smoke runs)")
    p.add_argument("--out", default=contract.stage_dir("model"), help="output directory")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this float checkpoint's weights and architecture (fine-tuning); "
                        "its normalisation is kept")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation at the end")
    add_training_arguments(p, TrainSettings(head_leak=HEAD_LEAK), head_leak=True,
                           teacher_help="a trained float checkpoint (e.g. a wider SqueezeNet) that teaches "
                                        "this one; needs --kd-alpha > 0")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    if bool(args.teacher) != (settings.kd_alpha > 0):
        raise UserError("distillation needs both --teacher CHECKPOINT and --kd-alpha > 0")
    with runtime(args.device) as rt:
        return train(args, settings, rt, argv)


def train(args, settings: TrainSettings, rt: Runtime, argv: list[str] | None) -> int:
    out = Path(args.out)
    full = load_dataset(args.dataset, "train", args.data_dir, args.input_size, args.channels)
    # The test split too, before the first epoch: an empty or unreadable split, or one with other classes,
    # is refused now rather than after the training has replaced <out>/model.pt.
    test = load_dataset(args.dataset, "test", args.data_dir, args.input_size, args.channels)
    if list(test.classes) != list(full.classes):
        raise UserError(f"the test split's classes {list(test.classes)} differ from the training split's "
                        f"{list(full.classes)}")
    if args.limit:
        full = full.subset(slice(0, args.limit))
    train_set, val = train_val_split(full, args.val_fraction, args.seed)
    if args.init:
        from .evaluate import load_float_model

        start = load_float_model(args.init)
        model, cfg, norm = start.model, start.config, start.normalization
        if cfg.num_classes != len(full.classes) or norm.channels != full.images.shape[1]:
            raise UserError(f"{args.init} was trained for {cfg.num_classes} classes / {norm.channels} channels; "
                            f"this data set has {len(full.classes)} / {full.images.shape[1]}")
    else:
        norm = Normalization.fit(train_set.images)
        cfg = _config_for(args, full.images.shape, len(full.classes))
        check_tflite_exactness(cfg)  # a size the Pi's int8 model cannot reproduce: refused before training
        seed_everything(args.seed)  # the initial weights are part of the run: make them reproducible
        model = SqueezeNet(cfg)
    teacher, run_key = None, {}
    if args.teacher:
        teacher = load_teacher(args.teacher, full.classes, cfg.in_channels, cfg.input_size)
        run_key = {"teacher_sha256": sha256_of(args.teacher)}
    params = count_parameters(model)
    macs = count_macs(model, (cfg.in_channels, cfg.input_size, cfg.input_size))
    rt.log(f"SqueezeNet '{args.preset}': {params:,} parameters, {macs / 1e6:.2f} M MACs per image; "
           f"{len(train_set):,} train / {len(val):,} val images of {args.dataset}; on {rt.device}"
           + (f" x {rt.world_size} processes" if rt.distributed else ""))
    steps = math.ceil(len(train_set) / settings.batch_size)
    if steps < FEW_STEPS_PER_EPOCH and rt.is_main:
        print(f"warning: {len(train_set):,} training images at batch {settings.batch_size} make {steps} optimizer "
              f"step(s) per epoch, {steps * settings.epochs} in all (the recipes were tuned on 55,000 images, "
              f"hundreds of steps per epoch); a smaller --batch-size or more --epochs give it more", file=sys.stderr)

    t0 = time.time()
    result = fit(model, train_set, val, norm, settings, out / "last.pt", resume=args.resume, runtime=rt,
                 teacher=teacher, run_key=run_key)
    if not rt.is_main:
        return 0 if result.finished else STOPPED_EXIT_CODE
    if not result.finished:
        print(f"stopped after epoch {len(result.history)} of {settings.epochs} (--time-limit); "
              f"{out / 'last.pt'} holds the run: add --resume to finish it")
        return STOPPED_EXIT_CODE
    per_class, lost = class_health(predict_logits(model, val, norm), val.labels, list(full.classes))
    print("validation accuracy per class: " + ", ".join(
        f"{name} {acc:.1%}" if acc is not None else f"{name} (no images)" for name, acc in per_class.items()))
    for line in lost:
        print(f"warning: {line}", file=sys.stderr)
    command = "python -m model.train " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {"command": command, "train_seconds": round(result.seconds, 1),
            "wall_seconds_this_run": round(time.time() - t0, 1),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
            "device": result.device, "processes": result.world_size, "bf16_autocast": result.amp,
            "teacher": {"checkpoint": str(args.teacher), **run_key} if teacher else None,
            "history": [vars(h) for h in result.history], "params": params, "macs": macs,
            "dataset": args.dataset, "val_per_class": per_class, "lost_classes": lost}
    checkpoint = out / "model.pt"
    save_checkpoint(checkpoint, model.state_dict(), kind="float", config=cfg.to_dict(),
                    normalization=norm.to_dict(), classes=list(full.classes), meta=meta,
                    data=data_identity(args.dataset, args.data_dir, full.classes, norm))
    print(f"wrote {checkpoint}")
    if not args.no_eval:
        report = evaluate_checkpoint(checkpoint, args.dataset, args.data_dir, out)
        print(f"test top-1 {report['top1']:.4f} on {report['samples']:,} images")
    return 0


def _config_for(args, shape, num_classes: int) -> SqueezeNetConfig:
    _, channels, size, _ = shape
    overrides = parse_overrides(args.overrides)
    preset = PRESETS[args.preset]
    if args.preset == "small":
        cfg = preset(input_size=size, in_channels=channels, num_classes=num_classes)
    else:
        cfg = preset(num_classes=num_classes, in_channels=channels).replace(input_size=size)
    return cfg.replace(**overrides) if overrides else cfg


if __name__ == "__main__":
    run_cli(main)
