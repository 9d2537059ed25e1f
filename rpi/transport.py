"""ssh transport to a device: run the release manager (rpi/remote.py, piped to the device's python3, so the
code that checks an upload is never part of it), copy files with rsync or scp, activate a release, run
its app with the output streamed here. Nothing in it is about the Pi's model: a later board flow deploys
over the same machinery.

ssh runs with BatchMode=yes (never a password prompt; set up key login with ssh-copy-id) and
StrictHostKeyChecking=accept-new; the user's options come first, so they override both.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .runtime.errors import RpiError

REMOTE_SCRIPT = Path(__file__).resolve().parent / "remote.py"
JSON_PREFIX = "RPI-JSON "


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    ssh_opts: tuple
    pi_dir: str
    device: str = "the Pi"  # how messages name it, and the prefix of its make variables
    env: str = "PI"

    def ssh_argv(self) -> list:
        # The user's options come first: for ssh the first value of an option wins.
        return ["ssh", *self.ssh_opts, "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "StrictHostKeyChecking=accept-new"]

    def where(self) -> str:
        return f"{self.host} port {self.port}"


def ssh_failure(target: Target, stderr: str) -> RpiError:
    """ssh exits 255 for its own failures; turn its last words into one line with a hint."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    said = lines[-1] if lines else "ssh failed without a message"
    if "Permission denied" in said:
        hint = (f"set up key login (ssh-copy-id -p {target.port} {target.host}) or pass the key in "
                f"{target.env}_SSH_OPTS='-i KEY'")
    elif "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        hint = f"{target.device}'s host key is not the one known for it: check ~/.ssh/known_hosts"
    else:
        hint = f"is {target.device} on the network, and are {target.env}_HOST and {target.env}_PORT right?"
    return RpiError(f"cannot ssh to {target.where()}: {said} ({hint})")


class RemoteFailure(RpiError):
    """rpi/remote.py failed on the Pi; ``results`` holds the JSON lines it printed before failing."""

    def __init__(self, message: str, results: list):
        super().__init__(message)
        self.results = results


def remote_python(target: Target, command: list, echo: bool = True) -> list:
    """Run rpi/remote.py COMMAND on the Pi's python3, the script sent on stdin. Its output is passed
    through as it comes (unless not echo); its RPI-JSON result lines are returned, and its error line
    becomes ours (a RemoteFailure that still carries the results)."""
    remote = "python3 - " + shlex.join(command)
    with open(REMOTE_SCRIPT, "rb") as script:
        process = subprocess.Popen([*target.ssh_argv(), target.host, remote], stdin=script,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stderr = []
        reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)
        reader.start()
        results = []
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(JSON_PREFIX):
                results.append(json.loads(line[len(JSON_PREFIX):]))
            elif echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        returncode = process.wait()
        reader.join()
    said = b"".join(stderr).decode(errors="replace")
    if returncode == 255:
        raise ssh_failure(target, said)
    errors = [ln for ln in said.splitlines() if ln.startswith("error: ")]
    if echo:  # the Pi's warnings and tool output pass through; its error line becomes ours
        sys.stderr.writelines(ln + "\n" for ln in said.splitlines() if not ln.startswith("error: "))
    if returncode != 0:
        message = errors[-1].removeprefix("error: ") if errors else f"exit status {returncode}"
        raise RemoteFailure(f"on {target.host}: {message}", results)
    return results


def probe(target: Target, service: str | None = None) -> dict:
    command = ["probe", "--pi-dir", target.pi_dir] + (["--service", service] if service else [])
    results = remote_python(target, command, echo=False)
    if not results:
        raise RpiError(f"{target.host} did not answer the probe (is python3 installed there?)")
    return results[-1]


