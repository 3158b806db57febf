"""Legacy Paddle inference models (`inference.pdmodel` + `.pdiparams`): parity with Paddle
Inference, and one-line errors for every malformed program.

The `.pdmodel` fixtures were written by PaddlePaddle 2.6's `paddle.jit.save`
(tools/make_pdmodel_fixtures.py) beside the PIR fixtures, whose `.pdiparams` they share
byte for byte; `reference_pdmodel.npz` holds Paddle Inference's outputs for the legacy
program. The test-side writer below follows `framework.proto` independently of the reader.
"""

from __future__ import annotations

import re
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
from helpers import FIXTURES, mutate, relative_error, run_python
from test_pdiparams import _program_shapes, _varint

import keras_lcnet
from keras_lcnet.checkpoints.pdiparams import (
    find_inference_model,
    is_inference_model,
    read_inference_model,
)
from keras_lcnet.errors import CheckpointError

DEFAULT = FIXTURES / "inference_x0_25"
TEXTLINE = FIXTURES / "inference_x0_25_textline"
TEXTLINE_STRIDES = [2, [2, 1], [2, 1], [2, 1], [2, 1]]
TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|
FP32, LOD_TENSOR, FEED, FETCH = 5, 7, 9, 10  # VarType.Type
ATTR_FLOAT, ATTR_STRING = 1, 2  # AttrType


def _reference(folder) -> dict[str, np.ndarray]:
    """The PIR fixture's pixels with the legacy program's Paddle Inference logits."""
    arrays = {}
    for name, prefix in (("reference.npz", "pixels"), ("reference_pdmodel.npz", "logits")):
        with np.load(folder / name, allow_pickle=False) as data:
            arrays |= {key: data[key] for key in data.files if key.startswith(prefix)}
    return arrays


def _legacy(tmp_path, source=DEFAULT):
    """A copy of a fixture without its JSON program: `.pdmodel` + `.pdiparams` only."""
    folder = tmp_path / "legacy"
    folder.mkdir()
    for name in ("inference.pdmodel", "inference.pdiparams"):
        shutil.copyfile(source / name, folder / name)
    return folder


@pytest.mark.parametrize(
    ("source", "kwargs"), [(DEFAULT, {}), (TEXTLINE, {"stride_list": TEXTLINE_STRIDES})]
)
def test_outputs_match_paddle_inference(tmp_path, source, kwargs):
    folder = _legacy(tmp_path, source)
    model = keras_lcnet.from_checkpoint(
        folder, input_shape=(None, None, 3), classifier_activation=None, **kwargs
    )
    arrays = _reference(source)
    for i in (0, 1):  # 224x224 (80x160 text line) and an odd non-square size
        got = model.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0)
        assert relative_error(got, arrays[f"logits_{i}"]) <= TOLERANCE, i


def test_weights_accepts_a_pdmodel_folder(tmp_path):
    folder = _legacy(tmp_path)
    arrays = _reference(DEFAULT)
    model = keras_lcnet.PPLCNet_x0_25(
        weights=str(folder), classes=8, class_expand=512, classifier_activation=None
    )
    got = model.predict(arrays["pixels_1"].astype("float32"), verbose=0)
    assert relative_error(got, arrays["logits_1"]) <= TOLERANCE


def test_named_pdmodel_is_the_program_read(tmp_path):
    """A `.pdmodel` path is read even with an (here broken) `inference.json` beside it."""
    folder = _legacy(tmp_path)
    (folder / "inference.json").write_text("{broken")
    assert is_inference_model(folder / "inference.pdmodel")
    assert read_inference_model(folder / "inference.pdmodel").dropout_rate == 0.2
    with pytest.raises(CheckpointError, match="not a Paddle 3 PIR program"):
        read_inference_model(folder)  # the folder prefers Paddle 3's JSON


def test_model_prefix_folder_is_found(tmp_path):
    folder = _legacy(tmp_path)
    for suffix in (".pdmodel", ".pdiparams"):
        (folder / f"inference{suffix}").rename(folder / f"model{suffix}")
    assert find_inference_model(folder) == (
        str(folder / "model.pdmodel"),
        str(folder / "model.pdiparams"),
    )
    assert len(read_inference_model(folder).state) == 146


def test_lone_pdmodel_names_the_missing_parameters(tmp_path):
    folder = _legacy(tmp_path)
    (folder / "inference.pdiparams").unlink()
    with pytest.raises(CheckpointError, match=r"no \.pdiparams with an inference\.json or"):
        keras_lcnet.from_checkpoint(folder / "inference.pdmodel")


