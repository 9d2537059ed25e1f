"""The training recipe and where it runs: device flag, augmentations, mixing, distillation, EMA, resume."""
import json
import math
import shlex
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from contract import UserError
from model import SqueezeNet, small_image_config
from model.augment import MixedBatch, augment_batch, mix_batch, random_erase
from model.checkpoint import load_checkpoint
from model.data import Normalization, load_dataset
from model.runtime import Runtime, resolve_device
from model.train import build_parser as float_parser
from model.train import parse_overrides
from model.train_settings import TrainSettings, epoch_seed, settings_from_args
from model.training import ModelEma, Teacher, distillation_loss, fit, shard, training_loss
from quantize.layers import QuantSettings, build_quant_model
from quantize.qat import DEFAULT_OVERRIDES, calibrate, load_quant_model, quant_settings_from_args
from quantize.qat import build_parser as qat_parser

from .conftest import ROOT, make_variable, run_module

TINY = dict(base_e=16, incr_e=16, num_fire=4, pool_after=(0, 2), stem_channels=16)
TINY_ARGS = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items()), [])
HAVE_CUDA = torch.cuda.is_available()


# --- the device flag ------------------------------------------------------------------------------------

def test_device_flag_resolves_or_explains():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if HAVE_CUDA else "cpu")
    with pytest.raises(UserError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if not HAVE_CUDA:
        with pytest.raises(UserError, match="sees no CUDA device"):
            resolve_device("cuda:0")


@pytest.mark.slow
def test_train_cli_runs_on_the_cpu_when_told_and_stops_at_its_time_limit(tiny_idx_dir, tmp_path):
    args = ["--data-dir", str(tiny_idx_dir), "--epochs", "2", "--threads", "1", "--device", "cpu", *TINY_ARGS,
            "--out", str(tmp_path), "--no-eval"]
    r = run_module("model.train", *args, "--time-limit", "0")
    assert r.returncode == 3 and "add --resume to finish it" in r.stdout, r.stderr
    assert not (tmp_path / "model.pt").exists()
    r = run_module("model.train", *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout and "epoch 2/2" in r.stdout and "epoch 1/2" not in r.stdout
    meta = load_checkpoint(tmp_path / "model.pt")["meta"]
    assert meta["device"] == "cpu" and meta["processes"] == 1 and meta["bf16_autocast"] is False


@pytest.mark.skipif(HAVE_CUDA, reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_one_line(tiny_idx_dir, tmp_path):
    r = run_module("model.train", "--data-dir", str(tiny_idx_dir), "--device", "cuda", "--out", str(tmp_path))
    assert r.returncode == 2 and "sees no CUDA device" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA device (the GPU path runs where one is)")
def test_float_training_and_qat_on_cuda_give_checkpoints_the_cpu_loads(tiny_idx_dir, tmp_path):
    """The whole GPU path through the real CLIs: bf16 float training with every recipe part, then fp32
    QAT with EMA and distillation; both checkpoints load on the CPU with weights_only=True."""
    recipe = ["--random-erasing", "0.5", "--mixup", "0.2", "--cutmix", "1.0", "--ema", "0.99"]
    r = run_module("model.train", "--data-dir", str(tiny_idx_dir), "--epochs", "2", "--device", "cuda",
                   *TINY_ARGS, *recipe, "--out", str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr[-3000:]
    meta = load_checkpoint(tmp_path / "f" / "model.pt")["meta"]
    assert meta["device"] == "cuda:0" and meta["bf16_autocast"] is True
    r = run_module("quantize", "--checkpoint", str(tmp_path / "f" / "model.pt"), "--data-dir", str(tiny_idx_dir),
                   "--epochs", "2", "--device", "cuda", *recipe, "--kd-alpha", "0.5", "--out", str(tmp_path / "q"))
    assert r.returncode == 0, r.stderr[-3000:]
    payload = torch.load(tmp_path / "q" / "model.pt", map_location="cpu", weights_only=True)
    assert payload["meta"]["device"] == "cuda:0"
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())
    # The twin on the GPU (fp32, no TF32) and on the CPU predict the same classes, but for the few images
    # where a different summation order moves a value across a rounding boundary of a weakly trained net.
    qm = load_quant_model(tmp_path / "q" / "model.pt")
    test = load_dataset("fashion-mnist", "test", str(tiny_idx_dir))
    from model.inference import predict_logits

    on_cpu = predict_logits(qm.model, test, qm.normalization)
    torch.backends.cudnn.allow_tf32 = False
    on_gpu = predict_logits(qm.model.to("cuda"), test, qm.normalization)
    assert (on_cpu.argmax(1) == on_gpu.argmax(1)).mean() >= 0.95


# --- the recipe's defaults --------------------------------------------------------------------------------

OFF = {"random_erasing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "ema_decay": 0.0, "kd_alpha": 0.0,
       "kd_temperature": 2.0, "head_leak": 0.0}


OLD_FLOAT = "--epochs 36 --optimizer adamw --lr 3e-3 --weight-decay 0.05 --seed 0"  # before the new recipe parts
OLD_QAT = "--weight-bits 4 --epochs 3 --lr 3e-4 --seed 0"


def test_the_old_commands_still_give_the_old_recipes():
    """Every new recipe part is off by default, but one: float training's head leak (it keeps classes alive,
    test_own_data), which the old commands turn off with --head-leak 0 to mean what they meant."""
    args = float_parser().parse_args(shlex.split(OLD_FLOAT + " --head-leak 0"))
    assert settings_from_args(args).recipe() == {
        "epochs": 36, "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05,
        "schedule": "cosine", "warmup_epochs": 1.0, "label_smoothing": 0.0, "augment": ["crop", "flip"],
        "crop_padding": 2, "seed": 0, **OFF}
    assert settings_from_args(float_parser().parse_args(shlex.split(OLD_FLOAT))).head_leak == 0.1
    args = qat_parser().parse_args(shlex.split(OLD_QAT))
    assert settings_from_args(args, amp=False).recipe() == {
        "epochs": 3, "batch_size": 128, "optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.0,
        "schedule": "cosine", "warmup_epochs": 0.0, "label_smoothing": 0.0, "augment": ["crop", "flip"],
        "crop_padding": 2, "seed": 0, **OFF}
    assert args.weight_bits == 4 and args.override is None
    assert DEFAULT_OVERRIDES == {"features.0": 8, "classifier.1": 8}


def _recipe_of_command(parser, command: str, **kw) -> dict:
    argv = [a for a in shlex.split(command)[3:]]  # after "python -m module"
    return settings_from_args(parser().parse_args(argv), **kw).recipe()


@pytest.mark.parametrize("model", ["default", "pynq_z2"])
def test_makefile_arguments_reproduce_the_committed_checkpoints(model):
    float_ckpt = load_checkpoint(ROOT / f"model/checkpoints/{model}.pt")
    float_meta = float_ckpt["meta"]
    quant_ckpt = load_checkpoint(ROOT / f"quantize/checkpoints/{model}.pt")
    quant_meta = quant_ckpt["meta"]
    train_args = float_parser().parse_args(shlex.split(make_variable("TRAIN_ARGS", f"MODEL={model}")))
    # What the run computed, as its checkpoint stored it; fields newer than the checkpoint were off then.
    ran = {**TrainSettings().recipe(), **{k: v for k, v in float_meta["settings"].items()
                                          if k not in ("threads", "amp", "time_limit")}}
    assert settings_from_args(train_args).recipe() == ran
    # the network too: the Makefile's --set overrides build the committed checkpoint's config
    config = small_image_config().replace(**parse_overrides(train_args.overrides)).to_dict()
    assert {k: v for k, v in config.items() if k in float_ckpt["config"]} == float_ckpt["config"]
    stored = {k: v for k, v in float_meta["settings"].items() if k not in ("threads", "amp", "time_limit")}
    assert stored.items() <= settings_from_args(train_args).recipe().items()
    qat_args = qat_parser().parse_args(shlex.split(make_variable("QAT_ARGS", f"MODEL={model}")))
    assert settings_from_args(qat_args, amp=False).recipe() == _recipe_of_command(qat_parser, quant_meta["command"],
                                                                                   amp=False)
    # ... and the quantizers (weight, activation and logit widths) and the teachers the checkpoints record
    assert quant_settings_from_args(qat_args) == QuantSettings.from_dict(quant_ckpt["quant"])
    assert (train_args.teacher, qat_args.teacher) == ((float_meta.get("teacher") or {}).get("checkpoint"),
                                                      (quant_meta.get("teacher") or {}).get("checkpoint"))


def test_make_launches_torchrun_for_several_processes():
    def dry(*extra):
        return subprocess.run(["make", "-n", "--no-print-directory", *extra], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout

    single = [line for line in dry("train").splitlines() if "model.train" in line]
    assert single and "torch.distributed.run" not in single[0] and "--device auto" in single[0]
    several = [line for line in dry("train", "NPROC=4", "DEVICE=cuda").splitlines() if "model.train" in line]
    assert "torch.distributed.run --standalone --nproc-per-node=4 -m model.train" in several[0]
    assert "--device cuda" in several[0]
    qat = [line for line in dry("qat", "NPROC=2").splitlines() if " quantize " in line + " "]
    assert any("--nproc-per-node=2 -m quantize" in line for line in qat)


# --- augmentation and mixing ------------------------------------------------------------------------------

def _images(n=16, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_random_erasing_draws_one_rectangle_of_random_pixels():
    x = torch.full((64, 1, 28, 28), 7, dtype=torch.uint8)
    y = random_erase(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    changed = y != x
    for i in range(len(x)):
        rows = changed[i, 0].any(1).nonzero().flatten()
        cols = changed[i, 0].any(0).nonzero().flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 1 <= int(box) <= 0.4 * 784 * 1.1  # one rectangle, within the area range (after rounding)
        assert changed[i].sum() >= 0.9 * box  # filled with random pixels (1/256 of them equal 7 by chance)
    assert torch.equal(random_erase(x, 0.0, torch.Generator().manual_seed(0)), x)
    # Through augment_batch, with crop and flip, the pixels stay uint8 images of the same shape.
    s = TrainSettings(augment=("crop", "flip"), random_erasing=0.5)
    z = augment_batch(_images(), s, torch.Generator().manual_seed(1))
    assert z.shape == (16, 1, 28, 28) and z.dtype == torch.uint8


def test_mixup_blends_pairs_and_cutmix_pastes_one_box():
    pixels = _images().float() / 255.0
    y = torch.arange(16)
    mixed = mix_batch(pixels, y, TrainSettings(mixup_alpha=0.4), np.random.default_rng(0),
                      torch.Generator().manual_seed(0))
    assert mixed.pixels.shape == pixels.shape and 0 < mixed.lam < 1
    assert mixed.pixels.min() >= 0 and mixed.pixels.max() <= 1
    partner = pixels[mixed.y_b]  # labels are indices here, so y_b names each image's partner
    assert torch.allclose(mixed.pixels, mixed.lam * pixels + (1 - mixed.lam) * partner, atol=1e-6)
    assert torch.equal(mixed.y_a, y) and sorted(mixed.y_b.tolist()) == list(range(16))

    cut = mix_batch(pixels, y, TrainSettings(cutmix_alpha=1.0), np.random.default_rng(3),
                    torch.Generator().manual_seed(0))
    partner = pixels[cut.y_b]
    from_partner = (cut.pixels == partner) & (cut.pixels != pixels)
    assert torch.all((cut.pixels == pixels) | (cut.pixels == partner))
    box = from_partner.any(0)[0]  # (28, 28): the one pasted rectangle, the same for every image
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert box.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert cut.lam == pytest.approx(1 - int(box.sum()) / 784)

    both = TrainSettings(mixup_alpha=0.4, cutmix_alpha=1.0)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(20):
        m = mix_batch(pixels, y, both, rng, gen)
        kinds.add("cutmix" if torch.all((m.pixels == pixels) | (m.pixels == pixels[m.y_b])) else "mixup")
    assert kinds == {"mixup", "cutmix"}
    plain = mix_batch(pixels, y, TrainSettings(), rng, gen)
    assert plain.pixels is pixels and plain.lam == 1.0


def test_shards_split_each_epoch_between_ranks():
    order = torch.randperm(11, generator=torch.Generator().manual_seed(epoch_seed(0, 3)))
    parts = [shard(order, r, 3) for r in range(3)]
    flat = torch.cat(parts).tolist()
    assert all(len(p) == 4 for p in parts)  # padded to equal length, as DistributedSampler does
    assert len(flat) == 12 and set(flat) == set(range(11))  # every image once, one repeated as padding
    assert torch.equal(shard(order, 0, 1), order)
    assert epoch_seed(0, 3, 0) != epoch_seed(0, 3, 1) != epoch_seed(0, 4, 1)


# --- distillation -----------------------------------------------------------------------------------------

def test_distillation_loss_on_a_tiny_net_has_the_hand_computed_value():
    """Student logits (0, 0), teacher logits (ln 3, 0): the teacher says 3:1, the student 1:1."""
    x = torch.tensor([[1.0, 0.0]])
    student, teacher = nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        student.weight.zero_()
        teacher.weight.copy_(torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]))
    s_logits, t_logits = student(x), teacher(x).detach()
    # T = 1: KL((3/4, 1/4) || (1/2, 1/2)) = 3/4 ln(3/2) + 1/4 ln(1/2)
    kd1 = distillation_loss(s_logits, t_logits, 1.0)
    assert kd1.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)  # 0.130812
    # T = 2: the teacher's distribution is softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (sqrt 3 + 1); times T^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kd2 = distillation_loss(s_logits, t_logits, 2.0)
    assert kd2.item() == pytest.approx(4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))), abs=1e-6)
    # Its gradient on the student's logits is T * (p_student - p_teacher): (-1/4, +1/4) at T = 1.
    kd1.backward()
    assert student.weight.grad[:, 0].tolist() == pytest.approx([-0.25, 0.25], abs=1e-6)
    assert teacher.weight.grad is None
    # Blended with the hard label (class 0: CE = ln 2) at alpha 0.5, with and without mixing.
    s = TrainSettings(kd_alpha=0.5, kd_temperature=1.0)
    batch = MixedBatch(x, torch.tensor([0]), torch.tensor([0]))
    blended = training_loss(student(x), batch, s, t_logits)
    assert blended.item() == pytest.approx(0.5 * math.log(2) + 0.5 * kd1.item(), abs=1e-6)
    mixed = MixedBatch(x, torch.tensor([0]), torch.tensor([1]), lam=0.75)  # CE is ln 2 for either label
    assert training_loss(student(x), mixed, s, t_logits).item() == pytest.approx(blended.item(), abs=1e-6)
    assert training_loss(student(x), batch, TrainSettings(), t_logits).item() == pytest.approx(math.log(2))


