"""An emulated 64-bit Raspberry Pi OS for the tests: arm64 Debian bookworm under qemu-user, behind a real sshd.

Build, once (``python -m tests.arm64_pi build``, ``make rpi-arm64-root``; about 3 minutes here): Debian's
``debootstrap --arch=arm64 --variant=minbase`` with python3, python3-venv, rsync and ca-certificates (what
Pi OS Lite gives a deploy), its second stage run by ``qemu-aarch64-static`` through binfmt_misc. The root is
kept as a tarball in the cache folder (``$SQUEEZENET_CACHE``, else ``$XDG_CACHE_HOME/squeezenet-edge``, else
``~/.cache/squeezenet-edge``), named by a hash of the recipe, so later runs only unpack it.

Use, per test session: the tarball is unpacked into a temp dir, the host's CA bundle is copied in (pip
inside reaches the package index through the same TLS settings as the host), and a loopback sshd
(tests/sshd.py) runs every login through ``enter-pi``: a private mount namespace (nothing it mounts is
seen by, or left behind on, the host) with ``/proc`` and ``/sys`` mounted read-only, a Pi's
``/proc/cpuinfo`` and ``/sys/devices/system/cpu`` bound over them, then ``chroot`` with a Pi's core:

  pi4   QEMU_CPU=cortex-a72, "Raspberry Pi 4 Model B Rev 1.4", 4 cores at 1.8 GHz
  pi5   QEMU_CPU=cortex-a76, "Raspberry Pi 5 Model B Rev 1.0", 4 cores at 2.4 GHz

Never qemu's default ``max`` CPU: its SME emulation gives wrong int8 results. A Pi's /proc/cpuinfo is
needed, not only tidy: XNNPACK's cpuinfo library crashes (SIGSEGV) on the host's x86 /proc/cpuinfo read
from aarch64, and without /sys it cannot start and the interpreter falls back to its built-in kernels.

Needs root (binfmt_misc, mount namespaces, chroot) and Debian's debootstrap, qemu-user-static and
binfmt-support (``make rpi-arm64-tools``). Where qemu-user cannot run at all, ``unavailable()`` says why in
one line and the tests skip with it. ``python -m tests.arm64_pi serve`` starts both stand-ins and prints
the ``make rpi`` settings for them, for trying things by hand; ``python -m tests.arm64_pi outputs`` compares
the exported model's raw int8 outputs here and on both emulated cores, with XNNPACK and with the built-in
kernels (docs/RESULTS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "rsync", "ca-certificates")
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
RECIPE = f"debootstrap --arch=arm64 --variant={VARIANT} --include={','.join(PACKAGES)} {SUITE}; hostname raspberrypi"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
TOOLS = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static", "unshare": "util-linux",
         "mount": "mount", "chroot": "coreutils", "tar": "tar"}


class PiRootError(Exception):
    """The emulated Pi cannot be built or entered although this machine should allow it."""


@dataclass(frozen=True)
class Board:
    name: str
    qemu_cpu: str
    model: str
    revision: str
    midr: int  # MIDR_EL1 of its cores
    features: str
    max_khz: int
    min_khz: int
    cores: int = 4

    def cpuinfo(self) -> str:
        """/proc/cpuinfo as the Pi's aarch64 kernel prints it."""
        core = (f"BogoMIPS\t: 108.00\nFeatures\t: {self.features}\nCPU implementer\t: 0x{self.midr >> 24:02x}\n"
                f"CPU architecture: 8\nCPU variant\t: 0x{(self.midr >> 20) & 0xF:x}\n"
                f"CPU part\t: 0x{(self.midr >> 4) & 0xFFF:03x}\nCPU revision\t: {self.midr & 0xF}\n\n")
        return ("".join(f"processor\t: {i}\n{core}" for i in range(self.cores))
                + f"Revision\t: {self.revision}\nSerial\t\t: 100000000badc0de\nModel\t\t: {self.model}\n")

    def write_cpu_tree(self, directory: Path) -> None:
        """/sys/devices/system/cpu of a 4-core Pi: what cpuinfo (XNNPACK's CPU probe) and glibc read."""
        last = self.cores - 1
        files = {"possible": f"0-{last}", "present": f"0-{last}", "online": f"0-{last}", "offline": "",
                 "kernel_max": "511"}
        mask = f"{(1 << self.cores) - 1:x}"
        for i in range(self.cores):
            files.update({
                f"cpu{i}/online": "1",
                f"cpu{i}/topology/physical_package_id": "0", f"cpu{i}/topology/cluster_id": "0",
                f"cpu{i}/topology/core_id": str(i),
                f"cpu{i}/topology/core_siblings_list": f"0-{last}", f"cpu{i}/topology/core_siblings": mask,
                f"cpu{i}/topology/package_cpus_list": f"0-{last}", f"cpu{i}/topology/package_cpus": mask,
                f"cpu{i}/topology/cluster_cpus_list": f"0-{last}", f"cpu{i}/topology/cluster_cpus": mask,
                f"cpu{i}/topology/thread_siblings_list": str(i), f"cpu{i}/topology/thread_siblings": f"{1 << i:x}",
                f"cpu{i}/topology/core_cpus_list": str(i), f"cpu{i}/topology/core_cpus": f"{1 << i:x}",
                f"cpu{i}/cpufreq/cpuinfo_max_freq": str(self.max_khz),
                f"cpu{i}/cpufreq/cpuinfo_min_freq": str(self.min_khz),
                f"cpu{i}/cpufreq/scaling_max_freq": str(self.max_khz),
                f"cpu{i}/cpufreq/scaling_min_freq": str(self.min_khz),
                f"cpu{i}/cpufreq/scaling_cur_freq": str(self.max_khz),
                f"cpu{i}/regs/identification/midr_el1": f"0x{self.midr:016x}",
                f"cpu{i}/regs/identification/revidr_el1": "0x0000000000000000",
            })
        for relative, text in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")


