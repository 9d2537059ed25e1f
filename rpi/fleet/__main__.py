"""``python -m rpi.fleet``: roll one release out to a fleet of Raspberry Pis with Ansible.

rollout   build and budget-check the bundle once, then deploy it Pi by Pi: the canary first, then batches
          (--serial, default 1,25%), a health check after every switch (--check, the known-answer test, the
          service), stopping at the first failure (--max-fail-percentage 0); a Pi that fails its health
          check goes back to its previous release, and --rollback-on-failure sends back the Pis this
          rollout updated when it stops (make fleet)
rollback  every Pi on RELEASE (default: the last rollout's) back to the release before it (make fleet-rollback)
status    every Pi's current release, the one before it and its service (make fleet-status)
report    print the last report again (from the step records under --out)

The inventory is a normal Ansible inventory; per Pi: ansible_host, ansible_port, ansible_user,
ansible_ssh_private_key_file, ansible_ssh_common_args, pi_dir (default ~/squeezenet), pi_python (an
interpreter on the Pi with numpy, a TFLite interpreter and cv2; default: a venv the deploy prepares).
The playbooks are in rpi/fleet/ (rollout.yml, rollback.yml, status.yml) for use from your own Ansible.
Writes artifacts/fleet/report.json (rollback.json, status.json) and prints a table. Exit status: 0 when
every Pi ended as asked, 1 when a Pi failed or was not reached, 2 for bad input.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import contract
from contract import run_cli

from ..runtime.errors import RpiError
from .report import REPORTS, read_record, summary_line, table, write_report

FLEET_DIR = Path(__file__).resolve().parent
ROOT = FLEET_DIR.parents[1]
PLAYBOOKS = {"rollout": "rollout.yml", "rollback": "rollback.yml", "status": "status.yml"}


def ansible_playbook() -> str:
    """ansible-playbook from this interpreter's venv (make setup installs the pinned ansible-core), else PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        raise RpiError("ansible-playbook not found: make setup installs ansible-core (pinned in requirements.txt)")
    return found


def check_inventory(inventory: str | None) -> str:
    if not inventory:
        raise RpiError("no inventory given: make fleet INVENTORY=pis.ini (an Ansible inventory of your Pis)")
    if "," not in inventory and not Path(inventory).expanduser().exists():
        raise RpiError(f"the inventory {inventory} does not exist")
    return inventory


def lock(out: Path):
    """One fleet command at a time per output directory (two rollouts would mix their records)."""
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RpiError(f"another fleet command is running on {out} (it holds {out / '.lock'})") from None
    return handle


def run_playbook(kind: str, args, extra: dict) -> int:
    extra = {"fleet_out": str(Path(args.out).resolve()), "fleet_python": sys.executable,
             "fleet_health_wait": str(args.health_wait), "fleet_service": args.service, **extra}
    if args.hosts:
        extra["fleet_hosts"] = args.hosts
    argv = [ansible_playbook(), "-i", args.inventory, str(FLEET_DIR / PLAYBOOKS[kind]), "-e", json.dumps(extra),
            "--forks", str(args.forks)] + ["-v"] * args.verbose
    env = dict(os.environ)
    for key, value in (("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True"),  # a typo in the inventory is an error
                       ("ANSIBLE_LOCALHOST_WARNING", "False"), ("ANSIBLE_DISPLAY_SKIPPED_HOSTS", "False"),
                       ("ANSIBLE_RETRY_FILES_ENABLED", "False")):
        env.setdefault(key, value)
    print(f"ansible-playbook -i {args.inventory} rpi/fleet/{PLAYBOOKS[kind]}", flush=True)
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached ansible-playbook too: let it stop, then report what was done
        return process.wait()


def finish(kind: str, out: Path, playbook_status: int) -> int:
    """Write and print the report, whatever the playbook did; the exit status says whether all went well."""
    try:
        report, path = write_report(out, kind)
    except RpiError:
        if playbook_status != 0:
            raise RpiError(f"ansible-playbook failed (exit status {playbook_status}) before any Pi was "
                           f"touched; its output above says why") from None
        raise
    print()
    print(table(report))
    print(summary_line(report, path), flush=True)
    return 0 if report["ok"] and playbook_status == 0 else 1


def cmd_rollout(args) -> int:
    extra = {"fleet_model": str(Path(args.model).resolve()), "fleet_serial": args.serial,
             "fleet_max_fail_percentage": args.max_fail_percentage,
             "fleet_rollback_on_failure": args.rollback_on_failure, "fleet_work_dir": str(Path(args.work_dir).resolve())}
    if args.budget_bytes is not None:
        extra["fleet_budget_bytes"] = args.budget_bytes
    if not Path(args.model).is_file():
        raise RpiError(f"no model {args.model}: run make export first (or pass --model)")
    return finish("rollout", Path(args.out), run_playbook("rollout", args, extra))