def test_a_student_learns_from_its_teacher(tiny_idx_dir, tmp_path):
    """kd_alpha = 1: no hard labels at all, yet the student learns the classes from the teacher alone."""
    data = load_dataset("fashion-mnist", "train", str(tiny_idx_dir))
    norm = Normalization.fit(data.images)
    torch.manual_seed(0)
    teacher = SqueezeNet(small_image_config(**TINY))
    fit(teacher, data, data.subset(np.arange(100)), norm, TrainSettings(epochs=6, batch_size=32, lr=5e-3,
        warmup_epochs=0, threads=1, augment=()), tmp_path / "t.pt", runtime=Runtime())
    torch.manual_seed(1)
    student = SqueezeNet(small_image_config(**TINY))
    s = TrainSettings(epochs=6, batch_size=32, lr=5e-3, warmup_epochs=0, threads=1, augment=(), kd_alpha=1.0,
                      kd_temperature=2.0)
    result = fit(student, data, data.subset(np.arange(100)), norm, s, tmp_path / "s.pt", runtime=Runtime(),
                 teacher=Teacher(teacher, norm))
    assert result.history[-1].val_acc >= 0.5, [h.val_acc for h in result.history]
    with pytest.raises(UserError, match="needs a teacher"):
        fit(student, data, data, norm, s, tmp_path / "x.pt", runtime=Runtime())