BOARDS = {
    "pi4": Board("pi4", "cortex-a72", "Raspberry Pi 4 Model B Rev 1.4", "d03114", 0x410FD083,
                 "fp asimd evtstrm crc32 cpuid", 1_800_000, 600_000),
    "pi5": Board("pi5", "cortex-a76", "Raspberry Pi 5 Model B Rev 1.0", "c04170", 0x414FD0B1,
                 "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                 "asimddp", 2_400_000, 1_500_000),
}


# --- can this machine run it? ---------------------------------------------------------------------------

def cache_dir() -> Path:
    explicit = os.environ.get("SQUEEZENET_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "squeezenet-edge"


def tarball_path() -> Path:
    digest = hashlib.sha256(RECIPE.encode()).hexdigest()[:12]
    return cache_dir() / f"pi-os-arm64-{SUITE}-{digest}.tar.gz"


def missing_tools() -> list[str]:
    """Debian packages to install for the tools that are not on PATH."""
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})


def binfmt_ready() -> str | None:
    """Mount binfmt_misc and enable qemu-user-static's aarch64 entry when needed; None when it is ready,
    else why it cannot be."""
    if not (BINFMT / "status").exists():
        result = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            return f"cannot mount binfmt_misc ({result.stderr.strip() or 'mount failed'})"
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        if shutil.which("update-binfmts"):
            subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        return "binfmt_misc has no enabled qemu-aarch64 entry (update-binfmts --enable qemu-aarch64 failed)"
    if "F" not in next((ln.split()[1] for ln in entry.read_text().splitlines() if ln.startswith("flags:")), ""):
        return "the qemu-aarch64 binfmt entry lacks the F flag, so it cannot run inside a chroot"
    return None


