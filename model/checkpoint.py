"""Checkpoints: a dict of tensors plus plain fields, saved atomically and loaded with ``weights_only=True``."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from contract import CHECKPOINT_FORMAT, UserError, atomic_path


def save_checkpoint(path: str | os.PathLike, state_dict: dict, **fields) -> None:
    """A checkpoint is a dict of tensors plus plain JSON-like fields, so ``weights_only=True`` loads it."""
    payload = {"format": CHECKPOINT_FORMAT,
               "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()}}
    payload.update(fields)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load without unpickling arbitrary objects (``weights_only=True``) and check the format tag."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise UserError(f"cannot load checkpoint {path}: {load_failure_reason(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a checkpoint of this toolchain (format tag missing)")
    return payload


def load_failure_reason(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, without torch's advice to retry with
    weights_only=False: a file we cannot load safely is never unpickled, and we never suggest it."""
    advice = ("weights only load failed", "weights_only", "please file an issue", "check the documentation",
              "do it only if")
    kept = []
    for line in str(exc).splitlines():
        line = line.replace("WeightsUnpickler error:", "").strip()
        if line and not any(a in line.lower() for a in advice):
            kept.append(line.rstrip("."))
    reason = "; ".join(kept)
    if not reason or reason.startswith("[Errno"):
        return "the file is damaged or truncated, or not a PyTorch checkpoint"
    return f"the file is damaged or not a checkpoint of this toolchain ({reason}); it is not loaded any other way"
