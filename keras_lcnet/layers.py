"""Custom layers of PP-LCNet: hard-swish, squeeze-and-excitation, channel reversal."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_lcnet")
class HardSwish(layers.Layer):
    """Hard-swish activation, `x * relu6(x + 3) / 6`.

    Written as PaddlePaddle's `nn.Hardswish` and the MobileNetV3 paper define it.
    The TFLite converter folds this exact pattern into its native `HARD_SWISH`
    op, which XNNPACK runs as one kernel.

    Args:
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape) -> None:
        self.built = True

    def call(self, inputs):
        return inputs * ops.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return super().get_config()


@keras.saving.register_keras_serializable(package="keras_lcnet")
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation block of PP-LCNet (PaddleClas `SEModule`).

    Global average pool -> 1x1 conv to `channels // reduction` (with bias) ->
    ReLU -> 1x1 conv back to `channels` (with bias) -> hard-sigmoid
    (`relu6(x + 3) / 6`) -> multiply with the input. The two convolutions are
    sub-layers named `conv1` and `conv2`, as in PaddleClas.

    Args:
        reduction: Channel reduction factor of the bottleneck. Defaults to 4.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels last) or
        `(batch, channels, height, width)` (channels first).

    Output shape:
        Same as the input.
    """

    def __init__(self, reduction: int = 4, data_format: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"`reduction` must be a positive integer, got {reduction!r}.")
        self.reduction = reduction
        self.data_format = data_format or keras.config.image_data_format()
        if self.data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"`data_format` must be 'channels_last' or 'channels_first', got {data_format!r}."
            )
        self.supports_masking = False

    @property
    def _spatial_axes(self) -> tuple[int, int]:
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def build(self, input_shape) -> None:
        channel_axis = -1 if self.data_format == "channels_last" else 1
        channels = input_shape[channel_axis]
        if channels is None:
            raise ValueError(
                f"SqueezeExcite needs a known channel dimension, got input shape {input_shape}."
            )
        pooled_shape = [input_shape[0], 1, 1, 1]
        pooled_shape[channel_axis] = channels
        self.conv1 = layers.Conv2D(
            channels // self.reduction,
            1,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name="conv1",
        )
        self.conv1.build(tuple(pooled_shape))
        squeezed_shape = list(pooled_shape)
        squeezed_shape[channel_axis] = channels // self.reduction
        self.conv2 = layers.Conv2D(
            channels,
            1,
            data_format=self.data_format,
            dtype=self.dtype_policy,
            name="conv2",
        )
        self.conv2.build(tuple(squeezed_shape))
        self.built = True

    def call(self, inputs):
        scale = ops.mean(inputs, axis=self._spatial_axes, keepdims=True)
        scale = ops.relu(self.conv1(scale))
        scale = ops.hard_sigmoid(self.conv2(scale))
        return inputs * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"reduction": self.reduction, "data_format": self.data_format})
        return config


@keras.saving.register_keras_serializable(package="keras_lcnet")
class ReverseChannels(layers.Layer):
    """Reverses the order of the channels: RGB images in, BGR out.

    Some checkpoints' pipelines feed their network BGR pixels (transformers'
    `PPLCNetImageProcessor` flips RGB to BGR after normalizing); with this
    layer in front, such a model still takes RGB. The channels are sliced
    and concatenated rather than reversed with one op, because LiteRT's
    XNNPACK delegate runs slices and concatenation but not `REVERSE_V2`.

    Args:
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        **kwargs: Standard `keras.layers.Layer` arguments.
    """

    def __init__(self, data_format: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_format = data_format or keras.config.image_data_format()
        if self.data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"`data_format` must be 'channels_last' or 'channels_first', got {data_format!r}."
            )

    @property
    def _axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape) -> None:
        if input_shape[self._axis] is None:
            raise ValueError(
                f"ReverseChannels needs a known channel dimension, got input shape {input_shape}."
            )
        self.built = True

    def call(self, inputs):
        channels = inputs.shape[self._axis]
        if self.data_format == "channels_last":
            parts = [inputs[..., c : c + 1] for c in reversed(range(channels))]
        else:
            parts = [inputs[:, c : c + 1] for c in reversed(range(channels))]
        return ops.concatenate(parts, axis=self._axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"data_format": self.data_format})
        return config
