"""What a training run computes and how it runs: ``TrainSettings`` (the recipe), its seeds, and the
command-line flags ``python -m model.train`` and ``python -m quantize`` share (each with its own defaults)."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import numpy as np
import torch

from contract import UserError

AUGMENTATIONS = ("crop", "flip")
# Fields that say how a run executes, not what it computes: they may change between a run and its resume.
EXECUTION_FIELDS = ("threads", "amp", "time_limit")


@dataclass
class TrainSettings:
    epochs: int = 30
    batch_size: int = 128  # global: split across the processes of a torchrun
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9, Nesterov)
    lr: float = 3e-3
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine", "poly" (the paper's linear decay) or "constant"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ("crop", "flip")
    crop_padding: int = 2
    random_erasing: float = 0.0  # probability per image (Zhong et al. 2020), 0: off
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing weight, 0: off
    cutmix_alpha: float = 0.0  # 0: off; with mixup as well, each batch picks one of the two
    ema_decay: float = 0.0  # EMA of the weights (evaluated and saved when on), 0: off
    kd_alpha: float = 0.0  # weight of the distillation term (needs a teacher), 0: off
    kd_temperature: float = 2.0
    # Gradient slope of the classifier's ReLU below zero while training (its output is unchanged). 0: the
    # plain ReLU, whose class channel, once negative on every image, never gets a gradient again: a dead
    # class (its logit exactly 0 on every image). > 0 lets such a channel come back.
    head_leak: float = 0.0
    seed: int = 0
    threads: int = 0  # 0: torch's default
    amp: bool = True  # bf16 autocast on CUDA (never on the CPU)
    time_limit: float | None = None  # seconds: stop before an epoch that would end later (resume later)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("epochs, batch size and learning rate must be positive")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "poly", "constant"):
            raise UserError(f"schedule must be cosine, poly or constant, got {self.schedule!r}")
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise UserError(f"unknown augmentation {sorted(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
        for name in ("random_erasing", "kd_alpha", "head_leak"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema decay must be in [0, 1), got {self.ema_decay}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or self.kd_temperature <= 0:
            raise UserError("mixup and cutmix alphas must be >= 0 and the distillation temperature > 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")

    def recipe(self) -> dict:
        """What the run computes (everything but EXECUTION_FIELDS), as plain JSON values."""
        key = asdict(self)
        for name in EXECUTION_FIELDS:
            key.pop(name)
        key["augment"] = list(key["augment"])
        return key


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int | None = None) -> int:
    """A 63-bit seed for one epoch (and one rank): resuming at any epoch replays the same draws."""
    words = [seed, epoch] if rank is None else [seed, epoch, rank, 1]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


STOPPED_EXIT_CODE = 3  # the run stopped at --time-limit; `--resume` finishes it


def add_training_arguments(p, d: TrainSettings, teacher_help: str, amp: bool = True,
                           head_leak: bool = False) -> None:
    """The schedule, recipe and execution flags of ``python -m model.train`` and ``python -m quantize``,
    with ``d``'s values as defaults (so each CLI keeps its own recipe). ``head_leak``: the float model's
    flag (a quantized classifier keeps its quantizer's gradient)."""
    from .runtime import DEVICE_HELP

    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, default=d.epochs, help="epochs over the training split")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global batch: under torchrun each process takes batch-size / processes")
    g.add_argument("--optimizer", choices=("adamw", "sgd"), default=d.optimizer, help="SGD: momentum 0.9, Nesterov")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (the paper's SGD used 0.04)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="decoupled (AdamW) or L2 (SGD) decay")
    g.add_argument("--schedule", choices=("cosine", "poly", "constant"), default=d.schedule,
                   help="learning-rate decay after the warmup")
    g.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warmup")
    g.add_argument("--seed", type=int, default=d.seed, help="seeds the split, the weights and every draw")

    r = p.add_argument_group("recipe", "regularisers and teachers; each is off at its default")
    r.add_argument("--augment", default=",".join(d.augment) or "none",
                   help=f"comma list of {','.join(AUGMENTATIONS)}; 'none' for none")
    r.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="of the hard-label loss")
    r.add_argument("--random-erasing", type=float, default=d.random_erasing, metavar="P",
                   help="erase a random rectangle (2-40%% of the image, random pixels) with probability P")
    r.add_argument("--mixup", type=float, default=d.mixup_alpha, metavar="ALPHA",
                   help="mixup with Beta(ALPHA, ALPHA) weights (0.2 is usual); 0: off")
    r.add_argument("--cutmix", type=float, default=d.cutmix_alpha, metavar="ALPHA",
                   help="CutMix with Beta(ALPHA, ALPHA) areas (1.0 is usual); with --mixup each batch picks "
                        "one of the two at random; 0: off")
    r.add_argument("--ema", type=float, default=d.ema_decay, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999), evaluate and save "
                        "it; 0: off")
    if head_leak:
        r.add_argument("--head-leak", type=float, default=d.head_leak, metavar="SLOPE",
                       help="while training, the classifier's ReLU passes this gradient slope below zero (its "
                            "output stays the ReLU's): a class whose channel went negative on every image "
                            "comes back instead of staying dead; 0: the plain ReLU's gradient")
    r.add_argument("--teacher", default=None, metavar="CHECKPOINT", help=teacher_help)
    r.add_argument("--kd-alpha", type=float, default=d.kd_alpha,
                   help="weight of the distillation loss (0..1; the hard-label loss gets 1 - alpha); "
                        "the teacher sees the same augmented, mixed images as the student; 0: off")
    r.add_argument("--kd-temperature", type=float, default=d.kd_temperature,
                   help="softmax temperature T of the distillation term (scaled by T^2)")

    x = p.add_argument_group("where it runs")
    x.add_argument("--device", default="auto", help=DEVICE_HELP)
    if amp:
        x.add_argument("--amp", action=argparse.BooleanOptionalAction, default=d.amp,
                       help="bf16 autocast on CUDA (ignored on the CPU)")
    x.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: default)")
    x.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop before an epoch that would end later than this, keep <out>/last.pt and exit "
                        f"with status {STOPPED_EXIT_CODE}; --resume continues")
    x.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")


def settings_from_args(args, amp: bool | None = None) -> TrainSettings:
    """The TrainSettings the flags of ``add_training_arguments`` describe (validated)."""
    augment = tuple(a for a in args.augment.split(",") if a and a != "none")
    s = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
                      label_smoothing=args.label_smoothing, augment=augment,
                      random_erasing=args.random_erasing, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
                      ema_decay=args.ema, kd_alpha=args.kd_alpha, kd_temperature=args.kd_temperature,
                      head_leak=getattr(args, "head_leak", 0.0), seed=args.seed, threads=args.threads,
                      amp=getattr(args, "amp", False) if amp is None else amp, time_limit=args.time_limit)
    s.validate()
    return s
