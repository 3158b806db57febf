"""Reading a Paddle inference model's program without PaddlePaddle or protobuf.

The program names the parameters that `.pdiparams` stores nameless, gives
their shapes, and holds the dropout op whose inference factor the classifier
must fold in. Two forms, told apart by content:

* Paddle 3's PIR JSON (`inference.json`);
* the legacy `ProgramDesc` protobuf (`inference.pdmodel`) of Paddle 2.x
  exports and PaddleClas' PULC `*_infer.tar` downloads.

The protobuf is decoded by hand, only as far as needed. Field numbers, from
`paddle/fluid/framework/framework.proto` (checked against the
`paddle.base.proto.framework_pb2` descriptors of PaddlePaddle 2.6.2):

* `ProgramDesc`: 1 `blocks` (repeated `BlockDesc`);
* `BlockDesc`: 3 `vars` (repeated `VarDesc`), 4 `ops` (repeated `OpDesc`);
* `VarDesc`: 1 `name`, 2 `type` (`VarType`), 3 `persistable` (bool);
* `VarType`: 1 `type` (enum, `LOD_TENSOR` = 7), 3 `lod_tensor`
  (`LoDTensorDesc`: 1 `tensor`, a `TensorDesc`: 1 `data_type`, 2 `dims`);
* `OpDesc`: 3 `type`, 4 `attrs` (`Attr`: 1 `name`, 4 `f` (float), 5 `s`).

Unknown fields are skipped, as protobuf itself does. The parameters are the
persistable `LOD_TENSOR` variables (which leaves out `feed` and `fetch`), as
`paddle.static.save_inference_model` saves them.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator

import numpy as np

from keras_lcnet.errors import CheckpointError

# PP-LCNet's programs are ~100 kB; a larger one is not a PP-LCNet program.
MAX_PROGRAM_BYTES = 16 * 2**20
MAX_DIMS = 8
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5  # protobuf wire types
_LOD_TENSOR = 7  # VarType.Type

Shapes = dict[str, list[int]]


def read_program(path: str) -> tuple[Shapes, float]:
    """`{parameter name: shape}` and the inference dropout probability of a program.

    Args:
        path: An `inference.json` (PIR JSON) or `inference.pdmodel`
            (`ProgramDesc` protobuf) file; the form is read off the content.

    Returns:
        The parameters' shapes and the probability of the program's
        `downgrade_in_infer` dropout (0.0 without one).

    Raises:
        CheckpointError: The file is too large or malformed; one line naming it.
    """
    if os.path.getsize(path) > MAX_PROGRAM_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_PROGRAM_BYTES} bytes; not a PP-LCNet.")
    with open(path, "rb") as f:
        data = f.read()
    # A ProgramDesc starts with field 1 (0x0a); JSON with a brace.
    if re.match(rb"\s*\{", data):
        shapes, rates = _json_program(data, path)
    else:
        shapes, rates = _protobuf_program(memoryview(data), path)
    for name, shape in shapes.items():
        if not isinstance(name, str) or not valid_dims(shape):
            raise CheckpointError(f"{path}: parameter {name!r} has invalid shape {shape!r}.")
    # Stored as float32 (0.2 -> 0.20000000298...): its shortest repr is what was set.
    rates = [float(str(np.float32(rate))) for rate in rates]
    if len(rates) > 1 or not all(0.0 <= r < 1.0 for r in rates):
        raise CheckpointError(
            f"{path}: dropout probabilities {rates}; PP-LCNet has at most one, below 1."
        )
    return shapes, rates[0] if rates else 0.0


def valid_dims(dims) -> bool:
    """Whether `dims` is a parameter's shape: 1 to 8 positive int32 sizes."""
    return (
        isinstance(dims, list)
        and 0 < len(dims) <= MAX_DIMS
        and all(isinstance(d, int) and 0 < d < 2**31 for d in dims)
    )


# --------------------------------------------------------------------------- PIR JSON


def _json_program(data: bytes, path: str) -> tuple[Shapes, list[float]]:
    try:
        ops = json.loads(data)["program"]["regions"][0]["blocks"][0]["ops"]
        shapes = {op["A"][3]: op["O"]["TT"]["D"][1] for op in ops if op["#"] == "p"}
        return shapes, _json_dropout_rates(ops)
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as e:
        raise CheckpointError(
            f"{path}: not a Paddle 3 PIR program ({type(e).__name__}: {e})."
        ) from None


def _json_attrs(op: dict) -> dict:
    return {a["N"]: a["AT"]["D"] for a in op.get("A", [])}


def _json_dropout_rates(ops: list) -> list[float]:
    constants = {op["O"][0]["%"]: _json_attrs(op).get("value") for op in ops if op["#"] == "1.full"}
    rates = []
    for op in ops:
        if op["#"] == "1.scale":  # a fold already in the program would be applied twice
            raise ValueError("the program has a scale op, which PP-LCNet's does not")
        if op["#"] == "1.dropout" and _json_attrs(op).get("mode") == "downgrade_in_infer":
            rates.append(float(constants[op["I"][2]["%"]]))
    return rates


# --------------------------------------------------------------------------- protobuf


