// A small stand-in for Vitis HLS's ap_axi_sdata.h, so that g++ compiles and runs the board's IP top
// (firmware/myproject_axis.cpp) where Vitis HLS is not installed. It has the fields the top uses, with the
// widths Vitis gives hls::axis<ap_uint<W>, 0, 0, 0>: data, keep and strb (one bit per byte), last.
// Vitis HLS's own header replaces this one in C synthesis (the HLS script does not add this folder).
#ifndef AP_AXI_SDATA_STAND_IN_H
#define AP_AXI_SDATA_STAND_IN_H

#include "ap_int.h"

namespace hls {

template <typename T, int WUser, int WId, int WDest> struct axis {
    T data;
    ap_uint<(T::width + 7) / 8> keep;
    ap_uint<(T::width + 7) / 8> strb;
    ap_uint<1> last;
};

} // namespace hls

#endif
