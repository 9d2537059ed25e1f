"""Reading and finishing the files hls4ml writes into the HLS project (``firmware/``)."""
from __future__ import annotations

import math
import re
from pathlib import Path

from contract import UserError

_CALL = re.compile(r"nnet::\w+<[^;]*?\bconfig(\d+)>\([^;]*\);\s*//\s*(\S+)")
_MULT = re.compile(r"struct config(\d+)_mult\s*:\s*nnet::dense_config\s*\{(.*?)\n\};", re.S)
_FIELD = re.compile(r"static const unsigned (\w+) = ([^;]+);")


def read_dense_configs(project: str | Path) -> dict[str, dict]:
    """What hls4ml wrote for every conv's dense kernel, by layer name: n_in, n_out, reuse_factor, strategy,
    and the block factor the Resource kernel derives from them (``nnet_dense_resource.h``:
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
            "block_factor": math.ceil(n_in * n_out / rf)}
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


def stream_depths(project: str | Path) -> dict[str, int]:
    """C++ stream name -> the depth its STREAM pragma gives, as written in myproject.cpp."""
    text = (Path(project) / "firmware" / "myproject.cpp").read_text()
    return {name: int(depth) for name, depth in re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\d+)", text)}
