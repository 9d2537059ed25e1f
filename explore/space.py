"""What the studies search: design points, the proxy training schedules and the three named studies.

A design point is the paper's microarchitecture metaparameters (base_e, incr_e, sr, pct_3x3, bypass), the
stem's width, the weight and activation bit widths and the per-layer precision mixes; everything else is
``model.small_image_config()``'s default (stem kernel, pools, freq, number of Fire modules, dropout,
BatchNorm), and the quantize stage's defaults (8-bit input, first conv and classifier, 16-bit biases).
Every study trains its points with one proxy schedule: the same epochs, training subset and seed for each
point, so their accuracies compare.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from contract import UserError, pattern_matches_any
from model.squeezenet import SqueezeNetConfig, fire_module_names, small_image_config

DEFAULT_STEM = small_image_config().stem_channels
# quantize.layers.QuantSettings' default (a test checks they agree); not imported, because that imports
# Brevitas, and `python -m explore --help` should not wait for it.
DEFAULT_ACT_BITS = 8
UNIFORM = "uniform"
# quantize.layers.WEIGHT_SCALES, the first its default (a test checks they agree; not imported, as above)
WEIGHT_SCALES = ("max", "mse")

# Per-layer precision (issue 26, levers 2 and 3): named mixes of quantize's --act-override / --override
# (pattern, bits) pairs, by the layers' role; "{fire1}" is the first Fire module's name in the point's own
# layout. For one point, a pair that names none of its layers (the bypass sums of bypass=none) or gives them
# the point's own width is left out, so its flags say only what differs and quantize never refuses them.
ACT_MIXES: dict[str, tuple[tuple[str, int], ...]] = {
    UNIFORM: (),
    # fire1's squeeze output: at 8 bits it alone recovered 11 of the 19 points that 4-bit activations lose
    # before QAT (RESULTS, "Issue 26, fourth sitting")
    "fire1-8": (("{fire1}.squeeze_activation", 8),),
    # ... and the bypass sums at 8: the committed pynq_z2 model's mix (RESULTS, "Issue 26, fifth sitting")
    "entry8": (("{fire1}.squeeze_activation", 8), ("features.*.bypass_quant", 8)),
}
# Weights at 3 bits where most of them are (the 3x3 expands) or where the fewest are (the squeezes); the
# first conv and the classifier keep their 8 (quantize's default overrides, written out with the mix because
# --override replaces them).
WEIGHT_MIXES: dict[str, tuple[tuple[str, int], ...]] = {
    UNIFORM: (),
    "expand3x3-3": (("features.*.expand3x3", 3),),
    "squeeze-3": (("features.*.squeeze", 3),),
}


def _resolve(mix: tuple[tuple[str, int], ...], config: SqueezeNetConfig, names: list[str],
             own_bits: int) -> tuple[tuple[str, int], ...]:
    fire1 = fire_module_names(config)[0]
    pairs = ((pattern.format(fire1=fire1), bits) for pattern, bits in mix)
    return tuple((p, b) for p, b in pairs if b != own_bits and pattern_matches_any(p, names))


@dataclass(frozen=True)
class DesignPoint:
    base_e: int = 64
    incr_e: int = 64
    sr: float = 0.125
    pct_3x3: float = 0.5
    bypass: str = "simple"
    weight_bits: int = 4
    # Added for the FPGA study (issue 26). At their defaults they leave a point's key, label and flags as
    # they were, so the studies recorded before them keep their trials.
    stem_channels: int = DEFAULT_STEM
    act_bits: int = DEFAULT_ACT_BITS
    # Added with lever 5: the per-layer precision (ACT_MIXES, WEIGHT_MIXES); "uniform" leaves keys as they were.
    act_mix: str = UNIFORM
    weight_mix: str = UNIFORM
    # How the weight scales are chosen (quantize --weight-scale); "max" leaves keys as they were.
    weight_scale: str = WEIGHT_SCALES[0]

    def __post_init__(self):
        for what, name, known in (("activation mix", self.act_mix, ACT_MIXES),
                                  ("weight mix", self.weight_mix, WEIGHT_MIXES),
                                  ("weight scale", self.weight_scale, WEIGHT_SCALES)):
            if name not in known:
                raise UserError(f"unknown {what} {name!r} (known: {', '.join(known)})")

    def config(self) -> SqueezeNetConfig:
        """The float network (28x28x1, 10 classes: Fashion-MNIST's shape). Raises ConfigError when the
        metaparameters give an empty layer (e.g. pct_3x3 0.01 of 8 filters)."""
        return small_image_config(base_e=self.base_e, incr_e=self.incr_e, sr=self.sr, pct_3x3=self.pct_3x3,
                                  bypass=self.bypass, stem_channels=self.stem_channels)

    @property
    def key(self) -> str:
        """A file-name-safe identity: the same point has the same key in every study and on every machine."""
        return (f"e{self.base_e}+{self.incr_e}-sr{self.sr:g}-p{self.pct_3x3:g}-{self.bypass}-w{self.weight_bits}"
                + (f"-s{self.stem_channels}" if self.stem_channels != DEFAULT_STEM else "")
                + (f"-a{self.act_bits}" if self.act_bits != DEFAULT_ACT_BITS else "")
                + (f"-act-{self.act_mix}" if self.act_mix != UNIFORM else "")
                + (f"-wq-{self.weight_mix}" if self.weight_mix != UNIFORM else "")
                + (f"-ws-{self.weight_scale}" if self.weight_scale != WEIGHT_SCALES[0] else ""))

    @property
    def label(self) -> str:
        return (f"base_e={self.base_e} incr_e={self.incr_e} sr={self.sr:g} pct_3x3={self.pct_3x3:g} "
                f"bypass={self.bypass} {self.weight_bits}-bit"
                + (f" stem={self.stem_channels}" if self.stem_channels != DEFAULT_STEM else "")
                + (f" act {self.act_bits}-bit" if self.act_bits != DEFAULT_ACT_BITS else "")
                + (f" act mix {self.act_mix}" if self.act_mix != UNIFORM else "")
                + (f" weight mix {self.weight_mix}" if self.weight_mix != UNIFORM else "")
                + (f" {self.weight_scale} weight scales" if self.weight_scale != WEIGHT_SCALES[0] else ""))

    def train_flags(self) -> list[str]:
        """``python -m model.train`` flags that build this network (the other fields keep their defaults)."""
        stem = (("stem_channels", self.stem_channels),) if self.stem_channels != DEFAULT_STEM else ()
        return [f"--set={name}={value}" for name, value in
                (("base_e", self.base_e), ("incr_e", self.incr_e), ("sr", self.sr), ("pct_3x3", self.pct_3x3),
                 ("bypass", self.bypass), *stem)]

    def qat_flags(self) -> list[str]:
        """``python -m quantize`` flags: the weight bits (first conv and classifier keep their default 8) and
        the activation bits inside the network (the input and the logits keep 8: at 4 bits 13% of the test
        images tied on their top logit, RESULTS "Issue 26, second sitting")."""
        act = (["--act-bits", str(self.act_bits), "--classifier-act-bits", str(DEFAULT_ACT_BITS)]
               if self.act_bits != DEFAULT_ACT_BITS else [])
        weights = self.weight_overrides()
        if weights:
            from quantize.layers import DEFAULT_OVERRIDES

            weights = (*DEFAULT_OVERRIDES.items(), *weights)  # --override replaces quantize's default ones
        scale = ["--weight-scale", self.weight_scale] if self.weight_scale != WEIGHT_SCALES[0] else []
        return ["--weight-bits", str(self.weight_bits), *act, *scale,
                *(flag for p, b in weights for flag in ("--override", f"{p}={b}")),
                *(flag for p, b in self.act_overrides() for flag in ("--act-override", f"{p}={b}"))]

    def act_overrides(self) -> tuple[tuple[str, int], ...]:
        """This point's activation mix, resolved on its own layers (quantize's --act-override pairs)."""
        if self.act_mix == UNIFORM:
            return ()
        from quantize.layers import CLASSIFIER_RELU, activation_names

        names = [n for n in activation_names(self.config()) if n != CLASSIFIER_RELU]
        return _resolve(ACT_MIXES[self.act_mix], self.config(), names, self.act_bits)

    def weight_overrides(self) -> tuple[tuple[str, int], ...]:
        """This point's weight mix, resolved on its own convs (quantize's --override pairs, less its defaults)."""
        if self.weight_mix == UNIFORM:
            return ()
        from quantize.layers import conv_layer_names

        return _resolve(WEIGHT_MIXES[self.weight_mix], self.config(), conv_layer_names(self.config()),
                        self.weight_bits)

    def bits(self):
        """The FPGA estimator's bit widths of this point (``fpga.pipeline.BitWidths``: the quantize stage's
        defaults, with this point's weight and activation bits and mixes)."""
        from fpga.pipeline import BitWidths

        return BitWidths(weight_bits=self.weight_bits, overrides=(*BitWidths().overrides, *self.weight_overrides()),
                         act_bits=self.act_bits, classifier_act_bits=DEFAULT_ACT_BITS,
                         act_overrides=self.act_overrides())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DesignPoint":
        return cls(int(data["base_e"]), int(data["incr_e"]), float(data["sr"]), float(data["pct_3x3"]),
                   str(data["bypass"]), int(data["weight_bits"]),
                   int(data.get("stem_channels", DEFAULT_STEM)), int(data.get("act_bits", DEFAULT_ACT_BITS)),
                   str(data.get("act_mix", UNIFORM)), str(data.get("weight_mix", UNIFORM)),
                   str(data.get("weight_scale", WEIGHT_SCALES[0])))


