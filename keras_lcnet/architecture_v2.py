"""The PP-LCNetV2 architecture as data: PaddleClas' NET_CONFIG, variants and stage names."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One row of PaddleClas' PP-LCNetV2 NET_CONFIG (before width scaling).

    Attributes:
        in_channels: Input channels of the stage's first block; every block
            outputs twice as many.
        kernel_size: Depthwise kernel size.
        split_pw: Whether the pointwise conv is split in two (to half the
            output channels, then to all).
        use_rep: Whether the depthwise conv has re-parameterizable branches.
        use_se: Whether squeeze-and-excitation follows the depthwise conv.
        use_shortcut: Whether blocks with stride 1 and equal in/out channels
            add their input to their output.
    """

    in_channels: int
    kernel_size: int
    split_pw: bool
    use_rep: bool
    use_se: bool
    use_shortcut: bool


# PaddleClas `pp_lcnet_v2.NET_CONFIG`, stages "stage1" ... "stage4" (module paths
# `stages.0` ... `stages.3`). A stage's first block has stride 2, the others 1.
STAGES_V2: tuple[StageConfig, ...] = (
    StageConfig(64, 3, False, False, False, False),
    StageConfig(128, 3, False, False, False, False),
    StageConfig(256, 5, True, True, True, False),
    StageConfig(512, 5, False, True, False, True),
)
# Stem: 3x3 stride-2 ConvBN to 32 channels, then a plain block 32 -> 64 (3x3, stride 1).
STEM_CHANNELS_V2 = 32
STEM_BLOCK_CHANNELS_V2 = 64
PW_SPLIT_RATIO = 0.5
SE_REDUCTION_V2 = 4
# `(scale, depths)` of PaddleClas' PPLCNetV2_small / _base / _large.
VARIANTS_V2: dict[str, tuple[float, tuple[int, int, int, int]]] = {
    "small": (0.75, (2, 2, 4, 2)),
    "base": (1.0, (2, 2, 6, 2)),
    "large": (1.25, (2, 2, 8, 2)),
}
# The dropout_prob of PaddleClas' named constructors.
DROPOUT_V2 = 0.2
# Feature stages: the stem (stride 2), then stages.0 ... stages.3 (strides 4 ... 32).
FEATURE_STAGES_V2 = ("stem", "stages_0", "stages_1", "stages_2", "stages_3")


def variant_of(scale: float, depths) -> str | None:
    """The PaddleClas variant (`"small"`, `"base"`, `"large"`) built by `scale` and `depths`."""
    key = (scale, tuple(depths))
    return next((name for name, value in VARIANTS_V2.items() if value == key), None)
