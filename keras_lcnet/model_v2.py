"""PP-LCNetV2 model family (PaddleClas `PPLCNetV2`) for Keras 3.

Reference:
- PaddleClas `ppcls/arch/backbone/legendary_models/pp_lcnet_v2.py` (Apache-2.0)
- PaddleClas `docs/en/models/PP-LCNetV2_en.md` (design notes, published accuracy)
"""

from __future__ import annotations

import os

import keras
from keras import layers

from keras_lcnet.architecture import BN_EPSILON, BN_MOMENTUM, CLASS_EXPAND, make_divisible
from keras_lcnet.architecture_v2 import (
    DROPOUT_V2,
    PW_SPLIT_RATIO,
    SE_REDUCTION_V2,
    STAGES_V2,
    STEM_BLOCK_CHANNELS_V2,
    STEM_CHANNELS_V2,
    VARIANTS_V2,
    StageConfig,
    variant_of,
)
from keras_lcnet.layers import RepDepthwiseConv2D, SqueezeExcite
from keras_lcnet.model import (
    _channel_axis,
    _image_input,
    _is_int,
    _preprocess,
    _resolve_input_shape,
    _validate_hyperparameters,
    _validate_top_args,
)
from keras_lcnet.presets import PRETRAINED_TAGS, InputContract, find_preset_v2
from keras_lcnet.reparam import reparameterize
from keras_lcnet.weights_v2 import load_weights_v2, validate_weights_v2


def _validate_depths(depths) -> tuple[int, int, int, int]:
    if (
        not isinstance(depths, (list, tuple))
        or len(depths) != len(STAGES_V2)
        or not all(_is_int(d) and d > 0 for d in depths)
    ):
        raise ValueError(
            f"`depths` must hold {len(STAGES_V2)} positive ints (blocks per stage, "
            f"e.g. [2, 2, 6, 2]), got {depths!r}."
        )
    return tuple(int(d) for d in depths)


def _published_variant(weights, scale: float, depths, channels: int) -> str | None:
    """The variant whose published weights `weights` names; `None` for other weights."""
    if weights not in PRETRAINED_TAGS:
        return None
    variant = variant_of(scale, depths)
    if variant is None:
        published = ", ".join(
            f"{v}: scale={s}, depths={list(d)}" for v, (s, d) in VARIANTS_V2.items()
        )
        raise ValueError(
            f"`weights='{weights}'` exists for PaddleClas' variants only ({published}); "
            f"got scale={scale}, depths={list(depths)}. Pass weights=None or a file."
        )
    find_preset_v2(variant, weights)  # refuses e.g. small + imagenet_ssld
    if channels != 3:
        raise ValueError(f"`weights='{weights}'` needs 3 input channels, got {channels}.")
    return variant


def _conv_bn(x, filters: int, kernel_size: int, strides: int, name: str, depthwise=False):
    """PaddleClas V2 ConvBNLayer: conv (no bias, symmetric padding) -> BN -> ReLU."""
    padding = "same"
    if strides != 1:  # Keras' strided "same" pads (0, 1) on even inputs; Paddle (p, p)
        x = layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        conv = layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )
    else:
        conv = layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )
    x = conv(x)
    x = layers.BatchNormalization(
        axis=_channel_axis(), epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn"
    )(x)
    return layers.ReLU(name=f"{name}_act")(x)


def _block(x, in_c: int, out_c: int, strides: int, config: StageConfig, name: str, deploy: bool):
    """RepDepthwiseSeparable: depthwise [rep] -> [SE] -> pointwise [split] [+ input]."""
    inputs = x
    if config.use_rep:
        x = RepDepthwiseConv2D(
            config.kernel_size, strides, deploy=deploy, epsilon=BN_EPSILON,
            momentum=BN_MOMENTUM, name=f"{name}_dw_conv",
        )(x)
        x = layers.ReLU(name=f"{name}_act")(x)
    else:
        x = _conv_bn(x, in_c, config.kernel_size, strides, f"{name}_dw_conv", depthwise=True)
    if config.use_se:
        x = SqueezeExcite(SE_REDUCTION_V2, gate="sigmoid", name=f"{name}_se")(x)
    if config.split_pw:
        x = _conv_bn(x, int(out_c * PW_SPLIT_RATIO), 1, 1, f"{name}_pw_conv_1")
        x = _conv_bn(x, out_c, 1, 1, f"{name}_pw_conv_2")
    else:
        x = _conv_bn(x, out_c, 1, 1, f"{name}_pw_conv")
    if config.use_shortcut and strides == 1 and in_c == out_c:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


