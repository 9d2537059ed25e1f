"""Calibration set of published hls4ml designs (project files plus their csynth and Vivado reports)."""
