"""``python -m tests.bench_fleet``: time fleet rollouts against loopback stand-in Pis (the test setup).

Starts N real sshd "Pis" on 127.0.0.1 (tests/sshd.py, each with the init-system test double on its PATH),
then times, with the exported model: a first rollout (nothing on the Pis), an update to a new release with
the default batches (1, 25%), the same all at once (serial 100%), and fleet-status. Prints one line per
run: wall time of `python -m rpi.fleet`, the report's rollout time, the mean per-Pi deploy time and the
mean `--check` latency, with the load average before it (the stand-ins share this machine's cores).
Only ever connects to 127.0.0.1. Not a test (pytest does not collect it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import init_double
from tests.rpi_helpers import ROOT, model_variant
from tests.sshd import start_sshd, stop_sshd
from tests.test_fleet import StandInPi, write_inventory


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench_fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "artifacts/export/squeezenet_int8.json"),
                   help="the export's metadata JSON (default: artifacts/export, from make export)")
    p.add_argument("--pis", type=int, default=5, help="stand-in Pis (default 5)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_fleet.") as tmp:
        return run(Path(tmp), Path(args.model), args.pis)


def run(tmp: Path, model: Path, count: int) -> int:
    pis, processes = [], []
    home = tmp / "ansible"
    for sub in ("tmp", "cp"):
        (home / sub).mkdir(parents=True)
    (home / "ansible.cfg").write_text("")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ANSIBLE_"))},
           "ANSIBLE_CONFIG": str(home / "ansible.cfg"), "ANSIBLE_HOME": str(home),
           "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
           "ANSIBLE_NOCOLOR": "1"}
    try:
        for i in range(1, count + 1):
            root = tmp / f"pi{i}"
            init = init_double.install(root / "init")
            process, sshd = start_sshd(root / "sshd", extra_config=f"SetEnv PATH={init['bin']}:/usr/local/bin:"
                                                                   f"/usr/bin:/bin:/usr/sbin:/sbin\n")
            processes.append(process)
            pis.append(StandInPi(f"pi{i}", sshd, root / "squeezenet", init))
        inventory = write_inventory(tmp / "pis.ini", pis)
        runs = (("first rollout, serial 1,25%", model, []),
                ("update to a new release, serial 1,25%", model_variant(model, tmp / "v2", "v2"), []),
                ("update to a new release, serial 100%", model_variant(model, tmp / "v3", "v3"), ["--serial", "100%"]),
                ("fleet status", None, None))
        print(f"{count} stand-in Pis on 127.0.0.1, model {model} ({os.cpu_count()} CPU cores here)")
        for label, release_model, extra in runs:
            load = os.getloadavg()[0]
            started = time.monotonic()
            command = (["status", "-i", inventory] if release_model is None else
                       ["rollout", "-i", inventory, "--model", release_model, "--work-dir", tmp / "work", *extra])
            result = subprocess.run([sys.executable, "-m", "rpi.fleet", *map(str, command), "--out", tmp / "fleet"],
                                    cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            if result.returncode != 0:
                print(result.stdout[-3000:], result.stderr[-3000:])
                return 1
            line = f"{label}: {wall:.1f} s wall"
            if release_model is not None:
                report = json.loads((tmp / "fleet" / "report.json").read_text())
                hosts = report["hosts"]
                line += (f", rollout {report['seconds']:.1f} s, deploy {mean(h['deploy_seconds'] for h in hosts):.2f} s "
                         f"a Pi, --check {mean(h['check_ms'] for h in hosts):.0f} ms")
            print(f"{line} (load average {load:.1f} before)", flush=True)
    finally:
        for pi in pis:
            init_double.stop_services(pi.init["state"])
        for process in processes:
            stop_sshd(process)
    return 0


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


if __name__ == "__main__":
    sys.exit(main())