def test_program_dropout_is_read_from_the_op(tmp_path):
    folder = _legacy(tmp_path)
    built = keras_lcnet.from_checkpoint(folder)
    assert built.get_layer("dropout").rate == 0.2
    # Rewrite the dropout op's float attribute in place: 0.2 -> 0.35.
    program = folder / "inference.pdmodel"
    attr = _field(1, "dropout_prob") + _field(2, ATTR_FLOAT) + _field(4, 0.2)
    assert program.read_bytes().count(attr) == 1
    program.write_bytes(program.read_bytes().replace(attr, attr[:-4] + struct.pack("<f", 0.35)))
    assert read_inference_model(folder).dropout_rate == 0.35


# --------------------------------------------------------------------------- a writer


def _field(number: int, value: int | float | str | bytes) -> bytes:
    """One protobuf field: varint for ints, fixed32 for floats, length-delimited else."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    value = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _message(*fields: tuple[int, int | float | str | bytes]) -> bytes:
    return b"".join(_field(number, value) for number, value in fields)


def _var(name: str | bytes, dims=None, kind=LOD_TENSOR, persistable=True) -> bytes:
    """A `VarDesc`: 1 name, 2 `VarType` (1 type, 3 `LoDTensorDesc`), 3 persistable."""
    var_type = [(1, kind)]
    if dims is not None:
        tensor = _message((1, FP32), *((2, d) for d in dims))
        var_type.append((3, _message((1, tensor))))
    return _message((1, name), (2, _message(*var_type)), (3, int(persistable)))


def _op(kind: str, **attrs: float | str) -> bytes:
    """An `OpDesc`: 3 type, 4 attrs (1 name, 2 type, 4 f or 5 s)."""
    encoded = [
        _message((1, name), (2, ATTR_FLOAT), (4, value))
        if isinstance(value, float)
        else _message((1, name), (2, ATTR_STRING), (5, value))
        for name, value in attrs.items()
    ]
    return _message((3, kind), *((4, attr) for attr in encoded))


DROPOUT = _op("dropout", dropout_prob=0.2, dropout_implementation="downgrade_in_infer")
SCALE = _op("scale", scale=1.0, bias=0.0)


def _program(vars_: list[bytes], ops: list[bytes]) -> bytes:
    """A `ProgramDesc` (1 blocks) of one `BlockDesc` (1 idx, 2 parent_idx, 3 vars, 4 ops)."""
    block = _message((1, 0), (2, -1), *((3, v) for v in vars_), *((4, op) for op in ops))
    return _message((1, block))


def _parameters() -> list[bytes]:
    """The fixture's parameters, with the non-parameters Paddle writes beside them."""
    return [
        _var("feed", kind=FEED),
        _var("fetch", kind=FETCH),
        _var("x", [-1, 3, -1, -1], persistable=False),
        *(_var(name, dims) for name, dims in _program_shapes(DEFAULT).items()),
    ]


def _write(tmp_path, program: bytes):
    folder = _legacy(tmp_path)
    (folder / "inference.pdmodel").write_bytes(program)
    return folder


def _one_line_error(folder, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        read_inference_model(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder / "inference.pdmodel") in message
    return message


def test_written_program_reads_as_paddles(tmp_path):
    """The test writer is right: its program reads as the one Paddle 2.6 wrote."""
    folder = _write(tmp_path, _program(_parameters(), [_op("feed"), DROPOUT, SCALE]))
    written = read_inference_model(folder)
    paddle = read_inference_model(DEFAULT / "inference.pdmodel")
    assert written.names == paddle.names and written.dropout_rate == paddle.dropout_rate == 0.2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("ops", "rate"),
    [
        ([], 0.0),
        ([_op("dropout", dropout_prob=0.5, dropout_implementation="upscale_in_train")], 0.0),
        ([_op("dropout", dropout_implementation="downgrade_in_infer", dropout_prob=0.35)], 0.35),
    ],
)
def test_dropout_rate_follows_the_op(tmp_path, ops, rate):
    folder = _write(tmp_path, _program(_parameters(), ops))
    assert read_inference_model(folder).dropout_rate == rate


