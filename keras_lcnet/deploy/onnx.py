"""ONNX export: Keras -> tf2onnx -> clean-up passes, verified with onnxruntime.

tf2onnx converts the TensorFlow graph node by node: batch norm arrives as
`Mul`/`Add` after each convolution, h-swish as `Add`/`Clip`/`Mul`/`Mul`, and
strided convolutions keep their explicit `Pad`. The passes here fold those
into ONNX's own `Conv` bias and pads, `HardSigmoid` and `HardSwish`, checking
every constant they fold so that nothing else is rewritten, and move the one
layout Transpose to the input (or drop it for NCHW input).
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np

from keras_lcnet.deploy import verify
from keras_lcnet.deploy.audit import audit_onnx
from keras_lcnet.deploy.verify import (
    ExportReport,
    check_backend,
    check_output_path,
    finish,
    static_input_shape,
    verification_data,
    verify_outputs,
)

MIN_OPSET = 14  # ONNX HardSwish exists from opset 14
MAX_OPSET = 18  # the newest opset tf2onnx 1.17 emits
INPUT_NAME = "images"
OUTPUT_NAME = "outputs"


@contextlib.contextmanager
def _scalar_add_fix():
    """Keeps tf2onnx's transpose optimizer from abandoning the whole graph.

    tf2onnx 1.17 (`TransposeOptimizer._add_handler`) merges `Add(Conv, c)`
    into the conv bias and sizes the bias as `max(c.shape)`. When `c` is a
    0-d constant (h-swish's `x + 3` directly after a convolution whose batch
    norm has a zero shift, as in any freshly initialized model) that raises
    "max() arg is an empty sequence"; tf2onnx logs it and drops the pass,
    leaving a Transpose pair around every convolution (64 for PP-LCNet). A
    scalar is never a per-channel bias, so such an `Add` goes to the generic
    handler that moves the transpose past it, as any other unmergeable
    constant does. Patched only for the duration of one conversion.
    """
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    original = TransposeOptimizer._add_handler

    def add_handler(self, trans, node):
        constant = node.inputs[1]
        if constant.is_const() and constant.get_tensor_value(as_list=False).ndim == 0:
            return self._handle_node_having_branches(trans, node)
        return original(self, trans, node)

    TransposeOptimizer._add_handler = add_handler
    try:
        yield
    finally:
        TransposeOptimizer._add_handler = original


def convert(model, input_shape: tuple[int, ...], opset: int = 17, nchw_input: bool = False):
    """Converts a Keras model (TensorFlow backend) to a cleaned-up ONNX model.

    The model's forward pass is traced and frozen, converted by tf2onnx under
    `_scalar_add_fix`, then cleaned up by `optimize`.

    Args:
        model: A Keras model.
        input_shape: Fully static input shape, batch included, in the model's
            own (NHWC) layout.
        opset: ONNX opset, `MIN_OPSET` to `MAX_OPSET`.
        nchw_input: Whether the ONNX model takes NCHW images, which leaves no
            Transpose in the graph.

    Returns:
        An `onnx.ModelProto` with input `"images"` and output `"outputs"`.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"`opset` must be between {MIN_OPSET} (HardSwish) and {MAX_OPSET} "
            f"(the newest tf2onnx 1.17 supports), got {opset}."
        )

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32, name=INPUT_NAME)])
    def forward(images):
        return model(images, training=False)

    # Freezing turns every capture into a constant, tensors included. tf2onnx's
    # `from_function` (and so Keras' `export(format="onnx")`) would make
    # captured tensors, such as the mean and variance of a `Normalization`
    # layer, extra graph inputs that nobody feeds.
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    (source,), (result,) = frozen.inputs, frozen.outputs
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # tf2onnx calls TF1 freezing APIs that log deprecations
    try:
        with _scalar_add_fix():
            proto, _ = tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[source.name],
                output_names=[result.name],
                opset=opset,
                tensors_to_rename={source.name: INPUT_NAME, result.name: OUTPUT_NAME},
            )
    finally:
        logger.setLevel(level)
    return optimize(proto, nchw_input=nchw_input)


