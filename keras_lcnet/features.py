"""PP-LCNet as a backbone: multi-scale features and freezing for fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_lcnet.architecture import STAGES, STEM
from keras_lcnet.model import stage_output_layer


def _check_stages(stages: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [s for s in stages if s not in allowed]
    if unknown or not stages:
        raise ValueError(
            f"Unknown stage(s) {unknown or list(stages)}; choose from {list(allowed)}."
        )


def _stage_output_layer(model: keras.Model, stage: str) -> keras.layers.Layer:
    """The layer ending `stage` in `model`; refuses a model not built by keras_lcnet."""
    name = stage_output_layer(stage)
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"{model.name!r} has no layer {name!r}: pass a model built by "
            "keras_lcnet.PPLCNet itself, not one that wraps it."
        ) from None


def feature_extractor(model: keras.Model, stages: Sequence[str] | None = None) -> keras.Model:
    """Returns a model mapping images to PP-LCNet's stage feature maps.

    The stages are PaddleClas' (`MODEL_STAGES_PATTERN`): the outputs of
    `blocks2` ... `blocks6`, at strides 2, 4, 8, 16 and 32 with the default
    `stride_list`, with `make_divisible(c * scale)` channels for
    c = 32, 64, 128, 256, 512. The new model shares its layers and weights
    with `model` and works for any input size the model accepts.

    Example:

    ```python
    base = keras_lcnet.PPLCNet_x1_0(weights="imagenet", include_top=False)
    features = keras_lcnet.feature_extractor(base, stages=["blocks4", "blocks5", "blocks6"])
    maps = features(images)  # {"blocks4": (n, h/8, w/8, 128), ...}
    ```

    Args:
        model: A model built by `keras_lcnet.PPLCNet` (with or without top).
        stages: Stage names to return; defaults to all five.

    Returns:
        A `keras.Model` whose output is a dict `{stage name: feature map}`.

    Raises:
        ValueError: An unknown stage name, or a model not built by
            `keras_lcnet.PPLCNet` (it lacks the stage's output layer).
    """
    stages = list(STAGES if stages is None else stages)
    _check_stages(stages, STAGES)
    outputs = {stage: _stage_output_layer(model, stage).output for stage in stages}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def freeze_backbone(
    model: keras.Model, up_to: str = "blocks6", freeze_batchnorm: bool = True
) -> keras.Model:
    """Freezes the stem and every stage up to `up_to`, for fine-tuning.

    Layers after `up_to` (later stages and the head) stay trainable. With
    `freeze_batchnorm=True` every BatchNormalization layer of the model is
    frozen too, which in Keras 3 also runs it in inference mode: the moving
    statistics learned on ImageNet are kept, as Keras' transfer-learning
    guide recommends for small datasets. Compile the model after calling this.

    Like `feature_extractor`, it takes only a model built by
    `keras_lcnet.PPLCNet` (or a feature extractor of one): another
    architecture, or a model that holds a PP-LCNet as one of its layers, is
    refused before anything is frozen.

    Args:
        model: A model built by `keras_lcnet.PPLCNet`.
        up_to: Last frozen stage: `"conv1"` (the stem only) or `"blocks2"` ...
            `"blocks6"` (the whole backbone, the default).
        freeze_batchnorm: Also freeze BatchNormalization layers in the
            trainable part.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: An unknown stage name, or a model without PP-LCNet's stem
            and stage layers.
    """
    order = (STEM, *STAGES)
    _check_stages([up_to], order)
    for stage in order:  # refuse before changing anything
        _stage_output_layer(model, stage)
    frozen = order[: order.index(up_to) + 1]
    for layer in model.layers:
        stage = layer.name.split("_")[0]
        if stage in frozen or (
            freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        ):
            layer.trainable = False
    return model
