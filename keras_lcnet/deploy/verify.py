"""What every export shares: static input shapes, verification inputs, comparison with
Keras, and the report an export returns."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable

import keras
import numpy as np

from keras_lcnet.deploy.audit import LiteRTAudit, OnnxAudit, OpenVINOAudit
from keras_lcnet.deploy.runtime import Runtime, batches
from keras_lcnet.errors import ExportError
from keras_lcnet.preprocessing import CROP_SIZE, RESIZE_SHORT, load_image

FLOAT32_TOLERANCE = 1e-4  # max |exported - keras| / max |keras|
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VERIFICATION_SAMPLES = 4
# Below this relative spread across inputs the reference outputs ignore the
# input (e.g. random weights: activations vanish layer by layer), and any
# graph that outputs the same constant would pass the comparison.
SPREAD_FLOOR = 1e-3
TWIN_CALIBRATION_SAMPLES = 16  # inputs that set a twin's batch-norm statistics


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
        spread: How much the Keras outputs vary across inputs (see
            `output_spread`); `None` when that could not be measured.
    """

    inputs: str
    samples: int
    max_relative_difference: float
    top1_agreement: float | None
    cosine_similarity: float
    spread: float | None = None

    @property
    def informative(self) -> bool:
        """Whether the reference outputs depend on the input, so a wrong graph can fail."""
        return self.spread is not None and self.spread >= SPREAD_FLOOR

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
        format: `"litert"`, `"onnx"` or `"openvino"`.
        quantize: The quantization recipe or reduced precision (`"bf16"`,
            `"int8"`, ...; `None` for float32).
        input_shape: The static input shape.
        input_dtype: The input dtype (`"uint8"` for raw-pixel int8 models).
        agreement: Outputs compared with Keras.
        audit: The graph audit.
        tolerance: The relative-difference limit checked (float32 only).
        input_quantization: `(scale, zero_point)` of an integer input:
            pixels = (q - zero_point) * scale.
        twin: When the model's outputs ignore its input (`agreement` is not
            informative): the same comparison for a twin of the model with
            batch-norm statistics calibrated on the verification inputs,
            exported with the same recipe (see `verify_outputs`).
    """

    path: str
    format: str
    quantize: str | None
    input_shape: tuple[int, ...]
    input_dtype: str
    agreement: Agreement
    audit: LiteRTAudit | OnnxAudit | OpenVINOAudit
    tolerance: float | None
    input_quantization: tuple[float, int] | None = None
    twin: Agreement | None = None

    @property
    def failures(self) -> list[str]:
        problems = list(self.audit.failures)
        for name, agreement in (("", self.agreement), ("BN-calibrated twin: ", self.twin)):
            if agreement is None or self.tolerance is None:
                continue
            if not agreement.max_relative_difference <= self.tolerance:
                problems.append(
                    f"{name}max relative difference {agreement.max_relative_difference:.2e} "
                    f"exceeds {self.tolerance:.0e}"
                )
        return problems

    @property
    def ok(self) -> bool:
        """No check failed (see `weak` for whether the comparison could have)."""
        return not self.failures

    @property
    def weak(self) -> bool:
        """The outputs ignore the input even on the twin: no comparison could fail."""
        return not self.agreement.informative and not (self.twin and self.twin.informative)

    def _agreement_lines(self) -> list[str]:
        limit = "" if self.tolerance is None else f" (limit {self.tolerance:.0e})"
        lines = ["  " + self.agreement.summary() + limit]
        if self.twin is not None:
            spread = self.agreement.spread
            lines += [
                "  the model's outputs ignore its input (spread "
                + ("not measurable" if spread is None else f"{spread:.1e}")
                + "), so that comparison proves nothing; checked instead on a twin with batch-norm "
                "statistics calibrated on the inputs, exported the same way:",
                "  twin " + self.twin.summary() + limit,
            ]
        return lines

    def summary(self) -> str:
        files = [self.path] + ([self.path[:-4] + ".bin"] if self.format == "openvino" else [])
        size = sum(os.path.getsize(f) for f in files) / 1e6
        name = {"litert": "LiteRT", "onnx": "ONNX", "openvino": "OpenVINO"}[self.format]
        quantized = ""
        if self.input_quantization:
            scale, zero_point = self.input_quantization
            quantized = f" (pixels = (q - {zero_point}) * {scale:.6g})"
        lines = [
            f"{name} {self.quantize or 'float32'} -> {self.path} ({size:.2f} MB), "
            f"input {self.input_dtype}{list(self.input_shape)}{quantized}",
            *self._agreement_lines(),
        ]
        lines += ["  " + line for line in self.audit.summary().splitlines()]
        if self.failures:
            lines += [f"  FAILED: {problem}" for problem in self.failures]
        elif self.weak:
            lines.append("  WEAK: the outputs do not depend on the input, so this check cannot "
                         "detect a wrong graph; verify with trained weights")
        else:
            on_twin = " (on the BN-calibrated twin)" if self.twin else ""
            lines.append("  verification OK" + on_twin)
        return "\n".join(lines)


def check_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "LiteRT, ONNX and OpenVINO exports trace the model with TensorFlow; this Keras runs "
            f"the '{keras.backend.backend()}' backend. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )


def image_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
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
    wanted = image_hw(image_size)
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


def random_pixels(input_shape: tuple[int, ...], samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (samples, *input_shape[1:])).astype(np.float32)


def keras_outputs(model: keras.Model, data: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = [np.asarray(model.predict_on_batch(b))[: len(b) - pad]
               for b, pad in batches(data, batch_size)]
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
    return Agreement(inputs, len(reference), relative, top1, float(np.mean(cosine)),
                     output_spread(reference))


def output_spread(outputs: np.ndarray) -> float | None:
    """How much outputs vary across inputs, relative to their size.

    Args:
        outputs: One output per input, `(samples, ...)`.

    Returns:
        The largest range across inputs of any output value, over the
        largest absolute output (0 for all-zero outputs); `None` for fewer
        than two inputs.
    """
    if len(outputs) < 2:
        return None
    flat = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    scale = np.max(np.abs(flat))
    return float(np.max(np.ptp(flat, axis=0)) / scale) if scale > 0 else 0.0


def check_output_path(path: str | os.PathLike, suffix: str) -> str:
    """Checks, before any conversion, that an export can be written to `path`.

    Args:
        path: The output file.
        suffix: The extension it must have.

    Returns:
        `path` as a string.

    Raises:
        ValueError: Wrong extension, or the destination cannot be written.
    """
    path = os.fspath(path)
    if not path.endswith(suffix):
        raise ValueError(f"The output file must end with '{suffix}', got {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    problem = None
    if not os.path.exists(parent):
        problem = f"the output folder {parent!r} does not exist"
    elif not os.path.isdir(parent):
        problem = f"{parent!r} is a file, not a folder"
    elif os.path.isdir(path):
        problem = "it is a folder"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"the folder {parent!r} is not writable"
    elif os.path.exists(path) and not os.access(path, os.W_OK):
        problem = "the file exists and is not writable"
    if problem:
        raise ValueError(f"Cannot write the export to {path!r}: {problem}. Choose another --output "
                         "path (or fix the folder's permissions).")
    return path


def verification_data(calibration, verification, input_shape):
    if verification is not None:
        return load_calibration(verification, input_shape), "verification inputs"
    if calibration is not None:
        return calibration, "calibration inputs"
    return random_pixels(input_shape, VERIFICATION_SAMPLES), "random-pixel inputs"


def calibrate_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Sets every BatchNormalization's moving statistics to those of `images`, in place.

    A freshly initialized network normalizes with mean 0 / variance 1, so its
    activations shrink layer by layer until the outputs ignore the input.
    One training-mode pass with momentum 0 stores each layer's batch
    statistics, computed on inputs already normalized upstream.

    Args:
        model: A Keras model (nested models and sub-layers included).
        images: Model inputs for one forward pass.
    """
    # Every layer at any depth: nested models' layers, and sub-layers held as
    # attributes (PP-LCNetV2's RepDepthwiseConv2D keeps its branches' BN so).
    layers = model._flatten_layers(include_self=False, recursive=True)
    norms = [x for x in layers if isinstance(x, keras.layers.BatchNormalization)]
    saved = [(x.momentum, x.trainable) for x in norms]
    for layer in norms:  # a frozen BN layer ignores training=True
        layer.momentum, layer.trainable = 0.0, True
    try:
        model(images, training=True)
    finally:
        for layer, (momentum, trainable) in zip(norms, saved, strict=True):
            layer.momentum, layer.trainable = momentum, trainable


