"""PP-LCNet, the CPU-first image classifier from PaddleClas, for Keras 3.

The public names are imported from their modules on first use (PEP 562), so
importing the package (and starting `keras-lcnet --help`) does not load Keras
or its backend. The custom layers are registered with Keras whenever Keras is
imported, before or after this package, so `keras.saving.load_model` finds
them in any process that imported `keras_lcnet`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import wrapt

__version__ = "0.2.0.dev0"

# Public name -> the module that defines it.
_EXPORTS = {
    "HardSwish": "keras_lcnet.layers",
    "PPLCNet": "keras_lcnet.model",
    "PPLCNet_x0_5": "keras_lcnet.model",
    "PPLCNet_x0_25": "keras_lcnet.model",
    "PPLCNet_x0_35": "keras_lcnet.model",
    "PPLCNet_x0_75": "keras_lcnet.model",
    "PPLCNet_x1_0": "keras_lcnet.model",
    "PPLCNet_x1_5": "keras_lcnet.model",
    "PPLCNet_x2_0": "keras_lcnet.model",
    "PPLCNet_x2_5": "keras_lcnet.model",
    "PPLCNetV2": "keras_lcnet.model_v2",
    "PPLCNetV2_base": "keras_lcnet.model_v2",
    "PPLCNetV2_large": "keras_lcnet.model_v2",
    "PPLCNetV2_small": "keras_lcnet.model_v2",
    "RepDepthwiseConv2D": "keras_lcnet.layers",
    "ReverseChannels": "keras_lcnet.layers",
    "SqueezeExcite": "keras_lcnet.layers",
    "decode_outputs": "keras_lcnet.decode",
    "decode_predictions": "keras_lcnet.decode",
    "describe_checkpoint": "keras_lcnet.checkpoints.forms",
    "feature_extractor": "keras_lcnet.features",
    "finetune": "keras_lcnet.finetuning",
    "freeze_backbone": "keras_lcnet.features",
    "from_checkpoint": "keras_lcnet.pretrained",
    "from_preset": "keras_lcnet.pretrained",
    "list_presets": "keras_lcnet.pretrained",
    "load_image": "keras_lcnet.preprocessing",
    "predict_files": "keras_lcnet.batch",
    "preprocess_input": "keras_lcnet.preprocessing",
    "reparameterize": "keras_lcnet.reparam",
}

__all__ = [
    "HardSwish",
    "PPLCNet",
    "PPLCNetV2",
    "PPLCNetV2_base",
    "PPLCNetV2_large",
    "PPLCNetV2_small",
    "PPLCNet_x0_5",
    "PPLCNet_x0_25",
    "PPLCNet_x0_35",
    "PPLCNet_x0_75",
    "PPLCNet_x1_0",
    "PPLCNet_x1_5",
    "PPLCNet_x2_0",
    "PPLCNet_x2_5",
    "RepDepthwiseConv2D",
    "ReverseChannels",
    "SqueezeExcite",
    "decode_outputs",
    "decode_predictions",
    "describe_checkpoint",
    "feature_extractor",
    "finetune",
    "freeze_backbone",
    "from_checkpoint",
    "from_preset",
    "list_presets",
    "load_image",
    "predict_files",
    "preprocess_input",
    "reparameterize",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports
    from keras_lcnet.batch import predict_files
    from keras_lcnet.checkpoints.forms import describe_checkpoint
    from keras_lcnet.decode import decode_outputs, decode_predictions
    from keras_lcnet.features import feature_extractor, freeze_backbone
    from keras_lcnet.finetuning import finetune
    from keras_lcnet.layers import HardSwish, RepDepthwiseConv2D, ReverseChannels, SqueezeExcite
    from keras_lcnet.model import (
        PPLCNet,
        PPLCNet_x0_5,
        PPLCNet_x0_25,
        PPLCNet_x0_35,
        PPLCNet_x0_75,
        PPLCNet_x1_0,
        PPLCNet_x1_5,
        PPLCNet_x2_0,
        PPLCNet_x2_5,
    )
    from keras_lcnet.model_v2 import PPLCNetV2, PPLCNetV2_base, PPLCNetV2_large, PPLCNetV2_small
    from keras_lcnet.preprocessing import load_image, preprocess_input
    from keras_lcnet.pretrained import from_checkpoint, from_preset, list_presets
    from keras_lcnet.reparam import reparameterize


def __getattr__(name: str):
    """Imports a public name from its module on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


@wrapt.when_imported("keras")
def _register_layers(keras_module) -> None:
    # `register_keras_serializable` runs when `keras_lcnet.layers` is imported.
    importlib.import_module("keras_lcnet.layers")
