"""Fleet rollouts with real Ansible (ansible-core) against five stand-in Pis: real sshd processes on 127.0.0.1
(tests/sshd.py), each with its own port, key and PI_DIR, the real rpi.deploy and rpi/remote.py, the real app.

The stand-in Pis run no systemd, so each gets the init-system TEST DOUBLE of tests/init_double.py on its
PATH (sshd's SetEnv): real processes for the service, systemd's command lines and answers. Ansible's own
state (config, home, temp, ssh control paths) stays in the test's temp dir. Only ever connects to 127.0.0.1.
"""
from __future__ import annotations

import base64
import getpass
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests import init_double
from tests.rpi_helpers import ROOT, fashion_frames, model_variant, reference_predictions, write_video
from tests.sshd import LoopbackPi, closed_port, start_sshd, stop_sshd

PIS = 5
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


@dataclass
class StandInPi:
    name: str
    sshd: LoopbackPi
    pi_dir: Path
    init: dict  # the init double's bin, units and state directories

    def current(self) -> str | None:
        link = self.pi_dir / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None


def stand_in_pis(tmp_path: Path, count: int):
    pis, processes = [], []
    try:
        for i in range(1, count + 1):
            root = tmp_path / f"pi{i}"
            init = init_double.install(root / "init")
            path = f"{init['bin']}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            process, sshd = start_sshd(root / "sshd", extra_config=f"SetEnv PATH={path}\n")
            processes.append(process)
            pis.append(StandInPi(f"pi{i}", sshd, root / "squeezenet", init))
        yield pis
    finally:
        for pi in pis:
            init_double.stop_services(pi.init["state"])
        for process in processes:
            stop_sshd(process)


@pytest.fixture
def fleet(tmp_path):
    yield from stand_in_pis(tmp_path, PIS)


@pytest.fixture
def one_pi(tmp_path):
    yield from stand_in_pis(tmp_path, 1)


@pytest.fixture
def ansible_env(tmp_path) -> dict:
    """Ansible's config, home, temp and ssh control paths inside the test's temp dir."""
    home = tmp_path / "ansible"
    for sub in ("tmp", "cp"):
        (home / sub).mkdir(parents=True)
    (home / "ansible.cfg").write_text("")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PI_", "FLEET_", "ANSIBLE_")) and k not in ("BUDGET_BYTES", "INVENTORY")}
    return {**env, "ANSIBLE_CONFIG": str(home / "ansible.cfg"), "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=2s", "ANSIBLE_NOCOLOR": "1"}


