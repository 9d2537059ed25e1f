"""``python -m fpga.board.deploy`` / ``make fpga-deploy PYNQ_HOST=xilinx@pynq``: the board package to a PYNQ-Z2.

The Pi's deploy machinery (rpi/deploy.py commands, rpi/transport.py over ssh, rpi/remote.py as the release
manager on the device, rpi/bundle.py's content-named bundles), with the board as its device:

deploy    gate -> bundle -> upload -> activate -> run: the whole of ``make fpga-deploy``
upload    gate, bundle, send it to PYNQ_DIR/incoming/<release>; prints the release name
activate  on the board: verify the upload's sha256 sums, smoke-test it (the overlay loads and the known
          answers come back bit-exact with the C simulation), switch PYNQ_DIR/current atomically
health    the current release's smoke test and known-answer test again
status    the board's current release and its history, in one line
rollback  switch PYNQ_DIR/current to the release before it
view      forward the live view of the app running on the board to this machine (``make fpga-view``)

``make fpga-deploy VIEW=1`` (--view PORT) has the board's app serve the Pi app's live view (rpi/runtime/view.py:
the frames, the IP's labels, latency and FPS) on the board's 127.0.0.1, forwarded over the same ssh connection
to http://localhost:PORT/ here.

The gate, before anything is sent: the FPGA report's on-chip weights within the budget, the design within
the xc7z020's resources, the package built from that same design (checkpoint sha256), and a bitstream and
.hwh in it (make fpga-board with Vivado writes them). A failed upload, checksum or smoke test leaves
``current`` as it was.

The release runs fpga.board.runtime (app, health) with rpi/runtime's sources and preprocessing, under the
board image's own Python: PYNQ 3.x keeps numpy, pynq and OpenCV in /usr/local/share/pynq-venv, and loading
an overlay needs root, so log in as root (or a user that may open /dev/mem and the xclbin devices).
"""
from __future__ import annotations

from pathlib import Path

import contract
from contract import UserError, read_json, run_cli
from rpi.bundle import BundleKind, assemble
from rpi.deploy import Device
from rpi.deploy import main as deploy_main

from .runtime.driver import BOARD_FORMAT

BOARD_BUNDLE = BundleKind(
    format="squeezenet-fpga-bundle/1",
    shipped=("fpga/__init__.py", "fpga/board/__init__.py", "fpga/board/runtime", "rpi/runtime",
             "contract"),
    requirements=None,  # the board image brings numpy, pynq and cv2
    launchers={"run-app": "fpga.board.runtime.app", "run-health": "fpga.board.runtime.health"},
    needs=[["numpy"], ["pynq"]])
PYNQ_PYTHON = "/usr/local/share/pynq-venv/bin/python"  # PYNQ 3.x images


def gate(package: Path, report_path: Path, budget: int) -> dict:
    """Refuse, before anything is sent, a design over the budget or the part, or a package that is not it."""
    if not report_path.is_file():
        raise UserError(f"{report_path} does not exist: run make fpga, then make fpga-board")
    report = read_json(report_path)
    stored = int(report["weight_storage_bytes"])
    if stored > budget:
        raise UserError(f"the design stores {stored:,} bytes of weights on chip, over the {budget:,}-byte budget by "
                        f"{stored - budget:,}; refusing to deploy (nothing was sent)")
    if not report.get("fits_device"):
        over = ", ".join(report.get("over") or []) or "its resources"
        raise UserError(f"the design does not fit the {report['device']['part']} ({over} over): refusing to deploy "
                        f"(nothing was sent)")
    meta_path = package / "board.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path} does not exist: run make fpga-board first")
    meta = read_json(meta_path)
    if meta.get("format") != BOARD_FORMAT:
        raise UserError(f"{meta_path} is not a {BOARD_FORMAT} package")
    if meta.get("checkpoint_sha256") != report.get("checkpoint_sha256"):
        raise UserError(f"the package in {package} was built from another design than {report_path} describes: "
                        f"run make fpga-board again")
    missing = [name for name in (meta["bitstream"], meta["hwh"]) if not (package / name).is_file()]
    if missing:
        raise UserError(f"the package has no {' or '.join(missing)}: build the bitstream with make fpga-board "
                        f"(Vivado {meta.get('vendor_release') or ''} on PATH) before deploying")
    return meta


def board_options(name: str, parser) -> None:
    if name in ("deploy", "upload"):
        parser.add_argument("--fpga-report", default=f"{contract.stage_dir('fpga')}/report.json",
                            help="the FPGA report the gate reads (default %(default)s)")


def build_board_bundle(args, work_dir: Path, budget: int) -> tuple[Path, str]:
    package = Path(args.model)
    gate(package, Path(args.fpga_report), budget)
    files = {p.name: p for p in sorted(package.iterdir()) if p.is_file()}
    return assemble(BOARD_BUNDLE, files, "board.json", work_dir, budget)


BOARD = Device(
    name="the PYNQ-Z2", env="PYNQ", example="make fpga-deploy PYNQ_HOST=root@pynq", default_dir="~/squeezenet-fpga",
    service="squeezenet-fpga", commands=("deploy", "upload", "activate", "health", "status", "rollback", "view"),
    model_help="the board package (make fpga-board): board.json, the .bit, the .hwh",
    default_model=f"{contract.stage_dir('fpga')}/board/package", build=build_board_bundle,
    prog="python -m fpga.board.deploy", doc=__doc__, default_python=PYNQ_PYTHON,
    work_dir=f"{contract.stage_dir('fpga')}/deploy", default_source="USB camera 0", add_options=board_options)


def main(argv: list[str] | None = None) -> int:
    return deploy_main(argv, BOARD)


if __name__ == "__main__":
    run_cli(main)
