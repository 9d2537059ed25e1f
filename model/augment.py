"""Augmentation and mixing of whole batches, on the batch's device, from seeded generators (a resumed
run draws what the uninterrupted run would have)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .train_settings import TrainSettings


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
