"""Paddle inference models (`inference.json` + `.pdiparams`): parity with Paddle Inference,
and one-line errors for every malformed file.

The fixtures were written by tools/make_inference_fixtures.py: PaddleClas' PPLCNet saved
with `paddle.jit.save`, and the outputs of Paddle Inference's predictor on CPU.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
from helpers import FIXTURES, mutations, relative_error

import keras_lcnet
from keras_lcnet.checkpoints.pdiparams import read_inference_model
from keras_lcnet.errors import CheckpointError

DEFAULT = FIXTURES / "inference_x0_25"
TEXTLINE = FIXTURES / "inference_x0_25_textline"
TEXTLINE_STRIDES = [2, [2, 1], [2, 1], [2, 1], [2, 1]]
TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|
FP32, FP16, INT64 = 5, 4, 3


def _reference(folder) -> dict[str, np.ndarray]:
    with np.load(folder / "reference.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize(
    ("folder", "kwargs"), [(DEFAULT, {}), (TEXTLINE, {"stride_list": TEXTLINE_STRIDES})]
)
def test_outputs_match_paddle_inference(folder, kwargs):
    model = keras_lcnet.from_checkpoint(
        folder, input_shape=(None, None, 3), classifier_activation=None, **kwargs
    )
    arrays = _reference(folder)
    for i in (0, 1):
        got = model.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0)
        assert relative_error(got, arrays[f"logits_{i}"]) <= TOLERANCE, i


def test_weights_accepts_a_prefix_or_pdiparams_file():
    pixels, expected = _reference(DEFAULT)["pixels_0"], _reference(DEFAULT)["logits_0"]
    for path in (DEFAULT / "inference", DEFAULT / "inference.pdiparams"):
        model = keras_lcnet.PPLCNet_x0_25(
            weights=str(path), classes=8, class_expand=512, classifier_activation=None
        )
        got = model.predict(pixels.astype("float32"), verbose=0)
        assert relative_error(got, expected) <= TOLERANCE, path


def test_program_dropout_is_folded_once():
    model = read_inference_model(DEFAULT)
    assert model.dropout_rate == 0.2  # from the program's dropout op, not a default
    built = keras_lcnet.from_checkpoint(DEFAULT)
    assert built.get_layer("dropout").rate == 0.2


# --------------------------------------------------------------------------- bad input


def _tensor_bytes(dims, data_type=FP32, data=None, packed=False) -> bytes:
    """One tensor in the layout of Paddle's SerializeToStream (see the reader's docstring)."""
    if packed:
        body = b"".join(_varint(d) for d in dims)
        desc = b"\x08" + _varint(data_type) + b"\x12" + _varint(len(body)) + body
    else:
        desc = b"\x08" + _varint(data_type) + b"".join(b"\x10" + _varint(d) for d in dims)
    if data is None:
        data = np.zeros(dims, np.float32).tobytes()
    return struct.pack("<IQIi", 0, 0, 0, len(desc)) + desc + data


def _varint(value: int) -> bytes:
    value &= 2**64 - 1  # protobuf int64: two's complement
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _copy(tmp_path, source=DEFAULT):
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    return folder


def _program_shapes(folder) -> dict[str, list[int]]:
    ops = json.loads((folder / "inference.json").read_text())["program"]["regions"][0]
    return {op["A"][3]: op["O"]["TT"]["D"][1] for op in ops["blocks"][0]["ops"] if op["#"] == "p"}


def _rewrite(folder, tensors: dict[str, bytes]) -> None:
    """Writes `.pdiparams` from per-name tensor bytes, in sorted-name order."""
    blob = b"".join(tensors[name] for name in sorted(tensors))
    (folder / "inference.pdiparams").write_bytes(blob)


def _valid_tensors(folder) -> dict[str, bytes]:
    return {name: _tensor_bytes(dims) for name, dims in _program_shapes(folder).items()}


def _one_line_error(path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        read_inference_model(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message  # one line, naming the file
    return message


def test_rewritten_file_with_packed_dims_loads(tmp_path):
    """The test writer itself is right: a file it writes reads back."""
    folder = _copy(tmp_path)
    tensors = {n: _tensor_bytes(d, packed=True) for n, d in _program_shapes(folder).items()}
    _rewrite(folder, tensors)
    assert len(read_inference_model(folder).state) == 146


def test_truncated_file(tmp_path):
    folder = _copy(tmp_path)
    params = folder / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:-100])
    _one_line_error(folder, "is the file truncated")


def test_absurd_dims_never_allocate(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    tensors["conv2d_0.w_0"] = _tensor_bytes([2**40, 2**20], data=b"")
    _rewrite(folder, tensors)
    tracemalloc.start()
    try:
        _one_line_error(folder, re.escape("invalid dims [1099511627776, 1048576]"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_negative_dims(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    tensors["conv2d_0.w_0"] = _tensor_bytes([-1, 3, 3, 3], data=b"")
    _rewrite(folder, tensors)
    _one_line_error(folder, "invalid dims")


def test_wrong_dtype(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    tensors["conv2d_0.w_0"] = _tensor_bytes([8, 3, 3, 3], data_type=INT64)
    _rewrite(folder, tensors)
    _one_line_error(folder, "conv2d_0.w_0.*data type 3, not FP32")


def test_fp16_tensor_is_read_as_float32(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    values = np.arange(8, dtype=np.float16)
    tensors["linear_0.b_0"] = _tensor_bytes([8], data_type=FP16, data=values.tobytes())
    _rewrite(folder, tensors)
    np.testing.assert_array_equal(read_inference_model(folder).state["fc.bias"], values)


def test_wrong_tensor_count(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    del tensors["linear_0.w_0"]
    _rewrite(folder, tensors)
    _one_line_error(folder, "holds 145 tensors, the program has 146")


def test_extra_bytes_after_the_tensors(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    tensors["zz_extra"] = _tensor_bytes([3])
    _rewrite(folder, tensors)
    _one_line_error(folder, "bytes after the program's 146 tensors")


def test_shape_unlike_the_program(tmp_path):
    folder = _copy(tmp_path)
    tensors = _valid_tensors(folder)
    tensors["conv2d_0.w_0"] = _tensor_bytes([8, 3, 5, 5])
    _rewrite(folder, tensors)
    _one_line_error(folder, re.escape("has shape [8, 3, 5, 5], the program says [8, 3, 3, 3]"))


def test_flipped_version_byte(tmp_path):
    folder = _copy(tmp_path)
    params = folder / "inference.pdiparams"
    data = bytearray(params.read_bytes())
    data[0] ^= 0xFF
    params.write_bytes(bytes(data))
    _one_line_error(folder, "unknown version")


def test_missing_program_names_the_fix(tmp_path):
    folder = _copy(tmp_path)
    (folder / "inference.json").unlink()
    (folder / "inference.pdmodel").unlink()
    _one_line_error(folder, "no .pdiparams with an inference.json or inference.pdmodel program")


def test_program_that_is_not_json(tmp_path):
    folder = _copy(tmp_path)
    (folder / "inference.json").write_text("{not json")
    _one_line_error(folder, "not a Paddle 3 PIR program")


def test_conv_out_of_creation_order_fails_the_shape_check(tmp_path):
    """The creation-order mapping is checked: a pointwise conv numbered before its
    block's depthwise conv (program and file agreeing) breaks the channel chain."""
    folder = _copy(tmp_path)
    program = json.loads((folder / "inference.json").read_text())
    for op in program["program"]["regions"][0]["blocks"][0]["ops"]:
        if op["#"] == "p" and op["A"][3] in ("conv2d_1.w_0", "conv2d_2.w_0"):
            op["A"][3] = {"conv2d_1.w_0": "conv2d_2.w_0", "conv2d_2.w_0": "conv2d_1.w_0"}[
                op["A"][3]
            ]
    (folder / "inference.json").write_text(json.dumps(program))
    _rewrite(folder, _valid_tensors(folder))
    _one_line_error(folder, re.escape("the convolution for 'blocks2.0.dw_conv' has tensors"))


