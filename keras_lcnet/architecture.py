"""The PP-LCNet architecture as data: PaddleClas' NET_CONFIG and its width rules.

Shared by the builder (`model`) and the checkpoint readers, which infer a
checkpoint's width from its tensor shapes.
"""

from __future__ import annotations

from keras_lcnet.presets import VARIANTS

# Per-block `(kernel, in_channels, out_channels, stride, use_se)` before width
# scaling, as PaddleClas' NET_CONFIG. The first stride of blocks3..6 can be
# overridden with `stride_list`.
BLOCKS: dict[str, tuple[tuple[int, int, int, int, bool], ...]] = {
    "blocks2": ((3, 16, 32, 1, False),),
    "blocks3": ((3, 32, 64, 2, False), (3, 64, 64, 1, False)),
    "blocks4": ((3, 64, 128, 2, False), (3, 128, 128, 1, False)),
    "blocks5": ((3, 128, 256, 2, False),) + ((5, 256, 256, 1, False),) * 5,
    "blocks6": ((5, 256, 512, 2, True), (5, 512, 512, 1, True)),
}
STEM = "conv1"
STEM_CHANNELS = 16
STAGES = tuple(BLOCKS)
SE_REDUCTION = 4
DEFAULT_STRIDES = (2, 2, 2, 2, 2)
CLASS_EXPAND = 1280
BN_EPSILON = 1e-5  # Paddle's default; Keras' 1e-3 would shift every activation.
BN_MOMENTUM = 0.9
MIN_INPUT_SIZE = 32


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to a multiple of `divisor` as PaddleClas does."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # never round down by more than 10%
        rounded += divisor
    return rounded


def stage_channels(scale: float) -> dict[str, int]:
    """Output channels of the stem and of each stage for a width multiplier."""
    channels = {STEM: make_divisible(STEM_CHANNELS * scale)}
    for stage, blocks in BLOCKS.items():
        channels[stage] = make_divisible(blocks[-1][2] * scale)
    return channels


def variant_of_channels(channels: dict[str, int]) -> str | None:
    """The published width whose stem and stage channels are `channels`, if any."""
    for variant, scale in VARIANTS.items():
        if stage_channels(scale) == channels:
            return variant
    return None
