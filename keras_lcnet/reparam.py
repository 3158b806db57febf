"""Structural re-parameterization: PP-LCNetV2's branch form -> its deploy form."""

from __future__ import annotations

import keras

from keras_lcnet.layers import RepDepthwiseConv2D


def _is_branch_form(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, RepDepthwiseConv2D) and not layer.deploy


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = layer.get_config()
    if _is_branch_form(layer):
        config["deploy"] = True
    return layer.__class__.from_config(config)


def reparameterize(model: keras.Model) -> keras.Model:
    """Folds every re-parameterizable block of a model into its deploy form.

    Each `RepDepthwiseConv2D` in branch form (parallel depthwise conv + BN
    branches) becomes one depthwise convolution with a bias whose output
    equals the branches' sum at inference, as PaddleClas'
    `RepDepthwiseSeparable.re_parameterize()` does. Every other layer keeps
    its weights. The new model has the same inputs, outputs and layer names;
    it is for inference (the folded BN statistics no longer adapt) and is
    what `PPLCNetV2(..., deploy=True)` builds.

    Example:

    ```python
    model = keras_lcnet.PPLCNetV2_base(weights="imagenet")
    deployed = keras_lcnet.reparameterize(model)  # fewer, larger kernels: faster
    ```

    Args:
        model: A functional model with branch-form `RepDepthwiseConv2D`
            layers, such as one built by `keras_lcnet.PPLCNetV2`.

    Returns:
        A new `keras.Model`; `model` is unchanged.

    Raises:
        ValueError: The model has no branch-form `RepDepthwiseConv2D` layer
            (e.g. it is a PP-LCNet V1, or already re-parameterized).
    """
    if not any(_is_branch_form(layer) for layer in model.layers):
        raise ValueError(
            f"{model.name!r} has no re-parameterizable (branch-form RepDepthwiseConv2D) "
            "layer: pass a PP-LCNetV2 built with deploy=False."
        )
    deployed = keras.models.clone_model(model, clone_function=_clone_layer)
    for old, new in zip(model.layers, deployed.layers, strict=True):
        if _is_branch_form(old):
            new.set_weights(list(old.fused_weights()))
        else:
            new.set_weights(old.get_weights())
    return deployed