@dataclass(frozen=True)
class Schedule:
    """The proxy training of every point of a study: float training, then QAT, on the first ``limit``
    training images (1/12 of them held out for validation), seeded. ``float_args`` / ``qat_args`` are the
    committed default's recipe flags (``make train`` / ``make qat``) with fewer epochs."""

    name: str
    float_epochs: int
    qat_epochs: int
    limit: int  # first N training images (0: all 60,000)
    seed: int = 0
    # Float batch: the proxy's few epochs need enough optimizer steps. At the full recipe's 128 (216 steps
    # in all) the default point's float top-1 spread 63-82% over 3 seeds; at 32: 82.9-85.2% (docs/RESULTS.md).
    float_batch: int = 128
    float_args: tuple[str, ...] = ("--optimizer", "adamw", "--lr", "3e-3", "--weight-decay", "0.05",
                                   "--warmup-epochs", "0.5")
    qat_args: tuple[str, ...] = ("--lr", "3e-4")
    latency_images: int = 200  # int8 TFLite latency: this many test images, one at a time

    def float_flags(self) -> list[str]:
        return ["--epochs", str(self.float_epochs), "--batch-size", str(self.float_batch), *self.float_args,
                "--seed", str(self.seed),
                *(["--limit", str(self.limit)] if self.limit else [])]

    def quant_flags(self) -> list[str]:
        return ["--epochs", str(self.qat_epochs), *self.qat_args, "--seed", str(self.seed),
                *(["--limit", str(self.limit)] if self.limit else [])]

    @property
    def tag(self) -> str:
        """The name plus a digest of every flag: a trial's directory, so a changed schedule never reuses the
        checkpoints an older one left there."""
        flags = " ".join([*self.float_flags(), "|", *self.quant_flags()])
        return f"{self.name}-{hashlib.sha1(flags.encode()).hexdigest()[:8]}"

    def describe(self) -> str:
        images = f"the first {self.limit:,} training images" if self.limit else "all 60,000 training images"
        return (f"{self.float_epochs} float epochs (batch {self.float_batch}) + {self.qat_epochs} QAT epoch(s) on {images} "
                f"(1/12 held out), seed {self.seed}")


