"""LiteRT (`.tflite`) export: float32 and quantized recipes, verified with `ai-edge-litert`."""

from __future__ import annotations

import os

import keras
from keras import ops

from keras_lcnet.deploy import verify
from keras_lcnet.deploy.audit import audit_litert
from keras_lcnet.deploy.runtime import Runtime, batches
from keras_lcnet.deploy.verify import (
    ExportReport,
    check_backend,
    check_output_path,
    deploy_form,
    finish,
    load_calibration,
    static_input_shape,
    verification_data,
    verify_outputs,
)
from keras_lcnet.layers import HardSwish

QUANTIZE_MODES = ("float16", "dynamic", "int8")
HARD_SWISH_MODES = ("xnnpack", "native")


class _Int8HardSwish(keras.layers.Layer):
    """h-swish as `(x / 6) * relu6(x + 3)`, for full-integer LiteRT models only.

    The converter fuses `x * relu6(x + 3) / 6` into `HARD_SWISH`, which
    XNNPACK (ai-edge-litert 2.3) runs for float tensors only: in an int8
    model every h-swish would fall back to the builtin kernel and cut the
    graph into ~30 partitions. This grouping is left unfused, and XNNPACK
    runs its `ADD` (with fused `RELU6`) and `MUL`s in int8.
    """

    def call(self, inputs):
        return (inputs * (1.0 / 6.0)) * ops.relu6(inputs + 3.0)


def _is_hard_swish(layer) -> bool:
    if isinstance(layer, HardSwish):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config().get(
        "activation") in ("hard_swish", "hard_silu")


