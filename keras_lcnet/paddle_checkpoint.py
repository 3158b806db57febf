"""Reading PaddleClas `.pdparams` checkpoints without PaddlePaddle.

A `.pdparams` file is a pickle of `{parameter name: numpy array}`. Unpickling
can run arbitrary code, so the reader admits only NumPy array reconstruction
and refuses every other global.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
from collections.abc import Mapping

import numpy as np

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

# Paddle 2.x/3.x may store this name map beside the tensors.
STRUCTURE_KEY = "StructuredToParameterName@@"

_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Protocol-2 pickles written by Python 3 encode array bytes with this.
    ("_codecs", "encode"): codecs.encode,
}

_BN_PARAMS = {
    "weight": "gamma",
    "bias": "beta",
    "_mean": "moving_mean",
    "_variance": "moving_variance",
}
_CONV = (2, 3, 1, 0)  # Paddle [out, in, kh, kw] -> Keras (kh, kw, in, out)
_DEPTHWISE = (2, 3, 0, 1)  # Paddle [channels, 1, kh, kw] -> Keras (kh, kw, channels, 1)
HEAD_KEYS = ("last_conv.weight", "fc.weight", "fc.bias")


class CheckpointError(ValueError):
    """A weights file cannot be read or does not fit the model."""


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for something other than NumPy array reconstruction."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f"refusing to load the global '{module}.{name}': a .pdparams file "
                "holds only NumPy arrays, so this file is not a PaddleClas "
                "checkpoint and may be hostile"
            ) from None


def read_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PaddleClas `.pdparams` file into `{name: array}`, safely.

    Args:
        path: Path of the checkpoint.

    Returns:
        The parameters and BatchNorm statistics, in Paddle's layouts.

    Raises:
        CheckpointError: The file is truncated, not a pickle, holds anything
            but NumPy arrays, or is not a mapping of names to arrays.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f).load()
    except _RefusedGlobal as e:
        raise CheckpointError(f"{path}: {e}.") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        MemoryError,
    ) as e:
        raise CheckpointError(
            f"{path} is not a readable PaddleClas .pdparams file (truncated, or not "
            f"a pickle of NumPy arrays): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a mapping of parameter names "
            "to arrays: is it a PaddleClas .pdparams file?"
        )
    state = {}
    for key, value in obj.items():
        if key == STRUCTURE_KEY:
            continue
        if isinstance(value, tuple) and len(value) == 2:  # (name, array) form
            value = value[1]
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a NumPy "
                "array: is it a PaddleClas .pdparams file?"
            )
        state[key] = value
    if not state:
        raise CheckpointError(f"{path} holds no tensors.")
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
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, tuple[int, ...] | None]]]:
    """Converts a PaddleClas state dict to Keras variable paths and layouts.

    Paddle's `downscale_in_infer` dropout multiplies the head by
    `1 - dropout_rate` at inference while Keras' dropout is the identity
    there, so that factor is folded into the classifier kernel (the bias is
    unchanged). It applies only to checkpoints with a `last_conv` head.

    Args:
        state: `{name: array}` as `read_pdparams` returns.
        dropout_rate: The checkpoint's `dropout_prob`.

    Returns:
        `(arrays, sources)`: float32 arrays by Keras variable path, and for
        each path the Paddle name and layout it came from.
    """
    arrays, sources = {}, {}
    for key, value in state.items():
        path, layout = keras_path(key)
        value = np.asarray(value, dtype=np.float32)
        if layout is not None:
            if value.ndim != len(layout):
                raise CheckpointError(
                    f"tensor '{key}' has shape {list(value.shape)}, expected a "
                    f"{len(layout)}-D convolution kernel."
                )
            value = value.transpose(layout)
        arrays[path] = np.ascontiguousarray(value)
        sources[path] = (key, layout)
    if "fc/kernel" in arrays and "last_conv/kernel" in arrays:
        arrays["fc/kernel"] = arrays["fc/kernel"] * np.float32(1.0 - dropout_rate)
    return arrays, sources