# The proxy schedule of the paper study and the open search. Chosen so that the 9 distinct points of
# `make explore STUDY=paper` fit 90 minutes on the 2-core build machine (docs/RESULTS.md, "Design-space
# exploration", has the measured per-point times).
PROXY = Schedule("proxy", float_epochs=3, qat_epochs=1, limit=10_000, float_batch=32)
SMOKE = Schedule("smoke", float_epochs=1, qat_epochs=1, limit=600, latency_images=20)

DEFAULT_POINT = DesignPoint()

# The paper's sweeps (Iandola et al. 2016, section 5 / figure 3), at 4-bit weights, everything else at the
# default: SR with pct_3x3 at its default 0.5, and pct_3x3 with SR at its default 0.125. The default network
# is in both sweeps, so the 10 sweep points are 9 distinct trials.
PAPER_SR = (0.125, 0.25, 0.5, 0.75, 1.0)
PAPER_PCT = (0.01, 0.25, 0.5, 0.75, 0.99)


def paper_points() -> list[DesignPoint]:
    points = [DesignPoint(sr=sr) for sr in PAPER_SR] + [DesignPoint(pct_3x3=pct) for pct in PAPER_PCT]
    return list(dict.fromkeys(points))  # the default point once


# The open search: categorical choices (a discrete space, so a repeated point is recognised and not
# retrained). Widths start at 8 because only narrow networks fit the xc7z020 (docs/RESULTS.md, "FPGA").
BUDGET_SPACE: dict[str, tuple] = {
    "base_e": (8, 12, 16, 20, 24, 32, 48, 64, 96, 128),
    "incr_e": (0, 4, 8, 12, 16, 20, 24, 32, 48, 64, 128),
    "sr": (0.125, 0.25, 0.375, 0.5, 0.75, 1.0),
    "pct_3x3": (0.125, 0.25, 0.5, 0.75, 0.875),
    # The complex bypass is left out: the int8 TFLite export (the Pi) refuses it.
    "bypass": ("none", "simple"),
    "weight_bits": (2, 3, 4, 8),
}

