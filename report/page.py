"""``make report`` / ``python -m report``: every stage's report.json and plots on one HTML page.

Writes ARTIFACTS/report/index.html: one section per stage (model, quantize, export, fpga, rpi, budget), the
plots embedded (data: URLs), no script and nothing fetched, so the file can be mailed or archived alone.
Every figure is copied from a stage's JSON, not recomputed: each cell names its file and JSON path
(data-file, data-path), and the tests compare the page, as a browser renders it, with the JSON files. A
stage that has not run yet says which command builds it.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
from pathlib import Path

import contract
from contract import UserError, atomic_path

# A figure is (label, JSON path inside the stage's file); paths are "/"-separated keys or list indices.
MODEL = [("top-1 (test set)", "top1"), ("test images", "samples"), ("parameters", "params")]
QUANTIZE = [("top-1 (test set)", "top1"), ("float parent's top-1", "float_top1"), ("weight bits", "weight_bits"),
            ("bit widths", "quant"), ("weight storage, bytes", "weight_storage_bytes"),
            ("budget, bytes", "storage/budget_bytes"), ("budget used", "storage/budget_used")]
EXPORT_ARTIFACTS = ("float_onnx", "qcdq_onnx", "qonnx", "tflite")
EXPORT_COLUMNS = [("bytes", "bytes"), ("parent", "parent"), ("runtime", "runtime"), ("top-1", "top1"),
                  ("agreement with parent", "top1_agreement"), ("max |diff|", "max_abs_diff")]
BENCH_COLUMNS = [("backend", "backend"), ("threads", "threads"), ("median ms", "median_ms"),
                 ("images/s", "images_per_s"), ("x torch fp32", "speedup_vs_torch_fp32")]
FPGA = [("part", "device/part"), ("clock, MHz", "hls_config/clock_mhz"),
        ("on-chip weights, bytes", "weight_storage_bytes"), ("budget, bytes", "budget_bytes"),
        ("within budget", "within_budget"), ("agrees with quantize's count", "storage_agrees_with_quantize"),
        ("fits the part", "fits_device"), ("C-sim images", "csim/samples"),
        ("C-sim top-1 agreement", "csim/top1_agreement"), ("C-sim max |diff|", "csim/max_abs_diff"),
        ("C-sim accuracy", "csim/top1")]
RPI = [("model", "model"), ("frames", "frames"), ("FPS", "fps"), ("mean latency, ms", "mean_latency_ms"),
       ("p90 latency, ms", "p90_latency_ms"), ("interpreter", "interpreter"), ("kernels", "kernels"),
       ("source", "source")]
BUDGET_COLUMNS = [("artifact", "artifact"), ("bytes", "bytes"), ("budget", "budget_bytes"),
                  ("within", "within_budget")]
HOW = {"model": "make train (or make eval)", "quantize": "make quantize", "export": "make export",
       "fpga": "make fpga", "rpi": "make rpi-local", "budget": "make budget"}

CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.missing{color:#a40}.src{color:#777;font-size:.85em}"""


def lookup(data, path: str):
    """The value at ``path`` ("a/b/0"), or KeyError."""
    for part in path.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def shown(value) -> str:
    """How a JSON value is written on the page: strings as they are, everything else as JSON, so that the
    text parses back to the same value."""
    return value if isinstance(value, str) else json.dumps(value)


class Section:
    def __init__(self, root: Path, stage: str, file: str = contract.REPORT_NAME):
        self.stage, self.dir, self.rel = stage, root / stage, f"{stage}/{file}"
        path = root / self.rel
        self.data = json.loads(path.read_text()) if path.is_file() else None
        self.parts: list[str] = []

    def cell(self, data, path: str, rel: str | None = None) -> str:
        try:
            value = lookup(data, path)
        except (KeyError, IndexError, TypeError):
            return "<td>&mdash;</td>"
        kind = "num" if isinstance(value, (int, float)) and not isinstance(value, bool) else "text"
        return (f'<td class="{kind}" data-file="{html.escape(rel or self.rel)}" data-path="{html.escape(path)}">'
                f"{html.escape(shown(value))}</td>")

    def figures(self, figures: list, data=None, rel: str | None = None) -> None:
        data = self.data if data is None else data
        rows = "".join(f"<tr><th>{html.escape(label)}</th>{self.cell(data, path, rel)}</tr>" for label, path in figures)
        self.parts.append(f"<table>{rows}</table>")

    def table(self, columns: list, rows: list, prefix: str, rel: str | None = None, data=None) -> None:
        data = self.data if data is None else data
        head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns)
        body = "".join("<tr>" + "".join(self.cell(data, f"{prefix}{row}/{path}", rel) for _, path in columns) + "</tr>"
                       for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, name: str, alt: str) -> None:
        path = self.dir / name
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode()
            self.parts.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                              f'<figcaption class="src">{html.escape(f"{self.stage}/{name}")}</figcaption></figure>')

    def html(self, title: str) -> str:
        if self.data is None:
            body = (f'<p class="missing">not built yet: <code>{HOW[self.stage]}</code> writes '
                    f"artifacts/{html.escape(self.rel)}</p>")
        else:
            body = f'<p class="src">from artifacts/{html.escape(self.rel)}</p>' + "".join(self.parts)
        return f'<section id="{self.stage}"><h2>{html.escape(title)}</h2>{body}</section>'


