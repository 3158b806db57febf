"""PP-LCNet model family (PaddleClas `PPLCNet`) for Keras 3.

Reference:
- [PP-LCNet: A Lightweight CPU Convolutional Neural Network](
    https://arxiv.org/abs/2109.15099) (Cui et al., 2021)
- PaddleClas `ppcls/arch/backbone/legendary_models/pp_lcnet.py` (Apache-2.0)
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable

import keras
from keras import layers

from keras_lcnet.architecture import (
    BLOCKS,
    BN_EPSILON,
    BN_MOMENTUM,
    CLASS_EXPAND,
    DEFAULT_STRIDES,
    MIN_INPUT_SIZE,
    STAGES,
    STEM,
    STEM_CHANNELS,
    make_divisible,
)
from keras_lcnet.checkpoints.huggingface import is_transformers_source
from keras_lcnet.checkpoints.pdiparams import is_inference_model
from keras_lcnet.layers import HardSwish, ReverseChannels, SqueezeExcite
from keras_lcnet.presets import (
    PRETRAINED_TAGS,
    VARIANTS,
    InputContract,
    Preset,
    find_preset,
    preset_named,
    variant_name,
)
from keras_lcnet.weights import load_weights


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _channel_axis() -> int:
    return -1 if keras.config.image_data_format() == "channels_last" else 1


# Argument resolution: everything is checked before the first layer is built.


def _validate_weights_arg(weights) -> None:
    if weights is None or weights in PRETRAINED_TAGS or preset_named(weights):
        return
    if isinstance(weights, (str, os.PathLike)) and (
        os.path.isfile(weights) or is_inference_model(weights) or is_transformers_source(weights)
    ):
        return
    raise ValueError(
        "The `weights` argument should be either `None` (random initialization), "
        "'imagenet', 'imagenet_ssld', a preset name (`keras_lcnet.list_presets()`), "
        "the path to a PaddleClas `.pdparams` or Keras `.weights.h5` file, a Paddle "
        "inference model's folder, a transformers or timm checkpoint folder, a timm "
        "`.safetensors` file or `hf://owner/repo`. "
        f"Received: weights={weights!r}"
        + (" (no such file or preset)" if isinstance(weights, (str, os.PathLike)) else "")
    )


def _published_head(weights) -> tuple[int, str] | None:
    """`(classes, activation)` of published weights; `None` for a file or `None`."""
    if weights in PRETRAINED_TAGS:
        return 1000, "softmax"
    preset = preset_named(weights)
    return None if preset is None else (preset.classes, preset.activation)


def _validate_top_args(weights, include_top, classes, classifier_activation, pooling) -> None:
    """keras.applications' checks (and messages) of the head arguments."""
    head = _published_head(weights)
    if head and include_top and classes != head[0]:
        raise ValueError(
            f"If using `weights='{weights}'` with `include_top=True`, `classes` "
            f"should be {head[0]}. Received: classes={classes}"
        )
    if head and classifier_activation not in (None, head[1]):
        raise ValueError(
            f"Only `None` and `'{head[1]}'` are allowed as `classifier_activation` "
            f"with `weights='{weights}'`. Received: "
            f"classifier_activation={classifier_activation!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    # bool is an int: `classes=True` would silently build a one-class head.
    if not _is_int(classes) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer, got {classes!r}.")


def _validate_hyperparameters(scale, dropout_rate, class_expand) -> None:
    # bool is an int; numbers.Real admits NumPy floats; NaN fails the range checks.
    valid_rate = isinstance(dropout_rate, numbers.Real) and not isinstance(dropout_rate, bool)
    if not valid_rate or not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be a number in [0, 1), got {dropout_rate!r}.")
    valid_scale = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not valid_scale or not 0 < scale < math.inf:
        raise ValueError(f"`scale` must be a positive number, got {scale!r}.")
    if not _is_int(class_expand) or class_expand < 1:
        raise ValueError(f"`class_expand` must be a positive integer, got {class_expand!r}.")


def _normalize_stride(stride, what: str) -> tuple[int, int]:
    if _is_int(stride):
        stride = (stride, stride)
    if (
        isinstance(stride, (list, tuple))
        and len(stride) == 2
        and all(_is_int(s) and s > 0 for s in stride)
    ):
        return (int(stride[0]), int(stride[1]))
    raise ValueError(
        f"{what} must be a positive int or a pair of positive ints such as [2, 1], got {stride!r}."
    )


def resolve_strides(stride_list) -> list[tuple[int, int]]:
    """PaddleClas' `stride_list` as five `(h, w)` pairs; a one-line ValueError if malformed."""
    if not isinstance(stride_list, (list, tuple)) or len(stride_list) != 5:
        raise ValueError(
            "`stride_list` must hold 5 strides (stem, then the first block of "
            f"blocks3..blocks6), got {stride_list!r}."
        )
    return [_normalize_stride(s, f"stride_list[{i}]") for i, s in enumerate(stride_list)]


def _is_size(size) -> bool:
    # Keras takes NumPy integers in shapes too.
    return isinstance(size, numbers.Integral) and not isinstance(size, bool)


def _resolve_input_shape(
    input_shape, input_tensor, include_preprocessing: bool
) -> tuple[tuple, int]:
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = (None, None, 3) if _channel_axis() == -1 else (3, None, None)
    if isinstance(input_shape, Iterable) and not isinstance(input_shape, str):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, tuple) or len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels) (or channels first "
            f"under that data format), got {input_shape!r}."
        )
    if _channel_axis() == -1:
        rows, cols, channels = input_shape
    else:
        channels, rows, cols = input_shape
    sizes_ok = all(s is None or _is_size(s) for s in (rows, cols))
    if not sizes_ok or not _is_size(channels) or channels < 1:
        raise ValueError(
            "`input_shape` must hold ints: height and width (or None for any size) "
            f"and a positive channel count. Received: input_shape={input_shape}"
        )
    for size in (rows, cols):
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}; "
                f"Received: input_shape={input_shape}"
            )
    if include_preprocessing and channels != 3:
        raise ValueError(
            "`include_preprocessing=True` normalizes RGB images, so the input "
            f"must have 3 channels; got input_shape={input_shape}. Pass "
            "`include_preprocessing=False` for other channel counts."
        )
    return input_shape, channels


