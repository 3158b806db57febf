"""PaddleClas PP-LCNetV2 names -> Keras variable paths, and folding rep branches on load.

Split from `mapping` (PP-LCNet) because folding needs the Keras layers, and
`mapping` stays Keras-free for `keras-lcnet info`.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from keras_lcnet.checkpoints.mapping import (
    _BN_PARAMS,
    _DEPTHWISE,
    Sources,
    _describe,
    convert_tensors,
    keras_path,
    strip_student_prefix,
)
from keras_lcnet.errors import CheckpointError
from keras_lcnet.layers import RepDepthwiseConv2D, fold_branches

# PP-LCNetV2: `stages.2.0.dw_conv_list.1.bn._mean` is a branch of the rep
# block `stages.2.0`, held by the sub-layers of its `stages_2_0_dw_conv` layer.
_REP_BRANCHES = "dw_conv_list"


def keras_path_v2(paddle_key: str) -> tuple[str, tuple[int, ...] | None] | None:
    """Maps a PaddleClas PP-LCNetV2 parameter name to a Keras variable path and layout.

    ConvBN modules, SE and the head map as in PP-LCNet (`keras_path`); branch
    `j` of a rep block maps into the block's `RepDepthwiseConv2D`
    (`stages.2.0.dw_conv_list.1.conv.weight` is `stages_2_0_dw_conv/list_1_conv/kernel`).

    Returns:
        `(path, permutation)`, or `None` for a rep block's pre-folded
        `dw_conv.weight` / `dw_conv.bias`: PaddleClas checkpoints hold them
        beside the branches, and they are folded anew from the branches
        rather than trusted.

    Raises:
        CheckpointError: The name is not part of PP-LCNetV2.
    """
    *module, param = paddle_key.split(".")
    if module and module[-1] == "dw_conv" and param in ("weight", "bias"):
        return None
    if _REP_BRANCHES in module[:-2]:
        at = module.index(_REP_BRANCHES)
        block, rest = "_".join(module[:at]), module[at + 1 :]
        if len(rest) == 2 and rest[1] == "conv" and param == "weight":
            return f"{block}_dw_conv/list_{rest[0]}_conv/kernel", _DEPTHWISE
        if len(rest) == 2 and rest[1] == "bn" and param in _BN_PARAMS:
            return f"{block}_dw_conv/list_{rest[0]}_bn/{_BN_PARAMS[param]}", None
        raise CheckpointError(f"unexpected tensor '{paddle_key}': not a PP-LCNetV2 parameter.")
    return keras_path(paddle_key)


def convert_pdparams_v2(
    state: Mapping[str, np.ndarray], dropout_rate: float = 0.2
) -> tuple[dict[str, np.ndarray], Sources]:
    """Converts a PaddleClas PP-LCNetV2 state dict to Keras paths and layouts (branch form).

    Args:
        state: `{name: array}` as `read_pdparams` returns; a `Student.`
            prefix on every name is dropped.
        dropout_rate: The checkpoint's `dropout_prob` (folded into `fc`).

    Returns:
        `(arrays, sources)` as `convert_pdparams`; rep blocks' pre-folded
        tensors are left out.
    """
    tensors = []
    for key, value in strip_student_prefix(state).items():
        target = keras_path_v2(key)
        if target is not None:
            tensors.append((key, *target, value))
    return convert_tensors(tensors, dropout_rate)


def _branch_arrays(layer, arrays, sources: Sources, origin: str) -> list:
    """A deploy-form rep layer's branches from branch-form arrays, shapes checked."""
    channels = layer.kernel.shape[2]
    branches = []
    for j, k in enumerate(layer.branch_kernel_sizes):
        prefix = f"{layer.name}/list_{j}_"
        expected = {f"{prefix}conv/kernel": (k, k, channels, 1)}
        expected.update({f"{prefix}bn/{p}": (channels,) for p in _BN_PARAMS.values()})
        for path, shape in expected.items():
            if path not in arrays:
                raise CheckpointError(
                    f"{origin} has no tensor for the model's variable '{path}' (branch {j} "
                    f"of the rep block '{layer.name}'): is it a PP-LCNetV2 checkpoint?"
                )
            if tuple(arrays[path].shape) != shape:
                key, found = _describe(sources, path, arrays[path].shape)
                raise CheckpointError(
                    f"{origin}: tensor '{key}' has shape {found} but the model expects "
                    f"{_describe(sources, path, shape)[1]}. Is it a checkpoint of another "
                    "PP-LCNetV2 variant?"
                )
        bn = {p: arrays.pop(f"{prefix}bn/{p}") for p in _BN_PARAMS.values()}
        branches.append((arrays.pop(f"{prefix}conv/kernel"), bn))
        for path in expected:
            sources.pop(path, None)
    return branches


def fold_rep_arrays(
    model: keras.Model, arrays: dict[str, np.ndarray], sources: Sources, origin: str
) -> None:
    """Folds branch-form arrays into the model's deploy-form rep layers, in place.

    For every `RepDepthwiseConv2D` built with `deploy=True`, its branches'
    kernels and BN tensors (as `convert_pdparams_v2` names them) are checked,
    replaced by the fused `kernel` and `bias`. Branch-form layers and other
    models are left alone.

    Args:
        model: The model the arrays are for.
        arrays: Keras-layout tensors by variable path (changed in place).
        sources: Their upstream names and layouts (changed in place).
        origin: How to name the checkpoint in error messages.

    Raises:
        CheckpointError: A branch tensor is missing or has the wrong shape.
    """
    for layer in model.layers:
        if isinstance(layer, RepDepthwiseConv2D) and layer.deploy:
            branches = _branch_arrays(layer, arrays, sources, origin)
            kernel, bias = fold_branches(branches, layer.kernel_size, layer.epsilon)
            arrays[f"{layer.name}/kernel"], arrays[f"{layer.name}/bias"] = kernel, bias
            folded = f"{layer.name} (folded from its branches)"
            sources[f"{layer.name}/kernel"] = sources[f"{layer.name}/bias"] = (folded, None)
