"""The model's input and its predictions: uint8 images -> normalised tensors (the one pixel contract on
the host: export, fpga and explore feed their models through ``to_input``), batched logits, accuracy and
per-class health. No training code: the later stages import this, not the training loop."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import ImageSet, Normalization
from .progress import progress as progress_bar


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
