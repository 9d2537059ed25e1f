"""``python -m explore.measure``: the hardware figures of one trained design point (a step of a trial).

From the quantized checkpoint the trial's QAT wrote, with the project's own functions:
- parameters and MACs per image (``model.squeezenet.count_parameters`` / ``count_macs``);
- on-chip weight bytes (``quantize.storage.storage_table``: the calculator the budget uses);
- the FPGA design point on the part (``fpga.design.design_point``: folding plan, resource estimate, fit,
  images/s; FIFOs sized by the dataflow simulation) -- an estimate, not synthesis;
- the int8 TFLite model (``export.tflite_build.convert_to_tflite``): its file size, and its latency under
  ai-edge-litert on this machine (1 thread, batch 1, ``export.tflite_run.time_invocations``) on test images
  fed through the exporter's pixel lookup table, with its top-1 agreement with Brevitas on those images.

It runs in its own process (TensorFlow is imported for the conversion), so a crash is one failed trial.
Writes one JSON file (atomically).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import contract
from contract import run_cli, write_json
from model.data import load_dataset
from model.inference import to_input
from model.squeezenet import SqueezeNet, count_macs, count_parameters, without_norm_layers


def fpga_figures(config, bits, part: str, share: float, clock_mhz: float, with_band: bool = False) -> dict:
    """The design point of ``config`` at ``bits`` (``fpga.pipeline.BitWidths``); ``with_band``: it fits only
    if the calibration band's upper edge does (``python -m fpga --fit-with-band``)."""
    from fpga.design import design_point

    t = time.time()
    point = design_point(config, part, share=share, clock_mhz=clock_mhz, bits=bits, simulate=True,
                         with_band=with_band)
    resources = {name: {"estimate": r["estimate"], "available": r["available"],
                        "share": round(r["estimate"] / r["available"], 4) if r["available"] else None}
                 for name, r in point["resources"].items()}
    return {"part": point["part"], "share_allowed": share, "clock_mhz": clock_mhz, "fits": point["fits"],
            "fits_with_band": point["fits_with_band"], "fit_criterion": "band" if with_band else "estimate",
            "images_per_second": point["images_per_second"], "ii_cycles": point["ii_cycles"],
            "bottleneck": point["bottleneck"], "resources": resources, "reuse_factors": point["reuse_factors"],
            "why_not": point["error"], "seconds": round(time.time() - t, 2),
            "source": "fpga.design.design_point (estimate from formulas, FIFOs sized by simulation)"}


def tflite_figures(qm, data_dir: str | None, dataset: str, images: int, out_dir: Path) -> dict:
    from export import tflite_run
    from export.tflite_build import convert_to_tflite
    from export.tflite_check import pixel_lookup_table, tflite_inputs

    norm = qm.normalization
    t = time.time()
    path = convert_to_tflite(qm.model, (norm.channels, norm.input_size, norm.input_size),
                             out_dir / "squeezenet_int8.tflite")
    convert_s = time.time() - t
    test = load_dataset(dataset, "test", data_dir, norm.input_size, norm.channels)
    test = test.subset(np.arange(min(images, len(test))))
    x = tflite_inputs(test.images, pixel_lookup_table(qm.model, norm))
    interp = tflite_run.load(path, threads=1, runtime="ai_edge_litert")
    seconds = np.asarray(tflite_run.time_invocations(interp, x)) * 1e3
    raw = tflite_run.run(interp, x)
    with torch.no_grad():
        brevitas = qm.model(to_input(torch.from_numpy(test.images), norm)).numpy()
    return {"bytes": path.stat().st_size, "median_ms": round(float(np.median(seconds)), 4),
            "p90_ms": round(float(np.percentile(seconds, 90)), 4), "images": len(x),
            "top1_agreement_with_brevitas": round(float((raw.argmax(1) == brevitas.argmax(1)).mean()), 4),
            "runtime": "ai_edge_litert, 1 thread, batch 1, this machine (x86, not a Pi)",
            "convert_seconds": round(convert_s, 1)}


def bit_widths(qs):
    """The FPGA estimator's bit widths of a quantized model (its ``quantize.layers.QuantSettings``)."""
    from fpga.pipeline import BitWidths

    return BitWidths(weight_bits=qs.weight_bits, overrides=tuple(qs.overrides.items()), act_bits=qs.act_bits,
                     input_bits=qs.input_bits, bias_bits=qs.bias_bits, classifier_act_bits=qs.classifier_act_bits,
                     act_overrides=tuple(qs.act_overrides.items()))


def measure(checkpoint: str, data_dir: str | None, dataset: str, part: str, share: float, clock_mhz: float,
            images: int, budget_bytes: int, keep_tflite: Path | None, with_band: bool = False) -> dict:
    from quantize.qat import load_quant_model
    from quantize.storage import storage_table

    qm = load_quant_model(checkpoint)
    shape = (qm.config.in_channels, qm.config.input_size, qm.config.input_size)
    folded = SqueezeNet(qm.config, without_norm_layers())  # the deployed network: BatchNorm folded away
    table = storage_table(qm.model, budget_bytes)
    result = {"params": count_parameters(folded), "macs": count_macs(folded, shape),
              "onchip_bytes": table.total_bytes, "budget_bytes": budget_bytes}
    result["fpga"] = fpga_figures(qm.config, bit_widths(qm.settings), part, share, clock_mhz, with_band)
    from export.tflite_build import tflite_refusal

    why_not = tflite_refusal(qm.model)
    if why_not:  # e.g. activations under 8 bits: an FPGA point, which the Pi's int8 TFLite cannot hold
        result["tflite"] = {"skipped": why_not}
    elif keep_tflite is not None:
        result["tflite"] = tflite_figures(qm, data_dir, dataset, images, keep_tflite)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result["tflite"] = tflite_figures(qm, data_dir, dataset, images, Path(tmp))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m explore.measure", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="quantized checkpoint (python -m quantize's model.pt)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--part", default="xc7z020clg400-1")
    p.add_argument("--resource-share", type=float, default=0.8)
    p.add_argument("--clock-mhz", type=float, default=100.0)
    p.add_argument("--fit-with-band", action="store_true",
                   help="the design fits only if the calibration band's upper edge does (python -m fpga --fit-with-band)")
    p.add_argument("--latency-images", type=int, default=200)
    p.add_argument("--budget-bytes", type=int, default=None,
                   help=f"the byte budget (default: ${contract.BUDGET_ENV} or {contract.BUDGET_BYTES:,} = 0.5 MiB)")
    p.add_argument("--keep-tflite", default=None, metavar="DIR", help="write the .tflite here (default: discard)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the latency is a 1-thread figure; the rest is small
    figures = measure(args.checkpoint, args.data_dir, args.dataset, args.part, args.resource_share,
                      args.clock_mhz, args.latency_images, contract.budget_bytes(args.budget_bytes),
                      Path(args.keep_tflite) if args.keep_tflite else None, args.fit_with_band)
    write_json(args.out, figures)
    return 0


if __name__ == "__main__":
    run_cli(main)
