"""The release manager that runs on the Pi: ``python3 - COMMAND ...`` with this file on stdin.

``rpi.deploy`` pipes this file to the Pi's system python3 over ssh instead of running an uploaded copy, so
the code that checks an upload is never part of that upload. Standard library only (Python >= 3.9).

Layout under PI_DIR (default ~/squeezenet):
  incoming/<release>/   uploads in progress or not yet verified; never run from here
  releases/<release>/   verified releases: rpi/ runtime, model/, requirements-pi.txt, manifest.json,
                        run-app (written here at activation: this release's app with its interpreter)
  current -> releases/<release>     switched atomically (a new symlink renamed over the old one)
  venvs/py3.11-<sha>/   one venv per Python version and requirements file, prepared once
  media/                videos or image folders sent along as SOURCE by the host

Commands: probe, activate, rollback, service (see --help of each).
"""
from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

MANIFEST = "manifest.json"
LAUNCHER = "run-app"
JSON_PREFIX = "RPI-JSON "
KEEP_RELEASES = 5
INTERPRETER_CHECK = ("import numpy\ntry:\n    import tflite_runtime.interpreter\nexcept ImportError:\n"
                     "    import ai_edge_litert.interpreter\n")


class RemoteError(Exception):
    """One line for the user; the host prints it as the error of the step."""


def say(message: str) -> None:
    print(f"pi: {message}", flush=True)


# remote.py runs alone on the Pi (piped to its python3), so it keeps its own copy of this helper.
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def layout(pi_dir: str) -> dict:
    root = Path(os.path.expanduser(pi_dir)).resolve()
    return {"root": root, "incoming": root / "incoming", "releases": root / "releases",
            "current": root / "current", "venvs": root / "venvs", "media": root / "media"}


def release_names(paths: dict) -> list:
    if not paths["releases"].is_dir():
        return []
    return sorted(p.name for p in paths["releases"].iterdir() if p.is_dir() and not p.name.startswith("."))


def current_release(paths: dict):
    link = paths["current"]
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


# --- verification ------------------------------------------------------------------------------------

def verify_release(directory: Path, manifest_sha256: str) -> dict:
    """Check the manifest against the sha256 the host computed, then every file against the manifest;
    a missing, changed or unexpected file is an error. Returns the manifest."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise RemoteError(f"{directory} has no {MANIFEST}: the upload is incomplete")
    if sha256_file(manifest_path) != manifest_sha256:
        raise RemoteError(f"{manifest_path} does not match the manifest the host sent (sha256 differs)")
    manifest = json.loads(manifest_path.read_text())
    expected = manifest["files"]
    for relative, entry in sorted(expected.items()):
        path = directory / relative
        if not path.is_file():
            raise RemoteError(f"checksum verification failed: {relative} is missing from the upload")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise RemoteError(f"checksum verification failed: {relative} differs from the host's copy "
                              f"(corrupted or truncated upload)")
    present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
    extra = sorted(present - set(expected) - {MANIFEST, LAUNCHER})
    if extra:
        raise RemoteError(f"checksum verification failed: unexpected file(s) in the upload: {', '.join(extra[:5])}")
    return manifest


# --- interpreter ---------------------------------------------------------------------------------------

def prepare_venv(paths: dict, requirements: Path) -> Path:
    """A venv that sees system site-packages (Pi OS ships picamera2 as an apt package) with the pinned
    requirements, made once per Python version and requirements file and reused by later releases."""
    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}-{sha256_file(requirements)[:12]}"
    venv = paths["venvs"] / tag
    python = venv / "bin" / "python"
    if (venv / ".ready").is_file() and python.exists():
        say(f"venv {venv} is ready (prepared by an earlier deploy)")
        return python
    say(f"preparing venv {venv} once (python {sys.version.split()[0]}, pinned requirements; this can take "
        f"minutes on a Pi)")
    started = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from an interrupted deploy
    venv.parent.mkdir(parents=True, exist_ok=True)
    run_step([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
             "creating the venv failed (on Debian / Pi OS: sudo apt install python3-venv)")
    run_step([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet",
              "-r", str(requirements)],
             "pip could not install the Pi requirements (64-bit Pi OS and network access are needed)")
    check_interpreter(python)
    (venv / ".ready").write_text(f"prepared in {time.monotonic() - started:.0f} s\n")
    say(f"venv ready in {time.monotonic() - started:.0f} s")
    return python


def check_interpreter(python: Path) -> None:
    result = subprocess.run([str(python), "-c", INTERPRETER_CHECK], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemoteError(f"{python} cannot import numpy and a TFLite interpreter: {last}")


def run_step(argv: list, failure: str) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RemoteError(f"{failure} (exit status {result.returncode})")


# The launcher puts its release first on sys.path in place of the working directory, so neither the
# directory the user runs it from nor PYTHONPATH can shadow the release's rpi package.
LAUNCHER_TEMPLATE = """#!/bin/sh
# Written by rpi/remote.py at activation: this release's rpi.app with its interpreter.
# Usage: run-app [rpi.app options], e.g. run-app --source 0 --frames 100 (run-app --help lists them)
here="$(cd "$(dirname "$0")" && pwd -P)"
exec {python} -c 'import sys; sys.path[0] = sys.argv.pop(1); from rpi.app import cli; cli()' \\
    "$here" --model "$here/model" "$@"
