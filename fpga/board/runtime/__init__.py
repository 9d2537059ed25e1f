"""What runs on the PYNQ-Z2's Arm: ``driver`` (the overlay, its DMA and the stream layout; also shipped alone
in the board package), ``app`` (``python -m fpga.board.runtime.app``: images, videos or a camera through the
Pi app's preprocessing and sources, classified on the IP) and ``health`` (the known answers, bit-exact with the
C simulation).

The board's release (fpga/board/deploy.py) ships this folder, ``rpi/runtime`` (the one implementation of
the pixel contract and the sources) and ``contract``: nothing here may import torch, tensorflow or the host
side.
"""
