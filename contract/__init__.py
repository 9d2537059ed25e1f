"""The contract every stage shares: errors and the CLI boundary, atomic writes, sha256, the byte budget,
the artifact names and checkpoint paths, and the format tags of the files that pass between stages.

Standard library only, so the Pi runtime (which has no torch) ships it beside ``rpi/runtime/`` and every
stage, from ``model`` to the Pi, imports the same names from one place: ``import contract`` or
``from contract import UserError``. Nothing re-exports it (a test checks both rules).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

# --- errors and the command-line boundary ----------------------------------------------------------------


class UserError(Exception):
    """An error the user can fix (bad input, missing file or tool); printed as one line, exit code 2."""


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Turn a UserError (and its kinds: RpiError, DataError, ConfigError) into one ``error: ...`` line on
    stderr and exit code 2; Ctrl-C into exit code 130."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    sys.exit(code or 0)


# --- files -----------------------------------------------------------------------------------------------


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


# --- what an output was made from (make's staleness, checked in Python) ----------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def loaded_sources() -> dict[str, str]:
    """{path relative to the repository: sha256} of every repository source file this process imported:
    the code that made an output (virtual environments and the tests left out)."""
    found = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py") or not os.path.isabs(file):
            continue  # a frozen or generated module (some libraries name a relative, made-up file)
        path = Path(file).resolve()
        try:
            rel = path.relative_to(REPO_ROOT)
        except ValueError:
            continue
        if rel.parts[0].startswith(".") or rel.parts[0] == "tests" or not path.is_file():
            continue
        found[rel.as_posix()] = sha256_of(path)
    return dict(sorted(found.items()))


def made_from(inputs: dict[str, str | None], settings: dict) -> dict:
    """The record an output keeps of what made it: each input file's sha256 (by role), the settings, and the
    code (``loaded_sources``). Call it after the work, when every module the work needed is imported."""
    return {"inputs": {role: sha256_of(path) if path else None for role, path in inputs.items()},
            "settings": settings, "code": loaded_sources()}


def why_stale(record: dict | None, inputs: dict[str, str | None], settings: dict) -> str | None:
    """None when ``record`` (``made_from``'s) still describes these inputs, settings and code; else why not."""
    if not isinstance(record, dict) or not {"inputs", "settings", "code"} <= set(record):
        return "it records nothing of what made it"
    for role, path in inputs.items():
        now = sha256_of(path) if path and Path(path).is_file() else None
        if record["inputs"].get(role) != now:
            return f"the {role} {path} changed"
    if record["settings"] != settings:
        changed = sorted(k for k in set(settings) | set(record["settings"])
                         if settings.get(k) != record["settings"].get(k))
        return f"the settings changed ({', '.join(changed)})"
    for rel, digest in record["code"].items():
        path = REPO_ROOT / rel
        if not path.is_file() or sha256_of(path) != digest:
            return f"the code changed ({rel})"
    return None


# --- the byte budget -------------------------------------------------------------------------------------

BUDGET_BYTES = 524_288  # 0.5 MiB: the paper's "0.5 MB" is MiB (1.25M x 4 B = "4.8 MB")
BUDGET_ENV = "BUDGET_BYTES"  # `BUDGET_BYTES=N make ...` applies another budget to every gate


def budget_bytes(explicit: int | None = None) -> int:
    """The byte budget in force: ``explicit`` (a --budget-bytes flag), else $BUDGET_BYTES, else 0.5 MiB."""
    raw = explicit if explicit is not None else (os.environ.get(BUDGET_ENV) or BUDGET_BYTES)
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"{BUDGET_ENV} must be a whole number of bytes, got {raw!r}") from None
    if value <= 0:
        raise UserError(f"the budget must be positive, got {value}")
    return value


# --- bit-width overrides by module name (quantize writes them, fpga's estimator reads them) ---------------


def bits_by_pattern(name: str, overrides: Iterable[tuple[str, int]], default: int) -> int:
    """The bits of module ``name`` under ``overrides``, (fnmatch pattern, bits) pairs: the first pattern
    that matches wins, else ``default``. Case-sensitive, as module names are: quantize's --override and
    --act-override, the checkpoint that records them and fpga's config-only estimate all look up here."""
    for pattern, bits in overrides:
        if fnmatch.fnmatchcase(name, pattern):
            return bits
    return default


def pattern_matches_any(pattern: str, names: Iterable[str]) -> bool:
    """Whether an override pattern names at least one of ``names`` (an override that names nothing is a typo)."""
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


# --- artifact names and checkpoint paths (relative to the repository root) ------------------------------

FLOAT_CHECKPOINT = "model/checkpoints/default.pt"
QUANT_CHECKPOINT = "quantize/checkpoints/default.pt"
# The FPGA default: a narrow SqueezeNet whose folded design fits the PYNQ-Z2's xc7z020 (the default's does
# not). Same builder, same training code; the Makefile's MODEL / FPGA_MODEL choose between the two pairs.
FPGA_FLOAT_CHECKPOINT = "model/checkpoints/pynq_z2.pt"
FPGA_QUANT_CHECKPOINT = "quantize/checkpoints/pynq_z2.pt"
ARTIFACTS = "artifacts"
STAGES = ("model", "quantize", "export", "fpga", "rpi", "budget")
REPORT_NAME = "report.json"  # every stage writes artifacts/<stage>/report.json
TFLITE_NAME = "squeezenet_int8.tflite"
TFLITE_METADATA_NAME = "squeezenet_int8.json"


def stage_dir(stage: str) -> str:
    return f"{ARTIFACTS}/{stage}"


def stage_report(stage: str) -> str:
    return f"{ARTIFACTS}/{stage}/{REPORT_NAME}"


EXPORT_TFLITE = f"{ARTIFACTS}/export/{TFLITE_NAME}"
EXPORT_TFLITE_METADATA = f"{ARTIFACTS}/export/{TFLITE_METADATA_NAME}"
FPGA_REPORT = stage_report("fpga")

# --- format tags of the files that pass between stages ---------------------------------------------------

CHECKPOINT_FORMAT = "squeezenet-toolchain/checkpoint-v1"
METADATA_FORMAT = "squeezenet-tflite/1"  # the .json beside the .tflite: written by export, read on the Pi
