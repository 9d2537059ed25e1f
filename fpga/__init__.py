"""hls4ml HLS project of the quantized SqueezeNet, its bit-exact C simulation and the storage budget."""
