"""The budget gate (``python -m budget``, ``make budget``): every built artifact against the 0.5 MiB byte
budget, and the FPGA design's estimate against its part. Reads what the other stages wrote; builds nothing
unless asked (``--fpga``). Torch-free unless it has to build the FPGA figures."""
