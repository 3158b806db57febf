"""Export PP-LCNet (or any Keras image model) to LiteRT and ONNX, verified against Keras.

Every export is run by its own runtime (`ai-edge-litert`'s interpreter,
onnxruntime) and compared with the Keras model, and its graph is audited:

```python
import keras_lcnet
from keras_lcnet.export import export_litert, export_onnx

model = keras_lcnet.PPLCNet_x1_0(weights="imagenet")
print(export_litert(model, "lcnet.tflite").summary())
print(export_litert(model, "lcnet_int8.tflite", quantize="int8",
                    calibration="calibration_images/").summary())
print(export_onnx(model, "lcnet.onnx").summary())
```

The exports need the TensorFlow backend and the `export` extra
(`pip install "keras-lcnet[export]"`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable

import keras
import numpy as np
from keras import ops

from keras_lcnet.audit import LiteRTAudit, OnnxAudit, audit_litert, audit_onnx
from keras_lcnet.imagenet import CROP_SIZE, RESIZE_SHORT, load_image
from keras_lcnet.layers import HardSwish

QUANTIZE_MODES = ("float16", "dynamic", "int8")
FLOAT32_TOLERANCE = 1e-4  # max |exported - keras| / max |keras|
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VERIFICATION_SAMPLES = 4


class ExportError(ValueError):
    """An exported model was written but failed its verification or audit."""


@dataclasses.dataclass
class Agreement:
    """How close an exported model's outputs are to the Keras model's.

    Attributes:
        inputs: What the models were run on.
        samples: Number of inputs.
        max_relative_difference: `max |exported - keras| / max |keras|`.
        top1_agreement: Fraction of inputs with the same arg-max class
            (`None` when the output is not a vector of class scores).
        cosine_similarity: Mean over inputs of the cosine similarity of the
            flattened outputs.
    """

    inputs: str
    samples: int
    max_relative_difference: float
    top1_agreement: float | None
    cosine_similarity: float

    def summary(self) -> str:
        top1 = "" if self.top1_agreement is None else (
            f", top-1 agreement {self.top1_agreement:.1%}")
        return (
            f"vs Keras on {self.samples} {self.inputs}: max relative difference "
            f"{self.max_relative_difference:.2e}{top1}, cosine similarity "
            f"{self.cosine_similarity:.6f}"
        )


@dataclasses.dataclass
class ExportReport:
    """The outcome of one export.

    Attributes:
        path: The written file.
        format: `"litert"` or `"onnx"`.
        quantize: The quantization recipe (`None` for float32).
        input_shape: The static input shape.
        input_dtype: The input dtype (`"uint8"` for raw-pixel int8 models).
        agreement: Outputs compared with Keras.
        audit: The graph audit.
        tolerance: The relative-difference limit checked (float32 only).
        input_quantization: `(scale, zero_point)` of an integer input:
            pixels = (q - zero_point) * scale.
    """

    path: str
    format: str
    quantize: str | None
    input_shape: tuple[int, ...]
    input_dtype: str
    agreement: Agreement
    audit: LiteRTAudit | OnnxAudit
    tolerance: float | None
    input_quantization: tuple[float, int] | None = None

    @property
    def failures(self) -> list[str]:
        problems = list(self.audit.failures)
        if self.tolerance is not None and not (
            self.agreement.max_relative_difference <= self.tolerance
        ):
            problems.append(
                f"max relative difference {self.agreement.max_relative_difference:.2e} "
                f"exceeds {self.tolerance:.0e}"
            )
        return problems

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        size = os.path.getsize(self.path) / 1e6
        name = {"litert": "LiteRT", "onnx": "ONNX"}[self.format]
        quantized = ""
        if self.input_quantization:
            scale, zero_point = self.input_quantization
            quantized = f" (pixels = (q - {zero_point}) * {scale:.6g})"
        lines = [
            f"{name} {self.quantize or 'float32'} -> {self.path} ({size:.2f} MB), "
            f"input {self.input_dtype}{list(self.input_shape)}{quantized}",
            "  " + self.agreement.summary()
            + ("" if self.tolerance is None else f" (limit {self.tolerance:.0e})"),
        ]
        lines += ["  " + line for line in self.audit.summary().splitlines()]
        lines += [f"  FAILED: {problem}" for problem in self.failures] or ["  verification OK"]
        return "\n".join(lines)


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


def _check_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "LiteRT and ONNX export trace the model with TensorFlow; this Keras runs the "
            f"'{keras.backend.backend()}' backend. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )


def _image_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    sizes = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(sizes) != 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(
            f"`image_size` must be a positive int or a (height, width) pair, got {image_size!r}."
        )
    return sizes


def static_input_shape(
    model: keras.Model, batch_size: int = 1, image_size: int | tuple[int, int] | None = None
) -> tuple[int, ...]:
    """The fully static NHWC input shape an export of `model` will have.

    Args:
        model: A Keras model with one 4D image input.
        batch_size: Fixed batch size.
        image_size: Height and width where the model leaves them open
            (default 224); must agree with the model where it fixes them.

    Returns:
        `(batch_size, height, width, channels)`.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            "Export supports models with one 4D image input (batch, height, width, "
            f"channels); this model's inputs are {[tuple(x.shape) for x in model.inputs]}."
        )
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "LiteRT and ONNX exports take channels-last models; build the model under "
            "keras.config.set_image_data_format('channels_last')."
        )
    _, height, width, channels = model.inputs[0].shape
    wanted = _image_hw(image_size)
    size = []
    for axis, (fixed, name) in enumerate(((height, "height"), (width, "width"))):
        if fixed is None:
            size.append(wanted[axis] if wanted else CROP_SIZE)
        elif wanted and wanted[axis] != fixed:
            raise ValueError(
                f"The model's input {name} is fixed at {fixed}, but image_size asks for "
                f"{wanted[axis]}. Build the model with input_shape=(None, None, {channels}) "
                "or drop image_size."
            )
        else:
            size.append(fixed)
    return (batch_size, size[0], size[1], channels)


