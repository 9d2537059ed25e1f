"""From the HLS project to the board: the network behind AXI4-Stream (``axis_top``), the layout the DMA
and the driver share (``layout``), and the driver that runs on the board's Arm (``driver``: numpy and
``pynq`` only)."""
