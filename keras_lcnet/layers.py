"""Custom layers of PP-LCNet: hard-swish, squeeze-and-excitation, channel reversal, V2's rep
depthwise conv."""

from __future__ import annotations

import keras
import numpy as np
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


_GATES = {"hard_sigmoid": ops.hard_sigmoid, "sigmoid": ops.sigmoid}


@keras.saving.register_keras_serializable(package="keras_lcnet")
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation block of PP-LCNet (PaddleClas `SEModule`).

    Global average pool -> 1x1 conv to `channels // reduction` (with bias) ->
    ReLU -> 1x1 conv back to `channels` (with bias) -> gate -> multiply with
    the input. The gate is a hard-sigmoid (`relu6(x + 3) / 6`) in PP-LCNet and
    a plain sigmoid in PP-LCNetV2. The two convolutions are sub-layers named
    `conv1` and `conv2`, as in PaddleClas.

    Args:
        reduction: Channel reduction factor of the bottleneck. Defaults to 4.
        gate: `"hard_sigmoid"` (PP-LCNet, the default) or `"sigmoid"`
            (PP-LCNetV2).
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Input shape:
        4D tensor `(batch, height, width, channels)` (channels last) or
        `(batch, channels, height, width)` (channels first).

    Output shape:
        Same as the input.
    """

    def __init__(
        self,
        reduction: int = 4,
        data_format: str | None = None,
        gate: str = "hard_sigmoid",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"`reduction` must be a positive integer, got {reduction!r}.")
        if gate not in _GATES:
            raise ValueError(f"`gate` must be one of {sorted(_GATES)}, got {gate!r}.")
        self.reduction = reduction
        self.gate = gate
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
        scale = _GATES[self.gate](self.conv2(scale))
        return inputs * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {"reduction": self.reduction, "data_format": self.data_format, "gate": self.gate}
        )
        return config


def fold_branches(
    branches: list[tuple[np.ndarray, dict[str, np.ndarray]]], kernel_size: int, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Folds depthwise conv + BN branches into one biased depthwise kernel.

    Each branch computes `bn(depthwise_conv(x, kernel))` with its kernel
    centred (zero padding `(k - 1) // 2`), so at inference it equals a
    `kernel_size` kernel zero-padded around it, scaled per channel by
    `gamma / sqrt(variance + epsilon)`, plus the bias `beta - mean * scale`;
    the branches' sum is the sum of those. Computed in float64.

    Args:
        branches: `(kernel, bn)` per branch: a Keras depthwise kernel
            `(k, k, channels, 1)` and `{"gamma", "beta", "moving_mean",
            "moving_variance"}` arrays of shape `(channels,)`.
        kernel_size: The folded kernel's size (the largest branch's).
        epsilon: The BN layers' epsilon.

    Returns:
        `(kernel, bias)`: float32 `(kernel_size, kernel_size, channels, 1)`
        and `(channels,)`.
    """
    channels = np.shape(branches[0][0])[2]
    kernel = np.zeros((kernel_size, kernel_size, channels, 1))
    bias = np.zeros(channels)
    for branch_kernel, bn in branches:
        k = np.shape(branch_kernel)[0]
        offset = (kernel_size - k) // 2
        scale = np.asarray(bn["gamma"], np.float64) / np.sqrt(
            np.asarray(bn["moving_variance"], np.float64) + epsilon
        )
        kernel[offset : offset + k, offset : offset + k] += (
            np.asarray(branch_kernel, np.float64) * scale[:, None]
        )
        mean = np.asarray(bn["moving_mean"], np.float64)
        bias += np.asarray(bn["beta"], np.float64) - mean * scale
    return kernel.astype(np.float32), bias.astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_lcnet")
