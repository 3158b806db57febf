"""ONNX export: Keras -> tf2onnx -> onnxscript + onnxslim, verified with onnxruntime.

tf2onnx converts the TensorFlow graph node by node: batch norm arrives as
`Mul`/`Add` after each convolution, h-swish as `Add`/`Clip`/`Mul`/`Mul`, and
strided convolutions keep their explicit `Pad`. onnxscript's rewriter fuses
the hard activations into ONNX's `HardSigmoid` and `HardSwish`, checking every
constant; onnxslim folds the pads and batch norm into `Conv`. tf2onnx's
`inputs_as_nchw` leaves no layout Transpose. The in-graph normalization's
scale then goes into the first `Conv` (`onnx_passes.fold_input_scale`), and
NHWC input reaches that `Conv` through a `Reshape` instead of a Transpose
(`onnx_passes.channels_last_input`).
"""

from __future__ import annotations

import contextlib
import os

import keras

from keras_lcnet.deploy import verify
from keras_lcnet.deploy.audit import audit_onnx
from keras_lcnet.deploy.verify import (
    ExportReport,
    check_backend,
    check_output_path,
    deploy_form,
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

    Works around tf2onnx 1.17 (the newest), tf2onnx/optimizer/
    transpose_optimizer.py `TransposeOptimizer._add_handler`: it merges
    `Add(Conv, c)` into the conv bias and sizes the bias as `max(c.shape)`.
    When `c` is a 0-d constant (h-swish's `x + 3` directly after a convolution
    whose batch norm has a zero shift, as in any freshly initialized model)
    that raises "max() arg is an empty sequence"; tf2onnx logs it and drops
    the pass, leaving a Transpose pair around every convolution (64 for
    PP-LCNet), which no onnxslim, onnxoptimizer or onnxscript pass removes.
    A scalar is never a per-channel bias, so such an `Add` goes to the generic
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

    A PP-LCNetV2 in branch form is folded first (`verify.deploy_form`).
    The model's forward pass is traced and frozen, converted by tf2onnx
    (under `_scalar_add_fix`) with an NCHW input, cleaned up by `optimize`,
    its input normalization's scale folded into the first `Conv`
    (`onnx_passes.fold_input_scale`) and, unless `nchw_input`, given its
    NHWC input back (`onnx_passes.channels_last_input`).

    Args:
        model: A Keras model.
        input_shape: Fully static input shape, batch included, in the model's
            own (NHWC) layout.
        opset: ONNX opset, `MIN_OPSET` to `MAX_OPSET`.
        nchw_input: Whether the ONNX model takes NCHW images.

    Returns:
        An `onnx.ModelProto` with input `"images"` and output `"outputs"`.

    Raises:
        ValueError: `opset` is out of range.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from keras_lcnet.deploy.onnx_passes import channels_last_input, fold_input_scale

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"`opset` must be between {MIN_OPSET} (HardSwish) and {MAX_OPSET} "
            f"(the newest tf2onnx 1.17 supports), got {opset}."
        )

    model = deploy_form(model)

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
                # Its transpose optimizer then cancels every layout Transpose.
                inputs_as_nchw=[source.name],
                tensors_to_rename={source.name: INPUT_NAME, result.name: OUTPUT_NAME},
            )
    finally:
        logger.setLevel(level)
    proto = fold_input_scale(optimize(proto))
    if not nchw_input:
        proto = channels_last_input(proto)
    onnx.checker.check_model(proto)
    return proto


def optimize(proto):
    """Folds pads and batch norm into convolutions and fuses hard activations.

    onnxscript's rewriter fuses h-swish and hard-sigmoid into `HardSwish` and
    `HardSigmoid(alpha=1/6)` (see `onnx_passes.hard_activation_rules`);
    onnxslim folds `Pad` and the batch norm's per-channel `Mul`/`Add` into
    the `Conv` before them, constant-folds, drops identity `Reshape`s and
    unused initializers.

    Args:
        proto: An `onnx.ModelProto`, such as tf2onnx's.

    Returns:
        A new `onnx.ModelProto`, checked by `onnx.checker`.
    """
    import onnx
    import onnxslim
    from onnxscript.rewriter import rewrite

    from keras_lcnet.deploy.onnx_passes import hard_activation_rules

    proto = onnxslim.slim(rewrite(proto, hard_activation_rules()))
    onnx.checker.check_model(proto)
    return proto


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
    native `HardSwish` / `HardSigmoid(alpha=1/6)`, the normalization's scale
    in the first convolution's weights, and the NHWC input read by that
    convolution without a `Transpose` (see `onnx_passes.channels_last_input`;
    other first layers keep one). A PP-LCNetV2 in branch form
    is folded first (`keras_lcnet.reparameterize`). It must match Keras within
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
