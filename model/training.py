"""The training loop shared by float training (``model.train``) and QAT (``quantize``).

Resumable: every epoch writes ``last.pt`` atomically (model, optimizer, scheduler, RNG states), and a
re-run with ``--resume`` continues from it.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .artifacts import UserError, atomic_path
from .data import ImageSet, Normalization


@dataclass
class TrainSettings:
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9, Nesterov)
    lr: float = 3e-3
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine", "poly" (the paper's linear decay) or "constant"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ("crop", "flip")
    crop_padding: int = 2
    seed: int = 0
    threads: int = 0  # 0: torch's default

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("epochs, batch size and learning rate must be positive")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "poly", "constant"):
            raise UserError(f"schedule must be cosine, poly or constant, got {self.schedule!r}")
        unknown = set(self.augment) - {"crop", "flip"}
        if unknown:
            raise UserError(f"unknown augmentation {sorted(unknown)}; choose from crop, flip")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment_batch(x: torch.Tensor, settings: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """Random shifts (pad + crop) and horizontal flips, on a whole uint8 batch at once."""
    n, _, h, w = x.shape
    if "flip" in settings.augment:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if "crop" in settings.augment and settings.crop_padding > 0:
        p = settings.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        x = _crop(padded, dy, dx, h, w)
    return x


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c, hp, wp = padded.shape
    rows = (dy[:, None] + torch.arange(h)[None])  # (n, h)
    cols = (dx[:, None] + torch.arange(w)[None])  # (n, w)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def to_input(images_u8: torch.Tensor, norm: Normalization) -> torch.Tensor:
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images_u8.float() / 255.0 - mean) / std


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageSet, norm: Normalization, batch_size: int = 500,
                   progress: bool = False, desc: str = "eval") -> np.ndarray:
    model.eval()
    images = torch.from_numpy(data.images)
    outs = []
    for start in tqdm(range(0, len(data), batch_size), desc=desc, disable=None if progress else True, leave=False):
        outs.append(model(to_input(images[start:start + batch_size], norm)).float())
    return torch.cat(outs).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    # No weight decay on biases or on quantizer scale parameters (1-element tensors).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=s.lr)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "poly":
        return max(0.0, 1.0 - progress)
    return 1.0


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0


def fit(model: nn.Module, train: ImageSet, val: ImageSet, norm: Normalization, s: TrainSettings,
        state_path: Path, resume: bool = False, extra_state: dict | None = None) -> FitResult:
    """Train ``model`` in place. ``state_path`` (``last.pt``) lets an interrupted run resume."""
    s.validate()
    if s.threads:
        torch.set_num_threads(s.threads)
    seed_everything(s.seed)
    optimizer = make_optimizer(model, s)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    total_steps = steps_per_epoch * s.epochs
    warmup = int(s.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, s.schedule))
    gen = torch.Generator().manual_seed(s.seed)
    result, start_epoch = FitResult(), 0

    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("settings") != _settings_key(s):
            raise UserError(f"{state_path} was written with other training settings; remove it or "
                            f"re-run without --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch = int(state["epoch"])
        result.history = [EpochLog(**h) for h in state["history"]]
        print(f"resuming from {state_path} after epoch {start_epoch}")

    images = torch.from_numpy(train.images)
    labels = torch.from_numpy(train.labels)
    t_start = time.time()
    for epoch in range(start_epoch, s.epochs):
        model.train()
        t0 = time.time()
        order = torch.randperm(len(train), generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{s.epochs}", leave=False,
                   mininterval=2.0, disable=None)  # None: a bar on a terminal, quiet in logs
        for step in bar:
            idx = order[step * s.batch_size:(step + 1) * s.batch_size]
            x = to_input(augment_batch(images[idx], s, gen), norm)
            y = labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
            if not torch.isfinite(loss):
                raise UserError(f"training diverged (loss {loss.item()}) in epoch {epoch + 1}; "
                                f"lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        val_acc = accuracy(predict_logits(model, val, norm), val.labels)
        log = EpochLog(epoch + 1, loss_sum / seen, correct / seen, val_acc,
                       optimizer.param_groups[0]["lr"], time.time() - t0)
        result.history.append(log)
        print(f"epoch {log.epoch}/{s.epochs}: loss {log.train_loss:.4f} train {log.train_acc:.4f} "
              f"val {log.val_acc:.4f} lr {log.lr:.2e} ({log.seconds:.0f} s)", flush=True)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                 "torch_rng": torch.get_rng_state(), "epoch": epoch + 1,
                 "history": [asdict(h) for h in result.history], "settings": _settings_key(s)}
        state.update(extra_state or {})
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
    result.seconds = time.time() - t_start
    return result


def _settings_key(s: TrainSettings) -> dict:
    """The settings that must match for a resume to be the same run (threads may differ)."""
    key = asdict(s)
    key.pop("threads")
    key["augment"] = list(key["augment"])
    return key