def cmd_rollback(args) -> int:
    release = args.release
    if not release:
        last = read_record(Path(args.out) / REPORTS["rollout"])
        if not last or not last.get("release"):
            raise RpiError(f"no rollout recorded in {Path(args.out) / REPORTS['rollout']}: name the release to roll "
                           f"back from (make fleet-rollback FLEET_RELEASE=...)")
        release = last["release"]
        print(f"rolling back from release {release} (the last rollout's, {Path(args.out) / REPORTS['rollout']})")
    extra = {"fleet_release": release}
    if args.serial:
        extra["fleet_serial"] = args.serial
    return finish("rollback", Path(args.out), run_playbook("rollback", args, extra))


def cmd_status(args) -> int:
    return finish("status", Path(args.out), run_playbook("status", args, {}))


def cmd_report(args) -> int:
    return finish(args.kind, Path(args.out), 0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rpi.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, doc in (("rollout", "one release to every Pi: canary, batches, health check, stop on failure"),
                      ("rollback", "the Pis on RELEASE back to the release before it"),
                      ("status", "every Pi's current release and service"),
                      ("report", "print the last report again")):
        s = sub.add_parser(name, help=doc, description=doc)
        s.add_argument("--out", default=contract.stage_dir("fleet"), help="records and reports (default %(default)s)")
        if name == "report":
            s.add_argument("--kind", choices=tuple(PLAYBOOKS), default="rollout")
            continue
        s.add_argument("-i", "--inventory", default=os.environ.get("INVENTORY"),
                       help="the Ansible inventory of the Pis ($INVENTORY)")
        s.add_argument("--hosts", default=os.environ.get("FLEET_HOSTS") or None,
                       help="an Ansible host pattern within the inventory (default all; $FLEET_HOSTS)")
        s.add_argument("--forks", type=int, default=int(os.environ.get("FLEET_FORKS") or 10),
                       help="Pis handled in parallel within a batch (default 10; $FLEET_FORKS)")
        s.add_argument("--service", default="squeezenet", help="the systemd unit on the Pis (default squeezenet)")
        s.add_argument("--health-wait", type=float, default=float(os.environ.get("FLEET_HEALTH_WAIT") or 30),
                       help="seconds an installed service has to log a prediction (default 30; $FLEET_HEALTH_WAIT)")
        s.add_argument("-v", "--verbose", action="count", default=0, help="ansible-playbook -v (each step's output)")
        if name == "rollout":
            s.add_argument("--model", default=contract.EXPORT_TFLITE_METADATA,
                           help="the export's metadata JSON (its .tflite beside it)")
            s.add_argument("--work-dir", default=contract.stage_dir("rpi"), help="where the bundle is built (%(default)s)")
            s.add_argument("--budget-bytes", type=int, default=None, help="refuse a larger .tflite ($BUDGET_BYTES)")
            s.add_argument("--serial", default=os.environ.get("FLEET_SERIAL") or "1,25%",
                           help="batch sizes, Ansible's serial: the canary, then the rest (default 1,25%%; "
                                "$FLEET_SERIAL)")
            s.add_argument("--max-fail-percentage", type=int,
                           default=int(os.environ.get("FLEET_MAX_FAIL_PERCENTAGE") or 0),
                           help="failed Pis a batch may have before the rollout stops (default 0)")
            s.add_argument("--rollback-on-failure", action="store_true",
                           default=os.environ.get("FLEET_ROLLBACK_ON_FAILURE", "0") not in ("", "0", "false", "no"),
                           help="when the rollout stops, send the Pis it updated back to their previous release "
                                "($FLEET_ROLLBACK_ON_FAILURE=1)")
        if name == "rollback":
            s.add_argument("--release", default=os.environ.get("FLEET_RELEASE") or None,
                           help="roll back the Pis on this release (default: the last rollout's; $FLEET_RELEASE)")
            s.add_argument("--serial", default=None, help="batch sizes (default 100%%: all at once)")
    args = p.parse_args(argv)
    if args.command != "report":
        args.inventory = check_inventory(args.inventory)
        if args.forks < 1:
            p.error("--forks must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handlers = {"rollout": cmd_rollout, "rollback": cmd_rollback, "status": cmd_status}
    if args.command == "report":  # also run by the playbooks' last play, inside a locked command
        return cmd_report(args)
    with lock(Path(args.out)):
        return handlers[args.command](args)


if __name__ == "__main__":
    run_cli(main)
