"""SqueezeNet family (float, PyTorch): the architecture every later stage is built from."""
from .squeezenet import (
                         BYPASS_MODES,
                         PRESETS,
                         ConfigError,
                         Fire,
                         FireSpec,
                         Layers,
                         SqueezeNet,
                         SqueezeNetConfig,
                         bypass_plan,
                         count_macs,
                         count_parameters,
                         fire_specs,
                         fold_batch_norm,
                         folded_copy,
                         small_image_config,
                         squeezenet1_0,
                         squeezenet1_0_config,
                         squeezenet1_1,
                         squeezenet1_1_config,
                         without_norm_layers,
)

__all__ = ["fold_batch_norm", "folded_copy", "without_norm_layers", "BYPASS_MODES", "ConfigError", "Fire", "FireSpec", "Layers", "PRESETS", "SqueezeNet",
           "SqueezeNetConfig", "bypass_plan", "count_macs", "count_parameters", "fire_specs",
           "small_image_config", "squeezenet1_0", "squeezenet1_0_config", "squeezenet1_1",
           "squeezenet1_1_config"]