def write_inventory(path: Path, pis: list, **overrides) -> Path:
    """An INI inventory of the stand-ins; overrides: {pi name: {variable: value}}."""
    lines = ["[pis]"]
    for pi in pis:
        variables = {"ansible_host": "127.0.0.1", "ansible_port": pi.sshd.port, "ansible_user": getpass.getuser(),
                     "ansible_ssh_private_key_file": pi.sshd.key, "ansible_ssh_common_args": f"'{SSH_COMMON_ARGS}'",
                     "pi_dir": pi.pi_dir, "pi_python": sys.executable, **overrides.get(pi.name, {})}
        lines.append(" ".join([pi.name, *(f"{k}={v}" for k, v in variables.items())]))
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet_run(*args, env, tmp_path, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpi.fleet", *map(str, args), "--out", tmp_path / "fleet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def rollout(model, inventory, env, tmp_path, *more) -> tuple[subprocess.CompletedProcess, dict]:
    result = fleet_run("rollout", "-i", inventory, "--model", model, "--work-dir", tmp_path / "work", *more,
                       env=env, tmp_path=tmp_path)
    report_path = tmp_path / "fleet" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return result, report


def rows(report: dict) -> dict:
    return {row["host"]: row for row in report["hosts"]}


def everyone_on(model, fleet, env, tmp_path) -> str:
    """The starting point of a failure test: every Pi on one release, deployed all at once."""
    result, report = rollout(model, write_inventory(tmp_path / "all.ini", fleet), env, tmp_path, "--serial", "100%")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [pi.current() for pi in fleet] == [report["release"]] * PIS
    return report["release"]


def service_release(pi: StandInPi) -> str | None:
    """The release the (double's) service process runs, read from its command line like remote.py does."""
    state = json.loads((pi.init["state"] / "squeezenet.service.json").read_text())
    cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    return next((Path(a.decode()).name for a in cmdline if Path(a.decode()).parent.name == "releases"), None)


def rpi_deploy(pi: StandInPi, *args, env) -> subprocess.CompletedProcess:
    """python -m rpi.deploy against one stand-in Pi, the way make rpi / rpi-service / rpi-rollback call it."""
    pi_env = {**env, "PI_HOST": pi.sshd.host, "PI_PORT": str(pi.sshd.port), "PI_SSH_OPTS": pi.sshd.ssh_opts,
              "PI_DIR": str(pi.pi_dir)}
    return subprocess.run([sys.executable, "-m", "rpi.deploy", *map(str, args)], cwd=ROOT, env=pi_env,
                          capture_output=True, text=True, timeout=300)


def install_service(pi: StandInPi, source, env) -> subprocess.CompletedProcess:
    """make rpi-service against a stand-in Pi, its unit going to the init double's unit directory."""
    return rpi_deploy(pi, "service", "--unit-dir", pi.init["units"], "--source", source, "--app-args",
                      "--loop --every 5", env=env)


def no_numpy_python(directory: Path) -> Path:
    """A Python on the 'Pi' without numpy: a bare venv (no system site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    assert subprocess.run([python, "-c", "import numpy"], capture_output=True).returncode != 0
    return python


# --- the known answers the export records, and the Pi's known-answer test ---------------------------------

def test_the_export_records_known_answers_that_the_model_gives(tiny_model):
    meta = json.loads(tiny_model.read_text())
    answers = meta["known_answers"]
    assert answers["layout"] == "HWC" and len(answers["images"]) == 10
    height, width, channels = (meta["input"][k] for k in ("height", "width", "channels"))
    frames = []
    for entry in answers["images"]:
        pixels = np.frombuffer(base64.b64decode(entry["pixels"]), np.uint8).reshape(height, width, channels)
        frames.append(np.repeat(pixels, 3, axis=2) if channels == 1 else pixels[:, :, ::-1])  # as BGR frames
        assert entry["label"] == meta["labels"][entry["index"]] and entry["margin_steps"] >= 1
    # an independent path (PIL preprocessing, the interpreter in this process) gives the recorded labels
    assert [label for label, _ in reference_predictions(tiny_model, frames)] == [e["label"] for e in answers["images"]]


def test_the_known_answer_test_passes_and_catches_a_wrong_label(tiny_model, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "rpi.runtime.health", "--model", tiny_model], cwd=ROOT, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert re.match(r"known answers ok: 10/10 images get their recorded label with \S+ \([0-9.]+ ms per image\)",
                    ok.stdout)
    wrong = wrong_known_answers(tiny_model, tmp_path / "wrong")
    bad = subprocess.run([sys.executable, "-m", "rpi.runtime.health", "--model", wrong], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout.startswith("known answers FAILED: 9/10 images")
    outcome = json.loads(bad.stdout.splitlines()[-1].removeprefix("RPI-JSON "))
    assert outcome["passed"] == 9 and len(outcome["wrong"]) == 1


def test_health_is_a_pi_module_without_host_imports():
    code = ("import sys; import rpi.runtime.health; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'PIL', 'model', "
            "'export', 'quantize', 'fpga', 'ansible')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def wrong_known_answers(model_json: Path, directory: Path) -> Path:
    """A release whose first known answer expects another label: what a model that changed since its export
    (or a broken interpreter) looks like to the health check."""
    variant = model_variant(model_json, directory, "wrong-known-answer")
    meta = json.loads(variant.read_text())
    first = meta["known_answers"]["images"][0]
    first["label"] = next(label for label in meta["labels"] if label != first["label"])
    variant.write_text(json.dumps(meta, indent=1) + "\n")
    return variant


# --- one Pi: the service follows the release (make rpi, make rpi-rollback) -----------------------------

@pytest.mark.slow
def test_make_rpi_restarts_the_service_and_rollback_too(one_pi, ansible_env, tiny_model, tmp_path):
    pi = one_pi[0]
    deploy = ("deploy", "--work-dir", tmp_path / "work", "--python", sys.executable, "--no-run", "--model")
    first = rpi_deploy(pi, *deploy, tiny_model, env=ansible_env)
    assert first.returncode == 0, first.stderr
    release = Path(os.readlink(pi.pi_dir / "current")).name
    assert "pi: squeezenet.service is not installed and enabled: nothing to restart (make rpi-service installs it)" \
        in first.stdout
    installed = install_service(pi, write_video(tmp_path / "camera.avi", fashion_frames(10)), ansible_env)
    assert installed.returncode == 0, installed.stderr
    assert service_release(pi) == release

    second = rpi_deploy(pi, *deploy, model_variant(tiny_model, tmp_path / "v2", "v2"), env=ansible_env)
    assert second.returncode == 0, second.stderr
    new = Path(os.readlink(pi.pi_dir / "current")).name
    assert f"pi: restarted squeezenet.service on release {new} (active)" in second.stdout
    assert service_release(pi) == new != release
    health = rpi_deploy(pi, "health", "--release", new, env=ansible_env)
    assert health.returncode == 0, health.stdout + health.stderr
    assert f"pi: squeezenet.service is active on {new} and logging predictions (frame " in health.stdout

    back = rpi_deploy(pi, "rollback", env=ansible_env)
    assert back.returncode == 0, back.stderr
    assert f"pi: restarted squeezenet.service on release {release} (active)" in back.stdout
    assert service_release(pi) == release


# --- rollouts -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_full_rollout_puts_every_pi_on_one_release_and_the_services_follow(fleet, ansible_env, tiny_model, tmp_path):
    inventory = write_inventory(tmp_path / "pis.ini", fleet)
    result, report = rollout(tiny_model, inventory, ansible_env, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first = report["release"]
    assert re.fullmatch(r"[0-9a-f]{12}", first) and report["serial"] == ["1", "25%"]
    assert [pi.current() for pi in fleet] == [first] * PIS
    assert [r["host"] for r in report["hosts"]] == [pi.name for pi in fleet]  # the canary first, inventory order
    assert {r["outcome"] for r in report["hosts"]} == {"updated"} and report["ok"]
    assert all(r["health"].startswith("ok (known answers 10/10, service not installed)") for r in report["hosts"])
    assert all(r["check_ms"] > 0 for r in report["hosts"])
    assert re.search(rf"rollout of release {first}: done: 5 updated in [0-9.]+ s", result.stdout)
    assert re.search(rf"^pi1 +\| - +\| {first} \| updated +\| ok ", result.stdout, re.M)  # the table
    assert len(list((tmp_path / "work" / "bundles").iterdir())) == 1  # built once for the whole fleet

    # the camera service on two Pis (make rpi-service), then a new release: each service is restarted on it
    video = write_video(tmp_path / "camera.avi", fashion_frames(10))
    for pi in (fleet[0], fleet[2]):
        installed = install_service(pi, video, ansible_env)
        assert installed.returncode == 0, installed.stderr
        assert service_release(pi) == first
    second_model = model_variant(tiny_model, tmp_path / "v2", "v2")
    result, report = rollout(second_model, inventory, {**ansible_env, "FLEET_SERIAL": "1,50%"}, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    second = report["release"]
    assert report["serial"] == ["1", "50%"] and "batches 1, 50%" in result.stdout
    assert second != first and [pi.current() for pi in fleet] == [second] * PIS
    by_host = rows(report)
    for name in ("pi1", "pi3"):
        assert by_host[name]["before"] == first and by_host[name]["after"] == second
        assert by_host[name]["health"] == f"ok (known answers 10/10, service active on {second})"
        assert re.match(r"frame \d+: ", by_host[name]["service"]["prediction"])
    assert service_release(fleet[0]) == service_release(fleet[2]) == second

    status = fleet_run("status", "-i", inventory, env=ansible_env, tmp_path=tmp_path)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
    assert f"fleet status: one release everywhere: {second} (5 ok)" in status.stdout
    listed = json.loads((tmp_path / "fleet" / "status.json").read_text())
    assert {r["previous"] for r in listed["hosts"]} == {first}
    assert rows(listed)["pi1"]["service"] == f"active on {second}"

    back = fleet_run("rollback", "-i", inventory, env=ansible_env, tmp_path=tmp_path)
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    assert f"rolling back from release {second} (the last rollout's" in back.stdout
    assert [pi.current() for pi in fleet] == [first] * PIS
    assert service_release(fleet[0]) == service_release(fleet[2]) == first
    rolled = json.loads((tmp_path / "fleet" / "rollback.json").read_text())
    assert {r["outcome"] for r in rolled["hosts"]} == {"rolled back"} and rolled["ok"]
    assert not list((tmp_path / "ansible" / "cp").iterdir())  # no ssh master left behind


@pytest.mark.slow
@pytest.mark.parametrize("rollback_on_failure", [False, True], ids=["stop", "FLEET_ROLLBACK_ON_FAILURE"])
def test_a_pi_without_numpy_stops_the_rollout(fleet, ansible_env, tiny_model, tmp_path, rollback_on_failure):
    first = everyone_on(tiny_model, fleet, ansible_env, tmp_path)
    inventory = write_inventory(tmp_path / "pis.ini", fleet, pi2={"pi_python": no_numpy_python(tmp_path / "bare")})
    env = {**ansible_env, "FLEET_ROLLBACK_ON_FAILURE": "1" if rollback_on_failure else "0"}
    result, report = rollout(model_variant(tiny_model, tmp_path / "v2", "v2"), inventory, env, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    second, by_host = report["release"], rows(report)
    assert "NO MORE HOSTS LEFT" in result.stdout  # Ansible stopped the play
    assert by_host["pi2"]["outcome"] == "failed" and "cannot import numpy" in by_host["pi2"]["reason"]
    assert by_host["pi2"]["before"] == by_host["pi2"]["after"] == first and fleet[1].current() == first
    for pi in fleet[2:]:
        assert by_host[pi.name]["outcome"] == "skipped" and pi.current() == first
        assert not (pi.pi_dir / "incoming").exists() or not list((pi.pi_dir / "incoming").iterdir())
    if rollback_on_failure:
        assert by_host["pi1"]["outcome"] == "rolled back" and by_host["pi1"]["after"] == first
        assert fleet[0].current() == first
        assert f"rollout of release {second}: STOPPED: 1 failed, 1 rolled back, 3 skipped" in result.stdout
    else:
        assert by_host["pi1"]["outcome"] == "updated" and fleet[0].current() == second
        assert f"rollout of release {second}: STOPPED: 1 failed, 3 skipped, 1 updated" in result.stdout
    assert not report["ok"]


@pytest.mark.slow
def test_an_unreachable_pi_stops_the_rollout(fleet, ansible_env, tiny_model, tmp_path):
    inventory = write_inventory(tmp_path / "pis.ini", fleet, pi2={"ansible_port": closed_port()})
    result, report = rollout(tiny_model, inventory, ansible_env, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    by_host = rows(report)
    assert by_host["pi1"]["outcome"] == "updated" and fleet[0].current() == report["release"]
    assert by_host["pi2"]["outcome"] == "failed"
    assert by_host["pi2"]["reason"].startswith("unreachable: cannot ssh to") and "Connection refused" in by_host["pi2"]["reason"]
    for pi in fleet[1:]:
        assert not pi.pi_dir.exists()  # not even probed
    assert [by_host[pi.name]["outcome"] for pi in fleet[2:]] == ["skipped"] * 3


@pytest.mark.slow
def test_a_pi_whose_service_fails_its_health_check_goes_back(fleet, ansible_env, tiny_model, tmp_path):
    """The second Pi's camera service cannot run (its camera, here a video, is missing): after the switch the
    health check finds the service failed, the Pi goes back to its previous release, and the rollout stops."""
    first = everyone_on(tiny_model, fleet, ansible_env, tmp_path)
    installed = install_service(fleet[1], "/nonexistent/camera.avi", ansible_env)
    assert installed.returncode == 0, installed.stderr
    inventory = write_inventory(tmp_path / "pis.ini", fleet)
    result, report = rollout(model_variant(tiny_model, tmp_path / "v2", "v2"), inventory,
                             {**ansible_env, "FLEET_HEALTH_WAIT": "5"}, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    second, by_host = report["release"], rows(report)
    assert by_host["pi1"]["outcome"] == "updated" and fleet[0].current() == second
    pi2 = by_host["pi2"]
    assert pi2["outcome"] == "failed" and pi2["after"] == first and fleet[1].current() == first
    assert pi2["reason"] == f"health check: squeezenet.service is failed, not active; rolled back to {first}"
    assert (fleet[1].pi_dir / "history").read_text().split() == [first]
    assert [pi.current() for pi in fleet[2:]] == [first] * 3


@pytest.mark.slow
def test_a_release_that_fails_its_known_answers_stops_at_the_canary(fleet, ansible_env, tiny_model, tmp_path):
    first = everyone_on(tiny_model, fleet, ansible_env, tmp_path)
    inventory = write_inventory(tmp_path / "pis.ini", fleet)
    result, report = rollout(wrong_known_answers(tiny_model, tmp_path / "bad"), inventory, ansible_env, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    canary = rows(report)["pi1"]
    assert canary["outcome"] == "failed" and canary["after"] == first
    assert canary["reason"] == f"health check: known answers 9/10; rolled back to {first}"
    assert canary["health"].startswith("FAILED: known answers 9/10")
    assert [pi.current() for pi in fleet] == [first] * PIS
    assert [r["outcome"] for r in report["hosts"][1:]] == ["skipped"] * 4


@pytest.mark.slow
def test_the_playbook_runs_from_a_users_own_playbook(one_pi, ansible_env, tiny_model, tmp_path):
    """import_playbook from elsewhere, plain ansible-playbook, no rpi.fleet: the playbook finds the repository,
    deploys, and writes the same report."""
    site = tmp_path / "site" / "site.yml"
    site.parent.mkdir()
    site.write_text(f"- name: the user's own play\n  hosts: localhost\n  gather_facts: false\n  tasks: []\n"
                    f"- ansible.builtin.import_playbook: {ROOT / 'rpi/fleet/rollout.yml'}\n")
    extra = {"fleet_model": str(tiny_model), "fleet_out": str(tmp_path / "fleet"), "fleet_work_dir": str(tmp_path / "work")}
    result = subprocess.run([Path(sys.executable).parent / "ansible-playbook", "-i",
                             write_inventory(tmp_path / "pis.ini", one_pi), site, "-e", json.dumps(extra)],
                            cwd=site.parent, env=ansible_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads((tmp_path / "fleet" / "report.json").read_text())
    assert report["hosts"][0]["outcome"] == "updated" and one_pi[0].current() == report["release"]


def test_an_over_budget_model_is_refused_before_any_pi(fleet, ansible_env, tiny_model, tmp_path):
    inventory = write_inventory(tmp_path / "pis.ini", fleet)
    result, _ = rollout(tiny_model, inventory, {**ansible_env, "BUDGET_BYTES": "1000"}, tmp_path)
    assert result.returncode == 2
    assert "over the 1,000-byte budget" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: ansible-playbook failed (exit status 2) "
                                                              "before any Pi was touched")
    assert not any(pi.pi_dir.exists() for pi in fleet)


def test_make_fleet_needs_an_inventory():
    env = {k: v for k, v in os.environ.items() if k != "INVENTORY"}
    result = subprocess.run(["make", "--no-print-directory", "fleet"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "INVENTORY is not set: make fleet INVENTORY=" in lines[0]


def test_a_missing_inventory_is_one_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rpi.fleet", "status", "-i", tmp_path / "nope.ini"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: the inventory {tmp_path / 'nope.ini'} does not exist"


def test_fleet_help_explains_exactly_the_commands_it_accepts():
    from tests.helpers import check_subcommands_are_documented

    assert set(check_subcommands_are_documented("rpi.fleet")) >= {"rollout", "rollback", "status"}


@pytest.mark.slow
def test_make_fleet_and_make_fleet_status(fleet, ansible_env, tiny_model, tmp_path):
    """The make targets end to end: the budget gate, the rollout, the status (FLEET_OUT keeps it in tmp)."""
    inventory = write_inventory(tmp_path / "pis.ini", fleet)
    args = [f"INVENTORY={inventory}", f"RPI_MODEL={tiny_model}", f"FLEET_OUT={tmp_path / 'fleet'}",
            f"FLEET_ARGS=--work-dir {tmp_path / 'work'}"]
    result = subprocess.run(["make", "--no-print-directory", "fleet", *args], cwd=ROOT, env=ansible_env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    release = json.loads((tmp_path / "fleet" / "report.json").read_text())["release"]
    assert "within the 524,288-byte budget" in result.stdout
    assert f"rollout of release {release}: done: 5 updated" in result.stdout
    status = subprocess.run(["make", "--no-print-directory", "fleet-status", *args[:1], *args[2:3]], cwd=ROOT,
                            env=ansible_env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stdout[-3000:]
    assert f"fleet status: one release everywhere: {release} (5 ok)" in status.stdout
