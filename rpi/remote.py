"""The release manager that runs on the Pi: ``python3 - COMMAND ...`` with this file on stdin.

``rpi.deploy`` pipes this file to the Pi's system python3 over ssh instead of running an uploaded copy, so
the code that checks an upload is never part of that upload. Standard library only (Python >= 3.9).

Layout under PI_DIR (default ~/squeezenet):
  incoming/<release>/   uploads in progress or not yet verified; never run from here
  releases/<release>/   verified releases: rpi/runtime/ and contract/ (the bundle), model/, manifest.json,
                        run-app and run-health (written here at activation: this release's app and its
                        known-answer test, with its interpreter)
  current -> releases/<release>     switched atomically (a new symlink renamed over the old one)
  history               the releases `current` pointed to, oldest first (what rollback walks back)
  venvs/py3.11-<sha>/   one venv per Python version and requirements file, prepared once
  media/                videos or image folders sent along as SOURCE by the host

A release name is a digest of the bundle's content, so the same bundle has the same name on every Pi.
The systemd service (``service``) follows the release: activate and rollback restart it when it is
installed and enabled.

Commands: probe, activate, rollback, health, service (see --help of each).
"""
from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

MANIFEST = "manifest.json"
LAUNCHER = "run-app"
# What a release's launchers run, written into it at activation. A manifest names its own (the FPGA board's
# release runs fpga.board.runtime); one without "launchers" is a Pi release.
LAUNCHERS = {LAUNCHER: "rpi.runtime.app", "run-health": "rpi.runtime.health"}
# The imports its interpreter must have: each entry is alternatives, one of which must import.
NEEDS = [["numpy"], ["tflite_runtime.interpreter", "ai_edge_litert.interpreter"]]
JSON_PREFIX = "RPI-JSON "
KEEP_RELEASES = 5
HISTORY_LENGTH = 100
SERVICE = "squeezenet"
# `systemctl is-system-running` answers "offline" where systemctl is installed but systemd is not PID 1.
SYSTEMD_UP = ("running", "degraded", "starting", "initializing", "maintenance", "stopping")
PREDICTION_LINE = re.compile(r"^frame \d+: ")  # what rpi.runtime.app prints for a classified frame


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


def launchers_of(manifest: dict) -> dict:
    return manifest.get("launchers") or LAUNCHERS


def interpreter_check(needs: list) -> str:
    """A script that imports one module of each alternative list, or fails with the last ImportError."""
    lines = []
    for alternatives in needs:
        for depth, module in enumerate(alternatives):
            pad = "    " * depth
            lines.append(f"{pad}import {module}" if depth == len(alternatives) - 1 else
                         f"{pad}try:\n{pad}    import {module}\n{pad}except ImportError:")
    return "\n".join(lines) + "\n"


def layout(pi_dir: str) -> dict:
    root = Path(os.path.expanduser(pi_dir)).resolve()
    return {"root": root, "incoming": root / "incoming", "releases": root / "releases",
            "current": root / "current", "history": root / "history", "venvs": root / "venvs",
            "media": root / "media"}


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
    # Python writes its byte-code cache into a release that has run: not part of the content
    present = {str(p.relative_to(directory)) for p in directory.rglob("*")
               if p.is_file() and "__pycache__" not in p.relative_to(directory).parts}
    extra = sorted(present - set(expected) - {MANIFEST, *launchers_of(manifest)})
    if extra:
        raise RemoteError(f"checksum verification failed: unexpected file(s) in the upload: {', '.join(extra[:5])}")
    return manifest


# --- interpreter ---------------------------------------------------------------------------------------

def prepare_venv(paths: dict, requirements: Path, needs: list) -> Path:
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
    check_interpreter(python, needs)
    (venv / ".ready").write_text(f"prepared in {time.monotonic() - started:.0f} s\n")
    say(f"venv ready in {time.monotonic() - started:.0f} s")
    return python