def deploy_form(model: keras.Model) -> keras.Model:
    """The model an export converts: PP-LCNetV2's branch form folded first.

    A branch-form `RepDepthwiseConv2D` would be exported as its parallel
    depthwise convolutions, batch norms and sum; folded (as
    `keras_lcnet.reparameterize` does) it is one depthwise convolution with
    the same outputs. Any other model is returned as it is.

    Args:
        model: The Keras model to export.

    Returns:
        `keras_lcnet.reparameterize(model)` when `model` has a branch-form
        `RepDepthwiseConv2D`, else `model`.
    """
    from keras_lcnet.layers import RepDepthwiseConv2D
    from keras_lcnet.reparam import reparameterize

    layers = getattr(model, "layers", [])
    if any(isinstance(layer, RepDepthwiseConv2D) and not layer.deploy for layer in layers):
        return reparameterize(model)
    return model


def calibrated_twin(model: keras.Model, images: np.ndarray) -> keras.Model | None:
    """A copy of `model` whose batch-norm statistics are those of `images`.

    Returns:
        The twin, or `None` when `model` cannot be cloned into new variables
        (subclassed models).
    """
    try:
        twin = keras.models.clone_model(model)
    except (ValueError, TypeError, NotImplementedError):
        return None
    if {id(v) for v in twin.weights} & {id(v) for v in model.weights}:
        return None  # calibrating it would change `model`
    twin.set_weights(model.get_weights())
    calibrate_batchnorm(twin, images[:TWIN_CALIBRATION_SAMPLES])
    return twin