def resolve_input_contract(
    contract: InputContract | None, expected: InputContract | None, source: str
) -> InputContract:
    """The input contract the in-graph preprocessing follows.

    Args:
        contract: The caller's `input_contract`, or `None`.
        expected: The contract of the checkpoint being loaded, if known: the
            default, and a given one must agree with it.
        source: How to name the checkpoint in error messages.

    Returns:
        `contract`, `expected`, or `InputContract()` (RGB, ImageNet statistics).

    Raises:
        ValueError: `contract` is not an `InputContract`, or feeds the
            network other pixels than the checkpoint was trained on.
    """
    if contract is not None and not isinstance(contract, InputContract):
        raise ValueError(
            "`input_contract` must be a keras_lcnet.presets.InputContract, "
            f"got {type(contract).__name__}."
        )
    if contract is None:
        return expected or InputContract()
    if expected is not None and _pixels(contract) != _pixels(expected):
        raise ValueError(
            f"input_contract={_pixels(contract)} contradicts {source}, whose network sees "
            f"{_pixels(expected)} (channel order, mean, std): leave input_contract out."
        )
    return contract


def _pixels(contract: InputContract) -> tuple:
    """What reaches the network: channel order and statistics (sizes are the loader's)."""
    return contract.channel_order, tuple(contract.mean), tuple(contract.std)


