"""LiteRT and ONNX export: parity with Keras (and PaddleClas), quantization recipes, audits, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from helpers import FIXTURES, IMAGES_DIR, load_case, model_kwargs, relative_error

from keras_lcnet.cli import main
from keras_lcnet.deploy import (
    ExportError,
    export_litert,
    export_onnx,
    load_calibration,
    static_input_shape,
)
from keras_lcnet.model import PPLCNet

CHECKPOINT = FIXTURES / "pplcnet_x0_25.pdparams"


@pytest.fixture(scope="module")
def case():
    """Informative random weights (calibrated BN) and PaddleClas' logits for them."""
    config, arrays = load_case("pplcnet_x0_25")
    model = PPLCNet(weights=str(CHECKPOINT), **model_kwargs(config))
    return model, arrays["pixels_0"].astype(np.float32), arrays["logits_0"]


@pytest.fixture(scope="module")
def litert_float32(case, tmp_path_factory):
    model, pixels, _ = case
    path = tmp_path_factory.mktemp("litert") / "x0_25.tflite"
    return export_litert(model, path, verification=pixels)


def run_litert(path, pixels):
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in pixels:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(result["index"]))
    return np.concatenate(outputs)


def test_litert_float32_matches_keras_and_paddle(case, litert_float32):
    _, pixels, paddle_logits = case
    assert litert_float32.ok, litert_float32.summary()
    assert litert_float32.agreement.max_relative_difference <= 1e-4
    assert litert_float32.agreement.samples == 2
    assert relative_error(run_litert(litert_float32.path, pixels), paddle_logits) <= 1e-4


def test_litert_graph_is_static_builtin_and_one_xnnpack_partition(litert_float32):
    audit = litert_float32.audit
    assert audit.ops["HARD_SWISH"] == 28  # every h-swish of x0_25 stays native
    assert not audit.custom_ops and not any(op.startswith("CUSTOM") for op in audit.ops)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"} & set(audit.ops)
    assert audit.partitions == 1 and not audit.undelegated
    source = Interpreter(model_path=litert_float32.path).get_input_details()[0]
    assert list(source["shape_signature"]) == [1, 224, 224, 3]
    summary = litert_float32.summary()
    assert "1 partition(s)" in summary and "verification OK" in summary


@pytest.mark.parametrize("quantize", ["float16", "dynamic", "int8"])
def test_quantized_recipes_run_and_report_agreement(case, quantize, tmp_path):
    model, _, _ = case
    report = export_litert(model, tmp_path / f"{quantize}.tflite", quantize=quantize,
                           calibration=IMAGES_DIR, strict=False)
    agreement = report.agreement
    assert agreement.samples == 3 and agreement.inputs == "calibration inputs"
    assert 0.0 <= agreement.top1_agreement <= 1.0
    assert -1.0 <= agreement.cosine_similarity <= 1.0 + 1e-6
    assert report.tolerance is None and not report.audit.custom_ops
    if quantize == "float16":
        assert agreement.cosine_similarity > 0.999
    if quantize == "dynamic":
        # ai-edge-litert 2.3's XNNPACK has no hybrid (int8-weight) depthwise kernel.
        assert all("DEPTHWISE_CONV_2D" in problem for problem in report.failures)
    if quantize == "int8":
        assert report.ok, report.summary()
        assert "HARD_SWISH" not in report.audit.ops  # rewritten into int8 ADD/MUL


def test_int8_with_uint8_input_takes_raw_pixels(case, tmp_path):
    model, _, _ = case
    report = export_litert(model, tmp_path / "u8.tflite", quantize="int8",
                           calibration=IMAGES_DIR, uint8_input=True)
    assert report.input_dtype == "uint8"
    scale, zero_point = report.input_quantization  # what raw frames must be mapped with
    assert scale > 0 and 0 <= zero_point <= 255 and "pixels = (q - " in report.summary()
    source = Interpreter(model_path=report.path).get_input_details()[0]
    assert source["dtype"] == np.uint8
    # The uint8 -> int8 QUANTIZE at the input is the only op outside XNNPACK.
    assert report.audit.partitions == 1
    assert [op[0] for op in report.audit.undelegated] == ["QUANTIZE"]


