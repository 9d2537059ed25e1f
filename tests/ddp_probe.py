"""torchrun entry point of the DDP tests: the real ``python -m model.train`` / ``python -m quantize`` main,
plus each rank's weights at the end of ``fit`` written to ``$PROBE_DIR/rank<RANK>.pt`` (only rank 0
writes checkpoints, so this is how a test sees what the other ranks hold).

    torchrun --standalone --nproc-per-node 2 tests/ddp_probe.py model.train --device cpu ...
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from contract import run_cli
from model import train as float_cli  # noqa: E402
from quantize import qat as qat_cli  # noqa: E402


def dumping(fit):
    def fit_and_dump(model, *args, **kwargs):
        result = fit(model, *args, **kwargs)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, Path(os.environ["PROBE_DIR"]) / f"rank{os.environ['RANK']}.pt")
        return result
    return fit_and_dump


if __name__ == "__main__":
    cli = {"model.train": float_cli, "quantize": qat_cli}[sys.argv[1]]
    cli.fit = dumping(cli.fit)
    run_cli(cli.main, sys.argv[2:])
