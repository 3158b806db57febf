"""Reading paddle2onnx's ONNX exports of PaddleClas' PP-LCNet (needs the `onnx` package).

RapidOCR-style projects and PaddleX' ONNX option ship PP-LCNet as the
`inference.onnx` that paddle2onnx makes of a Paddle inference model. What
paddle2onnx 2.1.0 writes (checked on `tests/fixtures/onnx_*`, made by
`tools/make_onnx_fixtures.py`), and how it is read here:

* Weights keep Paddle's generated names (`conv2d_N.w_0`,
  `batch_norm2d_N.w_0`, `linear_N.w_0`, ...), as initializers (its default
  optimiser) or as `Constant` nodes (`--optimize_tool None`); a
  `_deepcopy_K` suffix is dropped. They are then mapped onto PaddleClas'
  names by `pdiparams.paddleclas_names`, as for `.pdiparams`.
* Batch norms stay `BatchNormalization` nodes; their four inputs are taken by
  position (scale, bias, mean, variance). A graph whose batch norms were
  folded into the convolutions (by another optimiser) is refused.
* The SE convolutions' biases are an `Add` after the `Conv`, of a
  `[1, C, 1, 1]` initializer (folded) or a `Reshape` of `conv2d_N.b_0`.
* The classifier is `MatMul` + `Add`; Paddle's `downscale_in_infer` dropout is
  a `Mul` by `1 - p` before it, whose `p` becomes `dropout_rate`.
* Strides are the `Conv` nodes' `strides` attributes, so a text-line model's
  `[2, 1]` strides come out right.

Only graphs made of the operators above (and the reshapes around them) are
read; any other network is refused naming what differs. Weights stored as
external data are refused: the file alone is read, never paths it names.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from keras_lcnet.architecture import BN_EPSILON, STAGES, STEM
from keras_lcnet.checkpoints.pdiparams import InferenceModel, paddleclas_names
from keras_lcnet.errors import CheckpointError

# PP-LCNet x2_5 with 1000 classes is ~36 MB; far larger is not a PP-LCNet. The file is
# parsed in memory, so this also bounds what reading it can allocate.
MAX_FILE_BYTES = 128 * 2**20
_INSTALL_HINT = 'reading ONNX files needs the onnx package: pip install "keras-lcnet[export]"'
# What paddle2onnx makes of PP-LCNet (plus the shape plumbing of flatten).
_OPERATORS = frozenset((
    "Conv", "BatchNormalization", "HardSigmoid", "HardSwish", "Mul", "Add", "Relu",
    "GlobalAveragePool", "Identity", "Shape", "Slice", "Concat", "Reshape", "Flatten",
    "Squeeze", "Unsqueeze", "Gather", "Cast", "Constant", "MatMul", "Dropout",
))
# Nodes that pass a bias constant on unchanged in value (paddle2onnx reshapes SE biases).
_PASS_THROUGH = ("Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten")
_WEIGHT = re.compile(r"((?:conv2d|batch_norm2d|linear)_\d+)\.([wb]_\d)(?:_deepcopy_\d+)?")
_BN_INPUTS = ("w_0", "b_0", "w_1", "w_2")  # ONNX order: scale, bias, mean, variance
_FLOAT_TYPES = {1: np.dtype("<f4"), 10: np.dtype("<f2"), 11: np.dtype("<f8")}
_MAX_DIMS = 8
# Paddle's hardswish / hardsigmoid, as paddle2onnx writes them.
_HARD_SIGMOID = (1 / 6, 0.5)


@dataclass(frozen=True)
class PaddleOnnxModel(InferenceModel):
    """A paddle2onnx PP-LCNet's weights in PaddleClas names, and its strides.

    The other attributes are `InferenceModel`'s (`origin` is the `.onnx` file).

    Attributes:
        stride_list: The five strides, as `PPLCNet`'s `stride_list` takes them
            (`2` or `[2, 1]`), read off the `Conv` nodes.
    """

    stride_list: list


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    return onnx


def is_paddle_onnx(path: str | os.PathLike) -> bool:
    """Whether `path` is an ONNX file, by its first bytes (any name).

    An ONNX `ModelProto` starts with its `ir_version` (field 1, a small
    varint) followed by a length-delimited field. Whether the graph is
    paddle2onnx's PP-LCNet is checked by `read_paddle_onnx`.

    Args:
        path: The path given as `weights=` or to `from_checkpoint`.

    Returns:
        `True` for an ONNX file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(3)
    return len(head) == 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] & 7 == 2