def test_export_rejects_bad_arguments(case, tmp_path):
    model, _, _ = case
    with pytest.raises(ValueError, match="needs `calibration`"):
        export_litert(model, tmp_path / "a.tflite", quantize="int8")
    with pytest.raises(ValueError, match="`quantize` must be"):
        export_litert(model, tmp_path / "a.tflite", quantize="int4")
    with pytest.raises(ValueError, match="needs `quantize='int8'`"):
        export_litert(model, tmp_path / "a.tflite", uint8_input=True)
    with pytest.raises(ValueError, match=r"must end with '\.tflite'"):
        export_litert(model, tmp_path / "a.onnx")
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "a.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ValueError, match="batch_size"):
        static_input_shape(model, batch_size=0)
    fixed = PPLCNet(scale=0.25, weights=None, input_shape=(96, 96, 3))
    assert static_input_shape(fixed) == (1, 96, 96, 3)
    assert static_input_shape(model, 2, image_size=(128, 160)) == (2, 128, 160, 3)
    with pytest.raises(ValueError, match="fixed at 96"):
        static_input_shape(fixed, image_size=224)


def test_load_calibration(tmp_path):
    images = load_calibration(IMAGES_DIR, (1, 160, 160, 3))
    assert images.shape == (3, 160, 160, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    shape = (1, 160, 160, 3)
    arrays = load_calibration([np.zeros((160, 160, 3)), np.ones((2, 160, 160, 3))], shape)
    assert arrays.shape == (3, 160, 160, 3)
    with pytest.raises(ValueError, match="must be images of shape"):
        load_calibration(np.zeros((2, 32, 32, 3)), (1, 160, 160, 3))
    with pytest.raises(ValueError, match="No images"):
        load_calibration(tmp_path, (1, 160, 160, 3))
    with pytest.raises(ValueError, match="does not exist"):
        load_calibration(tmp_path / "nope", (1, 160, 160, 3))


def test_strict_export_raises_after_writing(case, tmp_path, monkeypatch):
    model, _, _ = case
    monkeypatch.setattr("keras_lcnet.deploy.verify.FLOAT32_TOLERANCE", 0.0)
    path = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="failed verification"):
        export_onnx(model, path)
    assert path.exists()
    assert not export_onnx(model, path, strict=False).ok


def test_cli_export_litert_and_onnx(tmp_path, capsys):
    tflite, onnx_path = tmp_path / "x.tflite", tmp_path / "x.onnx"
    args = ["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8"]
    assert main([*args, "--output", str(tflite)]) == 0
    out = capsys.readouterr().out
    assert "LiteRT float32" in out and "verification OK" in out and "softmax scores" in out
    assert main([*args, "--output", str(onnx_path), "--nchw-input", "--opset", "18"]) == 0
    out = capsys.readouterr().out
    assert "opset 18" in out and "Transpose" not in out and "verification OK" in out


def test_cli_export_int8_outputs_logits(tmp_path, capsys):
    path = tmp_path / "int8.tflite"
    # Not random weights: their vanishing activations get int8 scales XNNPACK rejects.
    assert main(["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8",
                 "--output", str(path), "--quantize", "int8", "--calibration-dir",
                 str(IMAGES_DIR), "--image-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "logits" in out and "LiteRT int8" in out and "[1, 128, 128, 3]" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--output", "m.pb"], "Cannot tell the format"),
        (["--output", "m.onnx", "--quantize", "int8"], "apply to LiteRT"),
        (["--output", "m.tflite", "--nchw-input"], "apply to ONNX"),
        (["--output", "m.tflite", "--quantize", "int8"], "needs --calibration-dir"),
        (["--output", "m.onnx"], "failed verification"),
    ],
)
def test_cli_export_errors_exit_1(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("keras_lcnet.deploy.verify.FLOAT32_TOLERANCE", -1.0)  # nothing passes
    assert main(["export", "--variant", "x0_25", "--weights", "none", *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("keras-lcnet: error:")


def test_example_smoke_run():
    result = subprocess.run(
        [sys.executable, "examples/export_litert.py", "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=IMAGES_DIR.parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verification OK" in result.stdout and "median" in result.stdout
