"""The FPGA build's knobs (``FpgaConfig``, stored beside the project as fpga_config.json) and the checks
of the expert ``--layer-precision`` overrides."""
from __future__ import annotations

from dataclasses import dataclass, field

import contract
from contract import BUDGET_BYTES, UserError

from .devices import resolve_device

MULTIPLIERS = ("auto", "dsp")
# Bind by default: the planner only binds a conv where that frees LUTs and the DSPs hold it, so a plan is
# never slower for it, and without it the DSP48s of a narrow-weight design sit idle (hls4ml's rule leaves
# weights below 9 bits to LUTs). ``auto`` reproduces the designs planned before the binding existed.
DEFAULT_MULTIPLIERS = "dsp"


@dataclass
class FpgaConfig:
    """Every knob of the build; stored next to the project as fpga_config.json."""

    checkpoint: str = contract.FPGA_QUANT_CHECKPOINT
    out: str = contract.stage_dir("fpga")
    part: str = "xc7z020clg400-1"
    resources: str | None = None  # explicit part resources instead of the devices table
    clock_mhz: float = 100.0
    resource_share: float = 0.8
    target_fps: float | None = None  # None: the fastest plan that fits
    # plan so that the calibration band's upper edge, not only the estimate, stays within the share
    fit_with_band: bool = False
    io_type: str = "io_stream"
    budget_bytes: int = BUDGET_BYTES
    samples: int = 1000  # 0: all test images
    dataset: str | None = None  # None (and data_dir None): the data the checkpoint was trained on
    data_dir: str | None = None
    workers: int = 0  # 0: one per core
    # Expert knob, for investigation: hls4ml precisions that replace what the build sets or hls4ml infers,
    # {ONNX node: {variable: type}} (--layer-precision). The C simulation gate judges the result.
    layer_precision: dict[str, dict[str, str]] = field(default_factory=dict)
    # Where the convs' multipliers go: "auto", the tools' choice (products of weights narrower than 9 bits
    # in LUTs, hls4ml's rule); "dsp", those of the convs the planner chooses bound to DSP48s
    # (fpga.plan, fpga.project.bind_multipliers_to_dsp), so the LUTs they took are free for a faster plan
    multipliers: str = DEFAULT_MULTIPLIERS

    def planning_device(self, device):
        """The part the plan is made for: the part itself, or with fit_with_band the part derated by the
        calibration band (fpga/devices.py ``Device.derated``). The estimate and report use the part itself."""
        from .costs import load_bands

        return device.derated(load_bands()) if self.fit_with_band else device

    def validate(self) -> None:
        for name, value, rule in (("clock-mhz", self.clock_mhz, self.clock_mhz > 0),
                                  ("budget-bytes", self.budget_bytes, self.budget_bytes > 0),
                                  ("samples", self.samples, self.samples >= 0),
                                  ("workers", self.workers, self.workers >= 0)):
            if not rule:
                raise UserError(f"--{name} must be {'>= 0' if name in ('samples', 'workers') else 'positive'}, "
                                f"got {value:g}")
        if not 0 < self.resource_share <= 1:
            raise UserError(f"the resource share must be in (0, 1], got {self.resource_share}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise UserError(f"the target frame rate must be positive, got {self.target_fps}")
        if self.multipliers not in MULTIPLIERS:
            raise UserError(f"--multipliers must be one of {', '.join(MULTIPLIERS)}, got {self.multipliers!r}")
        resolve_device(self.part, self.resources)
        if self.layer_precision:
            check_precisions(self.layer_precision)


def check_precisions(layer_precision: dict[str, dict[str, str]]) -> None:
    """Every type of --layer-precision is one hls4ml can parse; a typo fails here, before any step."""
    from hls4ml.backends.fpga.fpga_backend import FPGABackend

    for node, precisions in layer_precision.items():
        for var, precision in precisions.items():
            try:
                FPGABackend.convert_precision_string(precision)
            except Exception:  # hls4ml raises ValueError, AttributeError or IndexError for a bad string
                raise UserError(f"--layer-precision {node}.{var}={precision}: not an hls4ml precision (e.g. "
                                f"fixed<16,6>, ufixed<8,0>, auto)") from None


def parse_layer_precision(specs: list[str]) -> dict[str, dict[str, str]]:
    """``NODE.VARIABLE=TYPE`` strings (--layer-precision) -> {NODE: {VARIABLE: TYPE}}."""
    parsed: dict[str, dict[str, str]] = {}
    for spec in specs:
        target, equals, precision = spec.partition("=")
        node, dot, var = target.strip().rpartition(".")
        if not (equals and dot and node and var and precision.strip()):
            raise UserError(f"--layer-precision takes NODE.VARIABLE=TYPE (e.g. GlobalAveragePool_0.accum=fixed<16,6>), "
                            f"got {spec!r}")
        parsed.setdefault(node, {})[var] = precision.strip()
    return parsed
