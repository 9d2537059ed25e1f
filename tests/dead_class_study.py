"""The dead-class study behind ``--head-leak`` (docs/RESULTS.md, "Bring your own data").

``python -m tests.dead_class_study [--seeds 0-9] [--leaks 0,0.1]``: five Fashion-MNIST classes written as a
32x32 colour folder (tests/helpers.write_fashion_folder), a small SqueezeNet (base_e = incr_e = 16, stem
16) trained 8 epochs at batch 32 per seed and per head leak, in this process; prints per run the test
accuracy, the per-class accuracy and the classes whose logit is the same on every test image (dead), then
a summary per leak. Minutes on two cores; not part of the test suite (its test is
tests/test_own_data.py::test_every_class_is_learned_where_the_plain_relu_head_lost_one).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from model import SqueezeNet, small_image_config
from model.data import Normalization, load_dataset, train_val_split
from model.inference import predict_logits
from model.train_settings import TrainSettings
from model.training import fit

from .helpers import write_fashion_folder


def run(folder: str, seed: int, leak: float, state: str) -> dict:
    full = load_dataset("folder", "train", folder, 32, 3)
    test = load_dataset("folder", "test", folder, 32, 3)
    train, val = train_val_split(full, 1 / 12, seed)
    norm = Normalization.fit(train.images)
    torch.manual_seed(seed)
    model = SqueezeNet(small_image_config(32, 3, len(full.classes), base_e=16, incr_e=16, stem_channels=16))
    settings = TrainSettings(epochs=8, batch_size=32, lr=3e-3, weight_decay=0.05, seed=seed, head_leak=leak)
    t0 = time.time()
    fit(model, train, val, norm, settings, state)
    logits = predict_logits(model, test, norm)
    pred = logits.argmax(1)
    return {"seed": seed, "leak": leak, "top1": round(float((pred == test.labels).mean()), 4),
            "per_class": [round(float((pred[test.labels == k] == k).mean()), 2) for k in range(len(full.classes))],
            "dead": [k for k in range(logits.shape[1]) if np.ptp(logits[:, k]) == 0],
            "seconds": round(time.time() - t0)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.dead_class_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0-9", help="a range A-B or a comma list")
    p.add_argument("--leaks", default="0,0.1", help="head leaks to compare")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b) + 1)) if b else [int(s) for s in args.seeds.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(write_fashion_folder(f"{tmp}/clothes"))
        for leak in (float(x) for x in args.leaks.split(",")):
            for seed in seeds:
                results.append(run(folder, seed, leak, f"{tmp}/last.pt"))
                print(json.dumps(results[-1]), flush=True)
    for leak in sorted({r["leak"] for r in results}):
        mine = [r for r in results if r["leak"] == leak]
        print(f"head leak {leak:g}: {sum(bool(r['dead']) for r in mine)} of {len(mine)} runs lost a class; "
              f"mean test top-1 {np.mean([r['top1'] for r in mine]):.3f}")


if __name__ == "__main__":
    main()