def optimize(proto, nchw_input: bool = False):
    """Folds pads and batch norm into convolutions and fuses hard activations.

    Args:
        proto: An `onnx.ModelProto` from tf2onnx (modified in place).
        nchw_input: Whether to make the input NCHW, removing the Transpose
            from the model's NHWC layout to ONNX's NCHW convolutions; without
            it the Transpose moves to the input (see `hoist_input_transpose`).

    Returns:
        The same `onnx.ModelProto`, checked by `onnx.checker`.
    """
    import onnx

    graph = _Graph(proto.graph)
    graph.constants_to_initializers()
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    # Activations first: folding `Add(conv, 3)` into a bias would hide them.
    passes = [graph.fold_pad, graph.fuse_hard_sigmoid]
    if opset >= MIN_OPSET:
        passes.append(graph.fuse_hard_swish)
    passes.append(graph.fold_affine)
    for rewrite in passes:
        while rewrite():
            pass
    graph.drop_identity_reshapes(onnx.shape_inference.infer_shapes(proto).graph)
    if not graph.hoist_input_transpose(drop=nchw_input) and nchw_input:
        raise ValueError(
            "Cannot take NCHW input: the graph does not start with elementwise ops and one "
            "NHWC->NCHW Transpose. Export with `nchw_input=False`."
        )
    graph.prune_initializers()
    del proto.graph.value_info[:]  # stale after the rewrites; nothing needs it
    onnx.checker.check_model(proto)
    return proto


