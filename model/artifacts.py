"""Files every stage writes: atomic writes, JSON reports, safe checkpoints, and the CLI error boundary."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

CHECKPOINT_FORMAT = "squeezenet-toolchain/checkpoint-v1"


class UserError(Exception):
    """An error the user can fix (bad input, missing file or tool); printed as one line, exit code 2."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds, so a
    failed or interrupted stage never leaves a half-written artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are ordinary files
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Turn user errors into one line on stderr and exit code 2; Ctrl-C into exit code 130."""
    from .data import DataError
    from .squeezenet import ConfigError

    try:
        code = main(argv)
    except (UserError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
