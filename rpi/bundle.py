"""The bundle a Pi runs: the ``rpi/runtime/`` folder and the ``contract`` package (the Python files as they
are, and the runtime's pinned requirements), the .tflite and its metadata JSON, and manifest.json with
every file's sha256. What ships is chosen by the layout, not by a list: every file under those two folders
except caches (code, requirements and the live view's page). The release name is a digest of the files,
so the same bundle has the same name on every Pi.

``assemble`` is the same for any device: the FPGA board's bundle (fpga/board/deploy.py) is another
``BundleKind``, with its own folders, model files, launchers and interpreter needs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import contract
from contract import sha256_of
from contract.tflite_model import read_metadata

from .runtime.errors import RpiError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_FOLDERS = ("rpi/runtime", "contract")  # what runs on the Pi: the runtime and the contract it imports
REQUIREMENTS = "rpi/runtime/requirements-pi.txt"
SHIPPED_SUFFIXES = (".py", ".txt", ".html")  # code, pinned requirements, the live view's page
BUNDLE_FORMAT = "squeezenet-rpi-bundle/1"
KEEP_BUNDLES = 5  # bundles kept under <work-dir>/bundles (every deploy, failed or not, builds or reuses one)
RELEASE_DIGITS = 12  # hex digits of the content digest in a release name


@dataclass(frozen=True)
class BundleKind:
    """What a device's bundle is: its format tag, the repository folders (or single files) it ships, the
    requirements file its venv is made from (None: the device brings its interpreter), the launchers the
    release manager writes (None: the Pi's) and the imports the interpreter must have (None: the Pi's)."""
    format: str
    shipped: tuple
    requirements: str | None
    launchers: dict | None = None
    needs: list | None = None


PI = BundleKind(BUNDLE_FORMAT, SHIPPED_FOLDERS, REQUIREMENTS)


def shipped_files(kind: BundleKind = PI) -> dict:
    """{path in the bundle: source}: every file under the kind's folders but bytecode caches."""
    files = {}
    for entry in kind.shipped:
        found = [REPO_ROOT / entry] if (REPO_ROOT / entry).is_file() else sorted((REPO_ROOT / entry).rglob("*"))
        for src in found:
            if src.is_file() and "__pycache__" not in src.parts and src.suffix in SHIPPED_SUFFIXES:
                files[src.relative_to(REPO_ROOT).as_posix()] = src
    return files


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


budget_bytes = contract.budget_bytes  # --budget-bytes, else $BUDGET_BYTES, else 0.5 MiB


def check_budget(tflite: Path, budget: int) -> None:
    size = tflite.stat().st_size
    if size > budget:
        raise RpiError(f"{tflite.name} is {size:,} bytes, over the {budget:,}-byte budget by {size - budget:,} "
                       f"bytes; refusing to deploy (nothing was sent)")


def build_bundle(model_json: str, work_dir: Path, budget: int) -> tuple[Path, str]:
    """Write a bundle to work_dir/bundles/<release>; returns (its directory, the manifest's sha256).
    Refuses an over-budget model before anything is written. The release name is the digest of the
    files, and the manifest holds nothing else, so the same files always give the same bundle."""
    meta = read_metadata(model_json)  # also checks the .tflite against the JSON's sha256
    check_budget(meta.tflite_path, budget)
    model = {meta.tflite_path.name: meta.tflite_path, meta.json_path.name: meta.json_path}
    return assemble(PI, model, meta.json_path.name, work_dir, budget)


def assemble(kind: BundleKind, model: dict, model_name: str, work_dir: Path, budget: int) -> tuple[Path, str]:
    """The bundle of ``kind`` with ``model`` ({name: file}, shipped under model/) in work_dir/bundles/<release>;
    returns (its directory, the manifest's sha256). Complete or absent: built beside and renamed."""
    files = shipped_files(kind)
    files.update({f"model/{name}": src for name, src in model.items()})
    entries = {rel: {"sha256": sha256_of(src), "bytes": src.stat().st_size} for rel, src in sorted(files.items())}
    release = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:RELEASE_DIGITS]
    manifest = {"format": kind.format, "release": release, "model": f"model/{model_name}",
                "requirements": kind.requirements, "files": entries}
    if kind.launchers:
        manifest.update(launchers=kind.launchers, needs=kind.needs)
    bundles = work_dir / "bundles"
    final = bundles / release
    if (final / "manifest.json").is_file():
        try:
            return checked_bundle(final, budget, kind)  # built before from the same files
        except RpiError:
            shutil.rmtree(final, ignore_errors=True)  # damaged here since: build it again
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.", dir=_mkdir(bundles)))
    try:
        for rel, src in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staging / rel)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)
        os.replace(staging, final)  # a bundle directory is complete or absent
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a failed copy leaves nothing
    prune_bundles(bundles, keep=KEEP_BUNDLES)
    return final, sha256_of(final / "manifest.json")


def checked_bundle(bundle: Path, budget: int, kind: BundleKind = PI) -> tuple[Path, str]:
    """A bundle built earlier (``bundle``, or --bundle DIR): every file checked against its manifest, the
    model against the budget. Returns (its directory, the manifest's sha256)."""
    from . import remote

    manifest_path = bundle / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != kind.format or manifest.get("release") != bundle.name:
            raise RpiError(f"{bundle} is not a {kind.format} bundle named after its release")
        sha = sha256_of(manifest_path)
        remote.verify_release(bundle, sha)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise RpiError(f"cannot read the bundle {bundle}: {exc}") from None
    except remote.RemoteError as exc:
        raise RpiError(f"the bundle {bundle} is damaged: {exc}") from None
    for rel in manifest["files"]:
        if rel.endswith(".tflite"):
            check_budget(bundle / rel, budget)
    os.utime(bundle)  # the most recently used bundles are the ones kept
    return bundle, sha


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def prune_bundles(bundles: Path, keep: int) -> None:
    """Keep the `keep` most recently built or used bundles (names are digests: age is the mtime)."""
    found = sorted((p for p in bundles.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime)
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