class _Graph:
    """Pattern rewrites on an `onnx.GraphProto`, one match per call."""

    def __init__(self, graph) -> None:
        self.graph = graph

    # -- lookups -----------------------------------------------------------
    def _initializers(self) -> dict:
        return {init.name: init for init in self.graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        init = self._initializers().get(name)
        return None if init is None else numpy_helper.to_array(init)

    def _consumers(self) -> dict[str, list]:
        consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        return consumers

    def _producers(self) -> dict:
        return {out: node for node in self.graph.node for out in node.output}

    def _sole_consumer(self, name: str, consumers: dict):
        """The one node reading `name`, if it is not also a graph output."""
        users = consumers.get(name, [])
        outputs = {o.name for o in self.graph.output}
        return users[0] if len(users) == 1 and name not in outputs else None

    def _add_initializer(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        taken = set(self._initializers())
        unique, i = name, 0
        while unique in taken:
            i += 1
            unique = f"{name}_{i}"
        self.graph.initializer.append(numpy_helper.from_array(value, unique))
        return unique

    def _replace(self, old_nodes: list, new_node) -> None:
        """Puts `new_node` where the last of `old_nodes` was, removing them all."""
        nodes = list(self.graph.node)
        position = max(nodes.index(n) for n in old_nodes) - (len(old_nodes) - 1)
        for node in old_nodes:
            self.graph.node.remove(node)
        self.graph.node.insert(position, new_node)

    def _scalar(self, name: str, value: float) -> bool:
        array = self.const(name)
        return array is not None and array.size == 1 and np.isclose(float(array.ravel()[0]), value)

    # -- passes ------------------------------------------------------------
    def constants_to_initializers(self) -> None:
        from onnx import numpy_helper

        for node in [n for n in self.graph.node if n.op_type == "Constant"]:
            attr = node.attribute[0]
            if attr.name != "value":
                continue
            self.graph.initializer.append(numpy_helper.from_array(
                numpy_helper.to_array(attr.t), node.output[0]))
            self.graph.node.remove(node)

    def fold_pad(self) -> bool:
        """`Pad(x, zeros on H and W only) -> Conv` becomes `Conv(pads=...)`."""
        import onnx

        consumers = self._consumers()
        for pad in self.graph.node:
            if pad.op_type != "Pad" or len(pad.input) > 3:  # no `axes` input
                continue
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pad.attribute}
            pads = self.const(pad.input[1])
            value = self.const(pad.input[2]) if len(pad.input) == 3 and pad.input[2] else None
            conv = self._sole_consumer(pad.output[0], consumers)
            if (
                attrs.get("mode", b"constant") != b"constant"
                or pads is None or pads.shape != (8,)
                or (value is not None and np.any(value != 0))
                or conv is None or conv.op_type != "Conv" or conv.input[0] != pad.output[0]
                or pads[[0, 1, 4, 5]].any()
            ):
                continue
            conv_attrs = {a.name: a for a in conv.attribute}
            if "auto_pad" in conv_attrs and conv_attrs["auto_pad"].s not in (b"", b"NOTSET"):
                continue
            old = list(conv_attrs["pads"].ints) if "pads" in conv_attrs else [0, 0, 0, 0]
            new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
            if "pads" in conv_attrs:
                conv.attribute.remove(conv_attrs["pads"])
            conv.attribute.append(onnx.helper.make_attribute("pads", [int(p) for p in new]))
            conv.input[0] = pad.input[0]
            self.graph.node.remove(pad)
            return True
        return False

    def _per_channel(self, name: str, channels: int) -> np.ndarray | None:
        """A constant that broadcasts as one value per NCHW channel, as a vector."""
        array = self.const(name)
        if array is None or array.ndim > 4:
            return None
        shape = (1,) * (4 - array.ndim) + array.shape
        if shape[0] != 1 or shape[2:] != (1, 1) or shape[1] not in (1, channels):
            return None
        return np.broadcast_to(array.reshape(shape)[0, :, 0, 0], (channels,)).astype(np.float32)

    def fold_affine(self) -> bool:
        """`Conv -> Mul(per-channel c)` and `Conv -> Add(per-channel c)` fold into the conv.

        This is how Keras' inference-mode batch norm (`x * scale + shift`)
        reaches the ONNX graph.
        """
        consumers = self._consumers()
        for conv in self.graph.node:
            if conv.op_type != "Conv":
                continue
            op = self._sole_consumer(conv.output[0], consumers)
            if op is None or op.op_type not in ("Mul", "Add") or len(op.input) != 2:
                continue
            weight = self.const(conv.input[1])
            if weight is None:
                continue
            channels = weight.shape[0]
            other = op.input[1] if op.input[0] == conv.output[0] else op.input[0]
            factor = self._per_channel(other, channels)
            if factor is None:
                continue
            bias = self.const(conv.input[2]) if len(conv.input) > 2 else None
            bias = np.zeros(channels, np.float32) if bias is None else bias
            if op.op_type == "Mul":
                weight = weight * factor.reshape(-1, 1, 1, 1)
                bias = bias * factor
            else:
                bias = bias + factor
            conv.input[1] = self._add_initializer(conv.input[1] + "_folded", weight)
            bias_name = self._add_initializer(conv.name + "_bias", bias.astype(np.float32))
            if len(conv.input) > 2:
                conv.input[2] = bias_name
            else:
                conv.input.append(bias_name)
            conv.output[0] = op.output[0]
            self.graph.node.remove(op)
            return True
        return False

    def fuse_hard_sigmoid(self) -> bool:
        """`Mul(Clip(Add(x, 3), 0, 6), 1/6)` (or `Div` by 6) becomes `HardSigmoid(x)`.

        The alpha is set explicitly to 1/6: ONNX's default of 0.2 is
        another function.
        """
        import onnx

        consumers, producers = self._consumers(), self._producers()
        for scale in self.graph.node:
            if scale.op_type not in ("Mul", "Div") or len(scale.input) != 2:
                continue
            for i, clip_out in enumerate(scale.input):
                factor = scale.input[1 - i]
                if scale.op_type == "Mul" and not self._scalar(factor, 1 / 6):
                    continue
                if scale.op_type == "Div" and (i != 0 or not self._scalar(factor, 6.0)):
                    continue
                clip = producers.get(clip_out)
                if (
                    clip is None or clip.op_type != "Clip" or len(clip.input) != 3
                    or not self._scalar(clip.input[1], 0.0) or not self._scalar(clip.input[2], 6.0)
                    or self._sole_consumer(clip_out, consumers) is not scale
                ):
                    continue
                add = producers.get(clip.input[0])
                if add is None or add.op_type != "Add" or \
                        self._sole_consumer(add.output[0], consumers) is not clip:
                    continue
                if self._scalar(add.input[1], 3.0):
                    x = add.input[0]
                elif self._scalar(add.input[0], 3.0):
                    x = add.input[1]
                else:
                    continue
                fused = onnx.helper.make_node(
                    "HardSigmoid", [x], [scale.output[0]], name=scale.name + "_hard_sigmoid",
                    alpha=1.0 / 6.0, beta=0.5,
                )
                self._replace([add, clip, scale], fused)
                return True
        return False

    def fuse_hard_swish(self) -> bool:
        """`Mul(x, HardSigmoid(x; 1/6, 0.5))` becomes `HardSwish(x)` (opset >= 14)."""
        import onnx

        consumers, producers = self._consumers(), self._producers()
        for mul in self.graph.node:
            if mul.op_type != "Mul" or len(mul.input) != 2:
                continue
            for i in (0, 1):
                gate = producers.get(mul.input[i])
                x = mul.input[1 - i]
                if gate is None or gate.op_type != "HardSigmoid" or gate.input[0] != x:
                    continue
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gate.attribute}
                if not (np.isclose(attrs.get("alpha", 0.2), 1 / 6)
                        and np.isclose(attrs.get("beta", 0.5), 0.5)):
                    continue
                if self._sole_consumer(gate.output[0], consumers) is not mul:
                    continue
                fused = onnx.helper.make_node(
                    "HardSwish", [x], [mul.output[0]], name=mul.name + "_hard_swish"
                )
                self._replace([gate, mul], fused)
                return True
        return False

    def drop_identity_reshapes(self, inferred) -> None:
        """Removes `Reshape`s to the shape their input already has."""
        shapes = {}
        for info in [*inferred.value_info, *inferred.input]:
            dims = info.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                shapes[info.name] = [d.dim_value for d in dims]
        outputs = {o.name for o in self.graph.output}
        for node in [n for n in self.graph.node if n.op_type == "Reshape"]:
            target = self.const(node.input[1])
            if (
                target is None or node.output[0] in outputs
                or shapes.get(node.input[0]) != [int(t) for t in target]
            ):
                continue
            for other in self.graph.node:
                for j, name in enumerate(other.input):
                    if name == node.output[0]:
                        other.input[j] = node.input[0]
            self.graph.node.remove(node)

    def hoist_input_transpose(self, drop: bool) -> bool:
        """Moves the NHWC->NCHW Transpose from after the input's normalization to the input.

        tf2onnx leaves it after the in-graph normalization (`Sub`, `Mul` by
        per-channel constants, whose constants are transposed here too).
        onnxruntime broadcasts a 3-value constant over the innermost NHWC
        axis about 20x slower than over NCHW planes: for PP-LCNet x0_25 the
        two ops took longer than all its convolutions. With `drop`, the
        Transpose is removed and the graph input becomes NCHW.

        Returns:
            Whether the graph starts with elementwise ops and one such Transpose.
        """
        source = self.graph.input[0].name
        consumers = self._consumers()
        chain, tensor = [], source
        while True:
            node = self._sole_consumer(tensor, consumers)
            if node is None:
                return False
            if node.op_type == "Transpose":
                break
            constants = [i for i in node.input if self.const(i) is not None]
            if node.op_type not in ("Add", "Sub", "Mul", "Div") or len(constants) != 1:
                return False
            chain.append(node)
            tensor = node.output[0]
        transpose = node
        perm = [a.ints for a in transpose.attribute if a.name == "perm"]
        if not perm or list(perm[0]) != [0, 3, 1, 2]:
            return False
        if not chain and not drop:
            return True  # already at the input
        for op in chain:
            for j, name in enumerate(op.input):
                value = self.const(name)
                if value is not None:
                    value = value.reshape((1,) * (4 - value.ndim) + value.shape)
                    op.input[j] = self._add_initializer(name + "_nchw", value.transpose(0, 3, 1, 2))
        # The Transpose's readers now read the chain's (NCHW) result.
        moved = transpose.output[0]
        for other in self.graph.node:
            for j, name in enumerate(other.input):
                if name == moved:
                    other.input[j] = tensor
        self.graph.node.remove(transpose)
        if drop:
            dims = self.graph.input[0].type.tensor_type.shape.dim
            values = [d.dim_value for d in dims]
            for d, value in zip(dims, [values[0], values[3], values[1], values[2]], strict=True):
                d.dim_value = value
        else:
            transpose.input[0] = source
            for j, name in enumerate(chain[0].input):
                if name == source:
                    chain[0].input[j] = moved
            self.graph.node.insert(0, transpose)
        return True

    def prune_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input}
        for init in [i for i in self.graph.initializer if i.name not in used]:
            self.graph.initializer.remove(init)