def _architecture(preset: Preset) -> dict:
    """The head and strides a preset's checkpoint was trained with."""
    return {
        "stride_list": resolve_strides(preset.architecture.get("stride_list", DEFAULT_STRIDES)),
        "use_last_conv": preset.architecture.get("use_last_conv", True),
        "class_expand": preset.architecture.get("class_expand", CLASS_EXPAND),
        "head_bias": False,  # PaddleClas' last_conv has no bias
    }


def _validate_pretrained(
    weights: str,
    scale: float,
    input_shape: tuple,
    channels: int,
    architecture: dict,
) -> Preset:
    """What published weights fix: width, 3 channels, strides and head."""
    # find_preset raises for ImageNet widths without a published checkpoint.
    tag = weights in PRETRAINED_TAGS
    preset = find_preset(scale, weights) if tag else preset_named(weights)
    if scale != preset.scale:
        raise ValueError(
            f"`weights='{weights}'` holds PPLCNet_{preset.variant} weights; build it with "
            f"scale={preset.scale} or `keras_lcnet.from_preset('{weights}')`. "
            f"Received: scale={scale}"
        )
    if channels != 3:
        raise ValueError(
            f"`weights='{weights}'` needs 3 input channels, got input_shape={input_shape}."
        )
    expected = _architecture(preset)
    if architecture != expected:
        wanted = ", ".join(f"{k}={v}" for k, v in expected.items() if architecture[k] != v)
        raise ValueError(
            f"`weights='{weights}'` needs {wanted}; pass a `.pdparams` path for "
            "other PaddleClas variants."
        )
    return preset


# Graph building.


def _conv_bn_act(x, filters, kernel_size, strides, name, depthwise=False):
    """ConvBNLayer: conv (no bias, symmetric padding) -> BN -> hard-swish.

    Paddle pads `(k - 1) // 2` on every side. Keras' "same" pads (0, 1) at
    stride 2 on even inputs, so strided convs get an explicit symmetric pad.
    """
    padding = "same"
    if strides != (1, 1):
        pad = (kernel_size - 1) // 2
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        x = layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding=padding, use_bias=False, name=name
        )(x)
    else:
        x = layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            name=name,
        )(x)
    x = layers.BatchNormalization(
        axis=_channel_axis(),
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        name=f"{name}_bn",
    )(x)
    return HardSwish(name=f"{name}_act")(x)


def _depthwise_separable(x, in_channels, out_channels, kernel_size, strides, use_se, name):
    """DepthwiseSeparable: depthwise ConvBN -> [SE] -> pointwise ConvBN."""
    x = _conv_bn_act(x, in_channels, kernel_size, strides, f"{name}_dw_conv", depthwise=True)
    if use_se:
        x = SqueezeExcite(reduction=4, name=f"{name}_se")(x)
    return _conv_bn_act(x, out_channels, 1, (1, 1), f"{name}_pw_conv")


def stage_output_layer(stage: str) -> str:
    """Name of the layer whose output is the stem's or a stage's feature map.

    These are PaddleClas' stage outputs: the stem's activation and, for
    `blocks2` ... `blocks6`, the activation of the stage's last pointwise
    conv. `_build_features` returns exactly these layers' outputs.

    Args:
        stage: `"conv1"` (the stem) or `"blocks2"` ... `"blocks6"`.

    Returns:
        The layer name, e.g. `"blocks5_5_pw_conv_act"`.
    """
    if stage == STEM:
        return f"{STEM}_act"
    return f"{stage}_{len(BLOCKS[stage]) - 1}_pw_conv_act"


def _preprocess(x: keras.KerasTensor, contract: InputContract) -> keras.KerasTensor:
    """`[0, 255]` RGB pixels -> the network input `contract` describes."""
    if contract.channel_order == "BGR":
        x = ReverseChannels(name="reverse_channels")(x)
    return layers.Normalization(
        axis=_channel_axis(),
        mean=[255.0 * m for m in contract.mean],
        variance=[(255.0 * s) ** 2 for s in contract.std],
        name="normalization",
    )(x)


