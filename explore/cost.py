"""``python -m explore.cost``: what a study's proxy schedule costs per point, before running it.

For each point of a study it times a few real steps on random Fashion-MNIST-shaped batches in this process:
a float training step (AdamW, at the schedule's float batch, the float stage's loop shape), a QAT step of
the Brevitas twin (batch 128), and inference passes of both (batch 500, the test evaluations), as CPU seconds per image
(``time.process_time``: the other jobs of a shared machine inflate it far less than the wall time). From
those and the schedule it predicts each point's training and evaluation CPU seconds:

    float epochs x (train images x float step + val images x float pass)
    + QAT epochs x (train images x QAT step + val images x QAT pass)
    + test images x (float pass + QAT pass)   (quantize's evaluations)

It leaves out the fixed costs (process starts, calibration, the TFLite conversion and latency run, the FPGA
estimate), and the stages' own thread count (2 threads spend more CPU seconds than 1). Compare with a
measured trial's ``stage_cpu_seconds`` in points.jsonl. An estimate, not a measurement of a trial.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from contract import run_cli
from model.squeezenet import SqueezeNet, count_macs, without_norm_layers

from .space import STUDIES, DesignPoint, Schedule

QAT_BATCH, EVAL_BATCH = 128, 500  # quantize's default batch; the float batch is the schedule's
TEST_IMAGES = 10_000
DATASET_TRAIN = 60_000


def _cpu_per_image(fn, batch: int, steps: int) -> float:
    fn()  # warm-up: allocations, Brevitas' first-call setup
    start = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - start) / (steps * batch)


def step_costs(model: torch.nn.Module, steps: int, lr: float, batch: int) -> tuple[float, float]:
    """CPU seconds per image of one training step (``batch`` images) and of one inference pass of ``model``
    (28x28x1)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    x_eval = torch.randn(EVAL_BATCH, 1, 28, 28)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def eval_pass():
        with torch.no_grad():
            model(x_eval)

    model.train()
    train = _cpu_per_image(train_step, batch, steps)
    model.eval()
    return train, _cpu_per_image(eval_pass, EVAL_BATCH, max(1, steps // 2))


def point_cost(point: DesignPoint, schedule: Schedule, steps: int) -> dict:
    from quantize.layers import QuantSettings, build_quant_model
    from quantize.qat import DEFAULT_OVERRIDES

    config = point.config()
    float_model = SqueezeNet(config)
    quant_model = build_quant_model(config, QuantSettings(point.weight_bits, overrides=dict(DEFAULT_OVERRIDES)))
    f_train, f_eval = step_costs(float_model, steps, 3e-3, schedule.float_batch)
    q_train, q_eval = step_costs(quant_model, steps, 3e-4, QAT_BATCH)
    images = schedule.limit or DATASET_TRAIN
    val = images // 12
    train = images - val
    float_s = schedule.float_epochs * (train * f_train + val * f_eval)
    qat_s = schedule.qat_epochs * (train * q_train + val * q_eval) + TEST_IMAGES * (f_eval + q_eval)
    return {"key": point.key, "macs": count_macs(SqueezeNet(config, without_norm_layers()), (1, 28, 28)),
            "float_train_ms_per_image": 1e3 * f_train, "qat_train_ms_per_image": 1e3 * q_train,
            "float_eval_ms_per_image": 1e3 * f_eval, "qat_eval_ms_per_image": 1e3 * q_eval,
            "float_cpu_s": float_s, "qat_cpu_s": qat_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m explore.cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=sorted(STUDIES), default="paper")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per model (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: CPU time is the figure)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = STUDIES[args.study]
    points = spec.points or spec.seeds
    print(f"study {spec.name}: {spec.schedule.describe()}; CPU seconds from {args.steps} timed steps per model, "
          f"{args.threads} thread(s); fixed costs (process starts, TFLite, FPGA estimate) left out")
    print(f"{'point':34} {'M MACs':>7} {'float ms/img':>12} {'QAT ms/img':>11} {'float CPU s':>11} "
          f"{'QAT+eval CPU s':>14} {'total':>7}")
    total = 0.0
    for point in points:
        c = point_cost(point, spec.schedule, args.steps)
        point_total = c["float_cpu_s"] + c["qat_cpu_s"]
        total += point_total
        print(f"{c['key']:34} {c['macs'] / 1e6:7.1f} {c['float_train_ms_per_image']:12.2f} "
              f"{c['qat_train_ms_per_image']:11.2f} {c['float_cpu_s']:11.0f} {c['qat_cpu_s']:14.0f} "
              f"{point_total:7.0f}", flush=True)
    print(f"total: {total:,.0f} CPU s ({total / 60:.0f} CPU min) over {len(points)} points, fixed costs left out")
    return 0


if __name__ == "__main__":
    run_cli(main)