class RepDepthwiseConv2D(layers.Layer):
    """Re-parameterizable depthwise conv of PP-LCNetV2 (PaddleClas `RepDepthwiseSeparable`).

    Branch form (`deploy=False`, for training and for loading PaddleClas
    checkpoints): parallel depthwise convolutions of kernel `kernel_size`,
    `kernel_size - 2`, ..., 1 (the 1x1 branch only at stride 1), each without
    bias and followed by BatchNormalization, summed. Branch `j` is the
    sub-layers `list_{j}_conv` and `list_{j}_bn` (PaddleClas'
    `dw_conv_list.{j}`). Every branch pads `(k - 1) // 2` on each side, as
    Paddle does, so all branches see the same centres.

    Deploy form (`deploy=True`): one depthwise convolution of `kernel_size`
    with a bias (variables `kernel` and `bias`, PaddleClas' fused `dw_conv`),
    equal to the branch form at inference. `fused_weights()` computes them;
    `keras_lcnet.reparameterize` converts a whole model.

    Args:
        kernel_size: Odd size of the largest branch.
        strides: Stride of every branch (an int).
        deploy: Whether to build the single fused convolution.
        epsilon: The branches' BatchNormalization epsilon (Paddle's 1e-5).
        momentum: The branches' BatchNormalization momentum.
        data_format: `"channels_last"` or `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Input shape:
        4D tensor with a known channel dimension.

    Output shape:
        Same channels; spatial sizes divided by `strides` (rounded up).
    """

    def __init__(
        self,
        kernel_size: int,
        strides: int = 1,
        deploy: bool = False,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        data_format: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for arg, value in (("kernel_size", kernel_size), ("strides", strides)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}.")
        self.kernel_size, self.strides, self.deploy = kernel_size, strides, bool(deploy)
        self.epsilon, self.momentum = epsilon, momentum
        self.data_format = data_format or keras.config.image_data_format()
        self._channel_axis = -1 if self.data_format == "channels_last" else 1

    @property
    def branch_kernel_sizes(self) -> tuple[int, ...]:
        """Kernel sizes of the branches, largest first (PaddleClas' order)."""
        sizes = range(self.kernel_size, 0, -2)
        return tuple(k for k in sizes if k > 1 or self.strides == 1)

    def build(self, input_shape) -> None:
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"RepDepthwiseConv2D needs a known channel dimension, got {input_shape}."
            )
        if self.deploy:
            size = (self.kernel_size, self.kernel_size, channels, 1)
            self.kernel = self.add_weight(shape=size, initializer="he_normal", name="kernel")
            self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")
        else:
            self.convs, self.bns = [], []
            for j, k in enumerate(self.branch_kernel_sizes):
                conv = layers.DepthwiseConv2D(
                    k, strides=self.strides, padding=self._padding, use_bias=False,
                    data_format=self.data_format, dtype=self.dtype_policy, name=f"list_{j}_conv",
                )
                bn = layers.BatchNormalization(
                    axis=self._channel_axis, epsilon=self.epsilon, momentum=self.momentum,
                    dtype=self.dtype_policy, name=f"list_{j}_bn",
                )
                conv.build(input_shape)
                bn.build(conv.compute_output_shape(input_shape))
                self.convs.append(conv)
                self.bns.append(bn)
        self.built = True

    @property
    def _padding(self) -> str:
        # Odd kernels at stride 1: "same" is Paddle's symmetric padding. Strided
        # "same" would pad (0, 1) on even inputs, so those pad explicitly.
        return "same" if self.strides == 1 else "valid"

    def _pad(self, x, kernel_size: int):
        if self.strides == 1:
            return x
        pad = [(kernel_size - 1) // 2] * 2
        widths = [[0, 0], pad, pad, [0, 0]]
        if self.data_format == "channels_first":
            widths = [[0, 0], [0, 0], pad, pad]
        return ops.pad(x, widths)

    def call(self, inputs, training=None):
        if self.deploy:
            x = ops.depthwise_conv(
                self._pad(inputs, self.kernel_size), self.kernel, strides=self.strides,
                padding=self._padding, data_format=self.data_format,
            )
            shape = [1, 1, 1, 1]
            shape[self._channel_axis] = -1
            return x + ops.reshape(self.bias, shape)
        total = None
        for conv, bn in zip(self.convs, self.bns, strict=True):
            y = bn(conv(self._pad(inputs, conv.kernel_size[0])), training=training)
            total = y if total is None else total + y
        return total

    def fused_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The deploy form's `(kernel, bias)` equal to this branch form at inference.

        Returns:
            float32 `(kernel_size, kernel_size, channels, 1)` and `(channels,)`.

        Raises:
            ValueError: The layer is already in deploy form, or not built.
        """
        if self.deploy or not self.built:
            raise ValueError(f"{self.name}: only a built branch-form layer can be folded.")
        branches = [
            (
                keras.ops.convert_to_numpy(conv.kernel),
                {v.name: keras.ops.convert_to_numpy(v) for v in bn.weights},
            )
            for conv, bn in zip(self.convs, self.bns, strict=True)
        ]
        return fold_branches(branches, self.kernel_size, self.epsilon)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        for axis in spatial:
            if shape[axis] is not None:
                shape[axis] = (shape[axis] - 1) // self.strides + 1
        return tuple(shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "deploy": self.deploy,
                "epsilon": self.epsilon,
                "momentum": self.momentum,
                "data_format": self.data_format,
            }
        )
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
