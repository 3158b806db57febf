"""Reading PaddleClas `.pdparams` checkpoints without PaddlePaddle.

A `.pdparams` file is a pickle of `{parameter name: numpy array}`. Unpickling
can run arbitrary code, so the reader admits only NumPy array reconstruction
and refuses every other global. It also never allocates more than the file
holds: CPython's unpickler (before 3.14) and NumPy's array constructors
allocate whatever size a pickle claims before noticing the data is short, so
every claimed length, array shape and dtype is checked against the file first.
"""

from __future__ import annotations

import codecs
import collections
import io
import math
import os
import pickle
import pickletools
from collections.abc import Mapping

import numpy as np

from keras_lcnet.errors import CheckpointError

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

# Paddle 2.x/3.x may store this name map beside the tensors.
STRUCTURE_KEY = "StructuredToParameterName@@"

# Opcodes that store into the unpickler's memo at the index they name.
_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")
# Array dtypes a checkpoint can hold: booleans and numbers, never objects.
_NUMERIC_KINDS = "biufc"


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for something other than NumPy array reconstruction."""


class _CheckedArray(np.ndarray):
    """An array whose unpickled state is checked before NumPy allocates it.

    NumPy pickles an array as `_reconstruct(ndarray, (0,), ...)` (an empty
    array) followed by `__setstate__((version, shape, dtype, fortran, data))`,
    which allocates `shape` x `dtype` (zero-filled for object arrays) before
    it compares that size with `data`.
    """

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed NumPy array state")
        shape, dtype, _, data = state[-4:]
        if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
            raise pickle.UnpicklingError(f"array of dtype {dtype!r}, not numbers")
        if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and n >= 0 for n in shape
        ):
            raise pickle.UnpicklingError(f"array with invalid shape {shape!r}")
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError(
                f"array of shape {list(shape)} and dtype {dtype} with "
                f"{len(data) if isinstance(data, bytes) else 'no'} bytes of data"
            )
        super().__setstate__(state)


class _NdarrayToken:
    """What `numpy.ndarray` unpickles to: accepted by `_reconstruct`, not callable."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


def _checked_reconstruct(subtype, shape, dtype) -> np.ndarray:
    # NumPy always starts from an empty array; a pickle claiming a shape here
    # would have it allocated before any data is read.
    if not isinstance(subtype, _NdarrayToken) or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"_reconstruct({subtype!r}, {shape!r}) is not NumPy's form")
    return _reconstruct(_CheckedArray, shape, dtype)


_SAFE_GLOBALS = {
    ("numpy", "ndarray"): _NdarrayToken(),
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Protocol-2 pickles written by Python 3 encode array bytes with this.
    ("_codecs", "encode"): codecs.encode,
}


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


def _check_lengths(data: bytes) -> None:
    """Raises `ValueError` if an opcode claims more bytes or memo slots than `data` holds.

    `pickletools.genops` reads each argument from an in-memory stream, which
    returns only what is there, and raises when it is short; frames are
    checked here. The unpickler itself would allocate any claimed length, and
    a memo list as long as any index a `PUT` names (a pickler numbers its memo
    entries from 0, so an index is never above the count of opcodes before it).
    """
    for count, (opcode, arg, pos) in enumerate(pickletools.genops(data)):
        if opcode.name == "FRAME" and arg > len(data) - pos:
            raise ValueError(f"a frame at byte {pos} claims {arg} bytes, beyond the file's end")
        if opcode.name in _MEMO_PUTS and arg > count:
            raise ValueError(f"memo index {arg} at byte {pos}, after only {count} opcodes")


def read_pdparams(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PaddleClas `.pdparams` file into `{name: array}`, safely.

    Args:
        path: Path of the checkpoint.

    Returns:
        The parameters and BatchNorm statistics, in Paddle's layouts.

    Raises:
        CheckpointError: The file is truncated, not a pickle, holds anything
            but numeric NumPy arrays, claims more data than it holds, or is
            not a mapping of names to arrays.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        _check_lengths(data)
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
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
        state[key] = value.view(np.ndarray)
    if not state:
        raise CheckpointError(f"{path} holds no tensors.")
    return state