# Narrow points queued first, so the region that fits the xc7z020 is explored whatever the sampler draws:
# widths 8 to 32, squeeze ratio and 3x3 share small and large, both bypasses, 2/3/4/8-bit weights.
BUDGET_SEEDS: tuple[DesignPoint, ...] = (
    DesignPoint(16, 16, 0.125, 0.5, "simple", 4),
    DesignPoint(8, 8, 0.25, 0.5, "simple", 4),
    DesignPoint(12, 12, 0.5, 0.25, "none", 4),
    DesignPoint(20, 20, 0.125, 0.25, "simple", 4),
    DesignPoint(24, 24, 0.125, 0.125, "none", 8),
    DesignPoint(16, 16, 0.5, 0.75, "simple", 3),
    DesignPoint(24, 8, 0.25, 0.5, "simple", 2),
    DesignPoint(32, 32, 0.125, 0.5, "simple", 4),
    DesignPoint(16, 24, 1.0, 0.875, "none", 8),
    DesignPoint(64, 64, 0.125, 0.5, "simple", 4),  # the committed default, for reference
)

# The FPGA search (issue 26, lever 5): the stem's width, the activation bits and the per-layer precision
# mixes join the metaparameters, and a point must fit the part (default xc7z020) with the calibration band
# included at >= 2,000 images/s before it is trained (planned as `python -m fpga` builds it: multipliers on
# DSP48s). Narrow widths only: at 8-bit activations base_e 24 already misses the xc7z020 (RESULTS, "Toward
# issue 26"). Weights at 3 or 4 bits (the first conv and the classifier keep 8).
FPGA_SPACE: dict[str, tuple] = {
    "base_e": (8, 12, 16, 20, 24, 32),
    "incr_e": (0, 8, 12, 16, 24, 32),
    "sr": (0.125, 0.25, 0.375, 0.5, 0.75),
    "pct_3x3": (0.25, 0.5, 0.75),
    "bypass": ("none", "simple"),
    "weight_bits": (3, 4),
    "stem_channels": (8, 16, 24, 32, 48),
    "act_bits": (4, 5, 6, 8),
    "act_mix": tuple(ACT_MIXES),
    "weight_mix": tuple(WEIGHT_MIXES),
    "weight_scale": WEIGHT_SCALES,
}
FPGA_MIN_FPS = 2000.0
# Queued first: the first pynq_z2 network (committed until 2026-12-07) at 8/6/4-bit activations (at 8:
# 1,762 images/s with the band and its multipliers in LUTs, 6,494 with them on DSP48s), the wider variants
# whose band-included estimates RESULTS lists (a wider stem, SR 0.5 with a 32-channel stem: the pynq_z2
# network since then, base_e 24), 3-bit weights, and the committed pynq_z2 model's mix, with and without
# 3-bit 3x3 expands.
FPGA_SEEDS: tuple[DesignPoint, ...] = (
    DesignPoint(16, 16, 0.25, 0.5, "simple", 4, 16, 8),  # the first pynq_z2 network
    DesignPoint(16, 16, 0.25, 0.5, "simple", 4, 16, 6),
    DesignPoint(16, 16, 0.25, 0.5, "simple", 4, 16, 4),
    DesignPoint(16, 16, 0.25, 0.5, "simple", 4, 32, 5),
    DesignPoint(16, 16, 0.5, 0.5, "simple", 4, 32, 4),
    DesignPoint(24, 24, 0.25, 0.5, "simple", 4, 16, 4),
    DesignPoint(16, 16, 0.25, 0.5, "simple", 3, 16, 6),
    DesignPoint(12, 12, 0.5, 0.5, "simple", 4, 24, 5),
    DesignPoint(16, 16, 0.5, 0.5, "simple", 4, 32, 5, "entry8", weight_scale="mse"),  # the committed pynq_z2 model
    DesignPoint(16, 16, 0.5, 0.5, "simple", 4, 32, 5, "entry8", "expand3x3-3", "mse"),
)