def load_calibration(
    source: str | os.PathLike | np.ndarray | Iterable[np.ndarray],
    input_shape: tuple[int, ...],
    max_samples: int = 200,
) -> np.ndarray:
    """Loads representative inputs for quantization and verification.

    Args:
        source: A folder of images (read with `keras_lcnet.load_image`, i.e.
            PaddleClas' resize-then-center-crop, as RGB pixels in `[0, 255]`),
            an array `(samples, height, width, channels)`, or an iterable of
            such arrays or of single images.
        input_shape: The static model input shape `(batch, h, w, c)`.
        max_samples: How many images to read from a folder at most (sorted
            by name).

    Returns:
        A float32 array `(samples, h, w, c)`.
    """
    _, height, width, channels = input_shape
    if isinstance(source, (str, os.PathLike)):
        folder = pathlib.Path(source)
        if not folder.is_dir():
            raise ValueError(f"Calibration folder {str(folder)!r} does not exist.")
        if height != width:
            raise ValueError(
                f"Images from a folder are center-cropped squares; the model input is "
                f"{height}x{width}. Pass an array of inputs instead."
            )
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(
                f"No images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder "
                f"{str(folder)!r}."
            )
        resize_short = round(height * RESIZE_SHORT / CROP_SIZE)
        arrays = [load_image(f, size=height, resize_short=resize_short)
                  for f in files[:max_samples]]
    elif isinstance(source, np.ndarray):
        arrays = [source]
    else:
        arrays = [np.asarray(a) for a in source]
    arrays = [a[None] if a.ndim == 3 else a for a in arrays]
    if not arrays or any(a.ndim != 4 or a.shape[1:] != (height, width, channels) for a in arrays):
        raise ValueError(
            f"Calibration inputs must be images of shape ({height}, {width}, {channels}) "
            f"(optionally batched); got shapes {[a.shape for a in arrays][:5]}."
        )
    data = np.concatenate(arrays).astype(np.float32)
    if not np.isfinite(data).all():
        raise ValueError("Calibration inputs contain NaN or infinite values.")
    return data


def _random_pixels(input_shape: tuple[int, ...], samples: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (samples, *input_shape[1:])).astype(np.float32)


def _batches(data: np.ndarray, batch_size: int):
    """Fixed-size batches, the last one padded by repeating its first input."""
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        pad = batch_size - len(batch)
        yield np.concatenate([batch, np.repeat(batch[:1], pad, axis=0)]) if pad else batch, pad