def export_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    opset: int = 17,
    nchw_input: bool = False,
    batch_size: int = 1,
    image_size: int | tuple[int, int] | None = None,
    verification=None,
    strict: bool = True,
) -> ExportReport:
    """Exports a Keras model to ONNX with tf2onnx and verifies it with onnxruntime.

    The graph is cleaned up after tf2onnx (see `optimize`):
    batch norm and padding folded into `Conv`, h-swish and hard-sigmoid as
    native `HardSwish` / `HardSigmoid(alpha=1/6)`, one `Transpose` from the
    NHWC input (none with `nchw_input=True`). It must match Keras within
    `FLOAT32_TOLERANCE`.

    Args:
        model: A Keras model with one image input, on the TensorFlow backend.
        path: Output file, ending in `.onnx`.
        opset: ONNX opset, 14 to 18.
        nchw_input: Whether the ONNX model takes `(batch, channels, height,
            width)` images.
        batch_size: Static batch size.
        image_size: Input height and width where the model leaves them open
            (default 224).
        verification: Inputs to compare on (see `load_calibration`);
            default: four random-pixel images.
        strict: Raise `ExportError` when verification fails.

    Returns:
        An `ExportReport`. The ONNX input is named `"images"`, the output
        `"outputs"`.

    Raises:
        ValueError: Invalid arguments.
        ExportError: The file was written but failed verification (`strict`).
    """
    import onnx

    check_backend()
    path = check_output_path(path, ".onnx")
    input_shape = static_input_shape(model, batch_size, image_size)
    proto = convert(model, input_shape, opset=opset, nchw_input=nchw_input)
    onnx.save(proto, path)

    def write_twin(twin: keras.Model, twin_path: str) -> None:
        onnx.save(convert(twin, input_shape, opset=opset, nchw_input=nchw_input), twin_path)

    data, described = verification_data(None, verification, input_shape)
    agreement, twin = verify_outputs(model, path, data, described, batch_size, write_twin,
                                     layout="NCHW" if nchw_input else "NHWC")
    b, h, w, c = input_shape
    report = ExportReport(
        path=path,
        format="onnx",
        quantize=None,
        input_shape=(b, c, h, w) if nchw_input else input_shape,
        input_dtype="float32",
        agreement=agreement,
        audit=audit_onnx(proto, max_transposes=0 if nchw_input else 1),
        tolerance=verify.FLOAT32_TOLERANCE,
        twin=twin,
    )
    return finish(report, strict)