def onnx_in_folder(path: str | os.PathLike) -> str | None:
    """`inference.onnx` of a folder that holds it and no Paddle inference model.

    PaddleX' ONNX downloads are such folders (the ONNX file beside its
    `inference.yml`); a folder with `inference.pdiparams` too is read as the
    Paddle inference model it also is.

    Returns:
        The file's path, or `None`.
    """
    path = os.fspath(path)
    onnx_file = os.path.join(path, "inference.onnx")
    paddle_model = os.path.join(path, "inference.pdiparams")
    if os.path.isfile(onnx_file) and not os.path.isfile(paddle_model):
        return onnx_file
    return None


def read_paddle_onnx(path: str | os.PathLike) -> PaddleOnnxModel:
    """Reads paddle2onnx's ONNX export of PaddleClas' PP-LCNet.

    Args:
        path: The `.onnx` file.

    Returns:
        A `PaddleOnnxModel`: weights in PaddleClas names, the dropout
        probability and the strides.

    Raises:
        ImportError: The `onnx` package is missing.
        CheckpointError: The file is unreadable or not paddle2onnx's PP-LCNet;
            one line naming the file and what differs.
    """
    path = os.fspath(path)
    model = _load_model(path)
    try:
        graph = _Graph(model.graph, path)
        tensors, strides = graph.weights()
        state, names = paddleclas_names(tensors, path)
        dropout = graph.dropout_rate(has_head="fc.weight" in state)
    except CheckpointError:
        raise
    except (ValueError, TypeError, IndexError) as e:  # e.g. an attribute of no known type
        reason = " ".join(str(e).split())
        raise CheckpointError(
            f"{path}: a malformed node or tensor ({type(e).__name__}: {reason}); is it "
            "paddle2onnx's export of PP-LCNet?"
        ) from None
    stride_list = _stride_list(names, strides, path)
    return PaddleOnnxModel(state, names, dropout, path, stride_list)


