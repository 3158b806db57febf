"""The ONNX rewrites no maintained tool does for tf2onnx's PP-LCNet graph.

Imported only by `keras_lcnet.deploy.onnx.optimize` / `convert` (it needs
onnxscript, from the [export] extra).

- `hard_activation_rules`: onnxscript's `fuse_hardswish_rules` fuse hard
  sigmoid written as `Clip(x + 3, 0, 6) / 6`, and `HardSigmoid * x` into
  `HardSwish`. TensorFlow (so tf2onnx) writes it as `Clip(x + 3, 0, 6) * (1/6)`,
  which they do not match; `HardSigmoidByMul` adds that spelling.
- `fold_input_scale`: folds the in-graph normalization's per-channel scale
  into the first convolution's weights, leaving one per-channel `Add`.
- `channels_last_input`: gives the graph its NHWC input back without a
  layout Transpose where it starts with a convolution: the NHWC image is
  read as a one-channel `(height, width * channels)` plane.
- `transpose_input`: otherwise puts the NHWC->NCHW Transpose in front of the
  whole graph, normalization included. tf2onnx leaves it after the
  normalization and no tool moves it (see the function).

The first two exist for onnxruntime's sake: paddle2onnx's graph of the same
network (NCHW input, normalized outside) starts with the convolution, and
the Transpose, Sub and Mul in front of ours cost about 2% of PP-LCNet x1_0's
run time (docs/deployment.md, "ONNX").
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
    _nhwc_input(graph)
    return proto


# The elementwise ops an input normalization is made of, as `x * a + b` per channel.
_AFFINE_OPS = ("Add", "Sub", "Mul", "Div")


def _consumers(graph: onnx.GraphProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if name in node.input]


def _per_channel(array: np.ndarray, channels: int) -> np.ndarray | None:
    """`array` as `channels` values if it broadcasts per channel over NCHW, else None."""
    if array.ndim > 4 or array.dtype != np.float32:
        return None
    try:
        return np.broadcast_to(array, (1, channels, 1, 1)).reshape(channels).astype(np.float64)
    except ValueError:
        return None


def _affine_step(node, current: str, constants: dict, a: np.ndarray, b: np.ndarray):
    """`(a, b)` after `node` when it applies a per-channel constant to `current`, else None."""
    if node.op_type not in _AFFINE_OPS or len(node.input) != 2:
        return None
    first = node.input[0] == current
    other = node.input[1] if first else node.input[0]
    c = _per_channel(constants[other], len(a)) if other in constants else None
    if c is None or (node.op_type == "Div" and (not first or not np.all(c))):
        return None
    if node.op_type == "Add":
        return a, b + c
    if node.op_type == "Sub":
        return (a, b - c) if first else (-a, c - b)
    return (a * c, b * c) if node.op_type == "Mul" else (a / c, b / c)


def _input_chain(graph: onnx.GraphProto, constants: dict, channels: int):
    """The per-channel affine ops between the input and a Conv that reads nothing else.

    Returns:
        `(affine nodes, conv, a, b)` with the nodes computing `x * a + b`,
        or `None` when the input does not lead (through such ops only) to
        one ungrouped `Conv` with constant weights.
    """
    current, chain = graph.input[0].name, []
    a, b = np.ones(channels), np.zeros(channels)
    outputs = {value.name for value in graph.output}
    while True:
        users = _consumers(graph, current)
        if len(users) != 1 or current in outputs:
            return None
        (node,) = users
        if node.op_type == "Conv":
            break
        step = _affine_step(node, current, constants, a, b)
        if step is None:
            return None
        (a, b), current = step, node.output[0]
        chain.append(node)
    attributes = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    if (node.input[0] != current or node.input[1] not in constants
            or attributes.get("group", 1) != 1
            or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or not np.all(a)):
        return None
    return chain, node, a, b


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}


def _replace_head(graph, chain, conv, head, inputs, initializers, **attributes) -> None:
    """Puts `head` in place of `chain`, feeds `conv` `inputs`, drops orphaned initializers."""
    for node in chain:
        graph.node.remove(node)
    for node in reversed(head):
        graph.node.insert(0, node)
    conv.input[:] = inputs
    kept = [x for x in conv.attribute if x.name not in attributes]
    del conv.attribute[:]
    conv.attribute.extend(kept)
    conv.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attributes.items())
    graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in initializers.items())
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def fold_input_scale(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Folds a per-channel `x * a + b` on the NCHW input into the first `Conv`.

    `Conv(a * x + b, W)` equals `Conv(x + b / a, W * a)` exactly, borders
    included: the convolution's zero padding of `a * x + b` is `a` times the
    zero padding of `x + b / a`. So the scale goes into the weights and one
    per-channel `Add` of `b / a` stays in front of the `Conv`; that `Add`
    cannot go into the bias as well, since in the padded border the bias
    would add `W * b` where the normalized image has zeros. A `Conv` without
    padding takes it in its bias; `b = 0` needs no `Add`.

    Args:
        proto: An `onnx.ModelProto` with one rank-4 NCHW input (modified in place).

    Returns:
        The same `onnx.ModelProto`, unchanged unless the input runs through
        per-channel constant `Add`/`Sub`/`Mul`/`Div` ops (at least one) into
        one ungrouped `Conv` with constant weights and explicit pads.
    """
    graph, constants = proto.graph, _constants(proto.graph)
    channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    found = _input_chain(graph, constants, channels)
    if found is None or not found[0]:
        return proto
    chain, conv, a, b = found
    weights = constants[conv.input[1]] * a.reshape(1, -1, 1, 1)
    shift = b / a
    bias = constants[conv.input[2]] if len(conv.input) > 2 else np.zeros(len(weights))
    pads = next((list(x.ints) for x in conv.attribute if x.name == "pads"), [])
    source, head = graph.input[0].name, []
    if np.any(shift) and not any(pads):
        bias = bias + (weights * shift.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    elif np.any(shift):
        head = [onnx.helper.make_node("Add", [source, "input_shift"], [source + "_shifted"])]
        source = head[0].output[0]
    initializers = {"first_conv_weight": weights.astype(np.float32),
                    "first_conv_bias": np.asarray(bias, np.float32)}
    if head:
        initializers["input_shift"] = shift.astype(np.float32).reshape(1, -1, 1, 1)
    _replace_head(graph, chain, conv, head, [source, "first_conv_weight", "first_conv_bias"],
                  initializers)
    return proto


def _nhwc_input(graph: onnx.GraphProto) -> tuple[int, int, int, int]:
    """Turns the graph's static NCHW input declaration NHWC; returns `(n, c, h, w)`."""
    dims = graph.input[0].type.tensor_type.shape.dim
    n, c, h, w = (d.dim_value for d in dims)  # `convert` takes static shapes only
    for dim, value in zip(dims, (n, h, w, c), strict=True):
        dim.dim_value = value
    return n, c, h, w


def channels_last_input(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Makes an NCHW-input graph take NHWC input, without a Transpose where it can.

    A 2-D `Conv` over `C` channels with kernel `(kh, kw)`, strides
    `(sh, sw)`, pads `(t, l, b, r)` and no dilation reads the same products
    from NHWC pixels `(H, W, C)` seen as one `(H, W * C)` channel, with kernel
    `(kh, kw * C)`, strides `(sh, sw * C)` and pads `(t, l * C, b, r * C)`:
    a pixel's channels are `C` neighbours on a row. The input `Reshape` to
    that view moves no data, where a Transpose would copy every pixel, and
    onnxruntime runs the one-channel convolution as fast as the original.
    A per-channel `Add` in front (`fold_input_scale`) becomes an `Add` of
    its values tiled along the row. Any other graph gets `transpose_input`.

    Args:
        proto: An `onnx.ModelProto` with one static rank-4 NCHW input (modified in place).

    Returns:
        The same `onnx.ModelProto`, its input NHWC.
    """
    graph, constants = proto.graph, _constants(proto.graph)
    channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    found = _input_chain(graph, constants, channels)
    attributes = {} if found is None else {
        x.name: onnx.helper.get_attribute_value(x) for x in found[1].attribute}
    weights = None if found is None else constants[found[1].input[1]]
    if (found is None or np.any(found[2] != 1) or weights.ndim != 4
            or any(d != 1 for d in attributes.get("dilations", []))):
        return transpose_input(proto)
    chain, conv, _, shift = found
    n, c, h, w = _nhwc_input(graph)
    (kh, kw), (sh, sw) = weights.shape[2:], attributes.get("strides", [1, 1])
    top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
    source = graph.input[0].name
    head = [onnx.helper.make_node("Reshape", [source, "input_rows_shape"], [source + "_rows"])]
    initializers = {
        "input_rows_shape": np.array([n, 1, h, w * c], np.int64),
        "input_rows_weight": weights.transpose(0, 2, 3, 1).reshape(len(weights), 1, kh, kw * c),
    }
    if chain:
        head.append(onnx.helper.make_node("Add", [head[0].output[0], "input_rows_shift"],
                                          [source + "_rows_shifted"]))
        initializers["input_rows_shift"] = np.tile(shift, w).astype(np.float32)
    inputs = [head[-1].output[0], "input_rows_weight", *conv.input[2:]]
    _replace_head(graph, chain, conv, head, inputs, initializers, kernel_shape=[kh, kw * c],
                  strides=[sh, sw * c], pads=[top, left * c, bottom, right * c])
    return proto
