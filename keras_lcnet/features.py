"""PP-LCNet as a backbone: multi-scale features and freezing for fine-tuning."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_lcnet.architecture import STAGES, STEM
from keras_lcnet.architecture_v2 import FEATURE_STAGES_V2
from keras_lcnet.layers import RepDepthwiseConv2D
from keras_lcnet.model import stage_output_layer


def _check_stages(stages: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [s for s in stages if s not in allowed]
    if unknown or not stages:
        raise ValueError(
            f"Unknown stage(s) {unknown or list(stages)}; choose from {list(allowed)}."
        )


def _is_v2(model: keras.Model) -> bool:
    """Whether `model` is a PP-LCNetV2 (its stem conv is `stem_0`; V1's is `conv1`)."""
    return any(layer.name == "stem_0" for layer in model.layers)


def _stage_order(model: keras.Model) -> tuple[str, ...]:
    """The stem and stage names of the model's family, in order."""
    return FEATURE_STAGES_V2 if _is_v2(model) else (STEM, *STAGES)


def _layer_stage(name: str, v2: bool) -> str | None:
    """The stem or stage a layer belongs to, by its name (`stages_2_0_se` -> `stages_2`)."""
    if not v2:
        return name.split("_")[0]
    if name.startswith("stem_"):
        return "stem"
    return "_".join(name.split("_")[:2]) if name.startswith("stages_") else None


def _stage_output_layer(model: keras.Model, stage: str) -> keras.layers.Layer:
    """The layer ending `stage` in `model`; refuses a model not built by keras_lcnet."""
    if _is_v2(model):
        # Layers are in graph order: a stage ends with its last layer.
        found = [layer for layer in model.layers if _layer_stage(layer.name, True) == stage]
        if found:
            return found[-1]
        name = f"{stage}_*"
    else:
        name = stage_output_layer(stage)
        try:
            return model.get_layer(name)
        except ValueError:
            pass
    raise ValueError(
        f"{model.name!r} has no layer {name!r}: pass a model built by "
        "keras_lcnet.PPLCNet or keras_lcnet.PPLCNetV2 itself, not one that wraps it."
    )


def feature_extractor(model: keras.Model, stages: Sequence[str] | None = None) -> keras.Model:
    """Returns a model mapping images to PP-LCNet's stage feature maps.

    The stages are PaddleClas' (`MODEL_STAGES_PATTERN`): the outputs of
    `blocks2` ... `blocks6`, at strides 2, 4, 8, 16 and 32 with the default
    `stride_list`, with `make_divisible(c * scale)` channels for
    c = 32, 64, 128, 256, 512. For a PP-LCNetV2 they are `stem` (the stem
    and its block, stride 2) and `stages_0` ... `stages_3` (PaddleClas'
    `stages.0` ... `stages.3`, strides 4 to 32). The new model shares its
    layers and weights with `model` and works for any input size the model
    accepts.

    Example:

    ```python
    base = keras_lcnet.PPLCNet_x1_0(weights="imagenet", include_top=False)
    features = keras_lcnet.feature_extractor(base, stages=["blocks4", "blocks5", "blocks6"])
    maps = features(images)  # {"blocks4": (n, h/8, w/8, 128), ...}
    ```

    Args:
        model: A model built by `keras_lcnet.PPLCNet` or
            `keras_lcnet.PPLCNetV2` (with or without top).
        stages: Stage names to return; defaults to all five.

    Returns:
        A `keras.Model` whose output is a dict `{stage name: feature map}`.

    Raises:
        ValueError: An unknown stage name, or a model not built by
            `keras_lcnet.PPLCNet` (it lacks the stage's output layer).
    """
    allowed = FEATURE_STAGES_V2 if _is_v2(model) else STAGES
    stages = list(allowed if stages is None else stages)
    _check_stages(stages, allowed)
    outputs = {stage: _stage_output_layer(model, stage).output for stage in stages}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def freeze_backbone(
    model: keras.Model, up_to: str | None = None, freeze_batchnorm: bool = True
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
        model: A model built by `keras_lcnet.PPLCNet` or `keras_lcnet.PPLCNetV2`.
        up_to: Last frozen stage: `"conv1"` (the stem only) or `"blocks2"` ...
            `"blocks6"`; for a PP-LCNetV2 `"stem"` or `"stages_0"` ...
            `"stages_3"`. `None` (the default) freezes the whole backbone.
        freeze_batchnorm: Also freeze BatchNormalization layers in the
            trainable part.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: An unknown stage name, or a model without PP-LCNet's stem
            and stage layers.
    """
    order = _stage_order(model)
    up_to = order[-1] if up_to is None else up_to
    _check_stages([up_to], order)
    for stage in order:  # refuse before changing anything
        _stage_output_layer(model, stage)
    frozen, v2 = order[: order.index(up_to) + 1], _is_v2(model)
    for layer in model.layers:
        if _layer_stage(layer.name, v2) in frozen or (
            freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        ):
            layer.trainable = False
        elif freeze_batchnorm and isinstance(layer, RepDepthwiseConv2D):
            for bn in getattr(layer, "bns", ()):  # the branch form's BN sub-layers
                bn.trainable = False
    return model
