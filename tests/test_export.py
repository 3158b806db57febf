"""LiteRT and ONNX export: parity with Keras (and PaddleClas), quantization recipes, audits, CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR, relative_error

from keras_lcnet.cli import main
from keras_lcnet.deploy import (
    ExportError,
    export_litert,
    export_onnx,
    load_calibration,
    static_input_shape,
)
from keras_lcnet.deploy import onnx as onnx_export
from keras_lcnet.deploy.audit import audit_litert
from keras_lcnet.deploy.runtime import Runtime
from keras_lcnet.deploy.verify import check_output_path
from keras_lcnet.model import PPLCNet

pytestmark = pytest.mark.export
for _module in ("ai_edge_litert", "tf2onnx", "onnxruntime"):
    pytest.importorskip(_module)
onnx = pytest.importorskip("onnx")

CHECKPOINT = FIXTURES / "pplcnet_x0_25.pdparams"


@pytest.fixture(scope="module")
def litert_float32(x0_25_case, tmp_path_factory):
    model, pixels, _ = x0_25_case
    path = tmp_path_factory.mktemp("litert") / "x0_25.tflite"
    return export_litert(model, path, verification=pixels)




def test_litert_float32_matches_keras_and_paddle(x0_25_case, litert_float32):
    _, pixels, paddle_logits = x0_25_case
    assert litert_float32.ok, litert_float32.summary()
    assert litert_float32.agreement.max_relative_difference <= 1e-4
    assert litert_float32.agreement.samples == 2
    assert relative_error(Runtime(litert_float32.path).predict(pixels), paddle_logits) <= 1e-4


def test_litert_graph_is_static_builtin_and_one_xnnpack_partition(litert_float32):
    audit = litert_float32.audit
    assert audit.ops["HARD_SWISH"] == 28  # every h-swish of x0_25 stays native
    assert not audit.custom_ops and not any(op.startswith("CUSTOM") for op in audit.ops)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"} & set(audit.ops)
    assert audit.partitions == 1 and not audit.undelegated
    assert Runtime(litert_float32.path).input_shape == (1, 224, 224, 3)  # no dynamic dims
    summary = litert_float32.summary()
    assert "1 partition(s)" in summary and "verification OK" in summary


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["float16", "dynamic", "int8"])
def test_quantized_recipes_run_and_report_agreement(x0_25_case, quantize, tmp_path):
    model, _, _ = x0_25_case
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


@pytest.mark.slow
def test_int8_with_uint8_input_takes_raw_pixels(x0_25_case, tmp_path):
    model, _, _ = x0_25_case
    report = export_litert(model, tmp_path / "u8.tflite", quantize="int8",
                           calibration=IMAGES_DIR, uint8_input=True)
    assert report.input_dtype == "uint8"
    scale, zero_point = report.input_quantization  # what raw frames must be mapped with
    assert scale > 0 and 0 <= zero_point <= 255 and "pixels = (q - " in report.summary()
    runtime = Runtime(report.path)
    assert runtime.input_dtype == np.uint8 and runtime.input_quantization == (scale, zero_point)
    # The uint8 -> int8 QUANTIZE at the input is the only op outside XNNPACK.
    assert report.audit.partitions == 1
    assert [op[0] for op in report.audit.undelegated] == ["QUANTIZE"]


def test_export_rejects_bad_arguments(x0_25_case, tmp_path):
    model, _, _ = x0_25_case
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


def test_unwritable_destinations_fail_before_any_conversion(x0_25_case, tmp_path, monkeypatch):
    model, _, _ = x0_25_case

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before checking the destination")

    monkeypatch.setattr(keras.Model, "export", no_conversion)
    monkeypatch.setattr(onnx_export, "convert", no_conversion)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder.onnx").mkdir()
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export_litert(model, tmp_path / "a_file" / "m.tflite")
    with pytest.raises(ValueError, match="it is a folder"):
        export_onnx(model, tmp_path / "a_folder.onnx")
    # Root (as these tests may run) writes through chmod, so stand in for a
    # read-only folder / file: this shows the check consults the permissions
    # before converting, not that the OS would refuse the write.
    locked_folder, open_folder = tmp_path / "locked", tmp_path / "open"
    locked_folder.mkdir(), open_folder.mkdir()
    locked_file = open_folder / "locked.onnx"
    locked_file.write_text("")
    locked = {str(locked_folder), str(locked_file)}
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) not in locked and access(p, mode))
    with pytest.raises(ValueError, match=r"folder .*locked' is not writable") as error:
        export_litert(model, locked_folder / "m.tflite")
    assert "\n" not in str(error.value) and "Cannot write the export to" in str(error.value)
    with pytest.raises(ValueError, match="file exists and is not writable"):
        export_onnx(model, locked_file)
    assert check_output_path(open_folder / "new.onnx", ".onnx").endswith("new.onnx")


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


@pytest.mark.slow
def test_strict_export_raises_after_writing(x0_25_case, tmp_path, monkeypatch):
    model, _, _ = x0_25_case
    monkeypatch.setattr("keras_lcnet.deploy.verify.FLOAT32_TOLERANCE", 0.0)
    path = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="failed verification"):
        export_onnx(model, path)
    assert path.exists()
    assert not export_onnx(model, path, strict=False).ok


@pytest.fixture(scope="module")
def random_model():
    """Fresh weights: batch norm (mean 0, variance 1) shrinks every activation to ~0,
    so every output is 0.1 whatever the input."""
    return PPLCNet(scale=0.25, weights=None, classes=10)


@pytest.mark.slow
def test_cli_export_of_random_weights_is_verified_on_a_twin(tmp_path, capsys):
    path = tmp_path / "random.tflite"
    assert main(["export", "--variant", "x0_25", "--weights", "none", "--classes", "10",
                 "--output", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("outputs ignore its input" in line for line in lines)
    assert any(line.startswith("  twin vs Keras") for line in lines)
    assert lines[-1] == "  verification OK (on the BN-calibrated twin)"


@pytest.mark.slow
def test_random_weights_onnx_export_is_verified_on_a_twin(random_model, tmp_path):
    pixels = np.random.default_rng(2).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    before = random_model.predict_on_batch(pixels)
    report = export_onnx(random_model, tmp_path / "random.onnx")
    assert not report.agreement.informative  # the file's own comparison proves nothing
    assert report.twin is not None and report.twin.informative
    assert report.twin.max_relative_difference <= 1e-4 and report.ok and not report.weak
    assert "verification OK (on the BN-calibrated twin)" in report.summary()
    # Calibrating the twin left the model itself alone.
    np.testing.assert_array_equal(random_model.predict_on_batch(pixels), before)


@pytest.mark.slow
def test_a_wrong_graph_of_random_weights_fails_verification(random_model, tmp_path,
                                                            monkeypatch):
    export = keras.Model.export

    def wrong_graph(self, filepath, **kwargs):
        """A converter bug: the first convolution's kernel comes out 1.5x too large."""
        broken = keras.models.clone_model(self)
        broken.set_weights(self.get_weights())
        conv = next(x for x in broken.layers if isinstance(x, keras.layers.Conv2D))
        conv.kernel.assign(conv.kernel * 1.5)
        export(broken, filepath, **kwargs)

    monkeypatch.setattr(keras.Model, "export", wrong_graph)
    # The wrong graph still outputs the constant 0.1: only the twin can tell.
    with pytest.raises(ExportError, match="BN-calibrated twin: max relative difference"):
        export_litert(random_model, tmp_path / "wrong.tflite")