@pytest.mark.parametrize(
    ("program", "match"),
    [
        (b"", "a ProgramDesc with 0 blocks"),
        (_program([], []) * 2, "a ProgramDesc with 2 blocks"),
        (b"\x0a" + _varint(2**40) + b"\x00" * 16, "malformed ProgramDesc"),
        (b"\x08\x01", re.escape("malformed ProgramDesc (field 1 has wire type 0)")),
        (b"\x0a\x02\x1a\x05", re.escape("malformed BlockDesc (field 3, wire type 2")),
        (b"\x0b", "malformed ProgramDesc"),  # wire type 3, a group
        (b"\x00\x00", re.escape("malformed ProgramDesc (field 0, wire type 0")),
        (b"\x0a\x01\xff", re.escape("malformed BlockDesc (a bad varint)")),
        (_program([_message((1, "conv2d_0.w_0"))], []), "'conv2d_0.w_0' lacks its field 2"),
        (_program([_var(b"\xff\xfe", [3])], []), "a variable name is not UTF-8"),
        (_program([_var("conv2d_0.w_0", [-1, 3, 3, 3])], []), "'conv2d_0.w_0' has invalid shape"),
        (_program([_var("conv2d_0.w_0", [])], []), "'conv2d_0.w_0' has invalid shape"),
        (_program(_parameters(), [DROPOUT, DROPOUT]), re.escape("probabilities [0.2, 0.2]")),
        (_program(_parameters(), [_op("dropout", dropout_prob=0.2)]), "without its probability"),
        (
            _program(_parameters(), [_op("dropout", dropout_prob=1.0,
                                         dropout_implementation="downgrade_in_infer")]),
            re.escape("probabilities [1.0]"),
        ),
        (_program(_parameters(), [_op("scale", scale=5.0, bias=0.0)]), "a scale op with scale 5"),
        (_program(_parameters(), [_op("scale", bias=0.0)]), "a scale op with scale None"),
        (_program(_parameters(), [_message((4, b""))]), "an OpDesc lacks its field 3"),
    ],
)
def test_malformed_program(tmp_path, program, match):
    _one_line_error(_write(tmp_path, program), match)


def test_truncated_program(tmp_path):
    folder = _legacy(tmp_path)
    program = folder / "inference.pdmodel"
    program.write_bytes(program.read_bytes()[:-1000])
    _one_line_error(folder, "malformed")


def test_huge_length_field_never_allocates(tmp_path):
    folder = _write(tmp_path, b"\x0a" + _varint(2**62) + bytes(64))
    tracemalloc.start()
    try:
        _one_line_error(folder, "malformed ProgramDesc")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


# --------------------------------------------------------------------------- mutations


def _check_mutations(tmp_path, seeds) -> None:
    """Each mutated `.pdmodel` fails with one line, or loads the very same tensors."""
    folder = _legacy(tmp_path)
    original = (DEFAULT / "inference.pdmodel").read_bytes()
    reference = read_inference_model(DEFAULT / "inference.pdmodel")
    limit = 8 * (DEFAULT / "inference.pdiparams").stat().st_size
    for seed in seeds:
        (folder / "inference.pdmodel").write_bytes(mutate(original, np.random.default_rng(seed)))
        tracemalloc.start()
        try:
            model = read_inference_model(folder)
        except CheckpointError as e:
            assert "\n" not in str(e) and "inference.p" in str(e), seed
        else:  # e.g. a flipped byte in an op's call stack; the parameters file is intact
            assert model.names == reference.names, seed
            assert all(np.array_equal(model.state[k], v) for k, v in reference.state.items())
            assert 0.0 <= model.dropout_rate < 1.0, seed
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < limit, seed


def test_mutated_programs_fail_cleanly(tmp_path):
    _check_mutations(tmp_path, range(100))


@pytest.mark.slow
@pytest.mark.full
def test_mutated_programs_fail_cleanly_many(tmp_path):
    _check_mutations(tmp_path, range(100, 1100))


# --------------------------------------------------------------------------- backends

BACKEND_SCRIPT = """
import numpy as np, keras_lcnet
from helpers import relative_error
folder, pixels, expected = {args}
model = keras_lcnet.from_checkpoint(folder, input_shape=(None, None, 3),
                                    classifier_activation=None)
print("RESULT", relative_error(model.predict(np.load(pixels), verbose=0), np.load(expected)))
"""


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_match_paddle_inference(tmp_path, backend):
    folder, arrays = _legacy(tmp_path), _reference(DEFAULT)
    np.save(tmp_path / "pixels.npy", arrays["pixels_1"].astype("float32"))
    np.save(tmp_path / "expected.npy", arrays["logits_1"])
    paths = (folder, tmp_path / "pixels.npy", tmp_path / "expected.npy")
    args = ", ".join(repr(str(p)) for p in paths)
    proc = run_python(BACKEND_SCRIPT.format(args=args), backend=backend, PYTHONPATH="tests")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    assert float(line.split()[1]) <= TOLERANCE
