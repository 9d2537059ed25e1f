"""A real OpenSSH server on 127.0.0.1 as the stand-in Raspberry Pi (pytest fixture ``loopback_pi``).

Its own host key, client key, authorized_keys and config live in a temp dir; it runs in the foreground
(``sshd -D``) on a free port, listens on 127.0.0.1 only, and is stopped by its PID at teardown. The
tests only ever connect to 127.0.0.1.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                "/usr/lib/ssh/sftp-server") if os.path.exists(p)), "internal-sftp")


@dataclass(frozen=True)
class LoopbackPi:
    host: str  # user@127.0.0.1
    port: int
    key: Path
    ssh_opts: str  # what PI_SSH_OPTS would hold
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (bound and released, so nothing took it in between)."""
    return free_port()


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def write_config(directory: Path, port: int, extra: str = "") -> Path:
    config = directory / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {directory / 'host_ed25519'}
AuthorizedKeysFile {directory / 'authorized_keys'}
PidFile {directory / 'sshd.pid'}
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
Subsystem sftp {SFTP_SERVER}
{extra}""")
    return config


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with status {process.returncode}: {process.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")


def start_sshd(directory: Path, extra_config: str = "") -> tuple[subprocess.Popen, LoopbackPi]:
    """``extra_config``: more sshd_config lines, e.g. ``SetEnv PATH=...`` to give the stand-in Pi its own
    programs (the fleet tests' init-system double), or the emulated Pi's ForceCommand."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd is not installed: make setup installs Debian's openssh-server (the rpi tests need it)")
    directory.mkdir(parents=True, exist_ok=True)
    keygen(directory / "host_ed25519")
    keygen(directory / "client_ed25519")
    shutil.copyfile(directory / "client_ed25519.pub", directory / "authorized_keys")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    config = write_config(directory, port, extra_config)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_listening(port, process)
    key = directory / "client_ed25519"
    opts = f"-i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    return process, LoopbackPi(f"{getpass.getuser()}@127.0.0.1", port, key, opts, process.pid)


def stop_sshd(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    process.stderr.close()


@pytest.fixture(scope="module")
def loopback_pi(tmp_path_factory):
    process, pi = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield pi
    finally:
        stop_sshd(process)
