"""PaddleClas parameter names -> Keras variable paths, layouts and shape checks.

Every checkpoint form that uses PaddleClas' module names (`conv1.conv.weight`,
`blocks5.3.dw_conv.bn._mean`, `fc.weight`, ...) is mapped here, all or
nothing: a model gets every variable with its exact shape, or an error that
names the first tensor that does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from keras_lcnet.architecture import BLOCKS, CLASS_EXPAND, STEM, variant_of_channels
from keras_lcnet.errors import CheckpointError
from keras_lcnet.presets import VARIANTS

if TYPE_CHECKING:
    import h5py
    import keras

    ArrayLike = np.ndarray | h5py.Dataset

_BN_PARAMS = {
    "weight": "gamma",
    "bias": "beta",
    "_mean": "moving_mean",
    "_variance": "moving_variance",
}
_CONV = (2, 3, 1, 0)  # Paddle [out, in, kh, kw] -> Keras (kh, kw, in, out)
_DEPTHWISE = (2, 3, 0, 1)  # Paddle [channels, 1, kh, kw] -> Keras (kh, kw, channels, 1)
HEAD_KEYS = ("last_conv.weight", "fc.weight", "fc.bias")
# `last_conv/bias` is timm's (its `conv_head` has one; PaddleClas' `last_conv` has none).
HEAD_PATHS = frozenset(("last_conv/kernel", "last_conv/bias", "fc/kernel", "fc/bias"))
# PaddleClas' distillation saves the student under this prefix (`save_load.py`).
STUDENT_PREFIX = "Student."
# For each Keras variable path, the tensor's name and layout in the checkpoint.
Sources = dict[str, tuple[str, tuple[int, ...] | None]]


def strip_student_prefix(state: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The state dict without a leading `Student.` when every key has one.

    Checkpoints saved from a PaddleClas `DistillationModel`'s student may keep
    the prefix; the tensors are those of a plain PP-LCNet.
    """
    if state and all(key.startswith(STUDENT_PREFIX) for key in state):
        return {key.removeprefix(STUDENT_PREFIX): value for key, value in state.items()}
    return state


def keras_path(paddle_key: str) -> tuple[str, tuple[int, ...] | None]:
    """Maps a PaddleClas parameter name to a Keras variable path and layout.

    `blocks5.3.dw_conv.conv.weight` is the kernel of the Keras layer
    `blocks5_3_dw_conv`; `blocks5.3.dw_conv.bn._mean` the moving mean of
    `blocks5_3_dw_conv_bn`; `blocks6.0.se.conv1.bias` the bias of the `conv1`
    sub-layer of `blocks6_0_se`.

    Returns:
        `(path, permutation)`: the Keras variable path and the axis
        permutation from Paddle's layout to Keras' (`None`: unchanged).

    Raises:
        CheckpointError: The name is not part of PP-LCNet.
    """
    *module, param = paddle_key.split(".")
    if module and module[-1] == "bn" and param in _BN_PARAMS:
        return "_".join(module[:-1]) + f"_bn/{_BN_PARAMS[param]}", None
    if module and module[-1] == "conv" and param == "weight":
        layout = _DEPTHWISE if module[-2:-1] == ["dw_conv"] else _CONV
        return "_".join(module[:-1]) + "/kernel", layout
    if module[-2:-1] == ["se"] and module[-1] in ("conv1", "conv2") and param in ("weight", "bias"):
        layer = "_".join(module[:-1]) + "/" + module[-1]
        return (f"{layer}/kernel", _CONV) if param == "weight" else (f"{layer}/bias", None)
    if paddle_key == "last_conv.weight":
        return "last_conv/kernel", _CONV
    if paddle_key == "last_conv.bias":  # timm's head conv only
        return "last_conv/bias", None
    if paddle_key in ("fc.weight", "fc.bias"):  # Linear weight is [in, out] like Keras
        return ("fc/kernel" if param == "weight" else "fc/bias"), None
    raise CheckpointError(f"unexpected tensor '{paddle_key}': not a PP-LCNet parameter.")


def paddle_shape(keras_shape: tuple[int, ...], layout: tuple[int, ...] | None) -> list[int]:
    """The Paddle-layout shape of a Keras-layout shape (for error messages)."""
    if layout is None:
        return list(keras_shape)
    shape = [0] * len(layout)
    for keras_axis, paddle_axis in enumerate(layout):
        shape[paddle_axis] = keras_shape[keras_axis]
    return shape


