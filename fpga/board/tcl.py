"""The vendor scripts of the board project, written from the same names and widths as the IP top and the
driver (a test parses them with tclsh and checks that):

- ``hls.tcl`` (Vitis HLS): C synthesis of ``myproject_axis``, optional C/RTL co-simulation (it catches
  stream deadlocks a C simulation cannot) on ``myproject_axis_test.cpp``, and IP export;
- ``block_design.tcl`` (Vivado): the PYNQ-Z2's Zynq PS7, an AXI DMA without scatter-gather (its length
  register wide enough for the largest batch, 32-bit stream and memory sides), the IP between the DMA's
  two streams, the DMA's memory port on HP0, everything on FCLK0 at the HLS clock;
- ``bitstream.tcl`` (Vivado): implementation and bitstream; it fails when the .bit is missing or timing is
  not met (WNS < 0), and finds the .hwh where this Vivado release writes it.
"""
from __future__ import annotations

from .axis_top import IN_PORT, OUT_PORT, TOP
from .layout import LENGTH_WIDTH, StreamLayout

PART = "xc7z020clg400-1"
BOARD_PART = "tul.com.tw:pynq-z2:part0:1.0"  # TUL's board files (install them into Vivado: docs/fpga.md)
IP_VENDOR, IP_LIBRARY, IP_VERSION = "squeezenet-edge", "hls", "1.0"
HLS_CELL = f"{TOP}_0"


def hls_tcl(clock_mhz: float, cosim: bool) -> str:
    period = round(1000.0 / clock_mhz, 3)
    return f'''# Vitis HLS: vitis_hls -f hls.tcl, run in the HLS project (written by fpga/board/tcl.py).
open_project -reset {TOP}_prj
set_top {TOP}
add_files firmware/myproject.cpp -cflags "-std=c++0x"
add_files firmware/{TOP}.cpp -cflags "-std=c++0x"
add_files -tb {TOP}_test.cpp -cflags "-std=c++0x -Ifirmware"
add_files -tb firmware/weights
open_solution -reset solution1 -flow_target vivado
set_part {PART}
create_clock -period {period} -name default
config_export -format ip_catalog -rtl verilog -vendor {IP_VENDOR} -library {IP_LIBRARY} -version {IP_VERSION} -ipname {TOP}
csynth_design
{"cosim_design -trace_level none" if cosim else "# C/RTL co-simulation: off (make fpga-board COSIM=1 turns it on)"}
export_design -format ip_catalog
exit
'''


def block_design_tcl(layout: StreamLayout, clock_mhz: float, dma_cell: str, ip_repo: str) -> str:
    width = layout.word_bits
    return f'''# Vivado: vivado -mode batch -source block_design.tcl (written by fpga/board/tcl.py).
create_project board board -part {PART} -force
if {{[llength [get_board_parts -quiet {BOARD_PART}]] == 0}} {{
    error "Vivado has no board files for the PYNQ-Z2 ({BOARD_PART}): install TUL's pynq-z2 board files"
}}
set_property board_part {BOARD_PART} [current_project]
set_property ip_repo_paths {{{ip_repo}}} [current_project]
update_ip_catalog
create_bd_design design_1

create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 processing_system7_0
apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config {{make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"}} [get_bd_cells processing_system7_0]
set_property -dict [list CONFIG.PCW_USE_S_AXI_HP0 {{1}} CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{clock_mhz:g}}}] [get_bd_cells processing_system7_0]

create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:7.1 {dma_cell}
set_property -dict [list CONFIG.c_include_sg {{0}} CONFIG.c_sg_length_width {{{LENGTH_WIDTH}}} CONFIG.c_sg_include_stscntrl_strm {{0}} CONFIG.c_m_axi_mm2s_data_width {{{width}}} CONFIG.c_m_axis_mm2s_tdata_width {{{width}}} CONFIG.c_m_axi_s2mm_data_width {{{width}}} CONFIG.c_s_axis_s2mm_tdata_width {{{width}}} CONFIG.c_mm2s_burst_size {{16}} CONFIG.c_s2mm_burst_size {{16}}] [get_bd_cells {dma_cell}]

create_bd_cell -type ip -vlnv {IP_VENDOR}:{IP_LIBRARY}:{TOP}:{IP_VERSION} {HLS_CELL}
connect_bd_intf_net [get_bd_intf_pins {dma_cell}/M_AXIS_MM2S] [get_bd_intf_pins {HLS_CELL}/{IN_PORT}]
connect_bd_intf_net [get_bd_intf_pins {HLS_CELL}/{OUT_PORT}] [get_bd_intf_pins {dma_cell}/S_AXIS_S2MM]

apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {{Clk_master {{Auto}} Clk_slave {{Auto}} Clk_xbar {{Auto}} Master {{/processing_system7_0/M_AXI_GP0}} Slave {{/{dma_cell}/S_AXI_LITE}} ddr_seg {{Auto}} intc_ip {{New AXI Interconnect}} master_apm {{0}}}} [get_bd_intf_pins {dma_cell}/S_AXI_LITE]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {{Clk_master {{Auto}} Clk_slave {{Auto}} Clk_xbar {{Auto}} Master {{/{dma_cell}/M_AXI_MM2S}} Slave {{/processing_system7_0/S_AXI_HP0}} ddr_seg {{Auto}} intc_ip {{New AXI Interconnect}} master_apm {{0}}}} [get_bd_intf_pins processing_system7_0/S_AXI_HP0]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config {{Clk_master {{Auto}} Clk_slave {{Auto}} Clk_xbar {{Auto}} Master {{/{dma_cell}/M_AXI_S2MM}} Slave {{/processing_system7_0/S_AXI_HP0}} ddr_seg {{Auto}} intc_ip {{/axi_mem_intercon}} master_apm {{0}}}} [get_bd_intf_pins {dma_cell}/M_AXI_S2MM]
apply_bd_automation -rule xilinx.com:bd_rule:clkrst -config {{Clk {{/processing_system7_0/FCLK_CLK0}}}} [get_bd_pins {HLS_CELL}/ap_clk]

validate_bd_design
save_bd_design
make_wrapper -files [get_files design_1.bd] -top -import
'''


def bitstream_tcl(name: str, package: str) -> str:
    return f'''# Vivado: vivado -mode batch -source bitstream.tcl, after block_design.tcl (written by fpga/board/tcl.py).
open_project board/board.xpr
reset_run synth_1
launch_runs impl_1 -to_step write_bitstream -jobs 2
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] != "100%"}} {{
    error "implementation did not finish: [get_property STATUS [get_runs impl_1]]"
}}
open_run impl_1
set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
if {{$wns < 0}} {{
    error "timing not met: WNS $wns ns at the HLS clock (lower CLOCK_MHZ or raise the reuse factors)"
}}
set bit [file join [get_property DIRECTORY [get_runs impl_1]] design_1_wrapper.bit]
if {{![file exists $bit]}} {{
    error "no bitstream at $bit"
}}
# The .hwh: under board.gen (Vivado 2020.2 and later) or board.srcs (earlier releases).
set hwh [lindex [concat [glob -nocomplain board/board.gen/sources_1/bd/design_1/hw_handoff/design_1.hwh] [glob -nocomplain board/board.srcs/sources_1/bd/design_1/hw_handoff/design_1.hwh]] 0]
if {{$hwh eq ""}} {{
    error "no design_1.hwh under board/board.gen or board/board.srcs"
}}
file copy -force $bit {package}/{name}.bit
file copy -force $hwh {package}/{name}.hwh
puts "bitstream: {package}/{name}.bit, WNS $wns ns"
'''