def _load_model(path: str):
    """The parsed `ModelProto`, size-checked first; external data never followed."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size} bytes, more than any PP-LCNet ONNX file.")
    with open(path, "rb") as f:
        data = f.read()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: not a readable ONNX model ({type(e).__name__}); is the file truncated?"
        ) from None
    if not model.graph.node:
        raise CheckpointError(f"{path}: the ONNX model has no graph; is the file truncated?")
    return model


def _stride(strides: tuple[int, int]) -> int | list[int]:
    return strides[0] if strides[0] == strides[1] else list(strides)


def _stride_list(names: dict[str, str], strides: dict[str, tuple], origin: str) -> list:
    """`stride_list` from the stem's and each later stage's first depthwise conv."""
    keys = [f"{STEM}.conv.weight"] + [f"{stage}.0.dw_conv.conv.weight" for stage in STAGES[1:]]
    strided = {names[key] for key in keys}
    for weight, pair in strides.items():
        if weight not in strided and pair != (1, 1):
            raise CheckpointError(
                f"{origin}: convolution '{weight}' has strides {list(pair)}; in PP-LCNet "
                "only the stem and each stage's first depthwise convolution stride."
            )
    return [_stride(strides[names[key]]) for key in keys]


class _Graph:
    """The nodes and constants of a graph, and the PP-LCNet weights they hold."""

    def __init__(self, graph, origin: str) -> None:
        self.origin = origin
        self.nodes = list(graph.node)
        self.constants = {t.name: t for t in graph.initializer}
        self.producer, self.consumers = {}, {}
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or node.op_type not in _OPERATORS:
                kind = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
                raise CheckpointError(
                    f"{origin}: has a {kind!r} node, which paddle2onnx's PP-LCNet does not; "
                    "is it paddle2onnx's export of PP-LCNet?"
                )
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            value = _attribute(node, "value")
            if node.op_type == "Constant" and value is not None:
                self.constants[node.output[0]] = value
        self._check_input(graph)
        self.claimed: set[int] = set()  # ids of the Add nodes read as biases

    def _check_input(self, graph) -> None:
        inputs = [i for i in graph.input if i.name not in self.constants]
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
        if len(inputs) != 1 or len(dims) != 4 or dims[1] != 3:
            raise CheckpointError(
                f"{self.origin}: the graph's input is not one NCHW image batch of 3 channels "
                "(paddle2onnx's PP-LCNet takes [N, 3, H, W])."
            )

    def array(self, name: str, what: str) -> np.ndarray:
        """A constant's float32 values, checked before anything is allocated."""
        tensor = self.constants.get(name)
        if tensor is None:
            raise CheckpointError(f"{self.origin}: {what} {name!r} is not a constant.")
        return _to_array(tensor, f"{self.origin}: {what} {name!r}")

    def constant_operand(self, node) -> str | None:
        """The constant input of a two-input node (through reshapes), if it has one."""
        for name in node.input:
            for _ in range(4):  # paddle2onnx puts at most a Reshape in between
                if name in self.constants:
                    return name
                source = self.producer.get(name)
                if source is None or source.op_type not in _PASS_THROUGH:
                    break
                name = source.input[0]
        return None

    def bias_after(self, node, what: str) -> np.ndarray | None:
        """The constant an `Add` right after `node` adds, flattened to one axis."""
        for user in self.consumers.get(node.output[0], []):
            if user.op_type == "Add" and (name := self.constant_operand(user)) is not None:
                self.claimed.add(id(user))
                bias = self.array(name, f"the bias of {what}")
                if bias.ndim != 1 and bias.shape != (1, bias.size, 1, 1):
                    raise CheckpointError(
                        f"{self.origin}: the bias of {what} has shape {list(bias.shape)}, "
                        "not [C] or [1, C, 1, 1]."
                    )
                return bias.reshape(-1)
        return None

    def weights(self) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
        """`{generated name: array}` for `paddleclas_names`, and each conv weight's strides."""
        tensors, strides = {}, {}
        for node in self.nodes:
            if node.op_type == "Conv":
                name = self._conv(node, tensors)
                strides[name] = _conv_strides(node, tensors[name], self.origin)
            elif node.op_type == "BatchNormalization":
                self._batch_norm(node, tensors)
            elif node.op_type == "MatMul":
                self._linear(node, tensors)
            elif node.op_type == "HardSigmoid":
                _check_hard_sigmoid(node, self.origin)
        if not any(name.startswith("batch_norm2d_") for name in tensors):
            raise CheckpointError(
                f"{self.origin}: no BatchNormalization nodes (folded into the convolutions by "
                "an optimiser?); export with paddle2onnx's default options."
            )
        self._check_adds()
        return tensors, strides

    def _add(self, tensors: dict, layer: str, suffix: str, value: np.ndarray) -> None:
        name = f"{layer}.{suffix}"
        if name in tensors:
            raise CheckpointError(f"{self.origin}: weight '{name}' is used twice.")
        tensors[name] = value

    def _layer(self, name: str, kind: str, what: str) -> str:
        """The generated layer name (`conv2d_3`) of a weight named like Paddle's."""
        match = _WEIGHT.fullmatch(name)
        if match is None or not match.group(1).startswith(kind):
            raise CheckpointError(
                f"{self.origin}: {what} is named {name!r}, not like Paddle's '{kind}_N.w_0'; "
                "is it paddle2onnx's export of PP-LCNet?"
            )
        return match.group(1)

    def _conv(self, node, tensors: dict) -> str:
        layer = self._layer(node.input[1], "conv2d", "a Conv weight")
        self._add(tensors, layer, "w_0", self.array(node.input[1], "Conv weight"))
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self.array(node.input[2], "Conv bias").reshape(-1)
        bias = self.bias_after(node, f"'{layer}'") if bias is None else bias
        if bias is not None:
            self._add(tensors, layer, "b_0", bias)
        return f"{layer}.w_0"

    def _batch_norm(self, node, tensors: dict) -> None:
        if len(node.input) != 5:
            raise CheckpointError(f"{self.origin}: a BatchNormalization without 4 parameters.")
        epsilon = _attribute(node, "epsilon")
        if epsilon is None or not math.isclose(epsilon, BN_EPSILON, rel_tol=1e-4):
            raise CheckpointError(
                f"{self.origin}: a batch norm has epsilon {epsilon}, PP-LCNet {BN_EPSILON}."
            )
        layer = self._layer(node.input[1], "batch_norm2d", "a batch norm scale")
        for name, suffix in zip(node.input[1:], _BN_INPUTS, strict=True):
            self._add(tensors, layer, suffix, self.array(name, "batch norm parameter"))

    def _linear(self, node, tensors: dict) -> None:
        layer = self._layer(node.input[1], "linear", "a MatMul weight")
        self._add(tensors, layer, "w_0", self.array(node.input[1], "MatMul weight"))
        bias = self.bias_after(node, f"'{layer}'")
        if bias is not None:
            self._add(tensors, layer, "b_0", bias)

    def _check_adds(self) -> None:
        for node in self.nodes:
            if node.op_type == "Add" and id(node) not in self.claimed:
                raise CheckpointError(
                    f"{self.origin}: an Add node ({node.name!r}) that is not a convolution's "
                    "or the classifier's bias; PP-LCNet has no other."
                )

    def dropout_rate(self, has_head: bool) -> float:
        """Paddle's `downscale_in_infer` dropout: the one `Mul` by a constant, `1 - p`."""
        factors = []
        for node in self.nodes:
            if node.op_type == "Mul" and (name := self.constant_operand(node)) is not None:
                factors.append(float(self.array(name, "a Mul factor").reshape(-1)[0]))
        if len(factors) > 1 or (factors and not has_head) or not all(0 < f <= 1 for f in factors):
            raise CheckpointError(
                f"{self.origin}: Mul nodes by constants {factors}; PP-LCNet has at most one, "
                "the dropout factor in (0, 1] before its classifier."
            )
        # float32 holds ~7 digits: 0.8 -> 0.800000011920929 means p = 0.2.
        return round(1.0 - factors[0], 7) if factors else 0.0


