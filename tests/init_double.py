"""TEST DOUBLE of the init system (systemd) for the stand-in Pis: ``systemctl`` and ``journalctl`` scripts.

Why a double: the loopback "Pis" are sshd processes on this machine, which runs no systemd (and the tests
must not install a real service here), yet the fleet's service path has to be tested for real: a deploy
restarts the service, the service then runs the new release's app, and the health check reads the unit's
state, its main process and its journal. These scripts give rpi/remote.py the systemd answers it asks for,
and they really start and stop the unit's ExecStart process, so the app that runs is the real app.

What they do (the subset rpi/remote.py uses, same command lines and output as systemd's tools):
  systemctl is-system-running                 -> running
  systemctl daemon-reload | enable U | disable U
  systemctl is-enabled U / is-active U        -> enabled|disabled, active|failed|inactive (exit 0 only for
                                                 enabled / active; a unit without a unit file is an error)
  systemctl restart U | start U | stop U      -> SIGTERM the old main process, start ExecStart (with the
                                                 unit's Environment=) in its own session, a new invocation id
  systemctl show -p MainPID|InvocationID --value U
  journalctl _SYSTEMD_INVOCATION_ID=ID -o cat --no-pager  -> that invocation's stdout and stderr
What they do not do: no cgroups, users, dependencies or Restart=; one unit directory per stand-in Pi.
Each stand-in Pi gets its own copy through sshd's ``SetEnv PATH=...`` (tests/sshd.py ``extra_config``).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

SYSTEMCTL = r'''#!{python}
# TEST DOUBLE of systemd's systemctl, written by tests/init_double.py for a stand-in Pi. Not systemd.
import json, os, shlex, signal, subprocess, sys, time, uuid
STATE, UNITS = {state!r}, {units!r}


def record(unit):
    try:
        with open(os.path.join(STATE, unit + ".json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {{"enabled": False, "pid": 0, "invocation": ""}}


def save(unit, data):
    os.makedirs(STATE, exist_ok=True)
    temporary = os.path.join(STATE, "." + unit + ".tmp")
    with open(temporary, "w") as f:
        json.dump(data, f)
    os.replace(temporary, os.path.join(STATE, unit + ".json"))


def alive(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as f:
            return pid > 0 and f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def unit_file(unit):
    path = os.path.join(UNITS, unit)
    if not os.path.isfile(path):
        print(f"Failed to get unit file state for {{unit}}: No such file or directory", file=sys.stderr)
        sys.exit(1)
    return path


def stop(unit, data):
    pid = data.get("pid", 0)
    if alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)
    data["pid"] = 0


def start(unit, data):
    command, environment = None, dict(os.environ)
    with open(unit_file(unit)) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key == "ExecStart":
                command = shlex.split(value.replace("%%", "%"))
            elif key == "Environment":
                name, _, setting = value.partition("=")
                environment[name] = setting
    invocation = uuid.uuid4().hex
    os.makedirs(os.path.join(STATE, "journal"), exist_ok=True)
    with open(os.path.join(STATE, "journal", invocation), "w") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=environment, start_new_session=True, cwd="/")
    data.update(pid=process.pid, invocation=invocation)


def main(args):
    verb, rest = args[0], args[1:]
    unit = rest[-1] if rest else ""
    if verb == "is-system-running":
        print("running")
    elif verb == "daemon-reload":
        pass
    elif verb in ("enable", "disable"):
        unit_file(unit)
        save(unit, {{**record(unit), "enabled": verb == "enable"}})
    elif verb == "is-enabled":
        unit_file(unit)
        enabled = record(unit)["enabled"]
        print("enabled" if enabled else "disabled")
        return 0 if enabled else 1
    elif verb == "is-active":
        data = record(unit)
        state = "active" if alive(data["pid"]) else "failed" if data["invocation"] else "inactive"
        print(state)
        return 0 if state == "active" else 3
    elif verb in ("restart", "start", "stop"):
        data = record(unit)
        if verb != "start" or not alive(data["pid"]):
            stop(unit, data)
            if verb != "stop":
                start(unit, data)
        save(unit, data)
    elif verb == "show":
        data, prop = record(unit), rest[rest.index("-p") + 1]
        print({{"MainPID": data["pid"] if alive(data["pid"]) else 0, "InvocationID": data["invocation"]}}[prop])
    else:
        print(f"systemctl test double: {{verb}} is not part of the double", file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv[1:]))
'''

JOURNALCTL = r'''#!{python}
# TEST DOUBLE of systemd's journalctl, written by tests/init_double.py for a stand-in Pi. Not systemd.
import os, sys
STATE = {state!r}
for arg in sys.argv[1:]:
    if arg.startswith("_SYSTEMD_INVOCATION_ID="):
        path = os.path.join(STATE, "journal", arg.split("=", 1)[1])
        if os.path.isfile(path):
            sys.stdout.write(open(path).read())
'''


def install(directory: Path) -> dict:
    """Write the double into directory/bin; returns its paths: bin (for PATH), units (--unit-dir), state."""
    paths = {"bin": directory / "bin", "units": directory / "units", "state": directory / "state"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    for name, template in (("systemctl", SYSTEMCTL), ("journalctl", JOURNALCTL)):
        script = paths["bin"] / name
        script.write_text(template.format(python=sys.executable, state=str(paths["state"]), units=str(paths["units"])))
        script.chmod(0o755)
    return paths


def main_pids(state: Path) -> list:
    pids = []
    for record in state.glob("*.json"):
        pid = json.loads(record.read_text()).get("pid", 0)
        if pid:
            pids.append(pid)
    return pids


def stop_services(state: Path) -> None:
    """Stop, by their recorded process group, the services the double started (a test's teardown)."""
    for pid in main_pids(state):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _zombie(pid):
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists() and not _zombie(pid):
            os.killpg(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True
