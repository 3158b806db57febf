"""ONNX export: parity with Keras and PaddleClas, the cleaned-up graph, and its rewrites."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import relative_error

from keras_lcnet.deploy import export_onnx
from keras_lcnet.deploy import onnx as onnx_export
from keras_lcnet.model import PPLCNet

onnx = pytest.importorskip("onnx")
for _module in ("tf2onnx", "onnxruntime", "onnxscript", "onnxslim"):
    pytest.importorskip(_module)

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def onnx_float32(x0_25_case, tmp_path_factory):
    model, pixels, _ = x0_25_case
    path = tmp_path_factory.mktemp("onnx") / "x0_25.onnx"
    return export_onnx(model, path, verification=pixels)


def assert_clean(graph) -> None:
    """PP-LCNet x0_25's graph with batch norm, pads and hard activations all folded."""
    ops = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 32 and ops.count("HardSwish") == 28
    assert not {"Pad", "Clip"} & set(ops)  # pads and +3s folded
    # BN shifts folded too: the one Add is the mean's, on the input rows.
    assert [i for i, op in enumerate(ops) if op == "Add"] == [ops.index("Reshape") + 1]
    for node in graph.node:
        if node.op_type == "HardSigmoid":
            alpha = next(a.f for a in node.attribute if a.name == "alpha")
            assert alpha == pytest.approx(1 / 6)  # not ONNX's default 0.2
    assert ops.count("HardSigmoid") == 2  # the two SE gates


@pytest.mark.slow
def test_onnx_matches_keras_and_paddle(x0_25_case, onnx_float32):
    import onnxruntime as ort

    _, pixels, paddle_logits = x0_25_case
    assert onnx_float32.ok, onnx_float32.summary()
    assert onnx_float32.agreement.max_relative_difference <= 1e-4
    session = ort.InferenceSession(onnx_float32.path, providers=["CPUExecutionProvider"])
    outputs = np.concatenate([session.run(None, {"images": image[None]})[0] for image in pixels])
    assert relative_error(outputs, paddle_logits) <= 1e-4


@pytest.mark.slow
def test_onnx_graph_is_clean(onnx_float32):
    graph = onnx.load(onnx_float32.path).graph
    assert "Transpose" not in [node.op_type for node in graph.node]
    # The NHWC pixels reach the first Conv as one-channel rows, the mean
    # subtracted and the 1/std scale folded into its weights (as fast as
    # paddle2onnx's graph, which starts with the Conv).
    assert onnx_float32.audit.input_ops == ("Reshape", "Add", "Conv")
    assert graph.node[0].input[0] == "images"
    assert_clean(graph)


def test_onnx_nchw_input_has_no_transpose(x0_25_case, tmp_path):
    model, pixels, _ = x0_25_case
    report = export_onnx(model, tmp_path / "nchw.onnx", nchw_input=True, verification=pixels)
    assert report.ok, report.summary()
    assert report.input_shape == (1, 3, 224, 224)
    assert "Transpose" not in report.audit.ops
    assert report.audit.input_ops == ("Add", "Conv")  # the 1/std scale is in the weights