def send(target: Target, local: Path, parent: str, info: dict, transfer: str) -> str:
    """Copy a file or directory to PARENT/<its name> on the Pi; returns the tool used. rsync when both
    ends have it (a directory is mirrored, --delete), else scp into the parent directory (which never
    nests a directory inside an existing copy of itself)."""
    use_rsync = transfer == "rsync" or (transfer == "auto" and info["rsync"] and shutil.which("rsync"))
    destination = f"{parent}/{local.name}"
    if use_rsync:
        slash = "/" if local.is_dir() else ""
        argv = ["rsync", "-a", "--delete", "-e", shlex.join(target.ssh_argv()), f"{local}{slash}",
                f"{target.host}:{destination}{slash}"]
    else:
        argv = ["scp", "-q", "-r", *target.ssh_opts, "-P", str(target.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=accept-new", str(local), f"{target.host}:{parent}/"]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise RpiError(f"sending {local} with {argv[0]} to {target.host}:{destination} failed: {said} "
                       f"(current is unchanged)")
    return argv[0]


def upload(target: Target, bundle: Path, info: dict, transfer: str) -> None:
    tool = send(target, bundle, f"{info['pi_dir']}/incoming", info, transfer)
    files = [p for p in bundle.rglob("*") if p.is_file()]
    print(f"uploaded {len(files)} files ({sum(p.stat().st_size for p in files):,} bytes) with {tool} to "
          f"{target.host}:{info['pi_dir']}/incoming/{bundle.name}", flush=True)


def stage_source(target: Target, info: dict, source: str | None, transfer: str) -> str | None:
    """A SOURCE that is a file or directory on this machine (a video, a folder of images) is sent to
    PI_DIR/media/ and used from there; anything else (picamera2, 0, a URL, a path on the Pi) is passed on."""
    if not source or not Path(source).expanduser().exists():
        return source
    local = Path(source).expanduser().resolve()
    tool = send(target, local, f"{info['pi_dir']}/media", info, transfer)
    print(f"sent the local source {source} with {tool} to {target.host}:{info['pi_dir']}/media/{local.name}", flush=True)
    return f"{info['pi_dir']}/media/{local.name}"


def activate(target: Target, release: str, manifest_sha: str, python: str | None, service: str) -> dict:
    """Verify, smoke-test and switch on the Pi; returns {before, after, changed, service}."""
    command = ["activate", "--pi-dir", target.pi_dir, "--release", release, "--manifest-sha256", manifest_sha,
               "--service", service]
    results = remote_python(target, command + (["--python", python] if python else []))
    return results[-1] if results else {}


def forward_argv(forward: tuple[int, int] | None) -> list:
    """ssh -L for the live view: this machine's 127.0.0.1:LOCAL to the device's 127.0.0.1:REMOTE, so
    neither end listens beyond loopback; ssh stops at once when it cannot listen on LOCAL."""
    if forward is None:
        return []
    local, remote = forward
    return ["-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local}:127.0.0.1:{remote}"]


def check_local_port(port: int, what: str) -> None:
    """Refuse a local port that something already listens on, before anything is sent."""
    with socket.socket() as probe_socket:
        # as ssh binds its listener: connections of an earlier tunnel in TIME_WAIT do not count
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RpiError(f"cannot forward {what} to port {port} here: {exc.strerror} (choose another with "
                           f"VIEW_PORT=, or --view PORT)") from None


CTRL_C_GRACE_S = 15.0  # how long a Ctrl-C'd app has to finish its frame, close its view and print its summary


def run_through_ctrl_c(argv: list, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run, except that Ctrl-C does not kill the child: the terminal sends SIGINT to the whole
    foreground group, so the app (or ssh -tt, which passes it on) is stopping cleanly already; wait up to
    CTRL_C_GRACE_S for its summary and its exit status, then kill it."""
    with subprocess.Popen(argv, **kwargs) as process:
        try:
            out, err = process.communicate()
        except KeyboardInterrupt:
            try:
                out, err = process.communicate(timeout=CTRL_C_GRACE_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.kill()
                raise KeyboardInterrupt from None
        return subprocess.CompletedProcess(argv, process.returncode, out, err)


def run_app(target: Target, pi_dir: str, app_args: list, forward: tuple[int, int] | None = None) -> int:
    """Run current/run-app on the Pi, its output streamed here. With a terminal, ssh gets one too (-tt),
    so Ctrl-C reaches the app and it prints its summary. ``forward`` (local, remote): the live view's
    tunnel, which lives exactly as long as the app."""
    tty = ["-tt"] if sys.stdin.isatty() and sys.stdout.isatty() else []
    # Without a terminal there is no hangup signal when ssh goes: the app's stdin is a pipe that stays open
    # while this process and ssh live, and --stop-on-eof ends the app (and frees its view's port) with them.
    held = None if tty else os.pipe()
    remote = shlex.join([f"{pi_dir}/current/run-app", *app_args, *([] if tty else ["--stop-on-eof"])])
    try:
        result = run_through_ctrl_c([*target.ssh_argv(), *forward_argv(forward), *tty, target.host, remote],
                                    stdin=None if tty else held[0], stderr=subprocess.PIPE)
    finally:
        for fd in held or ():
            os.close(fd)
    stderr = result.stderr.decode(errors="replace")
    if result.returncode == 255:
        raise ssh_failure(target, stderr)
    sys.stderr.write(stderr)
    return result.returncode


def forward_only(target: Target, forward: tuple[int, int]) -> int:
    """Only the tunnel (ssh -N): to the live view of an app already running there, e.g. the service's."""
    result = subprocess.run([*target.ssh_argv(), *forward_argv(forward), "-N", target.host],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = result.stderr.decode(errors="replace")
    if result.returncode == 255:
        raise ssh_failure(target, stderr)
    sys.stderr.write(stderr)
    return result.returncode
