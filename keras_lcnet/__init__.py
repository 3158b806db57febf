"""PP-LCNet, the CPU-first image classifier from PaddleClas, for Keras 3."""

from keras_lcnet.decode import decode_predictions
from keras_lcnet.features import feature_extractor, freeze_backbone
from keras_lcnet.layers import HardSwish, SqueezeExcite
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
from keras_lcnet.preprocessing import load_image, preprocess_input

__version__ = "0.1.0"

__all__ = [
    "HardSwish",
    "PPLCNet",
    "PPLCNet_x0_5",
    "PPLCNet_x0_25",
    "PPLCNet_x0_35",
    "PPLCNet_x0_75",
    "PPLCNet_x1_0",
    "PPLCNet_x1_5",
    "PPLCNet_x2_0",
    "PPLCNet_x2_5",
    "SqueezeExcite",
    "decode_predictions",
    "feature_extractor",
    "freeze_backbone",
    "load_image",
    "preprocess_input",
]
