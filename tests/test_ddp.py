"""Real 2-process DDP training on this CPU machine: torchrun, the gloo backend, the real CLIs.

Each run goes through ``tests/ddp_probe.py``, which calls the real ``main`` and also writes every rank's
final weights, so the test can compare what rank 0 saved with what rank 1 holds."""
import os
import subprocess
import sys

import pytest
import torch

from .conftest import ROOT

TINY_ARGS = ["--set", "base_e=16", "--set", "incr_e=16", "--set", "num_fire=4", "--set", "pool_after=[0,2]",
             "--set", "stem_channels=16"]


def torchrun(probe_dir, *args):
    probe_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROBE_DIR": str(probe_dir), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo"}  # gloo talks over the loopback interface only
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "tests" / "ddp_probe.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def rank_weights(probe_dir):
    ranks = [torch.load(probe_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    return ranks


def assert_same(a: dict, b: dict):
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


@pytest.mark.slow
def test_two_ranks_train_identically_and_a_stopped_run_resumes_exactly(tiny_idx_dir, tmp_path):
    common = ["model.train", "--data-dir", str(tiny_idx_dir), "--epochs", "2", "--device", "cpu", *TINY_ARGS,
              "--batch-size", "64", "--ema", "0.9", "--no-eval"]
    r = torchrun(tmp_path / "whole_probe", *common, "--out", str(tmp_path / "whole"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on cpu x 2 processes" in r.stdout and r.stdout.count("epoch 2/2") == 1  # rank 0 alone logs
    rank0, rank1 = rank_weights(tmp_path / "whole_probe")
    assert_same(rank0, rank1)  # weights, EMA and BatchNorm statistics alike
    saved = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    assert_same(saved["state_dict"], rank0)
    assert saved["meta"]["processes"] == 2 and len(saved["meta"]["history"]) == 2

    # The same run stopped after its first epoch (--time-limit 0) and resumed by a second torchrun.
    r = torchrun(tmp_path / "parts_probe", *common, "--out", str(tmp_path / "parts"), "--time-limit", "0")
    assert r.returncode != 0 and "add --resume to finish it" in r.stdout, r.stderr[-3000:]
    assert not (tmp_path / "parts" / "model.pt").exists()
    assert torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["epoch"] == 1
    r = torchrun(tmp_path / "parts_probe", *common, "--out", str(tmp_path / "parts"), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout and "epoch 1/2" not in r.stdout
    resumed0, resumed1 = rank_weights(tmp_path / "parts_probe")
    assert_same(resumed0, resumed1)
    assert_same(resumed0, rank0)  # exactly where the uninterrupted run ended


@pytest.mark.slow
def test_two_rank_qat_with_distillation_and_ema(tiny_idx_dir, tmp_path):
    """Brevitas under DDP: the twin's learned scales are parameters, reduced like the weights."""
    from model import small_image_config

    from .helpers import tiny_float_checkpoint

    cfg = small_image_config(base_e=16, incr_e=16, num_fire=4, pool_after=(0, 2), stem_channels=16)
    tiny_float_checkpoint(tmp_path / "float.pt", tiny_idx_dir, cfg)
    r = torchrun(tmp_path / "probe", "quantize", "--checkpoint", str(tmp_path / "float.pt"), "--data-dir",
                 str(tiny_idx_dir), "--epochs", "1", "--device", "cpu", "--kd-alpha", "0.5", "--ema", "0.9",
                 "--out", str(tmp_path / "q"))
    assert r.returncode == 0, r.stderr[-3000:]
    rank0, rank1 = rank_weights(tmp_path / "probe")
    assert_same(rank0, rank1)
    assert any(k.endswith("scaling_impl.value") for k in rank0)
    saved = torch.load(tmp_path / "q" / "model.pt", weights_only=True)
    assert_same(saved["state_dict"], rank0)
    assert saved["meta"]["teacher"]["checkpoint"] == str(tmp_path / "float.pt")


@pytest.mark.parametrize("batch", ["63"])
def test_a_global_batch_must_split_evenly(batch, tiny_idx_dir, tmp_path):
    r = torchrun(tmp_path / "probe", "model.train", "--data-dir", str(tiny_idx_dir), "--epochs", "1",
                 "--device", "cpu", *TINY_ARGS, "--batch-size", batch, "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "must be a multiple of the 2 processes" in r.stderr