# --- EMA --------------------------------------------------------------------------------------------------

def test_ema_averages_parameters_and_float_buffers_with_warmup():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    ema = ModelEma(net, decay=0.9)
    with torch.no_grad():
        net[0].weight.fill_(3.0)
        net[1].running_mean.fill_(2.0)
        net[1].num_batches_tracked.fill_(5)
    ema.update(net)  # first update: decay min(0.9, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, torch.full((2, 2), d * 1.0 + (1 - d) * 3.0))
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), (1 - d) * 2.0))
    assert int(ema.module[1].num_batches_tracked) == 0  # integer counters are not averaged
    for _ in range(200):
        ema.update(net)
    assert ema.decay == 0.9 and torch.allclose(ema.module[0].weight, torch.full((2, 2), 3.0), atol=1e-6)
    ema.copy_to(net)
    assert torch.allclose(net[0].weight, ema.module[0].weight) and int(net[1].num_batches_tracked) == 5
    assert not ema.module[0].weight.requires_grad and net[0].weight.requires_grad


def test_ema_of_a_brevitas_twin_averages_its_scales_and_reloads_exactly(tiny_idx_dir):
    """Brevitas' learned activation scales are parameters: EMA averages them like the weights, and the
    averaged twin saved through state_dict predicts exactly what the EMA copy predicted."""
    data = load_dataset("fashion-mnist", "train", str(tiny_idx_dir))
    norm = Normalization.fit(data.images)
    cfg = small_image_config(**TINY)
    qs = QuantSettings(overrides=DEFAULT_OVERRIDES)
    torch.manual_seed(0)
    twin = build_quant_model(cfg, qs)
    calibrate(twin, data, norm, batches=2, batch_size=128)
    ema = ModelEma(twin, decay=0.5)
    scales = [(n, p) for n, p in twin.named_parameters() if n.endswith("scaling_impl.value")]
    assert scales, "the twin has learned activation scales"
    before = {n: p.detach().clone() for n, p in scales}
    with torch.no_grad():
        for _, p in scales:
            p.add_(1.0)  # log2 domain: every activation scale doubles
        for m in twin.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1.5)
    ema.update(twin)
    d = 2 / 11
    averaged = dict(ema.module.named_parameters())
    for n, _ in scales:
        assert torch.allclose(averaged[n], before[n] + (1 - d)), n
    x = torch.from_numpy(data.images[:64])
    from model.inference import to_input

    with torch.no_grad():
        expected = ema.module(to_input(x, norm))
        fresh = build_quant_model(cfg, qs)
        fresh.load_state_dict(ema.module.state_dict(), strict=True)
        fresh.eval()
        assert torch.equal(fresh(to_input(x, norm)), expected)
        twin.eval()
        assert not torch.equal(twin(to_input(x, norm)), expected)


