"""The training loop shared by float training (``model.train``) and QAT (``quantize``).

- **Devices.** The whole uint8 training set is moved to the device once, before the first epoch; batches
  are sliced, augmented and normalised there, so no batch crosses the bus. On CUDA, float training runs
  under bf16 autocast (``amp``); QAT passes ``amp=False`` and runs in full fp32 (TF32 off as well).
- **torchrun.** Under a process group (``model.runtime``) the model is wrapped in DDP, every epoch's order
  is split into one shard per rank (as ``DistributedSampler`` does, padded to equal length), and
  ``batch_size`` is the *global* batch (each rank takes ``batch_size / world_size``), so one recipe gives
  the same number of optimizer steps on 1 or N processes. Rank 0 alone logs and writes ``last.pt``.
- **Resumable.** Every epoch writes ``last.pt`` atomically (model, optimizer, scheduler, EMA, history).
  Every random draw of an epoch (order, augmentation, mixing, dropout) comes from generators seeded by
  (seed, epoch, rank), so a resumed run continues exactly as the uninterrupted run would have.
- **Recipe** (each part off by default): crop + flip, random erasing, mixup / cutmix, label smoothing,
  knowledge distillation from a teacher, EMA of the weights, warmup + cosine (or poly) schedule.

Distillation and mixing compose as follows: the teacher sees exactly the (augmented, mixed) image the
student sees, the hard-label term is the mixed cross-entropy ``lam * CE(y_a) + (1 - lam) * CE(y_b)``
(label smoothing applies to it alone), and the loss is ``(1 - kd_alpha) * hard + kd_alpha * T^2 *
KL(teacher_T || student_T)``.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from .progress import progress as progress_bar

from .artifacts import UserError, atomic_path
from .data import ImageSet, Normalization
from .runtime import Runtime, resolve_device

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


# --- augmentation (whole batches on the batch's device) ---------------------------------------------

def augment_batch(x: torch.Tensor, settings: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """Random shifts (pad + crop), horizontal flips and random erasing, on a whole uint8 batch at once.
    ``gen`` must live on ``x``'s device."""
    n, _, h, w = x.shape
    if "flip" in settings.augment:
        flip = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if "crop" in settings.augment and settings.crop_padding > 0:
        p = settings.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=x.device)
        x = _crop(padded, dy, dx, h, w)
    if settings.random_erasing > 0:
        x = random_erase(x, settings.random_erasing, gen)
    return x


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, c, hp, wp = padded.shape
    rows = (dy[:, None] + torch.arange(h, device=dy.device)[None])  # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=dx.device)[None])  # (n, w)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator, area: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """Random erasing (Zhong et al., the settings of their Fashion-MNIST runs): with probability ``p``
    an image gets one rectangle of ``area`` share of the image and aspect ``ratio`` filled with uniform
    random pixels. A rectangle that would not fit is clipped to the image instead of redrawn."""
    n, c, h, w = x.shape
    dev = x.device
    target = torch.empty(n, device=dev).uniform_(area[0], area[1], generator=gen) * (h * w)
    aspect = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen).exp()
    eh = (target * aspect).sqrt().round().clamp(1, h).long()
    ew = (target / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(n, generator=gen, device=dev) * (h - eh + 1)).floor().long()
    left = (torch.rand(n, generator=gen, device=dev) * (w - ew + 1)).floor().long()
    chosen = torch.rand(n, generator=gen, device=dev) < p
    rows = torch.arange(h, device=dev)[None]
    cols = torch.arange(w, device=dev)[None]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (n, h)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (n, w)
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None])[:, None]  # (n, 1, h, w)
    noise = torch.randint(0, 256, x.shape, generator=gen, device=dev, dtype=torch.uint8)
    return torch.where(mask, noise.to(x.dtype), x)


@dataclass
class MixedBatch:
    """Pixels in [0, 1] and the two label sets they mix: the target is lam * y_a + (1 - lam) * y_b."""
    pixels: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float = 1.0


def mix_batch(pixels: torch.Tensor, y: torch.Tensor, s: TrainSettings, rng: np.random.Generator,
              gen: torch.Generator) -> MixedBatch:
    """Mixup (Zhang et al.) or CutMix (Yun et al.) with a shuffled copy of the batch. The mixing weight
    and the box come from ``rng`` (host), the pairing from ``gen`` (device): nothing waits on the GPU."""
    use = [name for name, alpha in (("mixup", s.mixup_alpha), ("cutmix", s.cutmix_alpha)) if alpha > 0]
    if not use:
        return MixedBatch(pixels, y, y)
    mode = use[0] if len(use) == 1 else ("mixup" if rng.random() < 0.5 else "cutmix")
    perm = torch.randperm(len(y), generator=gen, device=pixels.device)
    if mode == "mixup":
        lam = float(rng.beta(s.mixup_alpha, s.mixup_alpha))
        return MixedBatch(pixels * lam + pixels[perm] * (1.0 - lam), y, y[perm], lam)
    lam = float(rng.beta(s.cutmix_alpha, s.cutmix_alpha))
    h, w = pixels.shape[-2:]
    cut_h, cut_w = int(round(h * math.sqrt(1.0 - lam))), int(round(w * math.sqrt(1.0 - lam)))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    out = pixels.clone()
    out[:, :, y0:y1, x0:x1] = pixels[perm][:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the share of the image that really is y_a's
    return MixedBatch(out, y, y[perm], lam)


# --- model input --------------------------------------------------------------------------------------

def to_pixels(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 255.0


def norm_tensors(norm: Normalization, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(norm.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return mean, std


def normalize(pixels: torch.Tensor, norm: Normalization | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Pixels in [0, 1] -> the model's input. ``norm`` may be ``norm_tensors``' pair, made once per run,
    so a GPU step copies no constants to the device."""
    mean, std = norm if isinstance(norm, tuple) else norm_tensors(norm, pixels.device)
    return (pixels - mean) / std


