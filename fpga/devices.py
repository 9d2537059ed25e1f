"""The FPGA parts the fpga stage can plan for: one table, part -> resources.

Figures are AMD's: the Zynq-7000 and Zynq UltraScale+ product tables (DS190, DS891) and the Kria K26
data sheet (DS987) for LUT, FF, DSP and block RAM; ``lutram`` is the number of LUTs that can be memory
(SLICEM LUTs), as Vivado's utilization report lists it under "LUT as Memory / Available" for the part.
A part that is not here can be given by its resources (``parse_resources``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from contract import UserError

# The resources the estimator counts, in the order reports print them.
RESOURCES = ("dsp", "lut", "ff", "bram18k", "lutram")


@dataclass(frozen=True)
class Device:
    part: str
    board: str
    lut: int
    ff: int
    dsp: int
    bram18k: int  # 18 Kb block RAMs (a 36 Kb block counts as two)
    lutram: int  # LUTs usable as distributed RAM or shift registers (SLICEM)
    dsp_a_bits: int = 25  # DSP48E1 (7-series): 25 x 18 signed multiplier; DSP48E2 (UltraScale+): 27 x 18
    dsp_b_bits: int = 18

    def available(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in RESOURCES}

    def to_dict(self) -> dict:
        return asdict(self)

    def derated(self, bands: dict[str, tuple[float, float]]) -> "Device":
        """The part as a plan must see it to fit with the calibration band included: each calibrated
        resource divided by its band's upper edge (synthesis may land that far above the estimate), so that
        ``estimate <= share x derated`` is ``estimate x high <= share x available``."""
        return replace(self, **{name: int(getattr(self, name) / high) for name, (_, high) in bands.items()
                                if name in RESOURCES and high > 1})


DEVICES: dict[str, Device] = {d.part: d for d in (
    Device("xc7z020clg400-1", "PYNQ-Z2 / PYNQ-Z1", lut=53_200, ff=106_400, dsp=220, bram18k=280, lutram=17_400),
    Device("xc7z010clg400-1", "Zybo Z7-10", lut=17_600, ff=35_200, dsp=80, bram18k=120, lutram=6_000),
    Device("xczu3eg-sbva484-1-i", "Ultra96-V2", lut=70_560, ff=141_120, dsp=360, bram18k=432, lutram=28_800,
           dsp_a_bits=27),
    Device("xck26-sfvc784-2LV-c", "Kria KV260 (K26 SOM)", lut=117_120, ff=234_240, dsp=1_248, bram18k=288,
           lutram=57_600, dsp_a_bits=27),
    # The ZCU104's part: the smallest board here that the 415k-parameter default (base_e = incr_e = 96) fits.
    Device("xczu7ev-ffvc1156-2-e", "ZCU104", lut=230_400, ff=460_800, dsp=1_728, bram18k=624, lutram=101_760,
           dsp_a_bits=27),
)}


def lookup_device(part: str) -> Device:
    """The table's entry for ``part`` (case-insensitive, as Vivado accepts part names)."""
    for name, device in DEVICES.items():
        if name.lower() == part.strip().lower():
            return device
    raise UserError(f"unknown FPGA part {part!r}; known parts: {', '.join(DEVICES)} (or give its resources: "
                    f"--resources dsp=N,lut=N,ff=N,bram18k=N[,lutram=N], with make FPGA_RESOURCES=...)")


def parse_resources(spec: str, part: str = "custom") -> Device:
    """A part given by its resources: ``dsp=220,lut=53200,ff=106400,bram18k=280[,lutram=17400]``.
    Without ``lutram``, a quarter of the LUTs is assumed to be SLICEM (as on 7-series parts, roughly)."""
    values: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in RESOURCES:
            raise UserError(f"bad resource {item!r} in {spec!r}: expected NAME=COUNT with NAME one of "
                            f"{', '.join(RESOURCES)}")
        try:
            values[key] = int(value)
        except ValueError:
            raise UserError(f"bad resource count {value!r} for {key}: expected a whole number") from None
        if values[key] < 0:
            raise UserError(f"resource {key} must not be negative, got {values[key]}")
    missing = [name for name in ("dsp", "lut", "ff", "bram18k") if name not in values]
    if missing:
        raise UserError(f"--resources (make: FPGA_RESOURCES=) {spec!r} lacks {', '.join(missing)}")
    values.setdefault("lutram", values["lut"] // 4)
    return Device(part, "given by --resources", **values)


def device_for_part(part: str) -> Device:
    """The table's entry, or for another part a device with no resource counts (figures without a fit
    verdict) and the DSP width of its family: DSP48E1 (25 x 18) on 7-series, DSP48E2 (27 x 18) after."""
    try:
        return lookup_device(part)
    except UserError:
        seven_series = part.lower().startswith(("xc7", "xa7", "xq7"))
        return Device(part or "unknown", "not in fpga/devices.py", 0, 0, 0, 0, 0,
                      dsp_a_bits=25 if seven_series else 27)


def resolve_device(part: str, resources: str | None = None) -> Device:
    """``resources`` (explicit counts) when given, else the table's entry for ``part``."""
    return parse_resources(resources, part or "custom") if resources else lookup_device(part)


def main(argv: list[str] | None = None) -> int:
    """``python -m fpga.devices [--part P] [--resources SPEC]``: the resources a part stands for, or the one
    error line that names what is wrong (``make fpga`` runs it before any model is evaluated)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m fpga.devices", description=main.__doc__)
    p.add_argument("--part", default="xc7z020clg400-1")
    p.add_argument("--resources", default=None, metavar="dsp=N,lut=N,ff=N,bram18k=N[,lutram=N]")
    args = p.parse_args(argv)
    device = resolve_device(args.part, args.resources)
    print(f"{device.part} ({device.board}): " + ", ".join(f"{name} {getattr(device, name):,}" for name in RESOURCES))
    return 0


if __name__ == "__main__":
    from contract import run_cli

    run_cli(main)
