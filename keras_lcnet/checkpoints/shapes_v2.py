"""A PP-LCNetV2 checkpoint's architecture from its tensor shapes, without Keras.

Beside `mapping_v2` (which folds rep branches and needs the Keras layers),
this module reads only names and shapes, so `describe_checkpoint` and
`keras-lcnet info` can tell a V2 checkpoint without building a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from keras_lcnet.architecture import make_divisible
from keras_lcnet.architecture_v2 import STAGES_V2, STEM_CHANNELS_V2, variant_of
from keras_lcnet.checkpoints.mapping import strip_student_prefix
from keras_lcnet.errors import CheckpointError

_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.")
# Scales are tried on this grid first (`0.75` rather than `0.7578125`).
_SCALE_STEP = 0.05


def is_v2_state(state: Mapping[str, object]) -> bool:
    """Whether PaddleClas names are PP-LCNetV2's (`stem.0.conv.weight`), not PP-LCNet's."""
    return "stem.0.conv.weight" in strip_student_prefix(state)


def _widths(scale: float) -> tuple[int, int]:
    return make_divisible(STEM_CHANNELS_V2 * scale), make_divisible(
        STAGES_V2[-1].in_channels * 2 * scale)


def _scale(stem: int, last: int, origin: str) -> float:
    """The simplest width multiplier that gives the stem and last-stage channels."""
    exact = last / (STAGES_V2[-1].in_channels * 2)
    rounded = round(round(exact / _SCALE_STEP) * _SCALE_STEP, 2)
    for scale in (rounded, exact):
        if scale > 0 and _widths(scale) == (stem, last):
            return scale
    raise CheckpointError(
        f"{origin} has {stem} stem and {last} last-stage channels, which no PP-LCNetV2 "
        "scale gives: is it a PaddleClas PP-LCNetV2 checkpoint?"
    )


def _channels(state: Mapping[str, object], key: str, origin: str) -> int:
    if key not in state or np.ndim(state[key]) != 4:
        raise CheckpointError(
            f"{origin} has no 4-D tensor '{key}': is it a PaddleClas PP-LCNetV2 checkpoint?"
        )
    return int(state[key].shape[0])


def infer_architecture_v2(state: Mapping[str, object], origin: str = "the checkpoint") -> dict:
    """The `PPLCNetV2` arguments that a PaddleClas PP-LCNetV2 state dict's shapes determine.

    Args:
        state: `{name: array}` in PaddleClas names, as `read_pdparams`
            returns (a `Student.` prefix on every name is dropped).
        origin: How to name the checkpoint in error messages.

    Returns:
        `{"variant", "scale", "depths", "include_top", "classes"}`: `variant`
        is `"small"`, `"base"` or `"large"` when scale and depths are one of
        PaddleClas' named models, else `None`; without a classifier
        `include_top` is `False` and `classes` `None`.

    Raises:
        CheckpointError: The tensors are not those of a PP-LCNetV2.
    """
    state = strip_student_prefix(state)
    blocks: dict[int, int] = {}
    for key in state:
        if match := _BLOCK.match(key):
            stage, block = int(match[1]), int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if sorted(blocks) != list(range(len(STAGES_V2))):
        raise CheckpointError(
            f"{origin} has blocks in stages {sorted(blocks)}, not in stages 0-3: is it a "
            "PaddleClas PP-LCNetV2 checkpoint?"
        )
    depths = [blocks[s] for s in range(len(STAGES_V2))]
    stem = _channels(state, "stem.0.conv.weight", origin)
    last = _channels(state, f"stages.3.{depths[3] - 1}.pw_conv.conv.weight", origin)
    scale = _scale(stem, last, origin)
    fc = state.get("fc.weight")
    return {
        "variant": variant_of(scale, depths),
        "scale": scale,
        "depths": depths,
        "include_top": fc is not None,
        "classes": None if fc is None else int(np.shape(fc)[-1]),
    }
