"""Reading Paddle inference models (a program + `.pdiparams`) without PaddlePaddle.

`paddle.jit.save` (and PaddleX / PaddleOCR's `*_infer` downloads) write a
program and its parameters. The parameters file, `.pdiparams`, is the tensors
concatenated in the `sorted()` order of their names, each as:

* uint32 version (0); uint64 LoD level count, then per level a uint64 byte
  size and its offsets (parameters have none);
* uint32 tensor version (0); int32 size of a `VarType.TensorDesc` protobuf
  (field 1 `data_type`: FP16=4, FP32=5, BF16=22; field 2 repeated int64
  `dims`, written unpacked by Paddle);
* the raw little-endian data.

Verified in three ways. Against Paddle's writer code: `SerializeToStream`
(`paddle/phi/core/framework/dense_tensor_serialize.cc`) writes the version and
LoD fields, then `TensorToStream` (`paddle/fluid/framework/tensor_util.cc`)
the tensor version, the descriptor size and bytes and `numel * dtype size`
data bytes; `save_vars_pir` (`python/paddle/static/pir_io.py`, Paddle 3.3.1)
saves the parameters `for name in sorted(...)` with `save_combine`. Against
the files PaddlePaddle 3.3.1 wrote for `tools/make_inference_fixtures.py`:
every tensor parses with this layout, the file ends exactly after the last
one, the descriptors are `08 05 10 ..` (FP32, dims unpacked), and the shapes
follow the program's parameters in sorted-name order, not in program order.
PaddlePaddle 2.6.2 (`tools/make_pdmodel_fixtures.py`, which saves the
parameters with `save_combine` in the same sorted order) writes the same
bytes. And end to end: the converted Keras model matches Paddle Inference's
outputs on those files (`tests/test_pdiparams.py`, `tests/test_pdmodel.py`).

The file holds no names: they come from the program, Paddle 3's PIR JSON
(`inference.json`) or the legacy `ProgramDesc` protobuf (`inference.pdmodel`),
both read by `keras_lcnet.checkpoints.program`. Parameter names are
generated in creation order (`conv2d_N.w_0`, `batch_norm2d_N.w_0/.b_0/.w_1/.w_2`,
`linear_N.w_0/.b_0`), which for PaddleClas' PP-LCNet is: stem, then per
block depthwise conv, SE convs, pointwise conv, then `last_conv` and `fc`.
They are mapped onto PaddleClas' state-dict names, checked shape by shape along the way.

The program keeps Paddle's dropout op (`downgrade_in_infer`); its probability
is returned so the caller folds it into the classifier once, as for
`.pdparams` (the stored weights are unscaled).
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from keras_lcnet.architecture import BLOCKS, STEM
from keras_lcnet.checkpoints.program import read_program, tensor_desc, valid_dims
from keras_lcnet.errors import CheckpointError

# `paddle.jit.save(model, "folder/inference")`, as PaddleX and PaddleOCR ship them;
# some Paddle 2.x exports are named `model.pdmodel`.
FOLDER_PREFIXES = ("inference", "model")
# Paddle 3's PIR JSON is preferred to a legacy ProgramDesc, as Paddle 3 does.
PROGRAM_SUFFIXES = (".json", ".pdmodel")
PARAMS_SUFFIX = ".pdiparams"
_MAX_DESC_BYTES = 256
_DTYPES = {4: np.dtype("<f2"), 5: np.dtype("<f4"), 22: np.dtype("<u2")}  # 22: bfloat16
_BN_SUFFIXES = {"w_0": "weight", "b_0": "bias", "w_1": "_mean", "w_2": "_variance"}
# A parameters file starts with a tensor's zero versions and LoD level count.
SIGNATURE = bytes(16)
_NAME = re.compile(r"(conv2d|batch_norm2d|linear)_(\d+)\.([wb]_\d)")


@dataclass(frozen=True)
class InferenceModel:
    """A Paddle inference model's parameters in PaddleClas names.

    Attributes:
        state: `{PaddleClas name: array}`, as `read_pdparams` returns.
        names: `{PaddleClas name: generated name in the file}`.
        dropout_rate: The dropout probability the program applies at
            inference (`downgrade_in_infer`), 0.0 without one.
        origin: The `.pdiparams` path, to name the model in messages.
    """

    state: dict[str, np.ndarray]
    names: dict[str, str]
    dropout_rate: float
    origin: str


def find_inference_model(path: str | os.PathLike) -> tuple[str, str] | None:
    """The `(program, params)` files of an inference model, if `path` names one.

    The program is `<prefix>.json` (Paddle 3) or, without one, the legacy
    `<prefix>.pdmodel` (Paddle 2.x, PaddleClas' PULC downloads).

    Args:
        path: A folder holding `inference.pdiparams` (or `model.pdiparams`)
            and its program, a prefix (`folder/inference`), or a
            `.pdiparams`, `.json` or `.pdmodel` file with its partner beside it.

    Returns:
        The two paths, or `None` if `path` is not an inference model.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        prefixes = [os.path.join(path, name) for name in FOLDER_PREFIXES]
    else:
        prefixes = [re.sub(r"\.(pdiparams|json|pdmodel)$", "", path)]
    # A program file named by the caller is the one used.
    suffixes = [os.path.splitext(path)[1]] if path.endswith(PROGRAM_SUFFIXES) else PROGRAM_SUFFIXES
    pairs = [(prefix + s, prefix + PARAMS_SUFFIX) for prefix in prefixes for s in suffixes]
    return next((pair for pair in pairs if all(map(os.path.isfile, pair))), None)


def is_inference_model(path: str | os.PathLike) -> bool:
    """Whether `path` is meant as a Paddle inference model (by content, not name).

    A folder, a `.pdiparams` file (its 16 leading zero bytes), a `.pdmodel`
    program (a name only Paddle uses), a `.json` program or a prefix with a
    `.pdiparams` beside it. The files are not validated here:
    `read_inference_model` does that (and names a missing partner).

    Args:
        path: The path given as `weights=` or to `from_checkpoint`.

    Returns:
        `True` for the inference form.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return True
    if not os.path.isfile(path):
        return find_inference_model(path) is not None
    with open(path, "rb") as f:
        head = f.read(len(SIGNATURE))
    return (
        head == SIGNATURE
        or path.endswith(".pdmodel")
        or (path.endswith(".json") and find_inference_model(path) is not None)
    )


def read_inference_model(path: str | os.PathLike) -> InferenceModel:
    """Reads a Paddle inference model of PaddleClas' PP-LCNet, safely.

    Args:
        path: As `find_inference_model` accepts.

    Returns:
        An `InferenceModel`.

    Raises:
        CheckpointError: The files are missing, malformed or not a PP-LCNet;
            one line naming the file.
    """
    found = find_inference_model(path)
    if found is None:
        raise CheckpointError(
            f"{os.fspath(path)}: no .pdiparams with an inference.json or inference.pdmodel "
            "program beside it; pass the folder or prefix paddle.jit.save wrote."
        )
    program_path, params_path = found
    shapes, dropout = read_program(program_path)
    tensors = _read_params(params_path, shapes)
    state, names = paddleclas_names(tensors, params_path)
    return InferenceModel(state, names, dropout, params_path)


# --------------------------------------------------------------------------- params


class _Reader:
    """Reads a byte string front to back, never past its end."""

    def __init__(self, data: bytes, origin: str) -> None:
        self.data, self.pos, self.origin = memoryview(data), 0, origin

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or size > len(self.data) - self.pos:
            raise CheckpointError(
                f"{self.origin}: {what} at byte {self.pos} needs {size} bytes, "
                f"{len(self.data) - self.pos} are left; is the file truncated?"
            )
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]


def _read_params(path: str, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The tensors of a `.pdiparams` file, named by the program's sorted parameter names."""
    with open(path, "rb") as f:
        reader = _Reader(f.read(), path)
    tensors = {}
    for name in sorted(shapes):
        if reader.pos == len(reader.data):
            raise CheckpointError(
                f"{path}: holds {len(tensors)} tensors, the program has {len(shapes)}; "
                "are the two files from the same export?"
            )
        tensors[name] = _read_tensor(reader, name, shapes[name])
    if reader.pos != len(reader.data):
        raise CheckpointError(
            f"{path}: {len(reader.data) - reader.pos} bytes after the program's {len(shapes)} "
            "tensors; are the two files from the same export?"
        )
    return tensors


def _read_tensor(reader: _Reader, name: str, expected: list[int]) -> np.ndarray:
    origin = f"{reader.origin}: tensor '{name}'"
    if reader.unpack("<I", "a version") != 0 or reader.unpack("<Q", "a LoD level") != 0:
        raise CheckpointError(f"{origin}: unknown version or a LoD; not a parameters file.")
    if reader.unpack("<I", "a tensor version") != 0:
        raise CheckpointError(f"{origin}: unknown tensor version; not a parameters file.")
    size = reader.unpack("<i", "a descriptor size")
    if not 0 < size <= _MAX_DESC_BYTES:
        raise CheckpointError(f"{origin}: descriptor of {size} bytes; not a parameters file.")
    dtype, dims = _tensor_desc(bytes(reader.take(size, "a descriptor")), origin)
    if dims != list(expected):
        raise CheckpointError(
            f"{origin} has shape {dims}, the program says {expected}; are the two files "
            "from the same export?"
        )
    data = reader.take(math.prod(dims) * dtype.itemsize, f"{dims} {dtype} data")
    array = np.frombuffer(data, dtype=dtype).reshape(dims)
    if dtype == np.dtype("<u2"):  # bfloat16: the top half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)


def _tensor_desc(data: bytes, origin: str) -> tuple[np.dtype, list[int]]:
    """`(dtype, dims)` of a tensor's `VarType.TensorDesc`, checked."""
    dtype, dims = tensor_desc(data, origin)
    if dtype not in _DTYPES:
        raise CheckpointError(
            f"{origin}: data type {dtype}, not FP32 (5), FP16 (4) or BF16 (22)."
        )
    if not valid_dims(dims):
        raise CheckpointError(f"{origin}: invalid dims {dims} in its descriptor.")
    return _DTYPES[dtype], dims


# --------------------------------------------------------------------------- names


class _Named(np.ndarray):
    """An array that remembers its generated name, for messages and `InferenceModel.names`."""

    def __new__(cls, array: np.ndarray, name: str) -> _Named:
        named = np.asarray(array).view(cls)
        named.generated = name
        return named


def _layers(tensors: dict[str, np.ndarray], origin: str) -> dict[str, list[dict]]:
    """Per kind, the generated layers in creation order: `[{suffix: array}, ...]`."""
    layers: dict[str, dict[int, dict]] = {"conv2d": {}, "batch_norm2d": {}, "linear": {}}
    for name, array in tensors.items():
        match = _NAME.fullmatch(name)
        if match is None:
            raise CheckpointError(f"{origin}: parameter '{name}' is not one of PP-LCNet's.")
        kind, number, suffix = match.groups()
        layers[kind].setdefault(int(number), {})[suffix] = _Named(array, name)
    return {kind: [found[n] for n in sorted(found)] for kind, found in layers.items()}


def _module_order(convs: int) -> tuple[list[tuple[str, bool]], list[str]]:
    """PaddleClas' conv modules `(name, has_bn)` and BN owners, in creation order."""
    modules = [(STEM, True)]
    for stage, blocks in BLOCKS.items():
        for i, (*_, se) in enumerate(blocks):
            modules.append((f"{stage}.{i}.dw_conv", True))
            if se:
                modules += [(f"{stage}.{i}.se.conv1", False), (f"{stage}.{i}.se.conv2", False)]
            modules.append((f"{stage}.{i}.pw_conv", True))
    if convs == len(modules) + 1:
        modules.append(("last_conv", False))
    return modules, [name for name, has_bn in modules if has_bn]


def paddleclas_names(
    tensors: dict[str, np.ndarray], origin: str
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Maps Paddle's generated names onto PaddleClas' by creation order, shape by shape.

    Shared by every form that keeps the generated names (`.pdiparams`,
    paddle2onnx's ONNX).

    Args:
        tensors: `{generated name: array}`: `conv2d_N.w_0` (and `.b_0` for the
            SE convolutions), `batch_norm2d_N.w_0/.b_0/.w_1/.w_2`,
            `linear_N.w_0/.b_0`.
        origin: The file, named in error messages.

    Returns:
        `(state, names)`: `{PaddleClas name: array}` and `{PaddleClas name:
        generated name}`.

    Raises:
        CheckpointError: A name is not PP-LCNet's, or the tensors do not
            chain into a PP-LCNet.
    """
    layers = _layers(tensors, origin)
    modules, bn_owners = _module_order(len(layers["conv2d"]))
    if len(layers["conv2d"]) != len(modules) or len(layers["batch_norm2d"]) != len(bn_owners):
        raise CheckpointError(
            f"{origin}: {len(layers['conv2d'])} convolutions and {len(layers['batch_norm2d'])} "
            f"batch norms; PP-LCNet has {len(modules)} (+1) and {len(bn_owners)}."
        )
    state, bns, channels, squeezed = {}, iter(layers["batch_norm2d"]), 3, 0
    for (module, has_bn), conv in zip(modules, layers["conv2d"], strict=True):
        weight = conv.get("w_0")
        depthwise, se = module.endswith("dw_conv"), ".se." in module
        inputs = 1 if depthwise else squeezed if module.endswith("se.conv2") else channels
        if (
            weight is None
            or weight.ndim != 4
            or weight.shape[1] != inputs
            or ((depthwise or module.endswith("se.conv2")) and weight.shape[0] != channels)
            or set(conv) != ({"w_0", "b_0"} if se else {"w_0"})
        ):
            raise CheckpointError(
                f"{origin}: the convolution for '{module}' has tensors "
                f"{ {k: list(v.shape) for k, v in conv.items()} }, which do not fit PP-LCNet."
            )
        prefix = module if se or module == "last_conv" else f"{module}.conv"
        state[f"{prefix}.weight"] = weight
        if se:
            state[f"{prefix}.bias"] = conv["b_0"]
        if module.endswith("se.conv1"):  # the SE squeeze; its block's width is unchanged
            squeezed = weight.shape[0]
        else:
            channels = weight.shape[0]
        if has_bn:
            _add_bn(state, next(bns), module, weight.shape[0], origin)
    _add_fc(state, layers["linear"], channels, origin)
    names = {key: value.generated for key, value in state.items()}
    return {key: np.asarray(value) for key, value in state.items()}, names


def _add_bn(state: dict, bn: dict, module: str, channels: int, origin: str) -> None:
    if set(bn) != set(_BN_SUFFIXES) or any(v.shape != (channels,) for v in bn.values()):
        raise CheckpointError(
            f"{origin}: the batch norm of '{module}' does not have 4 tensors of {channels}."
        )
    for suffix, param in _BN_SUFFIXES.items():
        state[f"{module}.bn.{param}"] = bn[suffix]


def _add_fc(state: dict, linears: list[dict], channels: int, origin: str) -> None:
    if not linears:
        return
    fc = linears[0]
    if (
        len(linears) != 1
        or set(fc) != {"w_0", "b_0"}
        or fc["w_0"].shape[:1] != (channels,)
        or fc["b_0"].shape != fc["w_0"].shape[1:]
    ):
        raise CheckpointError(f"{origin}: the classifier does not fit {channels} features.")
    state["fc.weight"], state["fc.bias"] = fc["w_0"], fc["b_0"]
