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

from keras_lcnet.errors import CheckpointError

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
