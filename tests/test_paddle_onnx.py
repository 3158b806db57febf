"""paddle2onnx's ONNX exports of PP-LCNet: parity with onnxruntime, and one-line errors for
every file that is not one.

The fixtures were written by tools/make_onnx_fixtures.py: paddle2onnx 2.1.0's export of the
Paddle inference fixtures (PaddleClas' PPLCNet), with onnxruntime's outputs on it.
"""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest
from helpers import FIXTURES, mutate, onnx_reference, relative_error, run_python

import keras_lcnet
from keras_lcnet.errors import CheckpointError
from keras_lcnet.weights import load_weights

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from keras_lcnet.checkpoints.paddle_onnx import is_paddle_onnx, read_paddle_onnx  # noqa: E402

pytestmark = pytest.mark.export

DEFAULT = FIXTURES / "onnx_x0_25" / "inference.onnx"
TEXTLINE = FIXTURES / "onnx_x0_25_textline" / "inference.onnx"
TEXTLINE_STRIDES = [2, [2, 1], [2, 1], [2, 1], [2, 1]]
TOLERANCE = 1e-4  # max |keras - onnxruntime| / max |onnxruntime|


def _reference(path) -> dict[str, np.ndarray]:
    return onnx_reference(path)


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """PaddleClas' eval normalisation, NHWC uint8 -> NCHW float32 (onnxruntime's input)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def _onnxruntime(path, pixels: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: _normalise(pixels)})[0]


def _keras_outputs(model, path) -> list[float]:
    arrays = _reference(path)
    return [
        relative_error(model.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0),
                       arrays[f"logits_{i}"])
        for i in (0, 1)
    ]


@pytest.mark.parametrize("path", [DEFAULT, TEXTLINE], ids=["x0_25", "textline"])
def test_from_checkpoint_matches_onnxruntime(path):
    """224x224 and an odd non-square input; the text-line strides come from the graph."""
    model = keras_lcnet.from_checkpoint(
        path, input_shape=(None, None, 3), classifier_activation=None
    )
    assert max(_keras_outputs(model, path)) <= TOLERANCE


def test_paddlex_onnx_folder_loads_by_folder():
    """A folder holding inference.onnx and no Paddle model, as PaddleX' ONNX downloads."""
    folder = DEFAULT.parent
    model = keras_lcnet.from_checkpoint(folder, classifier_activation=None)
    assert max(_keras_outputs(model, DEFAULT)) <= TOLERANCE
    built = keras_lcnet.PPLCNet_x0_25(
        weights=None, classes=8, class_expand=512, classifier_activation=None
    )
    keras_lcnet.weights.load_weights(built, folder)
    assert max(_keras_outputs(built, DEFAULT)) <= TOLERANCE


def test_architecture_is_read_off_the_graph():
    default, textline = read_paddle_onnx(DEFAULT), read_paddle_onnx(TEXTLINE)
    assert default.stride_list == [2, 2, 2, 2, 2]
    assert textline.stride_list == TEXTLINE_STRIDES
    assert default.dropout_rate == textline.dropout_rate == 0.2  # the graph's Mul by 0.8
    model = keras_lcnet.from_checkpoint(TEXTLINE)
    assert model.output_shape == (None, 2)
    assert model.get_layer("blocks3_0_dw_conv").strides == (2, 1)
    assert model.get_layer("dropout").rate == 0.2


def test_weights_accepts_the_onnx_file_under_any_name(tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(DEFAULT.read_bytes())
    model = keras_lcnet.PPLCNet_x0_25(
        weights=str(renamed), classes=8, class_expand=512, classifier_activation=None,
        input_shape=(None, None, 3),
    )
    assert max(_keras_outputs(model, DEFAULT)) <= TOLERANCE


def test_weights_needs_the_graphs_strides():
    with pytest.raises(ValueError, match=re.escape("stride_list=[2, [2, 1], [2, 1]")):
        keras_lcnet.PPLCNet_x0_25(weights=str(TEXTLINE), classes=2, class_expand=512)
    model = keras_lcnet.PPLCNet_x0_25(
        weights=str(TEXTLINE), classes=2, class_expand=512, stride_list=TEXTLINE_STRIDES,
        input_shape=(None, None, 3), classifier_activation=None,
    )
    assert max(_keras_outputs(model, TEXTLINE)) <= TOLERANCE


def test_contradicting_overrides_are_refused():
    with pytest.raises(ValueError, match=r"contradicts .*inference\.onnx"):
        keras_lcnet.from_checkpoint(TEXTLINE, stride_list=[2, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="classes=1000 does not match"):
        keras_lcnet.from_checkpoint(DEFAULT, classes=1000)


def test_other_class_count_fails_before_anything_is_assigned():
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=1000, class_expand=512)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(CheckpointError, match="trained for 8 classes"):
        load_weights(model, str(DEFAULT))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))