def _agreement(model, outputs, data, described: str, batch_size: int) -> Agreement:
    """`compare` with Keras; one input alone is paired with a random one to measure the spread."""
    reference = keras_outputs(model, data, batch_size)
    agreement = compare(outputs, reference, described)
    if len(data) < 2:
        probe = keras_outputs(model, random_pixels(data.shape, 1, seed=1), batch_size)
        agreement.spread = output_spread(np.concatenate([reference, probe]))
    return agreement


def verify_outputs(
    model: keras.Model,
    path: str,
    data: np.ndarray,
    described: str,
    batch_size: int,
    export: Callable[[keras.Model, str], None],
    layout: str = "NHWC",
) -> tuple[Agreement, Agreement | None]:
    """Compares an exported file with `model`, on a twin when that proves nothing.

    When the model's outputs ignore the input (random weights), that
    comparison passes for any graph that outputs the same constant. Then a
    twin with batch-norm statistics calibrated on `data` (informative
    activations, same graph) is exported by `export` to a temporary file and
    compared with the twin in Keras.

    Args:
        model: The Keras model.
        path: Its export.
        data: Float32 inputs `(samples, h, w, c)`.
        described: What `data` is, for the report.
        batch_size: The export's static batch size.
        export: `export(model, path)` writes a model with the same recipe.
        layout: The export's input layout, `"NHWC"` or `"NCHW"`.

    Returns:
        The file's agreement, and the twin's (`None` when not needed or
        when `model` cannot be cloned).
    """
    threads = os.cpu_count() or 1
    outputs = Runtime(path, threads, layout).predict(data)
    agreement = _agreement(model, outputs, data, described, batch_size)
    twin = None if agreement.informative else calibrated_twin(model, data)
    if twin is None:
        return agreement, None
    with tempfile.TemporaryDirectory() as folder:
        twin_path = os.path.join(folder, "twin" + os.path.splitext(path)[1])
        export(twin, twin_path)
        outputs = Runtime(twin_path, threads, layout).predict(data)
    return agreement, _agreement(twin, outputs, data, described, batch_size)


def finish(report: ExportReport, strict: bool) -> ExportReport:
    if strict and not report.ok:
        raise ExportError(
            f"{report.path} was written but failed verification:\n{report.summary()}\n"
            "Pass strict=False to keep such an export."
        )
    return report