def _build_features(
    x: keras.KerasTensor,
    scale: float,
    strides: list[tuple[int, int]],
    contract: InputContract | None,
) -> dict[str, keras.KerasTensor]:
    """[Preprocessing] -> stem -> blocks2..blocks6: the backbone.

    `contract` says how the in-graph preprocessing turns `[0, 255]` RGB
    pixels into the network's input; `None` builds none.

    Returns:
        `{stage: tensor}` for `"conv1"` and `"blocks2"` ... `"blocks6"`, in
        order; each tensor is the output of the layer `stage_output_layer(stage)`.
    """
    if contract is not None:
        x = _preprocess(x, contract)
    x = _conv_bn_act(x, make_divisible(STEM_CHANNELS * scale), 3, strides[0], STEM)
    features = {STEM: x}
    # `strides` holds the stem's, then the first block's of blocks3..blocks6.
    for stage_index, (stage, blocks) in enumerate(BLOCKS.items()):
        for i, (kernel, in_c, out_c, stride, use_se) in enumerate(blocks):
            block_strides = (stride, stride)
            if i == 0 and stage != "blocks2":
                block_strides = strides[stage_index]
            x = _depthwise_separable(
                x,
                make_divisible(in_c * scale),
                make_divisible(out_c * scale),
                kernel,
                block_strides,
                use_se,
                name=f"{stage}_{i}",
            )
        features[stage] = x
    return features


def _build_head(
    x: keras.KerasTensor,
    include_top: bool,
    pooling: str | None,
    classes: int,
    classifier_activation,
    dropout_rate: float,
    use_last_conv: bool,
    class_expand: int,
    head_bias: bool,
) -> keras.KerasTensor:
    """PaddleClas' head (pool -> [1x1 conv -> hard-swish -> dropout] -> fc), or `pooling`."""
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
        if use_last_conv:
            x = layers.Conv2D(class_expand, 1, use_bias=head_bias, name="last_conv")(x)
            x = HardSwish(name="act")(x)
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