# --------------------------------------------------------------------------- other forms


def _load(path=DEFAULT):
    return onnx.load(str(path))


def _save(model, tmp_path, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _initializer(model, name: str):
    return next(t for t in model.graph.initializer if t.name == name)


def _constant_node_form(model):
    """The graph as `paddle2onnx --optimize_tool None` writes it: weights as Constant nodes,
    each SE bias a Constant `conv2d_N.b_0` of [C] reshaped to [1, C, 1, 1] before its Add;
    and a `_deepcopy_K` suffix on one weight's name."""
    graph = model.graph
    conv_of = {n.output[0]: n.input[1] for n in graph.node if n.op_type == "Conv"}
    constants, renamed = [], {"conv2d_5.w_0": "conv2d_5.w_0_deepcopy_1"}
    for node in graph.node:
        if node.op_type == "Add" and node.input[0] in conv_of:
            bias = _initializer(model, node.input[1])
            values = numpy_helper.to_array(bias).reshape(-1)
            name = conv_of[node.input[0]].replace(".w_0", ".b_0")
            constants.append(helper.make_node(
                "Constant", [], [name], value=numpy_helper.from_array(values, name)))
            constants.append(helper.make_node(
                "Constant", [], [name + ".shape"],
                value=numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64))))
            constants.append(helper.make_node("Reshape", [name, name + ".shape"], [bias.name]))
            graph.initializer.remove(bias)
    for tensor in list(graph.initializer):
        name = renamed.get(tensor.name, tensor.name)
        tensor.name = name
        constants.insert(0, helper.make_node("Constant", [], [name], value=tensor))
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    del graph.initializer[:]
    nodes = constants + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def test_constant_node_form_loads(tmp_path):
    path = _save(_constant_node_form(_load()), tmp_path)
    arrays = _reference(DEFAULT)
    # The rewritten graph still computes the fixture's outputs...
    got = _onnxruntime(path, arrays["pixels_1"])
    assert relative_error(got, arrays["logits_1"]) <= 1e-5
    # ...and reads as the same weights.
    expected = read_paddle_onnx(DEFAULT).state
    state = read_paddle_onnx(path).state
    assert state.keys() == expected.keys()
    assert all(np.array_equal(state[k], expected[k]) for k in expected)


def test_dropout_factor_is_the_graphs(tmp_path):
    """A Mul by 0.5 before the classifier: the Keras model folds exactly that factor."""
    model = _load()
    factor = _initializer(model, "helper.constant.0")
    factor.CopyFrom(numpy_helper.from_array(np.array([0.5], np.float32), factor.name))
    path = _save(model, tmp_path)
    pixels = _reference(DEFAULT)["pixels_0"]
    built = keras_lcnet.from_checkpoint(path, classifier_activation=None)
    assert built.get_layer("dropout").rate == 0.5
    got = built.predict(pixels.astype("float32"), verbose=0)
    assert relative_error(got, _onnxruntime(path, pixels)) <= TOLERANCE


# --------------------------------------------------------------------------- bad input