_PLAIN_BLOCK = StageConfig(0, 3, False, False, False, False)


def _build_features(x, scale: float, depths, include_preprocessing: bool, deploy: bool):
    """[Normalization] -> stem -> stages.0 ... stages.3: the backbone."""
    if include_preprocessing:
        x = _preprocess(x, InputContract())  # PaddleClas' RGB ImageNet normalization
    stem_c = make_divisible(STEM_CHANNELS_V2 * scale)
    x = _conv_bn(x, stem_c, 3, 2, "stem_0")
    out_c = make_divisible(STEM_BLOCK_CHANNELS_V2 * scale)
    x = _block(x, stem_c, out_c, 1, _PLAIN_BLOCK, "stem_1", deploy)
    for s, (config, depth) in enumerate(zip(STAGES_V2, depths, strict=True)):
        out_c = make_divisible(config.in_channels * 2 * scale)
        for i in range(depth):
            in_c = make_divisible(config.in_channels * scale) if i == 0 else out_c
            x = _block(x, in_c, out_c, 2 if i == 0 else 1, config, f"stages_{s}_{i}", deploy)
    return x


def _build_head(x, include_top, pooling, classes, classifier_activation, dropout_rate):
    """PaddleClas' head (pool -> 1x1 conv -> ReLU -> dropout -> fc), or `pooling`."""
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
        x = layers.Conv2D(CLASS_EXPAND, 1, use_bias=False, name="last_conv")(x)
        x = layers.ReLU(name="act")(x)
        x = layers.Dropout(dropout_rate, name="dropout")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(classes, name="fc")(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def PPLCNetV2(
    scale: float = 1.0,
    depths=VARIANTS_V2["base"][1],
    include_top: bool = True,
    weights: str | os.PathLike | None = "imagenet",
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
    dropout_rate: float = DROPOUT_V2,
    deploy: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Instantiates the PP-LCNetV2 architecture.

    The network is PaddleClas' `PPLCNetV2` layer for layer: a stride-2 3x3
    stem and a plain depthwise-separable block, then four stages whose first
    block halves the resolution. Stages 3 and 4 use re-parameterizable
    depthwise convolutions (`RepDepthwiseConv2D`: parallel kernels 5, 3 and,
    at stride 1, 1); stage 3 adds squeeze-and-excitation (sigmoid gate) and a
    split pointwise conv, stage 4 a shortcut in its stride-1 blocks. ReLU
    throughout. Head: global average pooling -> 1x1 conv to 1280 channels (no
    bias) -> ReLU -> dropout -> dense. Layer names follow PaddleClas' module
    paths (`stem_0`, `stages_2_0_dw_conv`, `stages_2_0_se`, `last_conv`,
    `fc`), so checkpoints map by name.

    The model is built in branch form (as trained and as PaddleClas
    checkpoints store it); `deploy=True`, or `keras_lcnet.reparameterize`
    on a built model, folds every block's branches into one biased depthwise
    conv with the same outputs at inference.

    Input contract: as `keras_lcnet.PPLCNet`; with `include_preprocessing=True`
    the model takes RGB pixels in `[0, 255]`, otherwise `(x / 255 - mean) / std`.

    Args:
        scale: Width multiplier (PaddleClas: 0.75 small, 1.0 base, 1.25 large).
        depths: Blocks in each of the four stages (PaddleClas: `[2, 2, 4, 2]`
            small, `[2, 2, 6, 2]` base, `[2, 2, 8, 2]` large).
        include_top: Whether to include the classification head.
        weights: `None` (random initialization), `"imagenet"` (PaddleClas'
            ImageNet-1k weights of the small, base and large variants),
            `"imagenet_ssld"` (distilled; base only), the path to a
            PaddleClas `.pdparams` checkpoint of this architecture (its
            branches are loaded, then folded when `deploy=True`; its
            pre-folded `dw_conv` tensors are never used), a timm
            `lcnetv2_*` folder or `model.safetensors`, or a Keras
            `.weights.h5` / `.keras` file of a model of the same form.
        input_tensor: Optional Keras tensor to use as image input.
        input_shape: Optional shape tuple, `(None, None, 3)` by default; at
            least 32x32.
        pooling: Optional pooling mode when `include_top` is `False`: `None`
            (4D output of the last stage), `"avg"` or `"max"`.
        classes: Number of classes.
        classifier_activation: Activation of the top layer; `None` for logits.
        include_preprocessing: Whether the model normalizes `[0, 255]` RGB
            inputs itself.
        dropout_rate: Dropout rate before the classifier (PaddleClas'
            `dropout_prob`, 0.2 in its named models). Paddle scales by
            `1 - dropout_rate` at inference; the factor is folded into the
            classifier when a `.pdparams` file is loaded.
        deploy: Whether to build the re-parameterized (inference) form.
        name: Model name. Defaults to `"PPLCNetV2"`.

    Returns:
        A `keras.Model` instance.

    Raises:
        ValueError: An invalid argument, or published weights for another
            architecture (scale, depths, input channels, `classes`).
        CheckpointError: A weights file cannot be read or does not fit the
            model.
        WeightsUnavailableError: Published weights could not be downloaded.
    """
    validate_weights_v2(weights)
    _validate_top_args(weights, include_top, classes, classifier_activation, pooling)
    _validate_hyperparameters(scale, dropout_rate, CLASS_EXPAND)
    depths = _validate_depths(depths)
    input_shape, channels = _resolve_input_shape(input_shape, input_tensor, include_preprocessing)
    variant = _published_variant(weights, scale, depths, channels)
    # Published weights load into the branch form; it is folded afterwards.
    build_deploy = bool(deploy) and variant is None
    img_input = _image_input(input_tensor, input_shape)
    x = _build_features(img_input, scale, depths, include_preprocessing, build_deploy)
    x = _build_head(x, include_top, pooling, classes, classifier_activation, dropout_rate)
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    model = keras.Model(inputs, x, name=name or "PPLCNetV2")
    if weights is not None:
        load_weights_v2(model, weights, variant)
    return reparameterize(model) if deploy and not build_deploy else model


def _named_constructor(variant: str):
    scale, depths = VARIANTS_V2[variant]

    def constructor(
        include_top: bool = True,
        weights: str | os.PathLike | None = "imagenet",
        input_tensor=None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | None = "softmax",
        include_preprocessing: bool = True,
        dropout_rate: float = DROPOUT_V2,
        deploy: bool = False,
        name: str | None = None,
    ) -> keras.Model:
        return PPLCNetV2(
            scale=scale,
            depths=depths,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing,
            dropout_rate=dropout_rate,
            deploy=deploy,
            name=name or f"PPLCNetV2_{variant}",
        )

    constructor.__name__ = constructor.__qualname__ = f"PPLCNetV2_{variant}"
    constructor.__doc__ = _CONSTRUCTOR_DOC.format(variant=variant, scale=scale, depths=list(depths))
    return constructor


_CONSTRUCTOR_DOC = """Instantiates PP-LCNetV2 {variant} (scale {scale}, depths {depths}).

    Same as `PPLCNetV2(scale={scale}, depths={depths}, ...)`; see
    `keras_lcnet.PPLCNetV2` for the input contract and the branch/deploy forms.

    Args:
        include_top: Whether to include the classification head.
        weights: `None`, `"imagenet"`, `"imagenet_ssld"` (where published),
            or the path to a PaddleClas `.pdparams` checkpoint, a timm
            `lcnetv2_*` folder or `.safetensors` file, or a Keras
            `.weights.h5` / `.keras` file of this variant.
        input_tensor: Optional Keras tensor to use as image input.
        input_shape: Optional shape tuple, `(None, None, 3)` by default.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: Number of classes.
        classifier_activation: Activation of the top layer; `None` for logits.
        include_preprocessing: Whether the model takes `[0, 255]` RGB pixels
            and normalizes them itself.
        dropout_rate: Dropout rate before the classifier (the checkpoint's
            `dropout_prob`).
        deploy: Whether to build the re-parameterized (inference) form.
        name: Model name. Defaults to `"PPLCNetV2_{variant}"`.

    Returns:
        A `keras.Model` instance.
    """

PPLCNetV2_small = _named_constructor("small")
PPLCNetV2_base = _named_constructor("base")
PPLCNetV2_large = _named_constructor("large")