def _int8_friendly(model: keras.Model) -> keras.Model:
    """A copy of `model` with `_Int8HardSwish` for every h-swish layer.

    Only Functional and Sequential models can be rebuilt; others are
    returned as they are (the audit then shows any undelegated op).
    """
    def clone(layer):
        if _is_hard_swish(layer):
            return _Int8HardSwish(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except ValueError:  # subclassed model
        return model
    copy.set_weights(model.get_weights())
    return copy


def _write(model, path: str, input_shape, quantize, calibration, uint8_input: bool,
           hard_swish: str = "xnnpack") -> None:
    """Converts `model` with one of the recipes of `export_litert` and writes it to `path`."""
    import tensorflow as tf

    options: dict = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    exported = model = deploy_form(model)
    if quantize is not None:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"]["supported_types"] = [tf.float16]
    if quantize == "int8":
        exported = _int8_friendly(model) if hard_swish == "xnnpack" else model
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        options["representative_dataset"] = lambda: (
            [batch] for batch, _ in batches(calibration, input_shape[0]))
        if uint8_input:
            options["inference_input_type"] = tf.uint8
    spec = tf.TensorSpec(input_shape, tf.float32, name="images")
    exported.export(path, format="litert", input_signature=[spec], verbose=False, **options)


def export_litert(
    model: keras.Model,
    path: str | os.PathLike,
    quantize: str | None = None,
    calibration=None,
    uint8_input: bool = False,
    batch_size: int = 1,
    image_size: int | tuple[int, int] | None = None,
    verification=None,
    strict: bool = True,
    int8_hard_swish: str = "xnnpack",
) -> ExportReport:
    """Exports a Keras model to a LiteRT (`.tflite`) file and verifies it.

    The graph has a static input shape (so XNNPACK takes it as one
    partition) and builtin ops only (no Select TF / Flex ops); h-swish stays
    the native `HARD_SWISH` in float models. The written file is run by
    `ai-edge-litert`'s interpreter, compared with `model`, and audited
    (op list, XNNPACK partitions). When the model's outputs ignore its input
    (random weights), the comparison runs on a twin with calibrated
    batch-norm statistics instead (see `verify.verify_outputs`). A
    PP-LCNetV2 in branch form is folded first (`keras_lcnet.reparameterize`):
    the file holds one depthwise convolution per rep block, and is compared
    with `model` itself.

    Quantization recipes:
    - `None`: float32. Must match Keras within `FLOAT32_TOLERANCE`.
    - `"float16"`: float16 weights, float32 compute.
    - `"dynamic"`: int8 weights, activations quantized on the fly. XNNPACK in
      ai-edge-litert 2.3 has no such depthwise kernel, so this recipe fails
      the delegation audit (use `strict=False` to keep it anyway).
    - `"int8"`: full-integer, calibrated on `calibration`. h-swish is
      rewritten with int8 ops XNNPACK delegates (see `_Int8HardSwish`).
      Keep class scores as logits (`classifier_activation=None`):
      XNNPACK has no int8 softmax. `int8_hard_swish="native"` keeps
      LiteRT's own int8 `HARD_SWISH` instead: closer to float (each
      h-swish is requantized once, not three times; see
      `benchmarks/int8_accuracy.md`), but XNNPACK leaves those ops to the
      builtin kernel, so the graph runs in many partitions (slower); the
      audit lists them without failing.

    Args:
        model: A Keras model with one image input, on the TensorFlow backend.
        path: Output file, ending in `.tflite`.
        quantize: `None`, `"float16"`, `"dynamic"` or `"int8"`.
        calibration: Representative inputs (required for `"int8"`): a folder
            of images, or an array / iterable of arrays of model inputs; see
            `load_calibration`. Also the verification inputs.
        uint8_input: For `"int8"`: take uint8 pixels instead of float32.
        batch_size: Static batch size.
        image_size: Input height and width where the model leaves them open
            (default 224).
        verification: Inputs to compare on, like `calibration`; default: the
            calibration inputs, else four random-pixel images.
        strict: Raise `ExportError` when verification fails.
        int8_hard_swish: For `"int8"`: `"xnnpack"` (h-swish as int8
            ADD/MUL ops XNNPACK runs: one partition) or `"native"` (int8
            `HARD_SWISH`: more accurate on narrow widths, not delegated).

    Returns:
        An `ExportReport` (its `summary()` is the printable report).

    Raises:
        ValueError: Invalid arguments.
        ExportError: The file was written but failed verification (`strict`).
    """
    check_backend()
    path = check_output_path(path, ".tflite")
    if quantize not in (None, *QUANTIZE_MODES):
        raise ValueError(
            f"`quantize` must be None (float32) or one of {QUANTIZE_MODES}, got {quantize!r}."
        )
    if int8_hard_swish not in HARD_SWISH_MODES:
        raise ValueError(
            f"`int8_hard_swish` must be one of {HARD_SWISH_MODES}, got {int8_hard_swish!r}.")
    if uint8_input and quantize != "int8":
        raise ValueError("`uint8_input=True` needs `quantize='int8'` (a full-integer model).")
    if quantize == "int8" and calibration is None:
        raise ValueError(
            "`quantize='int8'` needs `calibration`: a folder of representative images or "
            "an array of model inputs (a few hundred images is typical)."
        )
    input_shape = static_input_shape(model, batch_size, image_size)
    if calibration is not None:
        calibration = load_calibration(calibration, input_shape)

    def write(m: keras.Model, p: str) -> None:
        _write(m, p, input_shape, quantize, calibration, uint8_input, int8_hard_swish)

    write(model, path)
    data, described = verification_data(calibration, verification, input_shape)
    agreement, twin = verify_outputs(model, path, data, described, batch_size, write)
    audit = audit_litert(path)
    if quantize == "int8" and int8_hard_swish == "native":
        audit.expected_undelegated = ("HARD_SWISH",)
    report = ExportReport(
        path=path,
        format="litert",
        quantize=quantize,
        input_shape=input_shape,
        input_dtype="uint8" if uint8_input else "float32",
        agreement=agreement,
        audit=audit,
        tolerance=verify.FLOAT32_TOLERANCE if quantize is None else None,
        input_quantization=Runtime(path).input_quantization,
        twin=twin,
    )
    return finish(report, strict)
