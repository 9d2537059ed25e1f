"""Which architectures the int8 TFLite export can reproduce bit for bit: a rule on the config alone.

It lives in model/ because it is a property of the network's shape, and training checks it before the
first epoch (a network that cannot be exported exactly is refused then, not after hours of training);
the export stage (``export.tflite_build``) applies the same rule when it picks the global average's op.
"""
from __future__ import annotations

from contract import UserError


def global_pool_kind(count: int) -> str | None:
    """How the int8 TFLite model averages ``count`` values exactly: 'average_pool' (odd count), 'depthwise'
    (a power of two), None (any other even count: no int8 TFLite op rounds its ties the Brevitas way)."""
    if count % 2:
        return "average_pool"
    return "depthwise" if count & (count - 1) == 0 else None


def exact_input_sizes(cfg, limit: int = 256) -> list[int]:
    """The input sizes up to ``limit`` at which this architecture's TFLite export is exact."""
    sizes = []
    for size in range(8, limit + 1):
        try:
            side = cfg.replace(input_size=size).feature_map_size()
        except Exception:  # a size too small for the stem and pools
            continue
        if side >= 1 and global_pool_kind(side * side):
            sizes.append(size)
    return sizes


def check_tflite_exactness(cfg) -> None:
    """Refuse, before any work, a model whose TFLite export cannot be bit-exact (the reason in one line)."""
    side = cfg.feature_map_size()
    if global_pool_kind(side * side):
        return
    near = [s for s in exact_input_sizes(cfg) if abs(s - cfg.input_size) <= 16]
    raise UserError(f"the int8 TFLite export cannot be bit-exact at input size {cfg.input_size}: the last feature map "
                    f"is {side}x{side} = {side * side} values, an even count that is not a power of two, so the "
                    f"global average has half-way ties that TFLite's int8 kernels round differently from the "
                    f"quantized model; train at an input size whose last feature map has an odd or power-of-two "
                    f"count (near {cfg.input_size}: {', '.join(map(str, near)) or 'none'}; make train: INPUT_SIZE=)")
