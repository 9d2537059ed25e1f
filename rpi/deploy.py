"""``python -m rpi.deploy``: ship the int8 TFLite SqueezeNet to a Raspberry Pi over ssh and run it there.

bundle    budget check -> bundle, once, here; prints the release name (``make fleet`` builds it this way)
deploy    budget check -> bundle (or --bundle DIR) -> upload -> activate -> run: the whole of ``make rpi``
upload    budget check, bundle, send it to PI_DIR/incoming/<release>; prints the release name
activate  on the Pi: verify the upload's sha256 sums, prepare the venv once, smoke-test the release,
          move it to PI_DIR/releases/<release>, switch PI_DIR/current to it atomically and restart the
          service when it is installed and enabled
health    on the Pi: the current release's --check, its known-answer test and, when installed, the
          service (active, running this release, logging predictions)
status    the Pi's current release, its history and its service, in one line
rollback  switch PI_DIR/current to the release before it (and restart the service)
service   install a systemd unit that runs PI_DIR/current at boot
local     build the same bundle here and run it with this interpreter (``make rpi-local``)

A bundle holds the Pi-side runtime (rpi/), the .tflite and its metadata JSON (labels, preprocessing and
quantization, the known-answer images), requirements-pi.txt and manifest.json with every file's sha256.
The release name is a digest of those files: the same bundle has the same name on every Pi. The upload is
checked on the Pi by rpi/remote.py, which is piped to the Pi's python3 over ssh rather than taken from the
upload. A failed upload, checksum or smoke test removes the upload and leaves ``current`` as it was.
--json-out FILE writes a command's result (or its error) as JSON, for the fleet report.

ssh runs with BatchMode=yes (never a password prompt; set up key login with ssh-copy-id) and
StrictHostKeyChecking=accept-new; PI_SSH_OPTS come first, so they override both. Standard library only,
apart from reading the model metadata with numpy.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import contract
from .contract import sha256_of
from .errors import RpiError, run_cli
from .model import read_metadata

PACKAGE_DIR = Path(__file__).resolve().parent
PI_MODULES = ("__init__.py", "contract.py", "errors.py", "preprocess.py", "model.py", "sources.py", "app.py", "health.py",
              "bench.py")
REQUIREMENTS = "requirements-pi.txt"
BUNDLE_FORMAT = "squeezenet-rpi-bundle/1"
KEEP_BUNDLES = 5  # bundles kept under <work-dir>/bundles (every deploy, failed or not, builds or reuses one)
REMOTE_SCRIPT = PACKAGE_DIR / "remote.py"
JSON_PREFIX = "RPI-JSON "
RELEASE_DIGITS = 12  # hex digits of the content digest in a release name


# --- bundle --------------------------------------------------------------------------------------------

budget_bytes = contract.budget_bytes  # --budget-bytes, else $BUDGET_BYTES, else 0.5 MiB


def check_budget(tflite: Path, budget: int) -> None:
    size = tflite.stat().st_size
    if size > budget:
        raise RpiError(f"{tflite.name} is {size:,} bytes, over the {budget:,}-byte budget by {size - budget:,} "
                       f"bytes; refusing to deploy (nothing was sent)")


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(PACKAGE_DIR), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def build_bundle(model_json: str, work_dir: Path, budget: int) -> tuple[Path, str]:
    """Write a bundle to work_dir/bundles/<release>; returns (its directory, the manifest's sha256).
    Refuses an over-budget model before anything is written. The release name is the digest of the
    files, and the manifest holds nothing else, so the same files always give the same bundle."""
    meta = read_metadata(model_json)  # also checks the .tflite against the JSON's sha256
    check_budget(meta.tflite_path, budget)
    files = {f"rpi/{name}": PACKAGE_DIR / name for name in PI_MODULES}
    files[f"model/{meta.tflite_path.name}"] = meta.tflite_path
    files[f"model/{meta.json_path.name}"] = meta.json_path
    files[REQUIREMENTS] = PACKAGE_DIR / REQUIREMENTS
    entries = {rel: {"sha256": sha256_of(src), "bytes": src.stat().st_size} for rel, src in sorted(files.items())}
    release = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:RELEASE_DIGITS]
    manifest = {"format": BUNDLE_FORMAT, "release": release, "model": f"model/{meta.json_path.name}",
                "requirements": REQUIREMENTS, "files": entries}
    bundles = work_dir / "bundles"
    final = bundles / release
    if (final / "manifest.json").is_file():
        try:
            return checked_bundle(final, budget)  # built before from the same files
        except RpiError:
            shutil.rmtree(final, ignore_errors=True)  # damaged here since: build it again
    staging = Path(tempfile.mkdtemp(prefix=f".{release}.", dir=_mkdir(bundles)))
    try:
        for rel, src in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, staging / rel)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)
        os.replace(staging, final)  # a bundle directory is complete or absent
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a failed copy leaves nothing
    prune_bundles(bundles, keep=KEEP_BUNDLES)
    return final, sha256_of(final / "manifest.json")


def checked_bundle(bundle: Path, budget: int) -> tuple[Path, str]:
    """A bundle built earlier (``bundle``, or --bundle DIR): every file checked against its manifest, the
    model against the budget. Returns (its directory, the manifest's sha256)."""
    from . import remote

    manifest_path = bundle / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != BUNDLE_FORMAT or manifest.get("release") != bundle.name:
            raise RpiError(f"{bundle} is not a {BUNDLE_FORMAT} bundle named after its release")
        sha = sha256_of(manifest_path)
        remote.verify_release(bundle, sha)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise RpiError(f"cannot read the bundle {bundle}: {exc}") from None
    except remote.RemoteError as exc:
        raise RpiError(f"the bundle {bundle} is damaged: {exc}") from None
    for rel in manifest["files"]:
        if rel.endswith(".tflite"):
            check_budget(bundle / rel, budget)
    os.utime(bundle)  # the most recently used bundles are the ones kept
    return bundle, sha


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def prune_bundles(bundles: Path, keep: int) -> None:
    """Keep the `keep` most recently built or used bundles (names are digests: age is the mtime)."""
    found = sorted((p for p in bundles.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime)
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# --- ssh -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    host: str
    port: int
    ssh_opts: tuple
    pi_dir: str

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
        hint = f"set up key login (ssh-copy-id -p {target.port} {target.host}) or pass the key in PI_SSH_OPTS='-i KEY'"
    elif "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        hint = "the Pi's host key is not the one known for it: check ~/.ssh/known_hosts"
    else:
        hint = "is the Pi on the network, and are PI_HOST and PI_PORT right?"
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


def run_app(target: Target, pi_dir: str, app_args: list) -> int:
    """Run current/run-app on the Pi, its output streamed here. With a terminal, ssh gets one too (-tt),
    so Ctrl-C reaches the app and it prints its summary."""
    tty = ["-tt"] if sys.stdin.isatty() and sys.stdout.isatty() else []
    remote = shlex.join([f"{pi_dir}/current/run-app", *app_args])
    result = subprocess.run([*target.ssh_argv(), *tty, target.host, remote],
                            stdin=None if tty else subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = result.stderr.decode(errors="replace")
    if result.returncode == 255:
        raise ssh_failure(target, stderr)
    sys.stderr.write(stderr)
    return result.returncode


# --- commands --------------------------------------------------------------------------------------------

def target_of(args) -> Target:
    if not args.host:
        raise RpiError("no Pi given: set PI_HOST, e.g. make rpi PI_HOST=pi@raspberrypi.local")
    return Target(args.host, args.port, tuple(shlex.split(args.ssh_opts or "")), args.pi_dir)


def app_args_of(args, pi_dir: str | None, source: str | None = None) -> list:
    argv = []
    if source or args.source:
        argv += ["--source", source or args.source]
    if args.frames:
        argv += ["--frames", str(args.frames)]
    if pi_dir and args.log:
        argv += ["--log", args.log.replace("{pi_dir}", pi_dir)]
    return argv + shlex.split(args.app_args or "")


def the_bundle(args) -> tuple[Path, str]:
    """--bundle DIR (built once by `bundle` for a whole fleet), else a bundle built now from --model."""
    budget = budget_bytes(args.budget_bytes)
    if getattr(args, "bundle", None):
        return checked_bundle(Path(args.bundle), budget)
    return build_bundle(args.model, Path(args.work_dir), budget)


def cmd_bundle(args) -> int:
    bundle, manifest_sha = build_bundle(args.model, Path(args.work_dir), budget_bytes(args.budget_bytes))
    manifest = json.loads((bundle / "manifest.json").read_text())
    tflite = next(rel for rel in manifest["files"] if rel.endswith(".tflite"))
    args.result.update(release=bundle.name, bundle=str(bundle.resolve()), manifest_sha256=manifest_sha,
                       model=args.model, tflite_bytes=manifest["files"][tflite]["bytes"],
                       budget_bytes=budget_bytes(args.budget_bytes), source_commit=git_commit(),
                       files=len(manifest["files"]))
    print(f"release {bundle.name}\nbundle {bundle} ({len(manifest['files'])} files, {tflite} "
          f"{manifest['files'][tflite]['bytes']:,} bytes, within the {budget_bytes(args.budget_bytes):,}-byte budget)")
    return 0


def cmd_upload(args) -> tuple[Target, dict, Path, str]:
    bundle, manifest_sha = the_bundle(args)
    target = target_of(args)
    args.result.update(host=target.host, port=target.port, release=bundle.name)
    info = probe(target)
    args.result.update(before=info["current"], after=info["current"], pi_dir=info["pi_dir"])
    print(f"{target.host}: python {info['python_version']} on {info['machine']}, PI_DIR {info['pi_dir']}, "
          f"current release {info['current'] or 'none'}", flush=True)
    upload(target, bundle, info, args.transfer)
    print(f"release {bundle.name}", flush=True)
    return target, info, bundle, manifest_sha


def cmd_activate(args) -> int:
    bundle = Path(args.work_dir) / "bundles" / args.release
    if not (bundle / "manifest.json").is_file():
        raise RpiError(f"no bundle {bundle} here: activate a release that 'upload' built on this machine")
    args.result.update(activate(target_of(args), args.release, sha256_of(bundle / "manifest.json"), args.python,
                                args.service))
    return 0


def cmd_deploy(args) -> int:
    started = time.monotonic()
    target, info, bundle, manifest_sha = cmd_upload(args)
    args.result.update(activate(target, bundle.name, manifest_sha, args.python, args.service))
    args.result["seconds"] = round(time.monotonic() - started, 2)
    if args.no_run:
        return 0
    app_args = app_args_of(args, info["pi_dir"], stage_source(target, info, args.source, args.transfer))
    print(f"running {info['pi_dir']}/current/run-app {shlex.join(app_args)}".rstrip(), flush=True)
    return run_app(target, info["pi_dir"], app_args)


def cmd_health(args) -> int:
    target = target_of(args)
    command = ["health", "--pi-dir", target.pi_dir, "--service", args.service, "--wait", str(args.wait)]
    args.result.update(host=target.host)
    try:
        results = remote_python(target, command + (["--release", args.release] if args.release else []))
    except RemoteFailure as exc:
        args.result.update(exc.results[-1] if exc.results else {})
        raise
    args.result.update(results[-1] if results else {})
    return 0


def cmd_rollback(args) -> int:
    target = target_of(args)
    command = ["rollback", "--pi-dir", target.pi_dir, "--service", args.service]
    args.result.update(host=target.host)
    try:
        results = remote_python(target, command + (["--only-from", args.only_from] if args.only_from else []))
    except RemoteFailure as exc:
        args.result.update(exc.results[-1] if exc.results else {})
        raise
    args.result.update(results[-1] if results else {})
    return 0


def cmd_status(args) -> int:
    target = target_of(args)
    args.result.update(host=target.host)
    info = probe(target, args.service)
    args.result.update(info)
    service = info["service"]
    state = (service["state"] + (f" on {service['release']}" if service.get("release") else "")
             if service["enabled"] else "not installed" if service["systemd"] else "no systemd")
    print(f"{target.host}: current {info['current'] or 'none'} (history {' '.join(info['history']) or 'none'}), "
          f"{service['unit']} {state}, python {info['python_version']} on {info['machine']}", flush=True)
    return 0


def cmd_service(args) -> int:
    target = target_of(args)
    info = probe(target)
    source = stage_source(target, info, args.source, "auto")
    command = ["service", "--pi-dir", target.pi_dir, "--app-args",
               shlex.join(app_args_of(args, info["pi_dir"], source)), "--unit-dir", args.unit_dir,
               "--service", args.service]
    remote_python(target, command)
    return 0


def cmd_local(args) -> int:
    """The same bundle, verified the way the Pi verifies it, run with this interpreter."""
    from . import remote

    bundle, manifest_sha = build_bundle(args.model, Path(args.work_dir), budget_bytes(args.budget_bytes))
    try:
        remote.verify_release(bundle, manifest_sha)
    except remote.RemoteError as exc:
        raise RpiError(str(exc)) from None
    app_args = app_args_of(args, str(Path(args.work_dir).resolve()))
    if "--report" not in app_args:  # the last local run's figures, for `make report`
        app_args += ["--report", str((Path(args.work_dir) / contract.REPORT_NAME).resolve())]
    print(f"running bundle {bundle} here: rpi.app {shlex.join(app_args)}", flush=True)
    code = "import sys; sys.path[0] = sys.argv.pop(1); from rpi.app import cli; cli()"
    # no byte-code cache in the bundle: the same directory may be sent to Pis afterwards
    return subprocess.run([sys.executable, "-c", code, str(bundle.resolve()), "--model",
                           str((bundle / "model").resolve()), *app_args],
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).returncode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rpi.deploy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {}
    for name, doc in (("bundle", "budget check and bundle, once, here; prints the release (make fleet)"),
                      ("deploy", "budget check, bundle (or --bundle DIR), upload, activate, run (make rpi)"),
                      ("upload", "budget check, bundle, upload to PI_DIR/incoming; prints the release"),
                      ("activate", "verify, prepare and switch to an uploaded release; restart the service"),
                      ("health", "the current release's --check, known-answer test and service check"),
                      ("status", "the Pi's current release, history and service in one line"),
                      ("rollback", "switch current to the previous release (make rpi-rollback)"),
                      ("service", "install a systemd unit running current at boot (make rpi-service)"),
                      ("local", "run the same bundle on this machine (make rpi-local)")):
        commands[name] = sub.add_parser(name, help=doc, description=doc)
    for name, s in commands.items():
        if name not in ("local", "bundle"):
            s.add_argument("--host", default=os.environ.get("PI_HOST"), help="ssh login of the Pi, user@host ($PI_HOST)")
            s.add_argument("--port", type=int, default=int(os.environ.get("PI_PORT") or 22), help="ssh port (22)")
            s.add_argument("--ssh-opts", default=os.environ.get("PI_SSH_OPTS", ""),
                           help="extra ssh options, one string, e.g. \"-i ~/.ssh/pi_key\" ($PI_SSH_OPTS)")
            s.add_argument("--pi-dir", default=os.environ.get("PI_DIR") or "~/squeezenet",
                           help="release directory on the Pi (default ~/squeezenet)")
            s.add_argument("--service", default="squeezenet", help="the systemd unit's name (default squeezenet)")
        if name != "local":
            s.add_argument("--json-out", metavar="FILE", help="also write the result (or the error) to FILE as JSON")
        if name in ("deploy", "upload", "activate", "local", "bundle"):
            s.add_argument("--work-dir", default="artifacts/rpi", help="where bundles are built (artifacts/rpi)")
        if name in ("deploy", "upload", "local", "bundle"):
            s.add_argument("--model", default="artifacts/export/squeezenet_int8.json",
                           help="the export's metadata JSON (its .tflite lies beside it)")
            s.add_argument("--budget-bytes", type=int, default=None,
                           help=f"refuse a larger .tflite (default $BUDGET_BYTES or {contract.BUDGET_BYTES:,})")
        if name in ("deploy", "upload"):
            s.add_argument("--bundle", metavar="DIR", help="send this bundle (from `bundle`) instead of building "
                                                           "one from --model; it is checked again first")
            s.add_argument("--transfer", choices=("auto", "rsync", "scp"), default="auto",
                           help="rsync when both ends have it, else scp (default auto)")
        if name in ("deploy", "activate"):
            s.add_argument("--python", default=os.environ.get("PI_PYTHON") or None,
                           help="an interpreter on the Pi that already has numpy, a TFLite interpreter and cv2; "
                                "skips the venv ($PI_PYTHON)")
        if name in ("deploy", "service", "local"):
            s.add_argument("--source", help="rpi.app --source (default: the Pi camera, else webcam 0); a file or "
                                            "directory that exists here is sent to PI_DIR/media/ and used from there")
            s.add_argument("--frames", type=int, default=0, help="rpi.app --frames (default: until stopped)")
            # a service runs for months: no per-frame log and a line a second by default (SD cards wear)
            service = name == "service"
            s.add_argument("--log", default="" if service else "{pi_dir}/predictions.jsonl",
                           help="rpi.app --log, {pi_dir} expands to PI_DIR on the Pi (default: "
                                + ("none)" if service else "{pi_dir}/predictions.jsonl; '' for none)"))
            s.add_argument("--app-args", default="--every 30" if service else "",
                           help="more rpi.app options, one string" + (" (default --every 30)" if service else ""))
        if name == "deploy":
            s.add_argument("--no-run", action="store_true", help="stop after switching current")
        if name == "activate":
            s.add_argument("--release", required=True)
        if name == "health":
            s.add_argument("--release", help="fail unless current is this release")
            s.add_argument("--wait", type=float, default=30.0,
                           help="seconds an installed service has to log a prediction (default 30)")
        if name == "rollback":
            s.add_argument("--only-from", metavar="RELEASE",
                           help="roll back only when current is RELEASE (a Pi on another release is left alone)")
        if name == "service":
            s.add_argument("--unit-dir", default="/etc/systemd/system", help="where the unit file goes")
    return p.parse_args(argv)


def write_result(path: str, result: dict) -> None:
    """The command's result as JSON, written beside and renamed over (never half-written)."""
    target = Path(path)
    _mkdir(target.parent)
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    temporary.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(temporary, target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handlers = {"bundle": cmd_bundle, "deploy": cmd_deploy,
                "upload": lambda a: cmd_upload(a) and 0,  # upload's result is for deploy
                "activate": cmd_activate, "health": cmd_health, "status": cmd_status, "rollback": cmd_rollback,
                "service": cmd_service, "local": cmd_local}
    args.result = {"command": args.command, "ok": False}
    try:
        code = handlers[args.command](args)
        args.result["ok"] = code == 0
        return code
    except contract.UserError as exc:
        args.result["error"] = str(exc)
        raise
    finally:
        if getattr(args, "json_out", None):
            write_result(args.json_out, args.result)


if __name__ == "__main__":
    run_cli(main)