def _one_line_error(path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        read_paddle_onnx(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message  # one line, naming the file
    return message


def test_detection_is_by_content():
    assert is_paddle_onnx(DEFAULT) and is_paddle_onnx(TEXTLINE)
    others = [p for p in FIXTURES.rglob("*") if p.is_file() and p.suffix != ".onnx"]
    assert others and not any(is_paddle_onnx(p) for p in others)


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_file(tmp_path, fraction):
    data = DEFAULT.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    _one_line_error(path, "is the file truncated")


def _tiny_network(tmp_path, weight: str = "w", extra: str | None = None):
    """A Conv (+ `extra`) network built with onnx.helper: not a PP-LCNet."""
    nodes = [helper.make_node("Conv", ["x", weight], ["y"], pads=[1, 1, 1, 1])]
    if extra:
        nodes.append(helper.make_node(extra, ["y"], ["z"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), weight)],
    )
    return _save(helper.make_model(graph), tmp_path, "tiny.onnx")


def test_other_network_is_refused(tmp_path):
    _one_line_error(_tiny_network(tmp_path), "a Conv weight is named 'w', not like Paddle's")
    _one_line_error(_tiny_network(tmp_path, extra="Softmax"), "'Softmax' node")
    _one_line_error(_tiny_network(tmp_path, weight="conv2d_0.w_0"), "no BatchNormalization")


@pytest.mark.slow
def test_our_own_tf2onnx_export_is_refused(tmp_path):
    pytest.importorskip("tf2onnx")
    from keras_lcnet.deploy.onnx import convert

    model = keras_lcnet.PPLCNet_x0_25(weights=None, include_preprocessing=False)
    path = _save(convert(model, (1, 224, 224, 3), nchw_input=True), tmp_path)
    assert is_paddle_onnx(path)
    _one_line_error(path, "not like Paddle's|node, which paddle2onnx's PP-LCNet does not")


def test_folded_batch_norms_are_refused(tmp_path):
    model = _load()
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            node.op_type = "Identity"
            del node.input[1:], node.attribute[:]
    _one_line_error(_save(model, tmp_path), "no BatchNormalization nodes")


def _resized(model, name: str, shape: list[int]):
    tensor = _initializer(model, name)
    tensor.CopyFrom(numpy_helper.from_array(np.zeros(shape, np.float32), name))
    return model


@pytest.mark.parametrize(
    ("name", "shape", "match"),
    [
        ("linear_0.w_0", [500, 8], "the classifier does not fit 512 features"),
        ("batch_norm2d_3.w_2", [9], "the batch norm of 'blocks3.0.dw_conv' does not have 4"),
        ("conv2d_2.w_0", [12, 8, 1, 1], "the batch norm of 'blocks2.0.pw_conv' does not have 4"),
    ],
)
def test_wrong_initializer_shape(tmp_path, name, shape, match):
    _one_line_error(_save(_resized(_load(), name, shape), tmp_path), re.escape(match))


def test_absurd_dims_never_allocate(tmp_path):
    model = _load()
    _initializer(model, "conv2d_0.w_0").dims[:] = [2**40, 2**20]
    path = _save(model, tmp_path)
    tracemalloc.start()
    try:
        _one_line_error(path, re.escape("invalid dims [1099511627776, 1048576]"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_oversized_file_is_not_parsed(monkeypatch):
    from keras_lcnet.checkpoints import paddle_onnx

    monkeypatch.setattr(paddle_onnx, "MAX_FILE_BYTES", DEFAULT.stat().st_size - 1)
    _one_line_error(DEFAULT, "more than any PP-LCNet ONNX file")


def test_data_shorter_than_the_dims(tmp_path):
    model = _load()
    _initializer(model, "conv2d_0.w_0").raw_data = b"\0" * 10
    _one_line_error(_save(model, tmp_path), "has dims .8, 3, 3, 3. but holds 10 values or bytes")


def test_external_data_is_never_followed(tmp_path):
    model = _load()
    tensor = _initializer(model, "conv2d_0.w_0")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    _one_line_error(_save(model, tmp_path), "stored in an external file, which is not read")


def test_second_dropout_like_mul_is_refused(tmp_path):
    model = _load()
    first = next(n for n in model.graph.node if n.op_type == "Mul")
    scaled = helper.make_node("Mul", [first.output[0], "helper.constant.0"], ["scaled"])
    for node in model.graph.node:
        node.input[:] = ["scaled" if i == first.output[0] else i for i in node.input]
    model.graph.node.insert(list(model.graph.node).index(first) + 1, scaled)
    _one_line_error(_save(model, tmp_path), re.escape("Mul nodes by constants [0.800000011920929"))


def test_missing_onnx_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=re.escape('pip install "keras-lcnet[export]"')):
        read_paddle_onnx(DEFAULT)


# --------------------------------------------------------------------------- backends


BACKEND_SCRIPT = """
import json, numpy as np, keras_lcnet
from helpers import onnx_reference, relative_error
results = {{}}
for path in {paths}:
    model = keras_lcnet.from_checkpoint(path, input_shape=(None, None, 3),
                                        classifier_activation=None)
    data = onnx_reference(path)
    for i in (0, 1):
        got = model.predict(data[f"pixels_{{i}}"].astype("float32"), verbose=0)
        results[f"{{path}}/{{i}}"] = relative_error(got, data[f"logits_{{i}}"])
print("RESULT" + json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_match_onnxruntime(backend):
    import json

    script = BACKEND_SCRIPT.format(paths=[str(DEFAULT), str(TEXTLINE)])
    proc = run_python(script, backend=backend, PYTHONPATH="tests")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert len(results) == 4 and max(results.values()) <= TOLERANCE, results


# --------------------------------------------------------------------------- mutations


def _hot_spots(data: bytes) -> list[int]:
    """The graph's nodes (before the first weight's name) and every tensor's header."""
    names = [t.name.encode() for t in onnx.load_from_string(data).graph.initializer]
    spots = [data.find(name) for name in names]
    return list(range(0, min(spots), 64)) + spots


def _mutate_dims(data: bytes, rng: np.random.Generator) -> bytes:
    """A tensor's dims rewritten: absurd, negative, zero or one more axis."""
    model = onnx.load_from_string(data)
    tensor = model.graph.initializer[int(rng.integers(0, len(model.graph.initializer)))]
    dims = list(tensor.dims)
    choice = int(rng.integers(0, 4))
    if choice == 0:
        dims[int(rng.integers(0, len(dims)))] = int(rng.integers(2**31, 2**62))
    elif choice == 1:
        dims[int(rng.integers(0, len(dims)))] = -int(rng.integers(1, 2**31))
    elif choice == 2:
        dims[int(rng.integers(0, len(dims)))] = 0
    else:
        dims.append(int(rng.integers(1, 2**20)))
    tensor.dims[:] = dims
    return model.SerializeToString()


def _load_whole_or_nothing(model, path, before: list[np.ndarray], seed: int) -> None:
    """`load_weights` either assigns every variable or none (then restored for the next)."""
    try:
        load_weights(model, str(path))
    except CheckpointError:
        now = [w.numpy() for w in model.weights]
        assert all(np.array_equal(a, b) for a, b in zip(before, now, strict=True)), seed
    else:
        for variable, value in zip(model.weights, before, strict=True):
            variable.assign(value)


def _check_mutations(tmp_path, seeds) -> None:
    """Each mutated file reads as the same tensor shapes or fails with one CheckpointError
    line, within bounded memory; every tenth also goes through `load_weights` into a model."""
    data = DEFAULT.read_bytes()
    spots = _hot_spots(data)
    shapes = {k: v.shape for k, v in read_paddle_onnx(DEFAULT).state.items()}
    model = keras_lcnet.from_checkpoint(DEFAULT)
    before = [w.numpy().copy() for w in model.weights]
    path = tmp_path / "inference.onnx"
    for seed in seeds:
        rng = np.random.default_rng(seed)
        mutated = _mutate_dims(data, rng) if seed % 5 == 0 else mutate(data, rng, spots)
        path.write_bytes(mutated)
        tracemalloc.start()
        try:
            state = read_paddle_onnx(path).state
        except CheckpointError as e:
            assert len(str(e).splitlines()) == 1, seed
        else:  # e.g. a flipped byte of a weight's data: the same tensors, shapes intact
            assert {k: v.shape for k, v in state.items()} == shapes, seed
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 8 * len(data), seed
        if seed % 10 == 0:
            _load_whole_or_nothing(model, path, before, seed)


def test_mutated_files_fail_cleanly(tmp_path):
    _check_mutations(tmp_path, range(100))


@pytest.mark.slow
@pytest.mark.full
def test_mutated_files_fail_cleanly_many(tmp_path):
    _check_mutations(tmp_path, range(100, 1100))
