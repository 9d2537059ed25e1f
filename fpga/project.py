"""Reading and finishing the files hls4ml writes into the HLS project (``firmware/``)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable

from contract import UserError

_CALL = re.compile(r"nnet::\w+<[^;]*?\bconfig(\d+)>\([^;]*\);\s*//\s*(\S+)")
_MULT = re.compile(r"struct config(\d+)_mult\s*:\s*nnet::dense_config\s*\{(.*?)\n\};", re.S)
_FIELD = re.compile(r"static const unsigned (\w+) = ([^;]+);")


def read_dense_configs(project: str | Path) -> dict[str, dict]:
    """What hls4ml wrote for every conv's dense kernel, by layer name: n_in, n_out, reuse_factor, strategy,
    the product class (``mult``, or ``mult_dsp`` once bound) and the block factor the Resource kernel derives from them (``nnet_dense_resource.h``:
    ``block_factor = DIV_ROUNDUP(n_in * n_out, reuse_factor)``)."""
    firmware = Path(project) / "firmware"
    try:
        params = (firmware / "parameters.h").read_text()
        calls = (firmware / "myproject.cpp").read_text()
    except FileNotFoundError as exc:
        raise UserError(f"{project} is not a written hls4ml project ({exc.filename} is missing)") from None
    layer_of = {index: name for index, name in _CALL.findall(calls)}
    configs = {}
    for index, body in _MULT.findall(params):
        fields = dict(_FIELD.findall(body))
        n_in, n_out, rf = (int(fields[k]) for k in ("n_in", "n_out", "reuse_factor"))
        configs[layer_of.get(index, f"config{index}")] = {
            "n_in": n_in, "n_out": n_out, "reuse_factor": rf, "strategy": fields["strategy"].split("::")[-1],
            "block_factor": math.ceil(n_in * n_out / rf),
            "product": (re.search(r"using product = nnet::product::(\w+)", body) or [None, None])[1]}
    return configs


def bind_fifo_storage(project: str | Path, impls: dict[str, str]) -> int:
    """Add ``#pragma HLS BIND_STORAGE variable=X type=fifo impl=...`` after the STREAM pragma of every
    stream named in ``impls`` (C++ name -> srl | bram), so that Vitis HLS builds each FIFO the way the
    estimate counted it. Returns how many were bound."""
    path = Path(project) / "firmware" / "myproject.cpp"
    text = path.read_text()
    bound = 0
    for name, impl in impls.items():
        pattern = re.compile(rf"(#pragma HLS STREAM variable={re.escape(name)} depth=\d+\n)")
        pragma = f"    #pragma HLS BIND_STORAGE variable={name} type=fifo impl={impl}\n"
        text, n = pattern.subn(lambda m: m.group(1) + pragma, text, count=1)
        if n != 1:
            raise UserError(f"stream {name} has no STREAM pragma in {path}; cannot bind its storage")
        bound += 1
    path.write_text(text)
    return bound


DSP_PRODUCT = "mult_dsp"  # the product class bind_multipliers_to_dsp gives a kernel (nnet::product::mult_dsp)
DSP_PRODUCT_HEADER = "nnet_utils/nnet_mult_dsp.h"
_DSP_PRODUCT_SOURCE = """#ifndef NNET_MULT_DSP_H_
#define NNET_MULT_DSP_H_

// Written by fpga.project.bind_multipliers_to_dsp (python -m fpga --multipliers dsp): hls4ml's plain
// product (nnet_mult.h, class mult) with the multiplication bound to a DSP48. Without the binding Vitis HLS
// builds products of narrow weights in LUTs; this frees the LUTs and spends DSP slices, one per product
// of operands within 25 x 18 bits (UG479). The value is the same, so the C simulation does not change.
#include "nnet_mult.h"

namespace nnet {
namespace product {

template <class x_T, class w_T> class mult_dsp : public Product {
  public:
    static auto product(x_T a, w_T w) -> decltype(a * w) {
        #pragma HLS INLINE
        decltype(a * w) p = a * w;
        #pragma HLS BIND_OP variable=p op=mul impl=dsp
        return p;
    }
};

} // namespace product
} // namespace nnet

#endif
"""
_DENSE_STRUCT = re.compile(r"struct (\w+)\s*:\s*nnet::dense_config\s*\{.*?\n\};", re.S)
_PLAIN_PRODUCT = "using product = nnet::product::mult<x_T, y_T>;"


def bind_multipliers_to_dsp(project: str | Path, layers: Iterable[str] | None = None) -> int:
    """Give every dense kernel (a conv's ``configN_mult``, a dense layer's config) that uses hls4ml's plain
    product the DSP-bound one instead (``mult_dsp``, written to firmware/nnet_utils/), and include it from
    parameters.h. ``layers``: only the kernels of these layers (the names myproject.cpp gives their calls);
    None: all. Binary, ternary and power-of-two products are not multiplications and keep theirs. Returns
    how many kernels were bound; reading the project back (``project_pipeline``) sees the binding the
    estimate assumed."""
    firmware = Path(project) / "firmware"
    params = firmware / "parameters.h"
    text = params.read_text()
    configs = None
    if layers is not None:
        layer_of = {name: index for index, name in _CALL.findall((firmware / "myproject.cpp").read_text())}
        missing = sorted(set(layers) - set(layer_of))
        if missing:
            raise UserError(f"{firmware / 'myproject.cpp'} calls no layer named {', '.join(missing)}; cannot bind "
                            f"its multipliers")
        configs = {f"config{layer_of[name]}" for name in layers} | {f"config{layer_of[name]}_mult" for name in layers}
    bound = 0

    def bind(struct: re.Match) -> str:
        nonlocal bound
        if configs is not None and struct.group(1) not in configs:
            return struct.group(0)
        bound += struct.group(0).count(_PLAIN_PRODUCT)
        return struct.group(0).replace(_PLAIN_PRODUCT, _PLAIN_PRODUCT.replace("::mult<", f"::{DSP_PRODUCT}<"))

    text = _DENSE_STRUCT.sub(bind, text)
    include = f'#include "{DSP_PRODUCT_HEADER}"\n'
    if bound and include not in text:
        first = re.search(r'^#include "nnet_utils/.*\n', text, re.M)
        if first is None:
            raise UserError(f"{params} includes no nnet_utils header; cannot add {DSP_PRODUCT_HEADER}")
        text = text[:first.start()] + include + text[first.start():]
        (firmware / DSP_PRODUCT_HEADER).write_text(_DSP_PRODUCT_SOURCE)
    params.write_text(text)
    return bound


def stream_depths(project: str | Path) -> dict[str, int]:
    """C++ stream name -> the depth its STREAM pragma gives, as written in myproject.cpp."""
    text = (Path(project) / "firmware" / "myproject.cpp").read_text()
    return {name: int(depth) for name, depth in re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\d+)", text)}
