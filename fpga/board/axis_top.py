"""The network behind AXI4-Stream: ``myproject_axis`` reads each image as 32-bit words from an AXI DMA,
runs hls4ml's ``myproject`` on it and writes the logits back as 32-bit words with TLAST on the last word of
every image (so the DMA's receive channel completes once per image). ``ap_ctrl_none``: no control
register, the IP runs whenever words arrive; images stream back to back through the network's dataflow.

Written into the HLS project's firmware/ beside myproject.cpp, with a C bridge for the stand-in board
(``myproject_axis_run``: words in, words and TLAST flags out) and compiled with g++ against the project's
own compiled network and the stand-in ap_axi_sdata.h in fpga/board/include/.

Vivado/Vitis HLS bugs avoided (hls4ml #1244, #776; its VivadoAccelerator writer): the top uses hls::axis
words rather than a packed struct (which gets no TLAST under Vitis HLS), and the input and output widths
come from one StreamLayout, which the Tcl and the driver read too.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from contract import UserError

from .layout import StreamLayout

TOP = "myproject_axis"
IN_PORT, OUT_PORT = "image_in", "logits_out"  # the IP's stream ports: the block design connects these names
INCLUDE = Path(__file__).resolve().parent / "include"


def top_source(layout: StreamLayout, tlast: bool = True) -> tuple[str, str]:
    """(header, source) of the IP top for ``layout``. ``tlast=False`` writes a broken top that never raises
    TLAST (the tests' hung-DMA case)."""
    i, o = layout.input, layout.output
    header = f'''// The SqueezeNet IP for the board: AXI4-Stream in and out ({layout.word_bits}-bit words), ap_ctrl_none.
// Written by fpga/board/axis_top.py; the layout: fpga/board/layout.py.
#ifndef MYPROJECT_AXIS_H_
#define MYPROJECT_AXIS_H_

#include "ap_axi_sdata.h"
#include "hls_stream.h"
#include "myproject.h"

typedef hls::axis<ap_uint<{layout.word_bits}>, 0, 0, 0> axis_word_t;

// One call: one image. {i.elements} input values of {i.bits} bits ({i.per_word} a word, {i.words} words;
// the input TLAST, set by the DMA at the end of each transfer, is not used), then {o.elements} logits of
// {o.bits} bits ({o.per_word} a word, {o.words} words, TLAST on the last).
void {TOP}(hls::stream<axis_word_t> &{IN_PORT}, hls::stream<axis_word_t> &{OUT_PORT});

#endif
'''
    source = f'''#include "myproject_axis.h"

static const unsigned IN_VALUES = {i.elements}, IN_BITS = {i.bits}, IN_LANE = {i.lane_bits}, IN_PER_WORD = {i.per_word};
static const unsigned IN_WORDS = {i.words};
static const unsigned OUT_VALUES = {o.elements}, OUT_BITS = {o.bits}, OUT_LANE = {o.lane_bits}, OUT_PER_WORD = {o.per_word};
static const unsigned OUT_WORDS = {o.words};
static const bool RAISE_TLAST = {"true" if tlast else "false"};

// Words -> the network's tokens (input_t: one pixel's channels), values in the order the image is stored.
static void unpack(hls::stream<axis_word_t> &words, hls::stream<input_t> &tokens) {{
    axis_word_t word;
    input_t token;
    unsigned channel = 0;
unpack_values:
    for (unsigned v = 0; v < IN_WORDS * IN_PER_WORD; v++) {{
        #pragma HLS PIPELINE II=1
        unsigned lane = v % IN_PER_WORD;
        if (lane == 0) word = words.read();
        if (v < IN_VALUES) {{
            ap_uint<IN_BITS> bits = word.data >> (lane * IN_LANE);  // shifts, not a variable range()
            token[channel].range(IN_BITS - 1, 0) = bits;
            if (++channel == input_t::size) {{
                tokens.write(token);
                channel = 0;
            }}
        }}
    }}
}}

// The network's result tokens -> words, TLAST on the image's last word.
static void pack(hls::stream<result_t> &tokens, hls::stream<axis_word_t> &words) {{
    result_t token;
    unsigned channel = result_t::size;
    ap_uint<{layout.word_bits}> data = 0;
pack_values:
    for (unsigned v = 0; v < OUT_WORDS * OUT_PER_WORD; v++) {{
        #pragma HLS PIPELINE II=1
        unsigned lane = v % OUT_PER_WORD;
        if (v < OUT_VALUES) {{
            if (channel == result_t::size) {{
                token = tokens.read();
                channel = 0;
            }}
            ap_uint<{layout.word_bits}> bits = ap_uint<OUT_BITS>(token[channel].range(OUT_BITS - 1, 0));
            data |= bits << (lane * OUT_LANE);
            channel++;
        }}
        if (lane == OUT_PER_WORD - 1) {{
            axis_word_t word;
            word.data = data;
            word.keep = -1;
            word.strb = -1;
            word.last = RAISE_TLAST && v == OUT_WORDS * OUT_PER_WORD - 1;
            words.write(word);
            data = 0;
        }}
    }}
}}

void {TOP}(hls::stream<axis_word_t> &{IN_PORT}, hls::stream<axis_word_t> &{OUT_PORT}) {{
    #pragma HLS INTERFACE axis port={IN_PORT}
    #pragma HLS INTERFACE axis port={OUT_PORT}
    #pragma HLS INTERFACE ap_ctrl_none port=return
    #pragma HLS DATAFLOW
    hls::stream<input_t> tokens_in("tokens_in");
    hls::stream<result_t> tokens_out("tokens_out");
    unpack({IN_PORT}, tokens_in);
    myproject(tokens_in, tokens_out);
    pack(tokens_out, {OUT_PORT});
}}
'''
    return header, source


BRIDGE = f'''// The stand-in board's view of the IP (fpga/board/standin.py, through ctypes): words and their TLAST flags
// in, ``images`` calls of the top, the words and TLAST flags it wrote out. Written by fpga/board/axis_top.py.
#include <stdint.h>
#include "firmware/myproject_axis.h"

extern "C" int {TOP}_run(const uint32_t *words, const uint8_t *last, int n_words, int images,
                           uint32_t *out_words, uint8_t *out_last, int out_capacity) {{
    hls::stream<axis_word_t> in("axis_in"), out("axis_out");
    for (int k = 0; k < n_words; k++) {{
        axis_word_t word;
        word.data = words[k];
        word.keep = -1;
        word.strb = -1;
        word.last = last[k];
        in.write(word);
    }}
    for (int image = 0; image < images; image++) {TOP}(in, out);
    int n = 0;
    while (!out.empty()) {{
        if (n == out_capacity) return -1;  // more words than the caller expects
        axis_word_t word = out.read();
        out_words[n] = (uint32_t)word.data.to_uint();
        out_last[n] = (uint8_t)word.last.to_uint();
        n++;
    }}
    return in.empty() ? n : -2;  // -2: words left over (the caller's count was wrong)
}}
'''


def testbench_source(layout: StreamLayout, codes, raw) -> str:
    """The C/RTL co-simulation's test bench (``main``): the known answers through the top, their outputs
    and TLAST positions checked; exit status 1 on the first difference."""
    i, o = layout.input, layout.output
    rows_in = ",\n".join("    {" + ", ".join(str(int(v)) for v in row) + "}" for row in codes)
    rows_out = ",\n".join("    {" + ", ".join(str(int(v)) for v in row) + "}" for row in raw)
    mask_out = (1 << o.bits) - 1
    return f'''// Test bench of {TOP} (C simulation and C/RTL co-simulation): {len(codes)} test images and the outputs
// the C simulation of the network gives them. Written by fpga/board/axis_top.py.
#include <cstdio>
#include "firmware/{TOP}.h"

static const int IMAGES = {len(codes)};
static const long long CODES[IMAGES][{i.elements}] = {{
{rows_in}
}};
static const long long RAW[IMAGES][{o.elements}] = {{
{rows_out}
}};

int main() {{
    hls::stream<axis_word_t> in("in"), out("out");
    for (int n = 0; n < IMAGES; n++) {{
        for (int w = 0; w < {i.words}; w++) {{
            axis_word_t word;
            word.data = 0;
            for (int lane = 0; lane < {i.per_word}; lane++) {{
                int v = w * {i.per_word} + lane;
                if (v < {i.elements})
                    word.data |= ap_uint<{layout.word_bits}>(ap_uint<{i.bits}>(CODES[n][v])) << (lane * {i.lane_bits});
            }}
            word.keep = -1;
            word.strb = -1;
            word.last = n == IMAGES - 1 && w == {i.words - 1};
            in.write(word);
        }}
        {TOP}(in, out);
    }}
    for (int n = 0; n < IMAGES; n++) {{
        for (int w = 0; w < {o.words}; w++) {{
            axis_word_t word = out.read();
            if ((int)word.last.to_uint() != (w == {o.words - 1})) {{
                std::printf("image %d word %d: TLAST %d\\n", n, w, (int)word.last.to_uint());
                return 1;
            }}
            for (int lane = 0; lane < {o.per_word}; lane++) {{
                int v = w * {o.per_word} + lane;
                if (v >= {o.elements}) continue;
                long long got = ap_uint<{o.bits}>(word.data >> (lane * {o.lane_bits})).to_uint64();
                if (got != (RAW[n][v] & {mask_out})) {{
                    std::printf("image %d value %d: %lld, the C simulation gives %lld\\n", n, v, got, RAW[n][v]);
                    return 1;
                }}
            }}
        }}
    }}
    if (!out.empty()) {{
        std::printf("the top wrote more words than %d images take\\n", IMAGES);
        return 1;
    }}
    std::printf("%d images: every output and TLAST as expected\\n", IMAGES);
    return 0;
}}
'''


def write_top(project: Path, layout: StreamLayout, tlast: bool = True, known: tuple | None = None) -> list[Path]:
    """Write the top, its header, the stand-in bridge and (``known``: (codes, raw)) the test bench into
    ``project``; returns the files."""
    header, source = top_source(layout, tlast)
    files = {project / "firmware" / f"{TOP}.h": header, project / "firmware" / f"{TOP}.cpp": source,
             project / f"{TOP}_bridge.cpp": BRIDGE}
    if known is not None:
        files[project / f"{TOP}_test.cpp"] = testbench_source(layout, *known)
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def compile_standin(project: Path, network_library: Path, out: Path) -> Path:
    """g++: the top and its bridge, linked against the project's compiled network (the C simulation's
    library, which holds ``myproject`` and loads its weights), into ``out`` (a shared library)."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise UserError("g++ is not installed (sudo apt-get install g++): the IP top cannot be compiled here")
    network_library = network_library.resolve()
    argv = [gxx, "-O2", "-fPIC", "-shared", "-std=c++14", f"-I{INCLUDE}", f"-I{project / 'firmware' / 'ap_types'}",
            f"-I{project / 'firmware'}", f"-I{project}", str(project / "firmware" / f"{TOP}.cpp"),
            str(project / f"{TOP}_bridge.cpp"), str(network_library), f"-Wl,-rpath,{network_library.parent}",
            "-o", str(out)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        said = [ln for ln in result.stderr.splitlines() if "error" in ln] or result.stderr.splitlines()[-1:]
        raise UserError(f"g++ could not compile the IP top: {said[0] if said else 'no message'}")
    return out