def _image_input(input_tensor, input_shape: tuple) -> keras.KerasTensor:
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def PPLCNet(
    scale: float = 1.0,
    include_top: bool = True,
    weights: str | os.PathLike | None = "imagenet",
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
    dropout_rate: float = 0.2,
    stride_list=DEFAULT_STRIDES,
    use_last_conv: bool = True,
    class_expand: int = CLASS_EXPAND,
    input_contract: InputContract | None = None,
    head_bias: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Instantiates the PP-LCNet architecture.

    Reference:
    - [PP-LCNet: A Lightweight CPU Convolutional Neural Network](
        https://arxiv.org/abs/2109.15099) (Cui et al., 2021)

    The network is PaddleClas' `PPLCNet` layer for layer: a stride-2 3x3 stem,
    thirteen depthwise-separable blocks (3x3 kernels, then 5x5 from the
    second block of `blocks5`), squeeze-and-excitation in the last two blocks
    only, hard-swish everywhere, and a head of global average pooling -> 1x1
    conv to `class_expand` channels -> hard-swish -> dropout -> dense. Layer
    names follow PaddleClas' module paths (`conv1`, `blocks5_3_dw_conv`,
    `blocks6_0_se`, `last_conv`, `fc`), so checkpoints map by name.

    Input contract: with `include_preprocessing=True` (the default, as in
    `keras.applications.MobileNetV3Small`) the model takes RGB pixels in
    `[0, 255]` and normalizes them with the ImageNet mean and standard
    deviation inside the graph, so `keras_lcnet.preprocess_input` is a
    pass-through. With `include_preprocessing=False` the caller feeds
    `(x / 255 - mean) / std`, as PaddleClas does.

    Args:
        scale: Width multiplier. PaddleClas publishes weights for 0.25, 0.35,
            0.5, 0.75, 1.0, 1.5, 2.0 and 2.5.
        include_top: Whether to include the classification head.
        weights: `None` (random initialization), `"imagenet"` (PaddleClas'
            ImageNet-1k weights), `"imagenet_ssld"` (PaddleClas' distilled
            weights, for 0.25, 0.5, 1.0 and 2.5), a preset name (the
            published task checkpoints, `keras_lcnet.list_presets()`; the
            model must have the preset's width, strides and head, which
            `keras_lcnet.from_preset` sets), the path to a PaddleClas
            `.pdparams` checkpoint or a Keras `.weights.h5` file, a
            transformers PP-LCNet folder, a timm `lcnet_*` folder or
            `.safetensors` file (with `head_bias=True`), or
            `hf://owner/repo[@revision]` (see `keras_lcnet.from_checkpoint`).
        input_tensor: Optional Keras tensor (output of `keras.Input()`) to use
            as image input for the model.
        input_shape: Optional shape tuple, `(None, None, 3)` by default. Any
            size from 32x32 up works; with `weights=None` and
            `include_preprocessing=False` any channel count works too.
        pooling: Optional pooling mode when `include_top` is `False`: `None`
            (4D output of the last block), `"avg"` or `"max"`.
        classes: Number of classes; with published weights and `include_top`
            it must be theirs (1000 for the ImageNet tags).
        classifier_activation: Activation of the top layer, a string or
            callable; `None` returns logits. Only `None` or the weights' own
            (`"softmax"` for ImageNet, a preset's `activation`) with published
            weights.
        include_preprocessing: Whether the model normalizes `[0, 255]` RGB
            inputs itself (see the input contract above).
        dropout_rate: Dropout rate before the classifier (PaddleClas'
            `dropout_prob`). Paddle scales by `1 - dropout_rate` at inference;
            this factor is folded into the classifier when a `.pdparams` file
            is loaded, so set it to the checkpoint's `dropout_prob`.
        stride_list: PaddleClas' `stride_list`: five strides for the stem and
            the first block of `blocks3`..`blocks6`; each an int or a pair
            such as `[2, 1]`.
        use_last_conv: Whether the head has the 1x1 conv to `class_expand`
            channels (and the dropout). PaddleClas' `use_last_conv`.
        class_expand: Channels of the head's 1x1 conv. PaddleClas'
            `class_expand`.
        input_contract: What `include_preprocessing=True` turns the `[0, 255]`
            RGB input into: a `keras_lcnet.presets.InputContract` whose
            `channel_order` (`"BGR"` reverses the channels in the graph),
            `mean` and `std` (in that order) are used; its sizes are
            `load_image`'s business. Defaults to the preset's contract for a
            preset name, else RGB with the ImageNet statistics. Checkpoint
            loaders (`keras_lcnet.from_checkpoint`) set it from the file.
        head_bias: Whether the head's 1x1 conv has a bias: `False` as in
            PaddleClas, `True` as in timm's `lcnet_*` (its `conv_head`).
        name: Model name. Defaults to `"PPLCNet_x1_0"` and so on.

    Returns:
        A `keras.Model` instance.

    Raises:
        ValueError: An invalid argument, or one that the pretrained weights
            do not fit (width, input channels, `classes`, head options).
        WeightsUnavailableError: Published weights could not be downloaded.
        CheckpointError: A weights file cannot be read or does not fit the
            model.
    """
    _validate_weights_arg(weights)
    _validate_top_args(weights, include_top, classes, classifier_activation, pooling)
    _validate_hyperparameters(scale, dropout_rate, class_expand)
    strides = resolve_strides(stride_list)
    input_shape, channels = _resolve_input_shape(input_shape, input_tensor, include_preprocessing)
    preset = None
    if weights in PRETRAINED_TAGS or preset_named(weights):
        architecture = {
            "stride_list": strides, "use_last_conv": use_last_conv,
            "class_expand": class_expand, "head_bias": head_bias,
        }
        preset = _validate_pretrained(weights, scale, input_shape, channels, architecture)
    contract = resolve_input_contract(
        input_contract, preset.input if preset else None, f"weights='{weights}'"
    )

    img_input = _image_input(input_tensor, input_shape)
    features = _build_features(
        img_input, scale, strides, contract if include_preprocessing else None
    )
    x = _build_head(
        features[STAGES[-1]],
        include_top,
        pooling,
        classes,
        classifier_activation,
        dropout_rate,
        use_last_conv,
        class_expand,
        head_bias,
    )
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    model = keras.Model(inputs, x, name=name or f"PPLCNet_{variant_name(scale)}")
    if weights is not None:
        load_weights(model, weights, scale=scale)
    return model


def _named_constructor(variant: str):
    scale = VARIANTS[variant]

    def constructor(
        include_top: bool = True,
        weights: str | os.PathLike | None = "imagenet",
        input_tensor=None,
        input_shape: tuple | None = None,
        pooling: str | None = None,
        classes: int = 1000,
        classifier_activation: str | None = "softmax",
        include_preprocessing: bool = True,
        dropout_rate: float = 0.2,
        stride_list=DEFAULT_STRIDES,
        use_last_conv: bool = True,
        class_expand: int = CLASS_EXPAND,
        input_contract: InputContract | None = None,
        head_bias: bool = False,
        name: str | None = None,
    ) -> keras.Model:
        return PPLCNet(
            scale=scale,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing,
            dropout_rate=dropout_rate,
            stride_list=stride_list,
            use_last_conv=use_last_conv,
            class_expand=class_expand,
            input_contract=input_contract,
            head_bias=head_bias,
            name=name,
        )

    constructor.__name__ = constructor.__qualname__ = f"PPLCNet_{variant}"
    constructor.__doc__ = _CONSTRUCTOR_DOC.format(variant=variant, scale=scale)
    return constructor


_CONSTRUCTOR_DOC = """Instantiates PP-LCNet {variant} (width multiplier {scale}).

    Same as `PPLCNet(scale={scale}, ...)`; see `keras_lcnet.PPLCNet` for the
    input contract and the PaddleClas-specific options.

    Args:
        include_top: Whether to include the classification head.
        weights: `None`, `"imagenet"`, `"imagenet_ssld"` (where published), a
            preset name of this width (`keras_lcnet.list_presets()`), or the
            path to a PaddleClas `.pdparams` or Keras `.weights.h5` file.
        input_tensor: Optional Keras tensor to use as image input.
        input_shape: Optional shape tuple, `(None, None, 3)` by default.
        pooling: `None`, `"avg"` or `"max"` when `include_top` is `False`.
        classes: Number of classes (the weights' own with published weights
            and a top: 1000 for ImageNet).
        classifier_activation: Activation of the top layer; `None` for logits.
        include_preprocessing: Whether the model takes `[0, 255]` RGB pixels
            and normalizes them itself.
        dropout_rate: Dropout rate before the classifier (the checkpoint's
            `dropout_prob`).
        stride_list: PaddleClas' `stride_list` (stem, then the first block of
            `blocks3`..`blocks6`; 2-D entries such as `[2, 1]` allowed).
        use_last_conv: Whether the head has the 1x1 conv to `class_expand`.
        class_expand: Channels of the head's 1x1 conv.
        input_contract: The channel order and statistics the in-graph
            preprocessing produces (a `keras_lcnet.presets.InputContract`).
        head_bias: Whether the head's 1x1 conv has a bias (timm's `lcnet_*`).
        name: Model name.

    Returns:
        A `keras.Model` instance.
    """

PPLCNet_x0_25 = _named_constructor("x0_25")
PPLCNet_x0_35 = _named_constructor("x0_35")
PPLCNet_x0_5 = _named_constructor("x0_5")
PPLCNet_x0_75 = _named_constructor("x0_75")
PPLCNet_x1_0 = _named_constructor("x1_0")
PPLCNet_x1_5 = _named_constructor("x1_5")
PPLCNet_x2_0 = _named_constructor("x2_0")
PPLCNet_x2_5 = _named_constructor("x2_5")
