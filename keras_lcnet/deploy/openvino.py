"""OpenVINO IR (`.xml` + `.bin`) export: float32, bfloat16 and NNCF int8, verified with OpenVINO.

Converter: Keras' own `model.export(path, format="openvino")`, given a static
input signature. On the TensorFlow backend it hands the traced forward pass
to `openvino.convert_model`, whose front end folds batch norm into the
convolutions and maps h-swish and hard-sigmoid to OpenVINO's native `HSwish`
and `HSigmoid`; the only `Transpose` left is the NHWC input's layout change.
The alternative, `openvino.convert_model` on our ONNX export, gives a graph
that is no cleaner: it keeps ONNX's `HardSigmoid` (not fused to `HSigmoid`),
its compiled model has 6 layout `Reorder`s instead of 2, and the conversion
takes about three times as long and needs the whole ONNX tool chain
(tf2onnx and the rewrites). It is not faster either: interleaved timing of
PP-LCNet x1_0 (OpenVINO 2026.4, 2-core AMD EPYC with AVX512_BF16, batch 1)
gave the same median for both IRs (1 thread: 4.02 vs 3.99 ms; 2 threads:
2.18 vs 2.17 ms).

Precisions (stored in the IR's `rt_info` under `keras_lcnet/precision`, and
applied by `Runtime` as OpenVINO's `INFERENCE_PRECISION_HINT`):
- `"f32"`: float32 throughout. OpenVINO's CPU plugin otherwise runs bf16 by
  default on CPUs with AVX512_BF16 or AMX, so the hint is forced at compile
  time. Must match Keras within `FLOAT32_TOLERANCE`.
- `"bf16"`: float32 weights in the file, bfloat16 compute at run time. Needs
  a CPU whose OpenVINO `OPTIMIZATION_CAPABILITIES` include `BF16`
  (AVX512_BF16 or AMX); refused elsewhere, rather than timing or shipping
  a "bf16" model that cannot run as one.
- `"int8"`: post-training quantization by NNCF (`nncf.quantize`) on the
  calibration images, with asymmetric activations (NNCF's `MIXED` preset),
  full bias correction and min/max activation ranges (see `_int8_recipe`);
  the remaining float ops run in float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

import keras
import numpy as np

from keras_lcnet.deploy import verify
from keras_lcnet.deploy.audit import audit_openvino
from keras_lcnet.deploy.runtime import OPENVINO_PRECISION_KEY, batches, check_openvino_precision
from keras_lcnet.deploy.verify import (
    ExportReport,
    check_backend,
    check_output_path,
    finish,
    load_calibration,
    static_input_shape,
    verification_data,
    verify_outputs,
)

PRECISIONS = ("f32", "bf16", "int8")
INPUT_NAME = "images"
OUTPUT_NAME = "outputs"


def convert(model: keras.Model, input_shape: tuple[int, ...]):
    """Converts a Keras model (TensorFlow backend) to an OpenVINO model with a static input.

    Args:
        model: A Keras model with one image input.
        input_shape: Fully static NHWC input shape, batch included.

    Returns:
        An `openvino.Model` with input `"images"` and output `"outputs"`.
    """
    import openvino as ov
    import tensorflow as tf

    model = verify.deploy_form(model)  # a PP-LCNetV2 in branch form is folded first
    spec = tf.TensorSpec(input_shape, tf.float32, name=INPUT_NAME)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.xml")
        model.export(path, format="openvino", input_signature=[spec], verbose=False)
        # Read into memory (ov.Tensor copies the array): read_model(path) would map
        # the .bin file, which goes with the folder.
        with open(path, encoding="utf-8") as f:
            ir = f.read()
        weights = ov.Tensor(np.fromfile(path[:-4] + ".bin", np.uint8))
        converted = ov.Core().read_model(ir, weights)
    converted.outputs[0].tensor.set_names({OUTPUT_NAME})
    return converted


def _int8_recipe() -> dict:
    """NNCF settings closer to float than its defaults on trained PP-LCNets.

    Full bias correction and plain min/max activation ranges: on the digits
    benchmark (`benchmarks/int8_accuracy.md`) they raised the logits' cosine
    similarity with float from 0.954 to 0.986 (x0_25) and from 0.974 to
    0.997 (x1_0). The `MIXED` preset (asymmetric activations) then fits the
    h-swish outputs, which reach down to only -0.375: a symmetric range
    spends half its levels on negative values that never occur. It raised
    x0_25's cosine further to 0.995 (top-1 agreement 97.2% -> 98.6%) and
    x1_0's to 0.999 (agreement 100% -> 99.4%: two near-tie images flipped).
    Every convolution still runs in int8.
    """
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return {
        "preset": nncf.QuantizationPreset.MIXED,
        "fast_bias_correction": False,
        "advanced_parameters": nncf.AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX),
    }


def _quantize(converted, calibration: np.ndarray, batch_size: int):
    """NNCF post-training int8 quantization on the calibration batches."""
    import nncf
    from nncf.common.logging.logger import nncf_logger

    data = [batch for batch, _ in batches(calibration, batch_size)]
    # Its INFO lines and progress bars would flood the report.
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return nncf.quantize(converted, nncf.Dataset(data), subset_size=len(calibration),
                                 **_int8_recipe())
    finally:
        nncf_logger.setLevel(level)


def _save(converted, path: str) -> None:
    """Writes `path` and its `.bin` via a temporary folder, so a failure leaves neither."""
    import openvino as ov

    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".openvino-") as staging:
        staged = os.path.join(staging, "model.xml")
        ov.save_model(converted, staged, compress_to_fp16=False)
        os.replace(staged[:-4] + ".bin", path[:-4] + ".bin")
        os.replace(staged, path)


def _write(model, path: str, input_shape, precision: str, calibration) -> None:
    converted = convert(model, input_shape)
    if precision == "int8":
        converted = _quantize(converted, calibration, input_shape[0])
    converted.set_rt_info(precision, list(OPENVINO_PRECISION_KEY))
    _save(converted, path)


def _check_arguments(path, precision: str, calibration) -> str:
    check_backend()
    path = check_output_path(path, ".xml")
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    check_openvino_precision(precision)
    if precision == "int8" and calibration is None:
        raise ValueError(
            "`precision='int8'` needs `calibration`: a folder of representative images or "
            "an array of model inputs (a few hundred images is typical)."
        )
    return path


def export_openvino(
    model: keras.Model,
    path: str | os.PathLike,
    precision: str = "f32",
    calibration=None,
    batch_size: int = 1,
    image_size: int | tuple[int, int] | None = None,
    verification=None,
    strict: bool = True,
) -> ExportReport:
    """Exports a Keras model to OpenVINO IR (`.xml` + `.bin`) and verifies it.

    The IR has a static NHWC input shape, batch norm folded into the
    convolutions and native `HSwish` / `HSigmoid`. The written model is
    compiled by OpenVINO's CPU plugin at its precision (see `Runtime`),
    compared with `model`, and audited (`audit_openvino`), on a BN-calibrated
    twin when the model's outputs ignore its input (see
    `verify.verify_outputs`).

    Args:
        model: A Keras model with one image input, on the TensorFlow backend.
        path: Output file, ending in `.xml` (the weights go next to it, `.bin`).
        precision: `"f32"` (must match Keras within `FLOAT32_TOLERANCE`),
            `"bf16"` (run-time bfloat16; needs AVX512_BF16 or AMX) or
            `"int8"` (NNCF post-training quantization; needs `calibration`).
            For the reduced precisions the report gives top-1 agreement and
            cosine similarity with Keras, with no limit.
        calibration: Representative inputs for `"int8"`: a folder of images,
            or an array / iterable of arrays of model inputs; see
            `load_calibration`. Also the verification inputs.
        batch_size: Static batch size.
        image_size: Input height and width where the model leaves them open
            (default 224).
        verification: Inputs to compare on, like `calibration`; default: the
            calibration inputs, else four random-pixel images.
        strict: Raise `ExportError` when verification fails.

    Returns:
        An `ExportReport`; its `quantize` is `None` for f32, else the precision.

    Raises:
        ValueError: Invalid arguments, or `"bf16"` on a CPU without bfloat16.
        ExportError: The files were written but failed verification (`strict`).
    """
    path = _check_arguments(path, precision, calibration)
    input_shape = static_input_shape(model, batch_size, image_size)
    if calibration is not None:
        calibration = load_calibration(calibration, input_shape)

    def write(m: keras.Model, p: str) -> None:
        _write(m, p, input_shape, precision, calibration)

    write(model, path)
    data, described = verification_data(calibration, verification, input_shape)
    agreement, twin = verify_outputs(model, path, data, described, batch_size, write)
    report = ExportReport(
        path=path,
        format="openvino",
        quantize=None if precision == "f32" else precision,
        input_shape=input_shape,
        input_dtype=np.dtype(np.float32).name,
        agreement=agreement,
        audit=audit_openvino(path),
        tolerance=verify.FLOAT32_TOLERANCE if precision == "f32" else None,
        twin=twin,
    )
    return finish(report, strict)
