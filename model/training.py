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

from contract import UserError, atomic_path

from .augment import MixedBatch, augment_batch, mix_batch
from .data import ImageSet, Normalization
from .inference import accuracy, norm_tensors, normalize, predict_logits, to_pixels
from .progress import progress as progress_bar
from .runtime import Runtime, resolve_device
from .train_settings import TrainSettings, epoch_seed, seed_everything

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
    seconds: float = 0.0  # every epoch's time, with validation, across --resume sittings
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
    # The epochs' own times, those of earlier sittings included (a resumed run restores its history): the
    # run's training time, whatever the pauses between --resume calls.
    result.seconds = sum(h.seconds for h in result.history)
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