def convert_pdparams(
    state: Mapping[str, np.ndarray], dropout_rate: float = 0.2
) -> tuple[dict[str, np.ndarray], Sources]:
    """Converts a PaddleClas state dict to Keras variable paths and layouts.

    Paddle's `downscale_in_infer` dropout multiplies the head by
    `1 - dropout_rate` at inference while Keras' dropout is the identity
    there, so that factor is folded into the classifier kernel (the bias is
    unchanged). It applies only to checkpoints with a `last_conv` head.

    Args:
        state: `{name: array}` as `read_pdparams` returns; a `Student.`
            prefix on every name is dropped.
        dropout_rate: The checkpoint's `dropout_prob`.

    Returns:
        `(arrays, sources)`: float32 arrays by Keras variable path, and for
        each path the Paddle name and layout it came from.
    """
    tensors = ((key, *keras_path(key), value) for key, value in strip_student_prefix(state).items())
    return convert_tensors(tensors, dropout_rate)


def convert_tensors(
    tensors: Iterable[tuple[str, str, tuple[int, ...] | None, np.ndarray]],
    dropout_rate: float,
    origin: str = "the checkpoint",
) -> tuple[dict[str, np.ndarray], Sources]:
    """Puts named upstream tensors into Keras layouts and folds the dropout factor.

    Paddle's `downscale_in_infer` dropout (and transformers' port of it)
    multiplies the head by `1 - dropout_rate` at inference, while Keras'
    dropout is the identity there: the factor is folded into the classifier
    kernel (the bias is unchanged), for heads with a `last_conv` only.

    Args:
        tensors: `(upstream name, Keras variable path, permutation or None,
            array)` for each tensor.
        dropout_rate: The checkpoint's dropout probability.
        origin: How to name the checkpoint in error messages.

    Returns:
        `(arrays, sources)`: float32 arrays by Keras variable path, and for
        each path the upstream name and layout it came from.
    """
    arrays, sources = {}, {}
    for key, path, layout, value in tensors:
        value = np.asarray(value, dtype=np.float32)
        if layout is not None:
            if value.ndim != len(layout):
                raise CheckpointError(
                    f"{origin}: tensor '{key}' has shape {list(value.shape)}, expected "
                    f"{len(layout)} dimensions."
                )
            value = value.transpose(layout)
        arrays[path] = np.ascontiguousarray(value)
        sources[path] = (key, layout)
    if "fc/kernel" in arrays and "last_conv/kernel" in arrays:
        arrays["fc/kernel"] = arrays["fc/kernel"] * np.float32(1.0 - dropout_rate)
    return arrays, sources


def _describe(sources: Sources, path: str, shape) -> tuple[str, list[int]]:
    """A tensor's name and shape as the checkpoint has them (e.g. Paddle's)."""
    key, layout = sources.get(path, (path, None))
    return key, paddle_shape(tuple(shape), layout)


def _check_names(variables, arrays, origin: str, sources: Sources) -> None:
    for path in variables:
        if path not in arrays:
            raise CheckpointError(
                f"{origin} has no tensor for the model's variable '{path}': was it "
                "saved from a PP-LCNet of another width or with other options?"
            )
    has_head = any(path in variables for path in HEAD_PATHS)
    for path in arrays:
        if path not in variables and (has_head or path not in HEAD_PATHS):
            key, shape = _describe(sources, path, arrays[path].shape)
            raise CheckpointError(
                f"{origin} holds tensor '{key}' {shape} that the model does not "
                "have. Was it saved from a model built with other options "
                "(use_last_conv, stride_list, class_expand, head_bias)?"
            )


def _check_shapes(variables, arrays, origin: str, sources: Sources) -> None:
    for path, variable in variables.items():
        found, expected = tuple(arrays[path].shape), tuple(variable.shape)
        if found != expected:
            key, found_shape = _describe(sources, path, found)
            _, expected_shape = _describe(sources, path, expected)
            classifier = path in ("fc/kernel", "fc/bias") and len(found) == len(expected)
            if classifier and found[-1] != expected[-1]:
                raise CheckpointError(
                    f"{origin} was trained for {found[-1]} classes but the model "
                    f"has {expected[-1]} ('{key}': {found_shape} vs "
                    f"{expected_shape}). Build the model with classes={found[-1]}, "
                    "or with include_top=False."
                )
            raise CheckpointError(
                f"{origin}: tensor '{key}' has shape {found_shape} but the model "
                f"expects {expected_shape}. Is it a checkpoint of another PP-LCNet "
                "width or variant?"
            )


