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
    assert not {"Pad", "Clip", "Add"} & set(ops)  # pads, BN shifts and +3s all folded
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
    ops = [node.op_type for node in graph.node]
    assert ops.count("Transpose") <= 1
    # ... and reads the input: onnxruntime normalizes NCHW planes much faster.
    assert graph.node[0].op_type == "Transpose" and graph.node[0].input[0] == "images"
    assert_clean(graph)


def test_onnx_nchw_input_has_no_transpose(x0_25_case, tmp_path):
    model, pixels, _ = x0_25_case
    report = export_onnx(model, tmp_path / "nchw.onnx", nchw_input=True, verification=pixels)
    assert report.ok, report.summary()
    assert report.input_shape == (1, 3, 224, 224)
    assert "Transpose" not in report.audit.ops


@pytest.mark.slow
@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET, onnx_export.MAX_OPSET])
def test_onnx_opset_range_gives_the_same_clean_graph(x0_25_case, opset):
    model, _, _ = x0_25_case
    proto = onnx_export.convert(model, (1, 224, 224, 3), opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert [n.op_type for n in proto.graph.node].count("Transpose") == 1
    assert_clean(proto.graph)


@pytest.mark.slow
def test_scalar_add_fix_keeps_one_transpose_and_is_scoped(tmp_path):
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    original = TransposeOptimizer._add_handler
    # Fresh BN (zero shift) puts h-swish's scalar `+ 3` right after each conv:
    # the input that made tf2onnx's transpose optimizer give up.
    model = PPLCNet(scale=0.25, weights=None, classes=10, classifier_activation=None)
    report = export_onnx(model, tmp_path / "fresh.onnx")
    assert report.ok and report.audit.ops["Transpose"] == 1
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
