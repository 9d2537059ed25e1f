"""Shared pieces of the live-view tests and benchmark: an app (or make, or a deploy) that serves, read while it
runs; HTTP on loopback; a client that reads /stream; the listening sockets of a port."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child: SIGINT and SIGQUIT back to their defaults. A shell that starts the suite in the
    background (CI can) makes them ignored, and ignored signals are inherited: then neither Python nor ssh
    would react to the Ctrl-C that ``stop`` stands in for."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class Running:
    """A command in its own session, its output collected by threads, so a test can wait for a line while
    it runs and stop the whole process group (make, ssh, the app) at the end."""

    def __init__(self, argv, **kwargs):
        self.proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal,
                                     **kwargs)
        self.out, self.err = [], []
        self._readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):  # a failed test leaves nothing running
        self.stop(signal.SIGKILL if exc[0] else signal.SIGINT)

    @staticmethod
    def _read(pipe, lines):
        for line in pipe:
            lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None and all(not r.is_alive() for r in self._readers):
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stdout:\n{''.join(self.out)[-3000:]}\n"
                             f"stderr:\n{''.join(self.err)[-3000:]}")

    def stop(self, sig=signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def wait_json(url: str, timeout: float = 60, until=lambda stats: True):
    """GET url until it answers (and ``until`` holds): a tunnel or an app may take a moment to listen."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = get_json(url)
            if until(last):
                return last
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer as expected within {timeout} s (last: {last})")


class StreamReader(threading.Thread):
    """A viewer: reads /stream and keeps the parts' count and the first few JPEGs with their X-Prediction."""

    def __init__(self, url: str, keep: int = 5):
        super().__init__(daemon=True)
        self.url, self.keep, self.jpegs, self.count, self.error, self.done = url, keep, [], 0, None, threading.Event()
        self.predictions = []

    def run(self):
        try:
            with urllib.request.urlopen(self.url, timeout=30) as reply:
                boundary = reply.headers.get_content_type(), reply.headers.get_param("boundary")
                assert boundary[0] == "multipart/x-mixed-replace", boundary
                while not self.done.is_set():
                    headers = {}
                    while (line := reply.readline()) not in (b"\r\n", b""):
                        name, _, value = line.decode().partition(":")
                        headers[name.strip().lower()] = value.strip()
                    if not line:
                        break
                    jpeg = reply.read(int(headers["content-length"]))
                    reply.readline()  # the CRLF after the part
                    self.count += 1
                    if len(self.jpegs) < self.keep:
                        self.jpegs.append(jpeg)
                        self.predictions.append(json.loads(headers["x-prediction"]))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            self.error = exc


def stalled_client(host: str, port: int) -> socket.socket:
    """A viewer that asks for /stream and then never reads a byte."""
    client = socket.create_connection((host, port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return client


def listening_addresses(port: int) -> set:
    """The local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = bytes.fromhex(address)
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def wait_closed(port: int, timeout: float = 30) -> set:
    """Wait until nothing listens on ``port`` (an app ending with its ssh session); what still listens."""
    deadline = time.monotonic() + timeout
    while listening_addresses(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return listening_addresses(port)