def test_a_check_that_cannot_fail_is_reported_weak_not_ok(tmp_path):
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones")(pooled)
    constant = keras.Model(inputs, outputs)  # no batch norm: no twin can make it informative
    report = export_litert(constant, tmp_path / "constant.tflite")
    assert report.weak and report.ok  # nothing failed, but nothing could have
    summary = report.summary()
    assert "WEAK: " in summary and "cannot detect a wrong graph" in summary
    assert "verification OK" not in summary


def test_one_verification_input_is_enough_when_outputs_depend_on_it(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x)))
    image = np.random.default_rng(3).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    report = export_onnx(model, tmp_path / "one.onnx", verification=image)
    # One input cannot show a spread; a random-pixel probe in Keras does.
    assert report.agreement.samples == 1 and report.agreement.informative
    assert report.twin is None and "verification OK" in report.summary()


@pytest.mark.slow
def test_cli_export_litert_and_onnx(tmp_path, capsys):
    tflite, onnx_path = tmp_path / "x.tflite", tmp_path / "x.onnx"
    args = ["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8"]
    assert main([*args, "--output", str(tflite)]) == 0
    out = capsys.readouterr().out
    assert "LiteRT float32" in out and "verification OK" in out and "softmax scores" in out
    assert main([*args, "--output", str(onnx_path), "--nchw-input", "--opset", "18"]) == 0
    out = capsys.readouterr().out
    assert "opset 18" in out and "Transpose" not in out and "verification OK" in out


@pytest.mark.slow
def test_cli_export_int8_outputs_logits(tmp_path, capsys):
    path = tmp_path / "int8.tflite"
    # Not random weights: their vanishing activations get int8 scales XNNPACK rejects.
    assert main(["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8",
                 "--output", str(path), "--quantize", "int8", "--calibration-dir",
                 str(IMAGES_DIR), "--image-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "logits" in out and "LiteRT int8" in out and "[1, 128, 128, 3]" in out
    assert "HARD_SWISH" not in audit_litert(path).ops  # the XNNPACK-friendly h-swish


@pytest.mark.slow
def test_cli_export_int8_native_hard_swish(tmp_path, capsys):
    path = tmp_path / "native.tflite"
    assert main(["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8",
                 "--output", str(path), "--quantize", "int8", "--calibration-dir",
                 str(IMAGES_DIR), "--image-size", "64", "--int8-hard-swish", "native"]) == 0
    assert "HARD_SWISH" in audit_litert(path).ops


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--output", "m.pb"], "Cannot tell the format"),
        (["--output", "m.onnx", "--quantize", "int8"], "apply to LiteRT"),
        (["--output", "m.tflite", "--nchw-input"], "apply to ONNX"),
        (["--output", "m.tflite", "--quantize", "int8"], "needs --calibration-dir"),
        (["--output", "m.tflite", "--int8-hard-swish", "native"], "applies to LiteRT int8"),
        (["--output", "m.xml", "--int8-hard-swish", "native"], "applies to LiteRT int8"),
        pytest.param(["--output", "m.onnx"], "failed verification", marks=pytest.mark.slow),
    ],
)
def test_cli_export_errors_exit_1(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("keras_lcnet.deploy.verify.FLOAT32_TOLERANCE", -1.0)  # nothing passes
    assert main(["export", "--variant", "x0_25", "--weights", "none", *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("keras-lcnet: error:")


@pytest.mark.slow
def test_example_smoke_run():
    result = subprocess.run(
        [sys.executable, "examples/export_litert.py", "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=IMAGES_DIR.parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verification OK" in result.stdout and "median" in result.stdout