def build_page(root: Path) -> str:
    sections = []
    model = Section(root, "model")
    if model.data:
        model.figures(MODEL)
        model.image("confusion.png", "confusion matrix of the float model")
    sections.append(model.html("model: the float SqueezeNet"))

    quant = Section(root, "quantize")
    if quant.data:
        quant.figures(QUANTIZE)
        if isinstance(quant.data.get("float_top1"), (int, float)):
            drop = round(quant.data["float_top1"] - quant.data["top1"], 6)
            quant.parts.append(f'<p>top-1 drop from the float parent: <span data-derived="float_top1 - top1" '
                               f'data-file="{quant.rel}">{json.dumps(drop)}</span></p>')
        quant.image("confusion.png", "confusion matrix of the quantized model")
    sections.append(quant.html("quantize: Brevitas QAT"))

    export = Section(root, "export")
    if export.data:
        export.table([("artifact", "path")] + EXPORT_COLUMNS, [a for a in EXPORT_ARTIFACTS if a in export.data], "")
        bench_path = export.dir / "bench.json"
        if bench_path.is_file():
            bench = json.loads(bench_path.read_text())
            export.parts.append('<p class="src">latency, from artifacts/export/bench.json (make bench)</p>')
            export.table(BENCH_COLUMNS, range(len(bench.get("results", []))), "results/", "export/bench.json", bench)
    sections.append(export.html("export: ONNX, QONNX, int8 TFLite"))

    fpga = Section(root, "fpga")
    if fpga.data:
        fpga.figures(FPGA)
        # each estimate with the range the calibration against published syntheses puts it in
        fpga.figures([(f"{name.upper()} {label}", f"resources/{name}/{path}")
                      for name, figures in fpga.data.get("resources", {}).items()
                      for label, path in (("estimate", "estimate"), ("calibrated low", "band/0"),
                                          ("calibrated high", "band/1")) if "band" in figures or path == "estimate"])
        fpga.image("layers.png", "per-layer resource estimate")
    sections.append(fpga.html("fpga: hls4ml design, estimate, C simulation"))

    rpi = Section(root, "rpi")
    if rpi.data:
        rpi.figures(RPI)
    sections.append(rpi.html("rpi: the last local run (make rpi-local)"))

    budget = Section(root, "budget")
    if budget.data:
        budget.table(BUDGET_COLUMNS, range(len(budget.data.get("artifacts", []))), "artifacts/")
        budget.figures([("FPGA figures known", "fpga_known"), ("FPGA design fits", "fits_device")])
    sections.append(budget.html("budget: the 0.5 MiB gate"))

    nav = " · ".join(f'<a href="#{s}">{s}</a>' for s in ("model", "quantize", "export", "fpga", "rpi", "budget"))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>SqueezeNet edge toolchain: "
            f"report</title><style>{CSS}</style></head><body><h1>SqueezeNet edge toolchain: report</h1>"
            f"<p>{nav}</p>{''.join(sections)}</body></html>\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", default=contract.ARTIFACTS, help="where the stages wrote (default %(default)s)")
    p.add_argument("--out", default=None, help="output directory (default ARTIFACTS/report)")
    args = p.parse_args(argv)
    root = Path(args.artifacts)
    if not root.is_dir():
        raise UserError(f"{root} does not exist: run a stage first (make export, make fpga, ...)")
    out = Path(args.out) if args.out else root / "report"
    try:
        page = build_page(root)
    except json.JSONDecodeError as exc:
        raise UserError(f"a report.json under {root} is not valid JSON: {exc}") from None
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page)
    print(f"report: {out / 'index.html'}")
    return 0
