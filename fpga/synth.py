"""``make fpga-synth`` / ``python -m fpga.synth``: run Vitis HLS on the generated project.

Needs ``vitis_hls`` on PATH (not available on the build machines of this project). Writes the project's
``build_opt.tcl`` for C synthesis only (the bit-exact C simulation already ran with g++), runs the tool, and
prints the latency and resource summary from the synthesis report.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import contract
from contract import UserError, run_cli

OPTIONS = ("reset", "csim", "synth", "cosim", "validation", "export", "vsynth", "fifo_opt")


def write_build_options(project: Path, **enabled: bool) -> None:
    lines = ["array set opt {"] + [f"    {k:<10} {int(enabled.get(k, False))}" for k in OPTIONS] + ["}"]
    (project / "build_opt.tcl").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga.synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=f"{contract.stage_dir('fpga')}/hls_project")
    p.add_argument("--cosim", action="store_true", help="also run C/RTL co-simulation")
    p.add_argument("--export", action="store_true", help="also export the IP (Vivado IP catalog)")
    args = p.parse_args(argv)
    project = Path(args.project)
    if not (project / "build_prj.tcl").is_file():
        raise UserError(f"{project} holds no hls4ml project; run 'make fpga' first")
    tool = shutil.which("vitis_hls")
    if tool is None:
        raise UserError("vitis_hls is not on PATH: install Vitis HLS (or source its settings64.sh) to "
                        f"synthesize {project}")
    write_build_options(project, synth=True, cosim=args.cosim, export=args.export)
    subprocess.run([tool, "-f", "build_prj.tcl"], cwd=project, check=True)
    import hls4ml

    hls4ml.report.read_vivado_report(str(project))
    return 0


if __name__ == "__main__":
    run_cli(main)
