"""Reading .pdparams safely and mapping them onto the model, with clear errors."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
from helpers import FIXTURES

import keras_lcnet
from keras_lcnet.checkpoints.mapping import keras_path
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError

X0_25 = FIXTURES / "pplcnet_x0_25.pdparams"


def _write_pdparams(path, state) -> str:
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)
    return str(path)


def test_reads_a_real_paddle_checkpoint():
    state = read_pdparams(X0_25)
    assert "StructuredToParameterName@@" not in state
    assert state["conv1.conv.weight"].shape == (8, 3, 3, 3)  # Paddle [out, in, kh, kw]
    assert state["fc.weight"].shape == (1280, 8)  # Linear is [in, out]
    assert len(state) == 146


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_hostile_pickle_raises_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"conv1.conv.weight": _Exploit(marker)}, f, protocol=protocol)
    with pytest.raises(
        CheckpointError, match=re.escape("refusing to load the global 'posix.system'")
    ):
        keras_lcnet.PPLCNet_x0_25(weights=str(path), classes=8)
    assert not marker.exists()


def test_older_numpy_and_protocol_2_pickles_load(tmp_path):
    state = read_pdparams(X0_25)
    path = _write_pdparams(tmp_path / "p2.pdparams", state)
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=2)
    again = read_pdparams(path)
    np.testing.assert_array_equal(again["fc.bias"], state["fc.bias"])


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", None])
def test_truncated_or_foreign_files_raise(tmp_path, content):
    path = tmp_path / "bad.pdparams"
    data = X0_25.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(CheckpointError, match=re.escape("not a readable PaddleClas .pdparams")):
        read_pdparams(path)


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    return pickle.SHORT_BINUNICODE + bytes([len(value)]) + value.encode()


def _dtype(code: str) -> bytes:
    return _global("numpy", "dtype") + _text(code) + pickle.NEWFALSE + pickle.NEWTRUE + (
        pickle.TUPLE3 + pickle.REDUCE
    )


def _shape(n: int) -> bytes:
    return pickle.BININT + struct.pack("<i", n) + pickle.TUPLE1


_EMPTY_ARRAY = (  # what NumPy's pickles start an array from
    _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
    + _shape(0) + pickle.SHORT_BINBYTES + b"\x01b" + pickle.TUPLE3 + pickle.REDUCE
)
# Hand-made pickles of {"conv1.conv.weight": X} where X claims far more memory
# (>= 128 MiB) than the few bytes of the file hold.
_OVERSIZED = {
    "bytes_length": pickle.BINBYTES + struct.pack("<I", 2**31) + b"abc",
    "reconstruct_shape": _global("numpy.core.multiarray", "_reconstruct")
    + _global("numpy", "ndarray") + _shape(2**28) + _dtype("f8") + pickle.TUPLE3 + pickle.REDUCE,
    "ndarray_call": _global("numpy", "ndarray") + _shape(2**28) + _dtype("f8")
    + pickle.TUPLE2 + pickle.REDUCE,
    "object_array_state": _EMPTY_ARRAY + pickle.MARK + pickle.BININT1 + b"\x01" + _shape(2**24)
    + _dtype("O8") + pickle.NEWFALSE + pickle.EMPTY_LIST + pickle.TUPLE + pickle.BUILD,
    "array_state": _EMPTY_ARRAY + pickle.MARK + pickle.BININT1 + b"\x01" + _shape(2**28)
    + _dtype("f8") + pickle.NEWFALSE + pickle.SHORT_BINBYTES + b"\x08" + bytes(8)
    + pickle.TUPLE + pickle.BUILD,
}


@pytest.mark.parametrize("claim", sorted(_OVERSIZED))
def test_oversized_claims_are_refused_before_allocating(tmp_path, claim):
    path = tmp_path / "claim.pdparams"
    path.write_bytes(
        b"\x80\x02" + pickle.EMPTY_DICT + _text("conv1.conv.weight") + _OVERSIZED[claim]
        + pickle.SETITEM + pickle.STOP
    )
    tracemalloc.start()  # NumPy reports its array buffers to tracemalloc too
    try:
        with pytest.raises(CheckpointError, match=re.escape("not a readable PaddleClas")):
            read_pdparams(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_non_mapping_pickle_raises(tmp_path):
    path = _write_pdparams(tmp_path / "list.pdparams", [np.zeros(3)])
    with pytest.raises(CheckpointError, match="not a mapping"):
        read_pdparams(path)


def test_wrong_width_names_first_mismatching_tensor():
    with pytest.raises(CheckpointError) as info:
        keras_lcnet.PPLCNet_x1_0(weights=str(X0_25), classes=8)
    message = str(info.value)
    assert "conv1.conv.weight" in message
    assert "[8, 3, 3, 3]" in message and "[16, 3, 3, 3]" in message


def test_class_count_mismatch_says_how_to_fix():
    with pytest.raises(CheckpointError, match=r"trained for 8 classes .* classes=8"):
        keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), classes=1000, classifier_activation=None)


def test_include_top_false_ignores_the_head():
    model = keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), include_top=False)
    full = keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), classes=8)
    np.testing.assert_array_equal(
        model.get_layer("blocks6_1_pw_conv").kernel.numpy(),
        full.get_layer("blocks6_1_pw_conv").kernel.numpy(),
    )


def test_missing_tensor_is_named(tmp_path):
    state = read_pdparams(X0_25)
    del state["blocks6_0_se.conv1.bias".replace("_se", ".se").replace("blocks6_0", "blocks6.0")]
    path = _write_pdparams(tmp_path / "missing.pdparams", state)
    with pytest.raises(CheckpointError, match="blocks6_0_se/conv1/bias"):
        keras_lcnet.PPLCNet_x0_25(weights=path, classes=8)


def test_unexpected_tensor_is_named(tmp_path):
    state = read_pdparams(X0_25)
    state["blocks7.0.dw_conv.conv.weight"] = np.zeros((8, 1, 3, 3), np.float32)
    path = _write_pdparams(tmp_path / "extra.pdparams", state)
    with pytest.raises(CheckpointError, match=re.escape("blocks7.0.dw_conv.conv.weight")):
        keras_lcnet.PPLCNet_x0_25(weights=path, classes=8)


def test_unknown_tensor_name_is_rejected():
    with pytest.raises(
        CheckpointError, match=re.escape("unexpected tensor 'backbone.stem.weight'")
    ):
        keras_path("backbone.stem.weight")


def test_head_without_last_conv_is_reported():
    with pytest.raises(CheckpointError, match="last_conv"):
        keras_lcnet.PPLCNet(scale=0.25, classes=8, use_last_conv=False, weights=str(X0_25))


def test_failed_load_leaves_model_untouched(tmp_path):
    state = read_pdparams(X0_25)
    state["fc.bias"] = np.zeros(9, np.float32)
    path = _write_pdparams(tmp_path / "bad_head.pdparams", state)
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=8)
    before = model.get_layer("conv1").kernel.numpy().copy()
    with pytest.raises(CheckpointError):
        keras_lcnet.weights.load_weights(model, path)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_dropout_factor_is_folded_into_classifier():
    state = read_pdparams(X0_25)
    model = keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), classes=8)
    np.testing.assert_allclose(
        model.get_layer("fc").kernel.numpy(), 0.8 * state["fc.weight"], rtol=1e-6
    )
    np.testing.assert_array_equal(model.get_layer("fc").bias.numpy(), state["fc.bias"])


def test_weights_path_is_recognized_by_content(tmp_path):
    path = tmp_path / "checkpoint.bin"
    shutil.copy(X0_25, path)
    model = keras_lcnet.PPLCNet_x0_25(weights=str(path), classes=8)
    assert model.get_layer("conv1").kernel.shape == (3, 3, 3, 8)