def test_weights_of_a_bad_inference_model_raise_checkpoint_error(tmp_path):
    folder = _copy(tmp_path)
    params = folder / "inference.pdiparams"
    params.write_bytes(params.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="is the file truncated"):
        keras_lcnet.PPLCNet_x0_25(weights=str(folder), classes=8, class_expand=512)


# --------------------------------------------------------------------------- mutations


def _check_mutations(tmp_path, seeds) -> None:
    """Even seeds corrupt the parameters, odd ones the program."""
    folder = _copy(tmp_path)
    originals = {
        name: (DEFAULT / name).read_bytes() for name in ("inference.pdiparams", "inference.json")
    }
    reference = read_inference_model(DEFAULT).state
    for seed in seeds:
        target = ("inference.pdiparams", "inference.json")[seed % 2]
        for name, data in originals.items():
            # Half the mutations hit the first tensors' headers, where the size fields are.
            (mutated,) = mutations(data, seed, 1, hotspots=range(200))
            (folder / name).write_bytes(mutated if name == target else data)
        tracemalloc.start()
        try:
            state = read_inference_model(folder).state
        except CheckpointError as e:
            assert "\n" not in str(e), seed
        else:  # e.g. a flipped data byte: the same tensors, shapes intact
            assert {k: v.shape for k, v in state.items()} == {
                k: v.shape for k, v in reference.items()
            }, seed
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 8 * len(originals["inference.pdiparams"]), seed


def test_mutated_files_fail_cleanly(tmp_path):
    _check_mutations(tmp_path, range(200))


@pytest.mark.slow
@pytest.mark.full
def test_mutated_files_fail_cleanly_many(tmp_path):
    _check_mutations(tmp_path, range(200, 2200))
