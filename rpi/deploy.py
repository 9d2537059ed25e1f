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
view      forward the live view of the app running on the Pi (the service's) to this machine (``make rpi-view``)

--view PORT (deploy, local, service; ``VIEW=1`` in make) has the app serve its live view (rpi/runtime/view.py)
on the Pi's 127.0.0.1; deploy forwards it over the same ssh connection (-L), so http://localhost:PORT/ here
shows the frames and their labels while the app runs, and nothing listens beyond loopback on either end.

A bundle (rpi/bundle.py) holds the Pi-side runtime (rpi/runtime/) and the contract package, the .tflite and
its metadata JSON (labels, preprocessing and quantization, the known-answer images) and manifest.json with
every file's sha256; the ssh transport is rpi/transport.py.
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
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import contract
from contract import atomic_path, run_cli, sha256_of

from .bundle import budget_bytes, build_bundle, checked_bundle, git_commit
from .runtime.errors import RpiError
from .runtime.view import DEFAULT_PORT as DEFAULT_VIEW_PORT
from .transport import (
    RemoteFailure,
    Target,
    activate,
    check_local_port,
    forward_only,
    probe,
    remote_python,
    run_app,
    run_through_ctrl_c,
    stage_source,
    upload,
)

# --- the device ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """What this module deploys to. The Pi is one; the FPGA board (fpga/board/deploy.py) is another, with its
    own bundle, its make variables (PYNQ_HOST, ...) and its release directory, over the same machinery."""
    name: str            # "the Pi": how messages name it
    env: str             # the prefix of its make variables: PI_HOST, PI_PORT, PI_SSH_OPTS, PI_DIR, PI_PYTHON
    example: str         # make rpi PI_HOST=pi@raspberrypi.local
    default_dir: str
    service: str
    commands: tuple      # the commands it has
    model_help: str
    default_model: str
    build: Callable      # (args, work_dir, budget) -> (bundle, manifest sha256): gate and bundle, nothing sent
    prog: str = "python -m rpi.deploy"
    doc: str | None = None  # the --help text (default: this module's)
    default_python: str | None = None
    work_dir: str | None = None  # default: artifacts/rpi
    default_source: str = "the Pi camera, else webcam 0"
    add_options: Callable | None = None  # (command, its parser): the device's own options


def build_pi_bundle(args, work_dir: Path, budget: int) -> tuple[Path, str]:
    return build_bundle(args.model, work_dir, budget)


# --- commands --------------------------------------------------------------------------------------------

def target_of(args) -> Target:
    device = args.device
    if not args.host:
        raise RpiError(f"no host given for {device.name}: set {device.env}_HOST, e.g. {device.example}")
    return Target(args.host, args.port, tuple(shlex.split(args.ssh_opts or "")), args.pi_dir, device.name, device.env)


def app_args_of(args, pi_dir: str | None, source: str | None = None) -> list:
    argv = []
    if source or args.source:
        argv += ["--source", source or args.source]
    if args.frames:
        argv += ["--frames", str(args.frames)]
    if pi_dir and args.log:
        argv += ["--log", args.log.replace("{pi_dir}", pi_dir)]
    return argv + view_args(args) + shlex.split(args.app_args or "")


def view_args(args) -> list:
    """--view: the app serves its live view on the device's loopback. A run we watch (deploy, local) plays
    a file source in a loop, so there is something to see until Ctrl-C, unless --frames bounds it."""
    if getattr(args, "view", None) is None:
        return []
    watched = args.command in ("deploy", "local") and not args.frames
    return ["--serve", str(remote_view_port(args))] + (["--loop"] if watched else [])


def remote_view_port(args) -> int:
    return getattr(args, "view_remote_port", None) or args.view


def view_url(port: int) -> str:
    return f"http://localhost:{port}/"


def the_bundle(args) -> tuple[Path, str]:
    """--bundle DIR (built once by `bundle` for a whole fleet), else a bundle built now from --model."""
    budget = budget_bytes(args.budget_bytes)
    if getattr(args, "bundle", None):
        return checked_bundle(Path(args.bundle), budget)
    return args.device.build(args, Path(args.work_dir), budget)


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
    print(f"{target.host}: python {info['python_version']} on {info['machine']}, {args.device.env}_DIR {info['pi_dir']}, "
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
    if args.view is not None and not args.no_run:  # before anything is sent
        check_local_port(args.view, "the live view")
    target, info, bundle, manifest_sha = cmd_upload(args)
    args.result.update(activate(target, bundle.name, manifest_sha, args.python, args.service))
    args.result["seconds"] = round(time.monotonic() - started, 2)
    if args.no_run:
        return 0
    app_args = app_args_of(args, info["pi_dir"], stage_source(target, info, args.source, args.transfer))
    print(f"running {info['pi_dir']}/current/run-app {shlex.join(app_args)}".rstrip(), flush=True)
    forward = None
    if args.view is not None:
        forward = (args.view, remote_view_port(args))
        print(f"live view: open {view_url(args.view)} here (forwarded over ssh to {args.device.name}'s "
              f"127.0.0.1:{forward[1]}); Ctrl-C stops the app and closes the tunnel", flush=True)
    return run_app(target, info["pi_dir"], app_args, forward)


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
    if args.view is not None:
        e = args.device.env
        print(f"the service serves its live view on {args.device.name}'s 127.0.0.1:{remote_view_port(args)} "
              f"only: make {'rpi' if e == 'PI' else 'fpga'}-view {e}_HOST={target.host} forwards it here", flush=True)
    return 0


def cmd_view(args) -> int:
    """Only the tunnel, to the live view of an app that already serves there (the service's)."""
    target = target_of(args)
    check_local_port(args.view, "the live view")
    print(f"live view: open {view_url(args.view)} here (forwarded over ssh to {args.device.name}'s "
          f"127.0.0.1:{remote_view_port(args)}, where an app started with --serve {remote_view_port(args)} must "
          f"be running, e.g. the service installed with VIEW=1); Ctrl-C closes the tunnel", flush=True)
    try:
        return forward_only(target, (args.view, remote_view_port(args)))
    except KeyboardInterrupt:
        print("tunnel closed", flush=True)
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
    print(f"running bundle {bundle} here: rpi.runtime.app {shlex.join(app_args)}", flush=True)
    if args.view is not None:
        print(f"live view: open {view_url(remote_view_port(args))}; Ctrl-C stops the app", flush=True)
    code = "import sys; sys.path[0] = sys.argv.pop(1); from rpi.runtime.app import cli; cli()"
    # no byte-code cache in the bundle: the same directory may be sent to Pis afterwards
    return run_through_ctrl_c([sys.executable, "-c", code, str(bundle.resolve()), "--model",
                               str((bundle / "model").resolve()), *app_args],
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).returncode


COMMANDS = {"bundle": "budget check and bundle, once, here; prints the release (make fleet)",
            "deploy": "budget check, bundle (or --bundle DIR), upload, activate, run (make rpi)",
            "upload": "budget check, bundle, upload to PI_DIR/incoming; prints the release",
            "activate": "verify, prepare and switch to an uploaded release; restart the service",
            "health": "the current release's --check, known-answer test and service check",
            "status": "the device's current release, history and service in one line",
            "rollback": "switch current to the previous release (make rpi-rollback)",
            "service": "install a systemd unit running current at boot (make rpi-service)",
            "local": "run the same bundle on this machine (make rpi-local)",
            "view": "forward the live view of the app running there (the service's) here (make rpi-view)"}


def parse_args(argv: list[str] | None, device: Device) -> argparse.Namespace:
    e = device.env
    p = argparse.ArgumentParser(prog=device.prog, description=device.doc or __doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    commands = {}
    for name in device.commands:
        doc = COMMANDS[name].replace("PI_DIR", f"{e}_DIR")
        if device.env != "PI":  # the make targets named are the Pi's
            doc = doc.split(" (make ")[0].replace("budget check", "gate").replace(" (or --bundle DIR)", "")
        commands[name] = sub.add_parser(name, help=doc, description=doc)
    for name, s in commands.items():
        if name not in ("local", "bundle"):
            s.add_argument("--host", default=os.environ.get(f"{e}_HOST"), help=f"ssh login of {device.name}, "
                                                                                f"user@host (${e}_HOST)")
            s.add_argument("--port", type=int, default=int(os.environ.get(f"{e}_PORT") or 22), help="ssh port (22)")
            s.add_argument("--ssh-opts", default=os.environ.get(f"{e}_SSH_OPTS", ""),
                           help=f"extra ssh options, one string, e.g. \"-i ~/.ssh/key\" (${e}_SSH_OPTS)")
            s.add_argument(f"--{e.lower()}-dir", dest="pi_dir", default=os.environ.get(f"{e}_DIR") or device.default_dir,
                           help=f"release directory on {device.name} (${e}_DIR, default {device.default_dir})")
            s.add_argument("--service", default=device.service,
                           help=f"the systemd unit's name (default {device.service})")
        if name != "local":
            s.add_argument("--json-out", metavar="FILE", help="also write the result (or the error) to FILE as JSON")
        if name in ("deploy", "upload", "activate", "local", "bundle"):
            s.add_argument("--work-dir", default=device.work_dir or contract.stage_dir("rpi"),
                           help="where bundles are built (%(default)s)")
        if name in ("deploy", "upload", "local", "bundle"):
            s.add_argument("--model", default=device.default_model, help=device.model_help)
            s.add_argument("--budget-bytes", type=int, default=None,
                           help=f"the storage budget: refuse a larger model before anything is sent (default "
                                f"$BUDGET_BYTES or {contract.BUDGET_BYTES:,})")
        if name in ("deploy", "upload") and "bundle" in device.commands:
            s.add_argument("--bundle", metavar="DIR", help="send this bundle (from `bundle`) instead of building "
                                                           "one from --model; it is checked again first")
        if name in ("deploy", "upload"):
            s.add_argument("--transfer", choices=("auto", "rsync", "scp"), default="auto",
                           help="rsync when both ends have it, else scp (default auto)")
        if name in ("deploy", "activate"):
            s.add_argument("--python", default=os.environ.get(f"{e}_PYTHON") or device.default_python,
                           help=f"an interpreter on {device.name} that already has what the release needs; skips "
                                f"the venv (${e}_PYTHON" + (f", default {device.default_python})" if device.default_python
                                                            else ")"))
        if name in ("deploy", "service", "local"):
            s.add_argument("--source", help=f"the app's --source (default: {device.default_source}); a file or "
                                            f"directory that exists here is sent to {e}_DIR/media/ and used from there")
            s.add_argument("--frames", type=int, default=0, help="the app's --frames (default: until stopped)")
            # a service runs for months: no per-frame log and a line a second by default (SD cards wear)
            service = name == "service"
            s.add_argument("--log", default="" if service else "{pi_dir}/predictions.jsonl",
                           help=f"the app's --log, {{pi_dir}} expands to {e}_DIR on {device.name} (default: "
                                + ("none)" if service else "{pi_dir}/predictions.jsonl; '' for none)"))
            s.add_argument("--app-args", default="--every 30" if service else "",
                           help="more options of the app, one string" + (" (default --every 30)" if service else ""))
        if name in ("deploy", "service", "local", "view"):
            where = {"deploy": "; ssh forwards it to this machine's PORT while the app runs",
                     "local": "", "view": "",
                     "service": f" on {device.name}'s loopback only (watch it with the view command)"}[name]
            s.add_argument("--view", type=int, nargs="?", const=DEFAULT_VIEW_PORT, default=(
                DEFAULT_VIEW_PORT if name == "view" else None), metavar="PORT",
                help=(f"the app serves its live view (--serve){where}; open http://localhost:PORT/ "
                      f"(default {DEFAULT_VIEW_PORT})" if name != "view" else
                      f"this machine's port for the tunnel (default {DEFAULT_VIEW_PORT})"))
            if name != "local":
                s.add_argument("--view-remote-port", type=int, default=None, metavar="PORT",
                               help=f"the live view's port on {device.name}, when it differs from --view's")
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
        if device.add_options:
            device.add_options(name, s)
    return p.parse_args(argv)


def write_result(path: str, result: dict) -> None:
    """The command's result as JSON, written beside and renamed over (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")


PI = Device("the Pi", "PI", "make rpi PI_HOST=pi@raspberrypi.local", "~/squeezenet", "squeezenet", tuple(COMMANDS),
            "the export's metadata JSON (its .tflite lies beside it)", contract.EXPORT_TFLITE_METADATA, build_pi_bundle)


def main(argv: list[str] | None = None, device: Device = PI) -> int:
    args = parse_args(argv, device)
    args.device = device
    handlers = {"bundle": cmd_bundle, "deploy": cmd_deploy,
                "upload": lambda a: cmd_upload(a) and 0,  # upload's result is for deploy
                "activate": cmd_activate, "health": cmd_health, "status": cmd_status, "rollback": cmd_rollback,
                "service": cmd_service, "local": cmd_local, "view": cmd_view}
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