def varint(data: bytes | memoryview, pos: int, origin: str, what: str) -> tuple[int, int]:
    """The varint at `pos` and the position after it; at most 10 bytes are read."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            break
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise CheckpointError(f"{origin}: malformed {what} (a bad varint).")


def fields(
    data: bytes | memoryview, origin: str, what: str
) -> Iterator[tuple[int, int, int | memoryview]]:
    """`(field number, wire type, value)` of a protobuf message, front to back.

    A varint is an int; any other value a view into `data`, so no size field
    can make this allocate: each is checked against the bytes left.
    """
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos, origin, what)
        number, wire = key >> 3, key & 7
        if wire == VARINT and number:
            value, pos = varint(data, pos, origin, what)
        else:
            size = {FIXED64: 8, FIXED32: 4}.get(wire)
            if wire == LENGTH:
                size, pos = varint(data, pos, origin, what)
            if number == 0 or size is None or size > len(data) - pos:
                raise CheckpointError(
                    f"{origin}: malformed {what} (field {number}, wire type {wire}, "
                    f"at byte {pos} of {len(data)})."
                )
            value, pos = data[pos : pos + size], pos + size
        yield number, wire, value


def message(
    data: bytes | memoryview, origin: str, what: str, known: dict[int, int]
) -> dict[int, list]:
    """`{field number: [values]}` for the `known` fields (`{number: wire type}`)."""
    found: dict[int, list] = {number: [] for number in known}
    for number, wire, value in fields(data, origin, what):
        if number in known:
            if wire != known[number]:
                raise CheckpointError(
                    f"{origin}: malformed {what} (field {number} has wire type {wire})."
                )
            found[number].append(value)
    return found


def tensor_desc(data: bytes | memoryview, origin: str) -> tuple[int | None, list[int]]:
    """`(data_type, dims)` of a `VarType.TensorDesc`; dims packed or not (Paddle: not)."""
    dtype, dims = None, []
    for number, wire, value in fields(data, origin, "tensor descriptor"):
        if (number, wire) == (1, VARINT):
            dtype = value
        elif (number, wire) == (2, VARINT):
            dims.append(value)
        elif (number, wire) == (2, LENGTH):
            pos = 0
            while pos < len(value):
                dim, pos = varint(value, pos, origin, "tensor descriptor")
                dims.append(dim)
        else:
            raise CheckpointError(f"{origin}: unexpected field {number} in its descriptor.")
    return dtype, dims


def _text(value: memoryview, origin: str, what: str) -> str:
    try:
        return str(value, "utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{origin}: {what} is not UTF-8 text.") from None


def _last(found: dict[int, list], number: int, origin: str, what: str):
    """A singular field's value (the last one, as protobuf reads it); required."""
    if not found[number]:
        raise CheckpointError(f"{origin}: {what} lacks its field {number}; not a ProgramDesc.")
    return found[number][-1]


def _protobuf_program(data: memoryview, path: str) -> tuple[Shapes, list[float]]:
    blocks = message(data, path, "ProgramDesc", {1: LENGTH})[1]
    if len(blocks) != 1:
        raise CheckpointError(
            f"{path}: a ProgramDesc with {len(blocks)} blocks; PP-LCNet's program has one."
        )
    block = message(blocks[0], path, "BlockDesc", {3: LENGTH, 4: LENGTH})
    shapes = {}
    for var in block[3]:
        name, shape = _parameter(var, path)
        if shape is not None:
            shapes[name] = shape
    return shapes, _protobuf_dropout_rates(block[4], path)


def _parameter(var: memoryview, path: str) -> tuple[str, list[int] | None]:
    """A variable's name, and its shape if it is a parameter (persistable LoD tensor)."""
    desc = message(var, path, "VarDesc", {1: LENGTH, 2: LENGTH, 3: VARINT})
    name = _text(_last(desc, 1, path, "a VarDesc"), path, "a variable name")
    what = f"variable {name!r}"
    kind = message(_last(desc, 2, path, what), path, f"{what}'s type", {1: VARINT, 3: LENGTH})
    if desc[3][-1:] != [1] or _last(kind, 1, path, what) != _LOD_TENSOR:
        return name, None
    lod_tensor = message(_last(kind, 3, path, what), path, f"{what}'s LoDTensorDesc", {1: LENGTH})
    return name, tensor_desc(_last(lod_tensor, 1, path, what), f"{path}: {what}")[1]


def _protobuf_dropout_rates(ops: list[memoryview], path: str) -> list[float]:
    rates = []
    for op in ops:
        desc = message(op, path, "OpDesc", {3: LENGTH, 4: LENGTH})
        kind = _text(_last(desc, 3, path, "an OpDesc"), path, "an op type")
        if kind not in ("dropout", "scale"):
            continue
        attrs = _op_attrs(desc[4], path)
        # save_inference_model ends the program with a `scale` of 1 (an output name);
        # any other scale would be a fold the converter does again.
        if kind == "scale" and (attrs.get("scale"), attrs.get("bias", 0.0)) != (1.0, 0.0):
            raise CheckpointError(
                f"{path}: a scale op with scale {attrs.get('scale')} and bias "
                f"{attrs.get('bias')}; PP-LCNet's program has none but an identity."
            )
        if kind == "dropout":
            mode, rate = attrs.get("dropout_implementation"), attrs.get("dropout_prob")
            if not isinstance(mode, str) or not isinstance(rate, float):
                raise CheckpointError(f"{path}: a dropout op without its probability or mode.")
            if mode == "downgrade_in_infer":  # upscale_in_train is the identity here
                rates.append(rate)
    return rates


def _op_attrs(attrs: list[memoryview], path: str) -> dict[str, float | str]:
    """The float (`f`) and string (`s`) attributes of an op, by name."""
    values = {}
    for attr in attrs:
        found = message(attr, path, "op attribute", {1: LENGTH, 4: FIXED32, 5: LENGTH})
        name = _text(_last(found, 1, path, "an op attribute"), path, "an attribute name")
        if found[4]:
            values[name] = struct.unpack("<f", found[4][-1])[0]
        elif found[5]:
            values[name] = _text(found[5][-1], path, f"attribute {name!r}")
    return values