def _read_values(variables, arrays, origin: str, sources: Sources) -> dict[str, np.ndarray]:
    """Reads every tensor (lazy ones from disk) before anything is assigned."""
    values = {}
    for path, variable in variables.items():
        key = sources.get(path, (path, None))[0]
        if np.dtype(arrays[path].dtype).kind not in "biuf":
            raise CheckpointError(
                f"{origin}: tensor '{key}' holds {arrays[path].dtype} values, not numbers."
            )
        try:
            values[path] = np.asarray(arrays[path], dtype=variable.dtype)
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"{origin}: cannot read tensor '{key}' ({type(e).__name__}: {e}); "
                "is the file truncated?"
            ) from None
    return values


def assign_arrays(
    model: keras.Model,
    arrays: Mapping[str, ArrayLike],
    origin: str,
    sources: Sources | None = None,
) -> None:
    """Assigns Keras-layout arrays to a model's variables by path, all or nothing.

    Every variable of the model must be present with its exact shape. A
    tensor the model has no variable for is an error, except the
    classification head when the model was built without it. Every tensor
    is checked and read before the first one is assigned, so a model is
    never left half-loaded.

    Args:
        model: The model.
        arrays: Tensors by Keras variable path: NumPy arrays, or arrays read
            on demand such as `h5py.Dataset`s (anything with `shape`, `dtype`
            and `__array__`), read only once every shape has been checked.
        origin: How to name the checkpoint in error messages.
        sources: For each path, the name and layout the tensor has in the
            checkpoint, to name it as the checkpoint does in error messages.

    Raises:
        CheckpointError: Naming the first missing, mismatching, unexpected,
            non-numeric or unreadable tensor (by its Paddle name and shapes
            when `sources` is given).
    """
    sources = sources or {}
    variables = {v.path: v for v in model.weights}
    _check_names(variables, arrays, origin, sources)
    _check_shapes(variables, arrays, origin, sources)
    values = _read_values(variables, arrays, origin, sources)
    for path, variable in variables.items():
        variable.assign(values[path])


def _output_channels(state: Mapping[str, np.ndarray], key: str, origin: str) -> int:
    if key not in state or np.ndim(state[key]) != 4:
        raise CheckpointError(
            f"{origin} has no 4-D tensor '{key}': is it a PaddleClas PP-LCNet checkpoint?"
        )
    return int(state[key].shape[0])


def infer_architecture(state: Mapping[str, np.ndarray], origin: str = "the checkpoint") -> dict:
    """The `PPLCNet` arguments that a PaddleClas state dict's shapes determine.

    Width, head and class count leave their trace in the tensor shapes;
    `stride_list` and `dropout_rate` do not (pass them as the checkpoint was
    trained, e.g. from its PaddleClas config).

    Args:
        state: `{name: array}` in PaddleClas names, as `read_pdparams` returns
            (a `Student.` prefix on every name is dropped).
        origin: How to name the checkpoint in error messages.

    Returns:
        `{"scale", "include_top", "classes", "use_last_conv", "class_expand"}`;
        without a classifier `include_top` is `False` and `classes` `None`.

    Raises:
        CheckpointError: The tensors are not those of a published PP-LCNet width.
    """
    state = strip_student_prefix(state)
    channels = {STEM: _output_channels(state, "conv1.conv.weight", origin)}
    for stage, blocks in BLOCKS.items():
        key = f"{stage}.{len(blocks) - 1}.pw_conv.conv.weight"
        channels[stage] = _output_channels(state, key, origin)
    variant = variant_of_channels(channels)
    if variant is None:
        raise CheckpointError(
            f"{origin} has stem/stage channels {list(channels.values())}, which match no "
            "PP-LCNet width (x0_25 ... x2_5)."
        )
    use_last_conv = "last_conv.weight" in state
    fc = state.get("fc.weight")
    return {
        "scale": VARIANTS[variant],
        "include_top": fc is not None,
        "classes": None if fc is None else int(fc.shape[-1]),
        "use_last_conv": use_last_conv,
        "class_expand": int(state["last_conv.weight"].shape[0]) if use_last_conv else CLASS_EXPAND,
    }