# Two tiny points for `make explore STUDY=smoke` and the tests: real stages, seconds each.
SMOKE_POINTS: tuple[DesignPoint, ...] = (
    DesignPoint(8, 8, 0.25, 0.5, "simple", 4),
    DesignPoint(8, 4, 0.5, 0.25, "none", 3),
)


@dataclass(frozen=True)
class StudySpec:
    """A named study: its sampler kind, its points (grid) or space (search), its schedule."""

    name: str
    kind: str  # "grid" (GridSampler over ``points``) or "search" (NSGA-II over ``space``)
    schedule: Schedule
    points: tuple[DesignPoint, ...] = ()
    space: dict = field(default_factory=dict)
    seeds: tuple[DesignPoint, ...] = ()
    skip_over_budget: bool = False  # search: do not train a point whose on-chip bytes exceed the budget
    # search: do not train a point that does not fit the part with the calibration band's upper edge within
    # the resource share, or that the estimate puts under this many images/s (None: no FPGA constraint)
    fpga_min_fps: float | None = None
    description: str = ""

    @property
    def fit_with_band(self) -> bool:
        """Whether the study's FPGA figures are planned with the calibration band (``fpga --fit-with-band``)."""
        return self.fpga_min_fps is not None

    @property
    def grid_keys(self) -> list[str]:
        return [p.key for p in self.points]


STUDIES: dict[str, StudySpec] = {
    "paper": StudySpec(
        "paper", "grid", PROXY, tuple(paper_points()),
        description="the paper's metaparameter sweeps (SR and pct_3x3) at 4-bit weights"),
    "budget": StudySpec(
        "budget", "search", PROXY, space=BUDGET_SPACE, seeds=BUDGET_SEEDS, skip_over_budget=True,
        description="open search: most accurate within the 0.5 MiB budget and the FPGA part (NSGA-II)"),
    "fpga": StudySpec(
        "fpga", "search", PROXY, space=FPGA_SPACE, seeds=FPGA_SEEDS, skip_over_budget=True,
        fpga_min_fps=FPGA_MIN_FPS,
        description=(f"FPGA search: most accurate that fits the part, calibration band included, at >= "
                     f"{FPGA_MIN_FPS:,.0f} images/s (stem width, activation bits and per-layer precision searched "
                     f"too; NSGA-II)")),
    "smoke": StudySpec(
        "smoke", "grid", SMOKE, SMOKE_POINTS,
        description="two tiny points through every stage (what the tests run)"),
}