def check_interpreter(python: Path, needs: list) -> None:
    result = subprocess.run([str(python), "-c", interpreter_check(needs)], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        wanted = " and ".join(" or ".join(a) for a in needs)
        raise RemoteError(f"{python} cannot import {wanted}: {last}")


def run_step(argv: list, failure: str) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RemoteError(f"{failure} (exit status {result.returncode})")


# A launcher puts its release first on sys.path in place of the working directory, so neither the
# directory the user runs it from nor PYTHONPATH can shadow the release's rpi package.
LAUNCHER_TEMPLATE = """#!/bin/sh
# Written by rpi/remote.py at activation: this release's {module} with its interpreter.
# Usage: {name} [{module} options] ({name} --help lists them)
here="$(cd "$(dirname "$0")" && pwd -P)"
exec {python} -c 'import sys; sys.path[0] = sys.argv.pop(1); from {module} import cli; cli()' \\
    "$here" --model "$here/model" "$@"
"""


def write_launchers(release: Path, python: Path, launchers: dict) -> None:
    """run-app and run-health resolve their own directory first, so a running app keeps its release even
    when `current` is switched under it. Each is written beside and renamed over, never half-written."""
    for name, module in launchers.items():
        temporary = release / f".{name}.{os.getpid()}"
        temporary.write_text(LAUNCHER_TEMPLATE.format(name=name, module=module, python=shlex.quote(str(python))))
        temporary.chmod(0o755)
        os.replace(temporary, release / name)


# --- switching and history -----------------------------------------------------------------------------

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


def read_history(paths: dict) -> list:
    """The releases `current` pointed to, oldest first, ending with the current one. A PI_DIR deployed
    before the history file existed had time-stamped release names, so their order is the deploy order."""
    current = current_release(paths)
    try:
        stack = paths["history"].read_text().split()
    except FileNotFoundError:
        stack = [name for name in release_names(paths) if current is not None and name <= current]
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # a switch whose history line was never written (power cut in between)
    return stack


def write_history(paths: dict, stack: list) -> None:
    temporary = paths["history"].with_name(f".history.{os.getpid()}")
    temporary.write_text("".join(f"{name}\n" for name in stack[-HISTORY_LENGTH:]))
    os.replace(temporary, paths["history"])


def rollback_target(paths: dict) -> tuple:
    """(the release before the current one that is still on disk, the history once rolled back to it)."""
    stack = read_history(paths)
    current = stack.pop() if stack else None
    while stack and (stack[-1] == current or not (paths["releases"] / stack[-1]).is_dir()):
        stack.pop()
    return (stack[-1] if stack else None), stack


def prune(paths: dict, keep: int) -> None:
    """Keep the current release and the `keep` most recently current ones; remove the other releases."""
    recent = []
    for name in reversed(read_history(paths)):
        if name not in recent:
            recent.append(name)
    names = release_names(paths)
    ranked = [n for n in recent if n in names] + sorted((n for n in names if n not in recent), reverse=True)
    kept = set(ranked[:max(keep, 0)]) | {current_release(paths)}
    for name in names:
        if name not in kept:
            shutil.rmtree(paths["releases"] / name, ignore_errors=True)


# --- the service ---------------------------------------------------------------------------------------

def privileged(argv: list) -> list:
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def systemctl(*args: str) -> str:
    """A systemctl query's answer (its first line), '' when it has none."""
    result = subprocess.run(["systemctl", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60)
    return (result.stdout.strip().splitlines() or [""])[0].strip()


def systemd_running() -> bool:
    """Whether systemd manages this machine: systemctl is installed and its manager answers."""
    if shutil.which("systemctl") is None:
        return False
    try:
        return systemctl("is-system-running") in SYSTEMD_UP
    except (OSError, subprocess.TimeoutExpired):
        return False


def release_of_pid(pid: str):
    """The release a running app belongs to: its launcher passes the release directory on the command line."""
    try:
        argv = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (ValueError, OSError):
        return None
    for arg in argv:
        path = Path(arg.decode(errors="replace"))
        if path.parent.name == "releases":
            return path.name
    return None


def service_info(name: str) -> dict:
    unit = f"{name}.service"
    if not systemd_running():
        return {"unit": unit, "systemd": False, "enabled": False, "state": "no systemd"}
    info = {"unit": unit, "systemd": True, "enabled": systemctl("is-enabled", unit) == "enabled",
            "state": systemctl("is-active", unit) or "unknown"}
    if info["state"] == "active":
        info["release"] = release_of_pid(systemctl("show", "-p", "MainPID", "--value", unit))
    return info


def restart_service(name: str, release: str) -> dict:
    """The service follows the release: restart it when it is installed and enabled; otherwise say why not."""
    info = service_info(name)
    unit = info["unit"]
    if not info["systemd"]:
        say(f"no systemd on this machine: no {unit} to restart")
    elif not info["enabled"]:
        say(f"{unit} is not installed and enabled: nothing to restart (make rpi-service installs it)")
    else:
        result = subprocess.run(privileged(["systemctl", "restart", unit]), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
            raise RemoteError(f"systemctl restart {unit} failed: {said}")
        info.update(restarted=True, state=systemctl("is-active", unit))
        say(f"restarted {unit} on release {release} ({info['state']})")
    return info


def service_predictions(unit: str) -> list:
    """The prediction lines the service's current run (its systemd invocation) wrote to the journal."""
    invocation = systemctl("show", "-p", "InvocationID", "--value", unit)
    if not invocation:
        return []
    result = subprocess.run(privileged(["journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "-o", "cat",
                                        "--no-pager"]), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    return [line for line in result.stdout.splitlines() if PREDICTION_LINE.match(line)]


def check_service(name: str, release: str, wait: float) -> dict:
    """An installed and enabled service must be active, run `release` and log a prediction within `wait`
    seconds; a service that is not installed is not checked."""
    info = service_info(name)
    if not info["enabled"]:
        return info
    deadline = time.monotonic() + wait
    while True:
        info = service_info(name)
        lines = service_predictions(info["unit"]) if info["state"] == "active" else []
        if lines and info.get("release") == release:
            return {**info, "prediction": lines[-1]}
        if info["state"] == "failed" or time.monotonic() > deadline:
            if info["state"] != "active":
                problem = f"{info['unit']} is {info['state']}, not active"
            elif info.get("release") != release:
                problem = f"{info['unit']} runs release {info.get('release')}, not {release}"
            else:
                problem = f"{info['unit']} logged no prediction within {wait:g} s (journalctl -u {name})"
            return {**info, "problem": problem}
        time.sleep(0.5)


# --- commands ------------------------------------------------------------------------------------------

def emit(result: dict) -> None:
    print(JSON_PREFIX + json.dumps(result), flush=True)


def cmd_probe(args) -> None:
    paths = layout(args.pi_dir)
    for key in ("incoming", "releases", "media"):
        paths[key].mkdir(parents=True, exist_ok=True)
    info = {"pi_dir": str(paths["root"]), "python": sys.executable,
            "python_version": ".".join(map(str, sys.version_info[:3])), "machine": os.uname().machine,
            "rsync": shutil.which("rsync") is not None, "user": getpass.getuser(),
            "current": current_release(paths), "releases": release_names(paths),
            "history": read_history(paths)[-KEEP_RELEASES:], "service": service_info(args.service)}
    emit(info)


def prepare_release(paths: dict, args) -> Path:
    """The verified upload, smoke-tested, as releases/<release>. When this Pi has had the release before
    (a release name is its content's digest), the copy in releases/ is checked again and kept, and the
    upload, once verified, is dropped."""
    incoming = paths["incoming"] / args.release
    kept = paths["releases"] / args.release
    if not incoming.is_dir():
        raise RemoteError(f"no upload {incoming} to activate")
    try:
        manifest = verify_release(incoming, args.manifest_sha256)
        say(f"verified {len(manifest['files'])} files of release {args.release} (sha256)")
        directory = incoming
        if kept.is_dir():
            try:
                verify_release(kept, args.manifest_sha256)
                shutil.rmtree(incoming)
                directory = kept
                say(f"release {args.release} is already on this Pi (verified again); reusing it")
            except RemoteError as exc:
                if current_release(paths) == args.release:  # never pull files from under a running release
                    raise RemoteError(f"releases/{args.release} is current and damaged ({exc}): deploy another "
                                      f"release or roll back, then deploy this one again") from None
                say(f"the copy of {args.release} on this Pi is damaged ({exc}); replacing it with the upload")
        if args.python:
            python = Path(args.python)
            check_interpreter(python, manifest.get("needs") or NEEDS)
            say(f"using the interpreter {python} (no venv)")
        elif manifest.get("requirements"):
            python = prepare_venv(paths, directory / manifest["requirements"], manifest.get("needs") or NEEDS)
        else:  # a board image brings its own interpreter (PYNQ's venv): the host names it
            raise RemoteError(f"release {args.release} has no requirements to prepare a venv from: name the "
                              f"interpreter that has {', '.join(' or '.join(a) for a in manifest.get('needs') or NEEDS)}")
        write_launchers(directory, python, launchers_of(manifest))
        check = subprocess.run([str(directory / LAUNCHER), "--check"], stdin=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        said = [ln for ln in check.stderr.splitlines() if ln.strip()]
        sys.stderr.writelines(ln + "\n" for ln in said if not ln.startswith("error: "))  # its warnings pass on
        if check.returncode != 0:
            why = next((ln[len("error: "):] for ln in reversed(said) if ln.startswith("error: ")), None)
            raise RemoteError(f"the new release fails its smoke test (run-app --check exit status {check.returncode}"
                              + (f": {why})" if why else ")"))
        if directory is incoming:
            if kept.exists():  # the damaged copy: out of the way first, so the rename cannot nest
                damaged = kept.with_name(f".{args.release}.damaged.{os.getpid()}")
                os.replace(kept, damaged)
                shutil.rmtree(damaged, ignore_errors=True)
            os.replace(incoming, kept)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        say(f"removed the upload {incoming}; current is unchanged ({current_release(paths) or 'none'})")
        raise
    return kept


def cmd_activate(args) -> None:
    paths = layout(args.pi_dir)
    prepare_release(paths, args)
    previous = current_release(paths)
    result = {"release": args.release, "before": previous, "after": args.release, "changed": False}
    if previous == args.release:
        say(f"current is already releases/{args.release}: nothing to switch")
    else:
        history = read_history(paths)
        switch_current(paths, args.release)
        write_history(paths, history + [args.release])
        say(f"current -> releases/{args.release} (was {previous or 'none'})")
        result["changed"] = True
        try:
            result["service"] = restart_service(args.service, args.release)
        except RemoteError as exc:
            back = f"current is back on {previous}" if previous else "no earlier release to go back to"
            if previous:  # a release the service cannot run is no release: leave the Pi as it was
                switch_current(paths, previous)
                write_history(paths, history)
                try:
                    restart_service(args.service, previous)
                except RemoteError as again:
                    back += f" (and its restart failed too: {again})"
            raise RemoteError(f"{exc}; {back}") from None
    prune(paths, args.keep)
    emit(result)


def cmd_rollback(args) -> None:
    paths = layout(args.pi_dir)
    current = current_release(paths)
    if current is None:
        raise RemoteError(f"{paths['current']} does not exist: nothing was deployed to {paths['root']}")
    result = {"before": current, "after": current, "rolled_back": False}
    if args.only_from and current != args.only_from:
        say(f"current is {current}, not {args.only_from}: left as it is")
        emit({**result, "reason": f"on {current}, not {args.only_from}"})
        return
    target, stack = rollback_target(paths)
    if target is None:
        raise RemoteError(f"no release before {current} in {paths['releases']} to roll back to")
    switch_current(paths, target)
    write_history(paths, stack)
    say(f"current -> releases/{target} (rolled back from {current})")
    result.update(after=target, rolled_back=True)
    try:
        result["service"] = restart_service(args.service, target)
    finally:
        emit(result)


def run_captured(argv: list, timeout: float) -> tuple:
    """(exit status, stdout, stderr, milliseconds) of a command of the release."""
    started = time.monotonic()
    try:
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"no answer within {timeout:g} s", round((time.monotonic() - started) * 1000.0, 1)
    return result.returncode, result.stdout, result.stderr, round((time.monotonic() - started) * 1000.0, 1)


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(JSON_PREFIX)]
    return lines[-1] if lines else ""


def cmd_health(args) -> None:
    """After a switch: the release's smoke test, its known-answer test and, when installed, the service."""
    paths = layout(args.pi_dir)
    current = current_release(paths)
    if current is None:
        raise RemoteError(f"nothing deployed to {paths['root']} yet")
    release, failures = paths["releases"] / current, []
    report = {"release": current}
    if args.release and current != args.release:
        failures.append(f"current is {current}, not {args.release}")
    code, out, err, report["check_ms"] = run_captured([str(release / LAUNCHER), "--check"], args.timeout)
    report["check"] = last_line(out) if code == 0 else last_line(err) or f"exit status {code}"
    if code != 0:
        failures.append(f"run-app --check failed: {report['check']}")
    say(f"check ({report['check_ms']:.0f} ms): {report['check']}")
    code, out, err, report["known_answers_ms"] = run_captured([str(release / "run-health")], args.timeout)
    answers = [json.loads(ln[len(JSON_PREFIX):]) for ln in out.splitlines() if ln.startswith(JSON_PREFIX)]
    report["known_answers"] = answers[-1] if answers else None
    say(last_line(out) or last_line(err) or f"run-health exit status {code}")
    if code != 0:
        failures.append(f"known answers {answers[-1]['passed']}/{answers[-1]['known_answers']}" if answers
                        else f"known-answer test: {last_line(err) or f'exit status {code}'}")
    report["service"] = check_service(args.service, current, args.wait)
    service = report["service"]
    if service.get("problem"):
        failures.append(service["problem"])
    elif service["enabled"]:
        say(f"{service['unit']} is active on {current} and logging predictions ({service['prediction']})")
    else:
        say(f"{service['unit']}: {'not installed' if service['systemd'] else 'no systemd'}, not checked")
    report.update(ok=not failures, failures=failures)
    emit(report)
    if failures:
        raise RemoteError(f"health check of {current} failed: {'; '.join(failures)}")


def systemd_unit(paths: dict, user: str, app_args: list) -> str:
    command = " ".join(shlex.quote(a) for a in [str(paths["current"] / LAUNCHER), *app_args]).replace("%", "%%")
    return ("[Unit]\n"
            f"Description=SqueezeNet camera classifier (rpi.runtime.app from {paths['current']})\n"
            "After=network-online.target\nWants=network-online.target\n\n"
            "[Service]\nType=simple\n"
            f"User={user}\n"
            f"ExecStart={command}\n"
            "Environment=PYTHONUNBUFFERED=1\n"
            "Restart=on-failure\nRestartSec=5\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def cmd_service(args) -> None:
    paths = layout(args.pi_dir)
    if current_release(paths) is None:
        raise RemoteError(f"nothing deployed to {paths['root']} yet: run make rpi first")
    unit_path = Path(args.unit_dir) / f"{args.service}.service"
    text = systemd_unit(paths, getpass.getuser(), shlex.split(args.app_args))
    temporary = paths["root"] / f".{args.service}.service.tmp"
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
    if not systemd_running():
        raise RemoteError(f"systemd is not running on this machine: {unit_path} was written but not enabled")
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", f"{args.service}.service"],
                 ["systemctl", "restart", f"{args.service}.service"]):
        run_step(privileged(argv), f"{' '.join(argv)} failed")
    say(f"{args.service}.service enabled and started; it runs {paths['current']} at every boot and is "
        f"restarted by every deploy and rollback (journalctl -u {args.service} -f shows its output)")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python3 - (rpi/remote.py on the Pi)", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, doc in (("probe", "make PI_DIR, report python, rsync, releases and the service as one JSON line"),
                      ("activate", "verify incoming/RELEASE, prepare its interpreter, smoke-test, switch current, "
                                   "restart the service"),
                      ("rollback", "switch current to the release before it, restart the service"),
                      ("health", "the current release's smoke test, known-answer test and service check"),
                      ("service", "install and start a systemd unit that runs current/run-app at boot")):
        s = sub.add_parser(name, help=doc, description=doc)
        s.add_argument("--pi-dir", required=True)
        s.add_argument("--service", default=SERVICE, help=f"the systemd unit's name (default {SERVICE})")
        if name == "activate":
            s.add_argument("--release", required=True)
            s.add_argument("--manifest-sha256", required=True)
            s.add_argument("--python", help="use this interpreter instead of the prepared venv")
            s.add_argument("--keep", type=int, default=KEEP_RELEASES, help="releases kept (default 5)")
        if name == "rollback":
            s.add_argument("--only-from", metavar="RELEASE", help="roll back only when current is RELEASE")
        if name == "health":
            s.add_argument("--release", help="fail unless current is this release")
            s.add_argument("--wait", type=float, default=30.0,
                           help="seconds the service has to log a prediction (default 30)")
            s.add_argument("--timeout", type=float, default=300.0, help="seconds per test command (default 300)")
        if name == "service":
            s.add_argument("--app-args", default="", help="rpi.runtime.app options for the service")
            s.add_argument("--unit-dir", default="/etc/systemd/system")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    commands = {"probe": cmd_probe, "activate": cmd_activate, "rollback": cmd_rollback, "health": cmd_health,
                "service": cmd_service}
    try:
        commands[args.command](args)
    except RemoteError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