def _keras_outputs(model: keras.Model, data: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = [np.asarray(model.predict_on_batch(b))[: len(b) - pad]
               for b, pad in _batches(data, batch_size)]
    return np.concatenate(outputs)


def compare(outputs: np.ndarray, reference: np.ndarray, inputs: str) -> Agreement:
    """Compares exported outputs with the Keras reference, sample by sample."""
    outputs = np.asarray(outputs, np.float64)
    reference = np.asarray(reference, np.float64)
    scale = np.max(np.abs(reference))
    difference = np.max(np.abs(outputs - reference))
    relative = float(difference / scale) if scale > 0 else float(difference)
    flat_a = outputs.reshape(len(outputs), -1)
    flat_b = reference.reshape(len(reference), -1)
    norms = np.linalg.norm(flat_a, axis=1) * np.linalg.norm(flat_b, axis=1)
    cosine = np.sum(flat_a * flat_b, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    top1 = None
    if reference.ndim == 2 and reference.shape[1] > 1:
        top1 = float(np.mean(outputs.argmax(1) == reference.argmax(1)))
    return Agreement(inputs, len(reference), relative, top1, float(np.mean(cosine)))


def _run_litert(path: str, data: np.ndarray, batch_size: int):
    """The model's outputs on `data`, and its input quantization if integer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    result = interpreter.get_output_details()[0]
    quantization = None
    if np.issubdtype(source["dtype"], np.integer):
        quantization = (float(source["quantization"][0]), int(source["quantization"][1]))
    outputs = []
    for batch, pad in _batches(data, batch_size):
        if quantization:
            scale, zero_point = quantization
            info = np.iinfo(source["dtype"])
            batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(source["index"], batch.astype(source["dtype"]))
        interpreter.invoke()
        output = interpreter.get_tensor(result["index"]).astype(np.float32)
        if np.issubdtype(result["dtype"], np.integer):
            scale, zero_point = result["quantization"]
            output = (output - zero_point) * scale
        outputs.append(output[: len(batch) - pad])
    return np.concatenate(outputs), quantization


def _check_output_path(path: str | os.PathLike, suffix: str) -> str:
    path = os.fspath(path)
    if not path.endswith(suffix):
        raise ValueError(f"The output file must end with '{suffix}', got {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"The output folder {parent!r} does not exist.")
    return path


def _verification_data(calibration, verification, input_shape):
    if verification is not None:
        return load_calibration(verification, input_shape), "verification inputs"
    if calibration is not None:
        return calibration, "calibration inputs"
    return _random_pixels(input_shape, VERIFICATION_SAMPLES), "random-pixel inputs"


def _finish(report: ExportReport, strict: bool) -> ExportReport:
    if strict and not report.ok:
        raise ExportError(
            f"{report.path} was written but failed verification:\n{report.summary()}\n"
            "Pass strict=False to keep such an export."
        )
    return report


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
) -> ExportReport:
    """Exports a Keras model to a LiteRT (`.tflite`) file and verifies it.

    The graph has a static input shape (so XNNPACK takes it as one
    partition) and builtin ops only (no Select TF / Flex ops); h-swish stays
    the native `HARD_SWISH` in float models. The written file is run by
    `ai-edge-litert`'s interpreter, compared with `model`, and audited
    (op list, XNNPACK partitions).

    Quantization recipes:
    - `None`: float32. Must match Keras within `FLOAT32_TOLERANCE`.
    - `"float16"`: float16 weights, float32 compute.
    - `"dynamic"`: int8 weights, activations quantized on the fly. XNNPACK in
      ai-edge-litert 2.3 has no such depthwise kernel, so this recipe fails
      the delegation audit (use `strict=False` to keep it anyway).
    - `"int8"`: full-integer, calibrated on `calibration`. h-swish is
      rewritten with int8 ops XNNPACK delegates (see `_Int8HardSwish`).
      Keep class scores as logits (`classifier_activation=None`):
      XNNPACK has no int8 softmax.

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

    Returns:
        An `ExportReport` (its `summary()` is the printable report).

    Raises:
        ValueError: Invalid arguments.
        ExportError: The file was written but failed verification (`strict`).
    """
    import tensorflow as tf

    _check_backend()
    path = _check_output_path(path, ".tflite")
    if quantize not in (None, *QUANTIZE_MODES):
        raise ValueError(
            f"`quantize` must be None (float32) or one of {QUANTIZE_MODES}, got {quantize!r}."
        )
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

    options: dict = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    exported = model
    if quantize is not None:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        options["target_spec"]["supported_types"] = [tf.float16]
    if quantize == "int8":
        exported = _int8_friendly(model)
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        options["representative_dataset"] = lambda: (
            [batch] for batch, _ in _batches(calibration, batch_size))
        if uint8_input:
            options["inference_input_type"] = tf.uint8
    spec = tf.TensorSpec(input_shape, tf.float32, name="images")
    exported.export(path, format="litert", input_signature=[spec], verbose=False, **options)

    data, described = _verification_data(calibration, verification, input_shape)
    outputs, input_quantization = _run_litert(path, data, batch_size)
    agreement = compare(outputs, _keras_outputs(model, data, batch_size), described)
    report = ExportReport(
        path=path,
        format="litert",
        quantize=quantize,
        input_shape=input_shape,
        input_dtype="uint8" if uint8_input else "float32",
        agreement=agreement,
        audit=audit_litert(path),
        tolerance=FLOAT32_TOLERANCE if quantize is None else None,
        input_quantization=input_quantization,
    )
    return _finish(report, strict)


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

    The graph is cleaned up after tf2onnx (see `keras_lcnet.onnx_graph`):
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
    import onnxruntime as ort

    from keras_lcnet import onnx_graph

    _check_backend()
    path = _check_output_path(path, ".onnx")
    input_shape = static_input_shape(model, batch_size, image_size)
    proto = onnx_graph.convert(model, input_shape, opset=opset, nchw_input=nchw_input)
    onnx.save(proto, path)

    data, described = _verification_data(None, verification, input_shape)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = []
    for batch, pad in _batches(data, batch_size):
        feed = batch.transpose(0, 3, 1, 2) if nchw_input else batch
        outputs.append(session.run(None, {onnx_graph.INPUT_NAME: feed})[0][: len(batch) - pad])
    agreement = compare(
        np.concatenate(outputs), _keras_outputs(model, data, batch_size), described
    )
    b, h, w, c = input_shape
    report = ExportReport(
        path=path,
        format="onnx",
        quantize=None,
        input_shape=(b, c, h, w) if nchw_input else input_shape,
        input_dtype="float32",
        agreement=agreement,
        audit=audit_onnx(proto, max_transposes=0 if nchw_input else 1),
        tolerance=FLOAT32_TOLERANCE,
    )
    return _finish(report, strict)
