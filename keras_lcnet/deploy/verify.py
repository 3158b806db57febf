"""What every export shares: static input shapes, verification inputs, comparison with
Keras, and the report an export returns."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable

import keras
import numpy as np

from keras_lcnet.deploy.audit import LiteRTAudit, OnnxAudit
from keras_lcnet.errors import ExportError
from keras_lcnet.preprocessing import CROP_SIZE, RESIZE_SHORT, load_image

FLOAT32_TOLERANCE = 1e-4  # max |exported - keras| / max |keras|
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VERIFICATION_SAMPLES = 4


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


def check_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "LiteRT and ONNX export trace the model with TensorFlow; this Keras runs the "
            f"'{keras.backend.backend()}' backend. Set KERAS_BACKEND=tensorflow before "
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


def random_pixels(input_shape: tuple[int, ...], samples: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (samples, *input_shape[1:])).astype(np.float32)


def batches(data: np.ndarray, batch_size: int):
    """Fixed-size batches, the last one padded by repeating its first input."""
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        pad = batch_size - len(batch)
        yield np.concatenate([batch, np.repeat(batch[:1], pad, axis=0)]) if pad else batch, pad


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
    return Agreement(inputs, len(reference), relative, top1, float(np.mean(cosine)))


def check_output_path(path: str | os.PathLike, suffix: str) -> str:
    path = os.fspath(path)
    if not path.endswith(suffix):
        raise ValueError(f"The output file must end with '{suffix}', got {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"The output folder {parent!r} does not exist.")
    return path


def verification_data(calibration, verification, input_shape):
    if verification is not None:
        return load_calibration(verification, input_shape), "verification inputs"
    if calibration is not None:
        return calibration, "calibration inputs"
    return random_pixels(input_shape, VERIFICATION_SAMPLES), "random-pixel inputs"


def finish(report: ExportReport, strict: bool) -> ExportReport:
    if strict and not report.ok:
        raise ExportError(
            f"{report.path} was written but failed verification:\n{report.summary()}\n"
            "Pass strict=False to keep such an export."
        )
    return report