"""


def write_launcher(release: Path, python: Path) -> None:
    """run-app resolves its own directory first, so a running app keeps its release even when `current`
    is switched under it."""
    path = release / LAUNCHER
    path.write_text(LAUNCHER_TEMPLATE.format(python=shlex.quote(str(python))))
    path.chmod(0o755)


# --- switching -----------------------------------------------------------------------------------------

def switch_current(paths: dict, release: str) -> None:
    """Point `current` at releases/<release> atomically: a new symlink renamed over the old one (the
    same as ln -s && mv -T), so no reader ever sees a missing or half-written `current`."""
    link = paths["current"]
    if link.exists() and not link.is_symlink():
        raise RemoteError(f"{link} exists and is not a symlink; move it away first")
    temporary = link.with_name(f".current.{os.getpid()}")
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    os.symlink(f"releases/{release}", temporary)
    os.replace(temporary, link)


def prune(paths: dict, keep: int) -> None:
    names = release_names(paths)
    current = current_release(paths)
    for name in names[:-keep] if keep > 0 else []:
        if name != current:
            shutil.rmtree(paths["releases"] / name, ignore_errors=True)


# --- commands ------------------------------------------------------------------------------------------

def cmd_probe(args) -> None:
    paths = layout(args.pi_dir)
    for key in ("incoming", "releases", "media"):
        paths[key].mkdir(parents=True, exist_ok=True)
    info = {"pi_dir": str(paths["root"]), "python": sys.executable,
            "python_version": ".".join(map(str, sys.version_info[:3])), "machine": os.uname().machine,
            "rsync": shutil.which("rsync") is not None, "user": getpass.getuser(),
            "current": current_release(paths), "releases": release_names(paths)}
    print(JSON_PREFIX + json.dumps(info), flush=True)


def cmd_activate(args) -> None:
    paths = layout(args.pi_dir)
    incoming = paths["incoming"] / args.release
    target = paths["releases"] / args.release
    if not incoming.is_dir():
        raise RemoteError(f"no upload {incoming} to activate")
    try:
        manifest = verify_release(incoming, args.manifest_sha256)
        say(f"verified {len(manifest['files'])} files of release {args.release} (sha256)")
        python = Path(args.python) if args.python else prepare_venv(paths, incoming / manifest["requirements"])
        if args.python:
            check_interpreter(python)
            say(f"using the interpreter {python} (no venv)")
        write_launcher(incoming, python)
        check = subprocess.run([str(incoming / LAUNCHER), "--check"], stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            raise RemoteError(f"the new release fails its smoke test (run-app --check exit status {check.returncode})")
        if target.exists():
            raise RemoteError(f"{target} already exists")
        os.replace(incoming, target)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        say(f"removed the upload {incoming}; current is unchanged ({current_release(paths) or 'none'})")
        raise
    previous = current_release(paths)
    switch_current(paths, args.release)
    say(f"current -> releases/{args.release} (was {previous or 'none'})")
    prune(paths, args.keep)


def cmd_rollback(args) -> None:
    paths = layout(args.pi_dir)
    current = current_release(paths)
    if current is None:
        raise RemoteError(f"{paths['current']} does not exist: nothing was deployed to {paths['root']}")
    older = [name for name in release_names(paths) if name < current]
    if not older:
        raise RemoteError(f"no release older than {current} in {paths['releases']} to roll back to")
    switch_current(paths, older[-1])
    say(f"current -> releases/{older[-1]} (rolled back from {current})")


def systemd_unit(paths: dict, user: str, app_args: list) -> str:
    command = " ".join(shlex.quote(a) for a in [str(paths["current"] / LAUNCHER), *app_args]).replace("%", "%%")
    return ("[Unit]\n"
            f"Description=SqueezeNet camera classifier (rpi.app from {paths['current']})\n"
            "After=network-online.target\nWants=network-online.target\n\n"
            "[Service]\nType=simple\n"
            f"User={user}\n"
            f"ExecStart={command}\n"
            "Environment=PYTHONUNBUFFERED=1\n"
            "Restart=on-failure\nRestartSec=5\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def privileged(argv: list) -> list:
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def cmd_service(args) -> None:
    paths = layout(args.pi_dir)
    if current_release(paths) is None:
        raise RemoteError(f"nothing deployed to {paths['root']} yet: run make rpi first")
    unit_path = Path(args.unit_dir) / f"{args.name}.service"
    text = systemd_unit(paths, getpass.getuser(), shlex.split(args.app_args))
    temporary = paths["root"] / f".{args.name}.service.tmp"
    temporary.write_text(text)
    try:
        result = subprocess.run(privileged(["install", "-m", "644", str(temporary), str(unit_path)]),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
    finally:
        temporary.unlink()
    if result.returncode != 0:
        raise RemoteError(f"cannot write {unit_path}: {result.stderr.strip() or 'install failed'} "
                          f"(needs root or passwordless sudo, as Pi OS's first user has)")
    say(f"wrote {unit_path}: ExecStart={paths['current'] / LAUNCHER} {args.app_args}".rstrip())
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        raise RemoteError(f"systemd is not running on this machine: {unit_path} was written but not enabled")
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", f"{args.name}.service"],
                 ["systemctl", "restart", f"{args.name}.service"]):
        run_step(privileged(argv), f"{' '.join(argv)} failed")
    say(f"{args.name}.service enabled and started; it runs {paths['current']} at every boot "
        f"(journalctl -u {args.name} -f shows its output)")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python3 - (rpi/remote.py on the Pi)", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, doc in (("probe", "make PI_DIR, report python, rsync and releases as one JSON line"),
                      ("activate", "verify incoming/RELEASE, prepare its interpreter, smoke-test, switch current"),
                      ("rollback", "switch current to the newest release older than it"),
                      ("service", "install and start a systemd unit that runs current/run-app at boot")):
        s = sub.add_parser(name, help=doc, description=doc)
        s.add_argument("--pi-dir", required=True)
        if name == "activate":
            s.add_argument("--release", required=True)
            s.add_argument("--manifest-sha256", required=True)
            s.add_argument("--python", help="use this interpreter instead of the prepared venv")
            s.add_argument("--keep", type=int, default=KEEP_RELEASES, help="releases kept (default 5)")
        if name == "service":
            s.add_argument("--app-args", default="", help="rpi.app options for the service")
            s.add_argument("--name", default="squeezenet")
            s.add_argument("--unit-dir", default="/etc/systemd/system")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    commands = {"probe": cmd_probe, "activate": cmd_activate, "rollback": cmd_rollback, "service": cmd_service}
    try:
        commands[args.command](args)
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