def test_fit_with_ema_saves_the_averaged_weights(tiny_idx_dir, tmp_path):
    data = load_dataset("fashion-mnist", "train", str(tiny_idx_dir))
    norm = Normalization.fit(data.images)
    val = data.subset(np.arange(100))
    torch.manual_seed(0)
    model = SqueezeNet(small_image_config(**TINY))
    s = TrainSettings(epochs=2, batch_size=64, lr=5e-3, warmup_epochs=0, threads=1, ema_decay=0.9)
    result = fit(model, data, val, norm, s, tmp_path / "last.pt", runtime=Runtime())
    from model.inference import accuracy, predict_logits

    assert result.history[-1].val_acc_raw is not None
    assert accuracy(predict_logits(model, val, norm), val.labels) == result.history[-1].val_acc
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["ema"]["updates"] == 2 * math.ceil(len(data) / 64)
    assert not torch.equal(state["model"]["classifier.1.weight"], model.state_dict()["classifier.1.weight"])


# --- exact resume with every random part on ---------------------------------------------------------------

def test_a_stopped_run_resumes_exactly_with_every_recipe_part_on(tiny_idx_dir, tmp_path):
    data = load_dataset("fashion-mnist", "train", str(tiny_idx_dir))
    norm = Normalization.fit(data.images)
    val = data.subset(np.arange(100))
    teacher = SqueezeNet(small_image_config(**TINY)).eval()
    s = TrainSettings(epochs=2, batch_size=64, lr=5e-3, threads=1, random_erasing=0.5, mixup_alpha=0.2,
                      cutmix_alpha=1.0, ema_decay=0.9, kd_alpha=0.5, label_smoothing=0.1)

    def run(path, **changes):
        torch.manual_seed(0)
        model = SqueezeNet(small_image_config(**TINY))
        settings = TrainSettings(**{**vars(s), **changes})
        return model, fit(model, data, val, norm, settings, path, resume=True, runtime=Runtime(),
                          teacher=Teacher(teacher, norm))

    whole, _ = run(tmp_path / "whole.pt")
    _, first = run(tmp_path / "parts.pt", time_limit=0.0)
    assert not first.finished and len(first.history) == 1
    resumed, second = run(tmp_path / "parts.pt")
    assert second.finished and [h.epoch for h in second.history] == [1, 2]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(UserError, match="other training settings"):
        run(tmp_path / "parts.pt", mixup_alpha=0.3)