def _attribute(node, name: str):
    """An attribute's value, or `None`."""
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return None


def _check_hard_sigmoid(node, origin: str) -> None:
    alpha, beta = _attribute(node, "alpha"), _attribute(node, "beta")
    if alpha is None or beta is None or not np.allclose((alpha, beta), _HARD_SIGMOID):
        raise CheckpointError(
            f"{origin}: a HardSigmoid with alpha={alpha}, beta={beta}; Paddle's hardswish "
            "and hardsigmoid have 1/6 and 0.5."
        )


def _conv_strides(node, weight: np.ndarray, origin: str) -> tuple[int, int]:
    """The strides of a Conv whose padding, dilation and groups are PP-LCNet's."""
    if weight.ndim != 4:
        raise CheckpointError(f"{origin}: Conv weight {node.input[1]!r} is not 4-D.")
    kernel = list(weight.shape[2:])
    pads = [(k - 1) // 2 for k in kernel] * 2
    strides = list(_attribute(node, "strides") or [1, 1])
    depthwise = weight.ndim == 4 and weight.shape[1] == 1 and weight.shape[0] > 1
    expected = {
        "pads": pads, "dilations": [1, 1], "group": weight.shape[0] if depthwise else 1,
        "auto_pad": b"NOTSET",
    }
    for key, value in expected.items():
        found = _attribute(node, key)
        found = list(found) if isinstance(found, list | tuple) else found
        if found is not None and found != value:
            raise CheckpointError(
                f"{origin}: Conv {node.input[1]!r} has {key}={found}, PP-LCNet {value}."
            )
    if len(strides) != 2 or not all(0 < s < 2**16 for s in strides):
        raise CheckpointError(f"{origin}: Conv {node.input[1]!r} has strides {strides}.")
    return strides[0], strides[1]


def _to_array(tensor, what: str) -> np.ndarray:
    """A float `TensorProto`'s values as float32, its dims and data checked first."""
    from onnx import TensorProto, numpy_helper

    dims = list(tensor.dims)
    if tensor.data_location == TensorProto.EXTERNAL:
        raise CheckpointError(f"{what} is stored in an external file, which is not read.")
    dtype = _FLOAT_TYPES.get(tensor.data_type)
    if dtype is None:
        raise CheckpointError(f"{what} has ONNX data type {tensor.data_type}, not a float.")
    if len(dims) > _MAX_DIMS or not all(0 < d < 2**31 for d in dims):
        raise CheckpointError(f"{what} has invalid dims {dims}.")
    count = math.prod(dims)
    stored = {1: tensor.float_data, 10: tensor.int32_data, 11: tensor.double_data}
    if tensor.raw_data:
        found, needed = len(tensor.raw_data), count * dtype.itemsize
    else:
        found, needed = len(stored[tensor.data_type]), count
    if found != needed:
        raise CheckpointError(f"{what} has dims {dims} but holds {found} values or bytes.")
    return numpy_helper.to_array(tensor).astype(np.float32)