@pytest.mark.slow
@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET, onnx_export.MAX_OPSET])
def test_onnx_opset_range_gives_the_same_clean_graph(x0_25_case, opset):
    model, _, _ = x0_25_case
    proto = onnx_export.convert(model, (1, 224, 224, 3), opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert [n.op_type for n in proto.graph.node][:3] == ["Reshape", "Add", "Conv"]
    assert_clean(proto.graph)


@pytest.mark.slow
def test_scalar_add_fix_leaves_no_transpose_and_is_scoped(tmp_path):
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    original = TransposeOptimizer._add_handler
    # Fresh BN (zero shift) puts h-swish's scalar `+ 3` right after each conv:
    # the input that made tf2onnx's transpose optimizer give up.
    model = PPLCNet(scale=0.25, weights=None, classes=10, classifier_activation=None)
    report = export_onnx(model, tmp_path / "fresh.onnx")
    assert report.ok and "Transpose" not in report.audit.ops
    assert TransposeOptimizer._add_handler is original


def _hard_sigmoid_graph(scale: float, constants_first: bool):
    """`Clip(x + 3, 0, 6) * scale`, with the constants as first or second operands."""
    from onnx import TensorProto, helper

    def operands(a: str, b: str) -> list[str]:
        return [b, a] if constants_first else [a, b]

    nodes = [
        helper.make_node("Add", operands("x", "three"), ["a"]),
        helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
        helper.make_node("Mul", operands("c", "scale"), ["outputs"]),
    ]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in
             (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("scale", scale))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("constants_first", [False, True])
def test_optimize_only_fuses_hard_sigmoid_with_slope_one_sixth(constants_first):
    from onnx.reference import ReferenceEvaluator

    x = np.array([[-4.0, -1.0, 0.5, 3.5]], np.float32)
    fused = onnx_export.optimize(_hard_sigmoid_graph(1 / 6, constants_first))
    assert [n.op_type for n in fused.graph.node] == ["HardSigmoid"]
    (result,) = ReferenceEvaluator(fused).run(None, {"x": x})
    np.testing.assert_allclose(result, np.clip(x + 3, 0, 6) / 6, rtol=1e-6)
    kept = onnx_export.optimize(_hard_sigmoid_graph(0.2, constants_first))
    assert [n.op_type for n in kept.graph.node] == ["Add", "Clip", "Mul"]


def test_transpose_input_puts_one_transpose_before_the_nchw_graph():
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from keras_lcnet.deploy import onnx_passes

    mean = np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("Sub", ["images", "mean"], ["outputs"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 2, 5])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, [1, 3, 2, 5])],
        [numpy_helper.from_array(mean, "mean")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    nhwc = onnx_passes.transpose_input(model)
    onnx.checker.check_model(nhwc, full_check=True)
    dims = [d.dim_value for d in nhwc.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 2, 5, 3]
    assert [n.op_type for n in nhwc.graph.node] == ["Transpose", "Sub"]
    pixels = np.arange(30, dtype=np.float32).reshape(1, 2, 5, 3)
    (result,) = ReferenceEvaluator(nhwc).run(None, {"images": pixels})
    np.testing.assert_array_equal(result, pixels.transpose(0, 3, 1, 2) - mean)


def _stem_graph(chain, pads, group: int = 1):
    """NCHW `images` (1, 3, 7, 6) -> per-channel `chain` ops -> a strided, padded Conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    nodes, inits, current = [], [], "images"
    for i, (op, value) in enumerate(chain):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"c{i}"))
        nodes.append(helper.make_node(op, [current, f"c{i}"], [f"t{i}"]))
        current = f"t{i}"
    weights = rng.normal(size=(6, 3 // group, 3, 2)).astype(np.float32)
    height, width = (7 + pads[0] + pads[2] - 3) // 2 + 1, 6 + pads[1] + pads[3] - 1
    inits += [numpy_helper.from_array(weights, "w"),
              numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "b")]
    nodes.append(helper.make_node("Conv", [current, "w", "b"], ["outputs"], strides=[2, 1],
                                  pads=pads, group=group))
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 7, 6])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, [1, 6, height, width])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


IMAGENET = [("Sub", np.reshape([123.675, 116.28, 103.53], (1, 3, 1, 1))),
            ("Mul", np.reshape([1 / 58.395, 1 / 57.12, 1 / 57.375], (1, 3, 1, 1)))]
RESCALING = [("Mul", 1 / 127.5), ("Add", -1.0)]  # keras.applications' MobileNetV3
DIVIDE = [("Add", np.reshape([-1.0, 2.0, 0.5], (3, 1, 1))), ("Div", 2.0)]


@pytest.mark.parametrize(
    ("chain", "pads", "head"),
    [
        (IMAGENET, [1, 0, 1, 2], ["Reshape", "Add", "Conv"]),  # asymmetric zero padding
        (RESCALING, [0, 1, 2, 1], ["Reshape", "Add", "Conv"]),
        (DIVIDE, [0, 0, 0, 0], ["Reshape", "Conv"]),  # no padding: the shift goes in the bias
        ([], [1, 1, 1, 1], ["Reshape", "Conv"]),
    ],
    ids=["imagenet", "rescaling", "unpadded", "no-normalization"],
)
def test_input_passes_fold_the_normalization_exactly_at_the_borders(chain, pads, head):
    from onnx.reference import ReferenceEvaluator

    from keras_lcnet.deploy import onnx_passes

    pixels = np.random.default_rng(0).uniform(0, 255, (1, 7, 6, 3)).astype(np.float32)
    (expected,) = ReferenceEvaluator(_stem_graph(chain, pads)).run(
        None, {"images": pixels.transpose(0, 3, 1, 2)})
    nchw = onnx_passes.fold_input_scale(_stem_graph(chain, pads))
    onnx.checker.check_model(nchw, full_check=True)
    assert [n.op_type for n in nchw.graph.node] == head[1:]  # the scale is in the weights
    (folded,) = ReferenceEvaluator(nchw).run(None, {"images": pixels.transpose(0, 3, 1, 2)})
    nhwc = onnx_passes.channels_last_input(nchw)
    onnx.checker.check_model(nhwc, full_check=True)
    assert [n.op_type for n in nhwc.graph.node] == head
    assert [d.dim_value for d in nhwc.graph.input[0].type.tensor_type.shape.dim] == [1, 7, 6, 3]
    (result,) = ReferenceEvaluator(nhwc).run(None, {"images": pixels})
    for outputs in (folded, result):
        assert relative_error(outputs, expected) <= 1e-5


def test_channels_last_input_falls_back_to_a_transpose_for_grouped_convolutions():
    from onnx.reference import ReferenceEvaluator

    from keras_lcnet.deploy import onnx_passes

    pixels = np.random.default_rng(0).uniform(0, 255, (1, 7, 6, 3)).astype(np.float32)
    (expected,) = ReferenceEvaluator(_stem_graph(IMAGENET, [1, 1, 1, 1], group=3)).run(
        None, {"images": pixels.transpose(0, 3, 1, 2)})
    model = onnx_passes.fold_input_scale(_stem_graph(IMAGENET, [1, 1, 1, 1], group=3))
    nhwc = onnx_passes.channels_last_input(model)
    assert [n.op_type for n in nhwc.graph.node] == ["Transpose", "Sub", "Mul", "Conv"]
    (result,) = ReferenceEvaluator(nhwc).run(None, {"images": pixels})
    assert relative_error(result, expected) <= 1e-5