def to_input(images_u8: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """uint8 images -> the model's input, on the images' device (``Normalization.apply`` in torch)."""
    return normalize(to_pixels(images_u8), norm)


def model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageSet, norm: Normalization, batch_size: int = 500,
                   progress: bool = False, desc: str = "eval") -> np.ndarray:
    """Logits of every image, computed on the model's device, returned as a host array."""
    model.eval()
    device = model_device(model)
    images = torch.from_numpy(data.images)
    outs = []
    for start in progress_bar(range(0, len(data), batch_size), desc=desc, disable=None if progress else True, leave=False):
        batch = images[start:start + batch_size].to(device, non_blocking=True)
        outs.append(model(to_input(batch, norm)).float())
    return torch.cat(outs).cpu().numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def class_health(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[dict, list[str]]:
    """Per-class accuracy, and one warning per class the model has given up on: never predicted, or with
    a logit that is the same on every image (a dead classifier channel)."""
    pred = logits.argmax(1)
    per_class = {name: (float((pred[labels == k] == k).mean()) if (labels == k).any() else None)
                 for k, name in enumerate(classes)}
    warnings = []
    for k, name in enumerate(classes):
        constant = bool(np.ptp(logits[:, k]) == 0)
        if constant or not (pred == k).any():
            why = f"its logit is {logits[0, k]:g} on every image" if constant else "it is never predicted"
            warnings.append(f"class {name!r} is lost on the validation split: {why}; accuracy "
                            f"{(per_class[name] or 0.0):.0%}")
    return per_class, warnings


# --- loss ---------------------------------------------------------------------------------------------

def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged
    over the batch. The T^2 keeps its gradient on the scale of the hard-label loss whatever T is."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


def training_loss(logits: torch.Tensor, batch: MixedBatch, s: TrainSettings,
                  teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Mixed hard-label cross-entropy, blended with distillation when a teacher's logits are given."""
    hard = F.cross_entropy(logits, batch.y_a, label_smoothing=s.label_smoothing)
    if batch.lam < 1.0:
        hard = batch.lam * hard + (1.0 - batch.lam) * F.cross_entropy(logits, batch.y_b,
                                                                       label_smoothing=s.label_smoothing)
    if teacher_logits is None or s.kd_alpha == 0:
        return hard
    soft = distillation_loss(logits, teacher_logits.float(), s.kd_temperature)
    return (1.0 - s.kd_alpha) * hard + s.kd_alpha * soft


@dataclass
class Teacher:
    """A trained float model that teaches the student (distillation), with its own input normalisation."""
    model: nn.Module
    normalization: Normalization


# --- EMA ----------------------------------------------------------------------------------------------

class ModelEma:
    """An exponential moving average of every parameter and floating-point buffer of a model.

    It walks ``parameters()`` and ``buffers()`` rather than ``state_dict()``: a Brevitas quantizer's
    ``state_dict`` may hand out a derived copy of its scale instead of the parameter itself. So the
    learned activation scales (parameters) and BatchNorm statistics are averaged like the weights, the
    weight quantizers' scales follow from the averaged weights, and integer buffers (BatchNorm's batch
    counters) are left alone. The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so a
    short run is not dominated by the starting weights. The copy is taken after QAT calibration, so its
    quantizers are calibrated too."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @staticmethod
    def _floats(module: nn.Module) -> list[torch.Tensor]:
        return [t for t in (*module.parameters(), *module.buffers()) if t.dtype.is_floating_point]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        averages, current = self._floats(self.module), [t.detach() for t in self._floats(model)]
        if hasattr(torch, "_foreach_lerp_"):  # one kernel for all tensors instead of one each (GPU steps)
            torch._foreach_lerp_(averages, current, weight)
        else:
            for avg, now in zip(averages, current):
                avg.lerp_(now, weight)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for avg, target in zip(self._floats(self.module), self._floats(model)):
            target.copy_(avg)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


# --- optimizer and schedule ---------------------------------------------------------------------------

def make_optimizer(model: nn.Module, s: TrainSettings, device: torch.device | None = None) -> torch.optim.Optimizer:
    # No weight decay on biases or on quantizer scale parameters (1-element tensors).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=0.9, nesterov=True)
    fused = device is not None and device.type == "cuda"  # one kernel per step instead of one per tensor
    return torch.optim.AdamW(groups, lr=s.lr, **({"fused": True} if fused else {}))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "poly":
        return max(0.0, 1.0 - progress)
    return 1.0


# --- the loop -----------------------------------------------------------------------------------------

@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float  # of the weights that will be saved (the EMA when EMA is on)
    lr: float
    seconds: float
    val_acc_raw: float | None = None  # of the raw (non-averaged) weights, when EMA is on


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = True  # False: stopped by the time limit; resume to finish
    device: str = "cpu"
    world_size: int = 1
    amp: bool = False


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's order, as ``DistributedSampler`` splits it: padded with the first
    indices to a multiple of the world size, then every world_size-th index from ``rank``."""
    if world_size == 1:
        return order
    per_rank = math.ceil(len(order) / world_size)
    padded = torch.cat([order, order[:per_rank * world_size - len(order)]])
    return padded[rank::world_size]


def fit(model: nn.Module, train: ImageSet, val: ImageSet, norm: Normalization, s: TrainSettings,
        state_path: Path, resume: bool = False, runtime: Runtime | None = None, teacher: Teacher | None = None,
        run_key: dict | None = None) -> FitResult:
    """Train ``model`` in place on ``runtime.device`` (default: CUDA when present). ``state_path``
    (``last.pt``) lets an interrupted run resume; ``run_key`` adds identities (e.g. the teacher's sha256)
    that a resume must match besides the settings. With EMA on, ``model`` ends holding the EMA weights."""
    s.validate()
    with leaky_head(model, s.head_leak):
        return _fit(model, train, val, norm, s, state_path, resume, runtime, teacher, run_key)


def _fit(model: nn.Module, train: ImageSet, val: ImageSet, norm: Normalization, s: TrainSettings,
         state_path: Path, resume: bool, runtime: Runtime | None, teacher: Teacher | None,
         run_key: dict | None) -> FitResult:
    rt = runtime or Runtime(resolve_device("auto"))
    if s.kd_alpha > 0 and teacher is None:
        raise UserError("distillation (kd-alpha > 0) needs a teacher checkpoint")
    if s.batch_size % rt.world_size:
        raise UserError(f"batch size {s.batch_size} (global) must be a multiple of the {rt.world_size} processes")
    if s.threads:
        torch.set_num_threads(s.threads)
    device = rt.device
    amp = s.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size: let cuDNN pick its fastest kernels
        # Full precision means fp32 arithmetic: cuDNN would otherwise run fp32 convolutions in TF32.
        torch.backends.cudnn.allow_tf32 = amp
        torch.backends.cuda.matmul.allow_tf32 = amp
    seed_everything(s.seed)
    model.to(device)
    if teacher is not None:
        teacher.model.to(device).eval().requires_grad_(False)
    optimizer = make_optimizer(model, s, device)
    local_batch = s.batch_size // rt.world_size
    steps_per_epoch = math.ceil(math.ceil(len(train) / rt.world_size) / local_batch)
    total_steps = steps_per_epoch * s.epochs
    warmup = int(s.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, s.schedule))
    result = FitResult(device=str(device), world_size=rt.world_size, amp=amp)
    key = {**s.recipe(), **(run_key or {})}

    state = _load_state(state_path, key, rt) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        kernels = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        for group, chosen in zip(optimizer.param_groups, kernels):  # this device's kernels, not the saver's
            group.update(chosen)
        scheduler.load_state_dict(state["scheduler"])
        result.history = [EpochLog(**h) for h in state["history"]]
        rt.log(f"resuming from {state_path} after epoch {int(state['epoch'])}")
    start_epoch = int(state["epoch"]) if state is not None else 0
    ema = ModelEma(model, s.ema_decay) if s.ema_decay > 0 else None
    if ema is not None and state is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    net = model
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Its constructor broadcasts rank 0's weights and buffers, so every rank starts identical.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    images = torch.from_numpy(train.images).to(device)  # once: every batch below is sliced on the device
    student_norm = norm_tensors(norm, device)
    teacher_norm = norm_tensors(teacher.normalization, device) if teacher and s.kd_alpha > 0 else None
    labels = torch.from_numpy(train.labels).to(device)
    sync_every = 1 if device.type == "cpu" else 50  # reading a GPU value waits for the GPU: rarely
    t_start, last_epoch_seconds = time.time(), 0.0
    for epoch in range(start_epoch, s.epochs):
        if s.time_limit is not None and epoch > start_epoch and \
                _agree(time.time() - t_start + last_epoch_seconds > s.time_limit, rt):
            result.finished = False
            rt.log(f"time limit {s.time_limit:g} s: stopping after epoch {epoch} of {s.epochs}; "
                   f"continue with --resume")
            break
        net.train()
        t0 = time.time()
        torch.manual_seed(epoch_seed(s.seed, epoch, rt.rank))  # dropout, on every device
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch_seed(s.seed, epoch)))
        mine = shard(order, rt.rank, rt.world_size).to(device)
        gen = torch.Generator(device=device).manual_seed(epoch_seed(s.seed, epoch, rt.rank))
        rng = np.random.default_rng(epoch_seed(s.seed, epoch, rt.rank))
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss x images, correct images
        seen = 0
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{s.epochs}", leave=False, mininterval=2.0,
                   disable=None if rt.is_main else True)  # None: a bar on a terminal, quiet in logs
        for step in bar:
            idx = mine[step * local_batch:(step + 1) * local_batch]
            batch = mix_batch(to_pixels(augment_batch(images[idx], s, gen)), labels[idx], s, rng, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(normalize(batch.pixels, student_norm))
                teacher_logits = None
                if teacher_norm is not None:
                    with torch.no_grad():
                        teacher_logits = teacher.model(normalize(batch.pixels, teacher_norm))
            logits = logits.float()
            loss = training_loss(logits, batch, s, teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            pred = logits.detach().argmax(1)
            hits = batch.lam * (pred == batch.y_a).sum() + (1.0 - batch.lam) * (pred == batch.y_b).sum()
            totals += torch.stack([loss.detach().double() * len(idx), hits.double()])
            seen += len(idx)
            if (step + 1) % sync_every == 0 or step + 1 == steps_per_epoch:
                loss_sum, correct = totals.tolist()
                _check_finite(loss_sum, epoch)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        if rt.distributed:
            import torch.distributed as dist

            dist.all_reduce(totals)
            seen *= rt.world_size  # every rank's shard has the same length
            for module in (model, ema.module if ema else None):
                _average_buffers(module, rt)
        loss_sum, correct = totals.tolist()
        _check_finite(loss_sum, epoch)
        log = EpochLog(epoch + 1, loss_sum / seen, correct / seen, float("nan"),
                       optimizer.param_groups[0]["lr"], 0.0)
        if rt.is_main:  # the other ranks go on to the next epoch's first all-reduce and wait there
            log.val_acc = accuracy(predict_logits(ema.module if ema else model, val, norm), val.labels)
            if ema is not None:
                log.val_acc_raw = accuracy(predict_logits(model, val, norm), val.labels)
        log.seconds = last_epoch_seconds = time.time() - t0
        result.history.append(log)
        raw = f" (raw weights {log.val_acc_raw:.4f})" if log.val_acc_raw is not None else ""
        rt.log(f"epoch {log.epoch}/{s.epochs}: loss {log.train_loss:.4f} train {log.train_acc:.4f} "
               f"val {log.val_acc:.4f}{raw} lr {log.lr:.2e} ({log.seconds:.0f} s)")
        if rt.is_main:
            _save_state(state_path, model, optimizer, scheduler, ema, epoch + 1, result.history, key)
    if ema is not None and result.finished:
        ema.copy_to(model)
    result.seconds = time.time() - t_start
    return result


class LeakyGradientReLU(nn.Module):
    """ReLU in the forward pass (bit for bit), a gradient of ``leak`` below zero in the backward pass.

    Stands in for the classifier's ReLU during training only (``leaky_head``): the trained weights are
    those of the plain ReLU network, so nothing downstream (QAT, TFLite, hls4ml) changes.
    """

    def __init__(self, leak: float) -> None:
        super().__init__()
        self.leak = leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        if not self.training:
            return y
        below = self.leak * torch.clamp(x, max=0.0)
        return y + (below - below.detach())  # adds exactly 0, carries the slope


@contextmanager
def leaky_head(model: nn.Module, leak: float) -> Iterator[None]:
    """Swap the classifier's ReLU (``classifier.2``) for ``LeakyGradientReLU(leak)`` while the block runs."""
    if leak <= 0:
        yield
        return
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Sequential) or len(head) < 3 or type(head[2]) is not nn.ReLU:
        raise UserError("head-leak needs a float SqueezeNet (its classifier.2 a plain ReLU)")
    relu = head[2]
    head[2] = LeakyGradientReLU(leak)
    try:
        yield
    finally:
        head[2] = relu


def _check_finite(loss_sum: float, epoch: int) -> None:
    if not math.isfinite(loss_sum):
        raise UserError(f"training diverged (loss {loss_sum}) in epoch {epoch + 1}; lower the learning rate")


def _agree(flag: bool, rt: Runtime) -> bool:
    """True on every rank when it is true on any (ranks must take the same branch around collectives)."""
    if not rt.distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _average_buffers(module: nn.Module | None, rt: Runtime) -> None:
    """Average the BatchNorm statistics over the ranks (DDP keeps rank 0's and lets each rank's last batches
    move its own), so that every rank holds the same buffers and they describe every rank's data."""
    import torch.distributed as dist

    if module is None:
        return
    for buffer in module.buffers():
        if buffer.dtype.is_floating_point:
            dist.all_reduce(buffer)
            buffer.div_(rt.world_size)
        else:
            dist.broadcast(buffer, src=0)


def _to_cpu(obj):
    """Tensors of a (nested) state moved to the CPU, so a GPU run's last.pt resumes anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _save_state(path: Path, model, optimizer, scheduler, ema, epoch: int, history, key: dict) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch,
             "history": [asdict(h) for h in history], "settings": key}
    if ema is not None:
        state["ema"] = ema.state_dict()
    with atomic_path(path) as tmp:
        torch.save(_to_cpu(state), tmp)


def _load_state(path: Path, key: dict, rt: Runtime) -> dict | None:
    """The resume state, when ``path`` holds one (on every rank: the out directory must be shared)."""
    have = path.is_file()
    if rt.distributed and _agree(have, rt) and _agree(not have, rt):
        raise UserError(f"{path} exists for some processes only; resuming a multi-machine run needs its "
                        f"--out directory on a shared file system")
    if not have:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    defaults = TrainSettings().recipe()  # files of older versions lack the newer (default-off) fields
    if {**defaults, **state.get("settings", {})} != {**defaults, **key}:
        raise UserError(f"{path} was written with other training settings; remove it or re-run without --resume")
    return state


# --- the command-line flags both training CLIs share ---------------------------------------------------

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
