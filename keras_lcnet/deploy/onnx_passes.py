"""The two ONNX rewrites no maintained tool does for tf2onnx's PP-LCNet graph.

Imported only by `keras_lcnet.deploy.onnx.optimize` / `convert` (it needs
onnxscript, from the [export] extra).

- `hard_activation_rules`: onnxscript's `fuse_hardswish_rules` fuse hard
  sigmoid written as `Clip(x + 3, 0, 6) / 6`, and `HardSigmoid * x` into
  `HardSwish`. TensorFlow (so tf2onnx) writes it as `Clip(x + 3, 0, 6) * (1/6)`,
  which they do not match; `HardSigmoidByMul` adds that spelling.
- `transpose_input`: puts the NHWC->NCHW Transpose in front of the whole
  graph, normalization included. tf2onnx leaves it after the normalization
  and no tool moves it (see the function).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnxscript import ir
from onnxscript.rewriter import RewriteRuleSet, pattern
from onnxscript.rewriter.rules.common import fuse_hardswish_rules


def _is_scalar(value: ir.Value, expected: float) -> bool:
    """Whether `value` is a constant holding the single number `expected`."""
    tensor = ir.convenience.get_const_tensor(value)
    return tensor is not None and tensor.size == 1 and bool(
        np.isclose(tensor.numpy().item(), expected)
    )


class HardSigmoidByMul(pattern.RewriteRuleClassBase):
    """`Clip(x + 3, 0, 6) * (1/6)` becomes `HardSigmoid(x, alpha=1/6, beta=0.5)`.

    Every constant is checked: ONNX's default alpha of 0.2 (or any other
    slope or clip range) is another function and stays as it is.
    """

    def pattern(self, op, x, three, zero, six, sixth):
        return op.Clip(x + three, zero, six) * sixth

    def check(self, context, x, three, zero, six, sixth) -> bool:
        expected = ((three, 3.0), (zero, 0.0), (six, 6.0), (sixth, 1 / 6))
        return all(_is_scalar(value, number) for value, number in expected)

    def rewrite(self, op, x, three, zero, six, sixth):
        return op.HardSigmoid(x, alpha=1 / 6, beta=0.5)


def hard_activation_rules() -> RewriteRuleSet:
    """onnxscript's HardSigmoid/HardSwish fusions plus TensorFlow's `* (1/6)` spelling."""
    return RewriteRuleSet(
        [HardSigmoidByMul().rule(), *fuse_hardswish_rules().rules], commute=True
    )


def transpose_input(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Makes an NCHW-input graph take NHWC input through one leading Transpose.

    tf2onnx on NHWC input leaves the Transpose after the in-graph
    normalization (`Sub`, `Mul` by 3-value constants), where onnxruntime
    broadcasts the constants over the innermost NHWC axis about 20x slower
    than over NCHW planes: for PP-LCNet x0_25 those two ops took longer than
    all its convolutions (the whole model ran 2.3x slower on one thread).
    Neither tf2onnx's transpose optimizer nor onnxslim,
    onnxoptimizer or onnxscript moves a Transpose towards the input, so the
    graph is converted with NCHW input (tf2onnx's `inputs_as_nchw`, which
    transposes the normalization constants) and the Transpose goes in front.

    Args:
        proto: An `onnx.ModelProto` with one rank-4 NCHW input (modified in place).

    Returns:
        The same `onnx.ModelProto`, its input NHWC.
    """
    graph = proto.graph
    source = graph.input[0].name
    nchw = source + "_nchw"
    for node in graph.node:
        node.input[:] = [nchw if name == source else name for name in node.input]
    graph.node.insert(0, onnx.helper.make_node("Transpose", [source], [nchw], perm=[0, 3, 1, 2]))
    dims = graph.input[0].type.tensor_type.shape.dim
    n, c, h, w = (d.dim_value for d in dims)  # `convert` takes static shapes only
    for dim, value in zip(dims, (n, h, w, c), strict=True):
        dim.dim_value = value
    return proto