def unavailable() -> str | None:
    """One line saying why this machine cannot run the emulated Pi at all, or None. Missing Debian packages
    are not a reason: they are an error with the command that installs them (PiRootError)."""
    if platform.system() != "Linux":
        return "the emulated Pi needs Linux (binfmt_misc, mount namespaces)"
    if os.geteuid() != 0:
        return "the emulated Pi needs root (binfmt_misc, mount namespaces and chroot); run the tests as root"
    missing = missing_tools()
    if missing:
        raise PiRootError(f"the emulated-Pi tests need {' '.join(missing)}: make rpi-arm64-tools (or "
                          f"apt-get install {' '.join(missing)})")
    probe = subprocess.run(["unshare", "--mount", "--uts", "--propagation", "private", "true"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        return f"cannot make a mount namespace here ({probe.stderr.strip() or 'unshare failed'})"
    return binfmt_ready()


# --- the root ------------------------------------------------------------------------------------------

def build_tarball(log=print) -> Path:
    """debootstrap the arm64 root and keep it as a tarball in the cache (written to a temp name, renamed
    when complete). Returns the tarball."""
    target = tarball_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"building the arm64 Debian {SUITE} root once (about 3 minutes; cached as {target})")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work:
        root, log_file = Path(work) / "root", Path(work) / "debootstrap.log"
        with open(log_file, "w") as out:
            result = subprocess.run(["debootstrap", "--arch=arm64", f"--variant={VARIANT}",
                                     f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
            raise PiRootError(f"debootstrap of the arm64 root failed (exit {result.returncode}): {' / '.join(tail)}")
        (root / "etc/hostname").write_text("raspberrypi\n")
        for cache in (root / "var/cache/apt/archives", root / "var/lib/apt/lists"):
            for path in cache.glob("*"):
                if path.is_file():
                    path.unlink()
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        subprocess.run(["tar", "-czf", str(temporary), "--numeric-owner", "-C", str(root), "."], check=True)
        os.replace(temporary, target)
    log(f"built {target} ({target.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s")
    return target


ENTER_SCRIPT = """#!/bin/sh
# An ssh login of the emulated {model}: run by sshd's ForceCommand inside `unshare --mount --uts`, so these
# mounts and the host name live in the login's own namespaces and vanish with it.
set -eu
root={root}
board={board}
{hostname} raspberrypi  # its own UTS namespace too
{mount} -t proc -o ro,nosuid,nodev,noexec proc "$root/proc"
{mount} --bind "$board/cpuinfo" "$root/proc/cpuinfo"
if [ "${{PI_WITHOUT_SYS:-0}}" != 1 ]; then  # the tests leave /sys out to see XNNPACK fail to start
    {mount} -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
    {mount} --bind "$board/cpu" "$root/sys/devices/system/cpu"
fi
command=${{SSH_ORIGINAL_COMMAND:-exec /bin/bash -l}}
exec {env} -i QEMU_CPU={cpu} {chroot} "$root" /usr/bin/env HOME=/root USER=root LOGNAME=root SHELL=/bin/bash \\
    LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU={cpu} \\
    /bin/bash -c 'cd "$HOME" && exec /bin/bash -c "$1"' login "$command"
"""


@dataclass(frozen=True)
class EmulatedPi:
    board: Board
    root: Path  # the unpacked root, seen from the host
    enter: Path  # the login script

    def run(self, command: str, without_sys: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a shell command inside, as an ssh login would (optionally without /sys)."""
        env = {"SSH_ORIGINAL_COMMAND": command, "PI_WITHOUT_SYS": "1" if without_sys else "0"}
        return subprocess.run(self.login_argv(), env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def login_argv(self) -> list:
        return [shutil.which("unshare"), "--mount", "--uts", "--propagation", "private", str(self.enter)]

    def sshd_config(self) -> str:
        return f"ForceCommand {shlex.join(self.login_argv())}\n"


def unpack(tarball: Path, directory: Path) -> Path:
    root = directory / "root"
    root.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(tarball), "--numeric-owner", "-C", str(root)], check=True)
    if HOST_CA_BUNDLE.is_file():  # pip inside trusts what the host trusts (a TLS proxy's CA included)
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    return root


def board_stand_in(root: Path, board: Board, directory: Path) -> EmulatedPi:
    """The Pi's /proc/cpuinfo and /sys/devices/system/cpu in ``directory``, and its login script."""
    (directory / "cpu").mkdir(parents=True)
    (directory / "cpuinfo").write_text(board.cpuinfo())
    board.write_cpu_tree(directory / "cpu")
    enter = directory / "enter-pi"
    tools = {name: shlex.quote(shutil.which(name) or name) for name in ("mount", "env", "chroot", "hostname")}
    enter.write_text(ENTER_SCRIPT.format(model=board.model, root=shlex.quote(str(root)),
                                         board=shlex.quote(str(directory)), cpu=board.qemu_cpu, **tools))
    enter.chmod(0o755)
    pi = EmulatedPi(board, root, enter)
    check = pi.run("uname -m && python3 -c 'import platform; print(platform.machine())'", timeout=120)
    if check.returncode != 0 or check.stdout.split() != ["aarch64", "aarch64"]:
        said = (check.stderr.strip().splitlines() or [f"exit status {check.returncode}"])[-1]
        raise PiRootError(f"the emulated {board.name} does not run aarch64 programs: {said}")
    return pi


def stand_ins(directory: Path, names=tuple(BOARDS), log=print) -> dict:
    """Unpack the cached root (building it first when missing) and make a stand-in per board; all boards
    share one root, as one SD card moved between a Pi 4 and a Pi 5 would."""
    root = unpack(build_tarball(log), directory)
    return {name: board_stand_in(root, BOARDS[name], directory / name) for name in names}


# --- raw outputs, x86 against the emulated cores -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
KERNEL_MODES = {"xnnpack": [], "builtin": ["--no-xnnpack"]}


def compare_outputs(directory: Path, images: int, log=print) -> list[str]:
    """The exported model's raw int8 outputs on the first ``images`` test images, with XNNPACK and with the
    built-in kernels, on this host and on each emulated core (export/tflite_run.py on both sides, one
    thread); returns the comparison, one line per pair."""
    import numpy as np

    import contract
    from contract import read_json
    from export import tflite_run
    from export.tflite_check import pixel_lookup_table, tflite_inputs
    from model.data import load_dataset
    from quantize.qat import load_quant_model

    export_dir = ROOT / "artifacts/export"
    if not (export_dir / "report.json").is_file():
        raise PiRootError(f"{export_dir / 'report.json'} is missing: run make export first")
    report = read_json(export_dir / "report.json")
    qm = load_quant_model(report["checkpoint"])
    test = load_dataset(report["dataset"], "test", None, qm.normalization.input_size, qm.normalization.channels)
    x = tflite_inputs(test.images[:images], pixel_lookup_table(qm.model, qm.normalization))
    host = {mode: tflite_run.run(tflite_run.load(export_dir / contract.TFLITE_NAME, threads=1, delegates=mode == "xnnpack"), x)
            for mode in KERNEL_MODES}
    pis = stand_ins(directory, log=log)
    work = next(iter(pis.values())).root / "root/compare"
    work.mkdir()
    for source in (export_dir / contract.TFLITE_NAME, ROOT / "export/tflite_run.py", ROOT / "rpi/runtime/requirements-pi.txt"):
        shutil.copyfile(source, work / source.name)
    np.save(work / "x.npy", x)
    log("installing rpi/runtime/requirements-pi.txt in the emulated root")
    setup = next(iter(pis.values())).run("python3 -m venv venv && venv/bin/pip install -q -r compare/requirements-pi.txt",
                                         timeout=3600)
    if setup.returncode != 0:
        raise PiRootError(f"pip failed in the emulated root: {(setup.stderr.strip().splitlines() or ['?'])[-1]}")
    lines = [f"x86 built-in vs x86 XNNPACK: {differences(host['builtin'], host['xnnpack'])}"]
    for name, pi in pis.items():
        outputs = {}
        for mode, flags in KERNEL_MODES.items():
            started = time.monotonic()
            result = pi.run(shlex.join(["venv/bin/python", "compare/tflite_run.py", f"compare/{contract.TFLITE_NAME}",
                                        "compare/x.npy", f"compare/{name}-{mode}.npy", *flags]), timeout=7200)
            if result.returncode != 0:
                raise PiRootError(f"tflite_run.py failed on the emulated {name}: {result.stderr.strip()[-300:]}")
            outputs[mode] = np.load(work / f"{name}-{mode}.npy")
            log(f"{name} {mode}: {images} images in {time.monotonic() - started:.0f} s under emulation")
        where = f"{name} ({pi.board.qemu_cpu})"
        lines += [f"{where} XNNPACK vs x86 XNNPACK: {differences(outputs['xnnpack'], host['xnnpack'])}",
                  f"{where} built-in vs x86 built-in: {differences(outputs['builtin'], host['builtin'])}",
                  f"{where} built-in vs {name} XNNPACK: {differences(outputs['builtin'], outputs['xnnpack'])}"]
    return lines


def differences(a, b) -> str:
    import numpy as np

    steps = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return (f"{int((steps == 0).all(1).sum()):,}/{len(a):,} images identical, {100 * float((steps > 0).mean()):.1f}% "
            f"of output values differ (max {int(steps.max())} steps), top-1 equal on "
            f"{int((a.argmax(1) == b.argmax(1)).sum()):,}")


# --- command line ----------------------------------------------------------------------------------------

def _interrupt(signum, _frame):
    raise KeyboardInterrupt


def serve(directory: Path) -> None:
    """Both stand-ins until Ctrl-C or SIGTERM, then their sshds are stopped and the root removed."""
    import signal

    from tests.sshd import start_sshd, stop_sshd

    signal.signal(signal.SIGTERM, _interrupt)
    pis = stand_ins(directory)
    processes = []
    try:
        for name, pi in pis.items():
            process, login = start_sshd(directory / f"sshd-{name}", extra_config=pi.sshd_config())
            processes.append(process)
            print(f"{name} ({pi.board.model}, QEMU_CPU={pi.board.qemu_cpu}): make rpi PI_HOST={login.host} "
                  f"PI_PORT={login.port} PI_SSH_OPTS='{login.ssh_opts}'", flush=True)
        print("Ctrl-C (or SIGTERM) stops them", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            stop_sshd(process)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.arm64_pi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("build", "serve", "check", "outputs"),
                   help="build: the cached root tarball; serve: both stand-ins behind loopback sshds until "
                        "Ctrl-C; check: say whether this machine can run them; outputs: compare the exported "
                        "model's raw outputs here and on both emulated cores, with XNNPACK and built-in kernels")
    p.add_argument("--images", type=int, default=2000, help="test images for 'outputs' (default 2000)")
    args = p.parse_args(argv)
    try:
        reason = unavailable()
        if reason:
            print(f"{'note' if args.command == 'check' else 'error'}: {reason}", file=sys.stderr)
            return 0 if args.command == "check" else 2
        if args.command == "build":
            print(build_tarball())
        elif args.command == "serve":
            with tempfile.TemporaryDirectory(prefix="emulated-pi-") as tmp:
                serve(Path(tmp))
        elif args.command == "outputs":
            with tempfile.TemporaryDirectory(prefix="emulated-pi-") as tmp:
                print("\n".join(compare_outputs(Path(tmp), args.images,
                                                log=lambda m: print(m, file=sys.stderr, flush=True))))
        else:
            print(f"ok: qemu-user can run the emulated Pi here; root tarball {tarball_path()}"
                  f"{'' if tarball_path().is_file() else ' (not built yet)'}")
    except PiRootError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
