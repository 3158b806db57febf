"""OpenVINO IR export: parity with Keras and PaddleClas, precisions, the audit, Runtime, CLI."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR, relative_error

from keras_lcnet.cli import main
from keras_lcnet.deploy import export_openvino
from keras_lcnet.deploy import runtime as runtime_module
from keras_lcnet.deploy.runtime import Runtime, openvino_supports_bf16

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

pytestmark = pytest.mark.export

CHECKPOINT = FIXTURES / "pplcnet_x0_25.pdparams"
needs_bf16 = pytest.mark.skipif(
    not openvino_supports_bf16(), reason="this CPU has no bfloat16 (AVX512_BF16 / AMX)")


@pytest.fixture(scope="module")
def openvino_f32(x0_25_case, tmp_path_factory):
    model, pixels, _ = x0_25_case
    path = tmp_path_factory.mktemp("openvino") / "x0_25.xml"
    return export_openvino(model, path, verification=pixels)


@pytest.mark.slow
def test_f32_matches_keras_and_paddle(x0_25_case, openvino_f32):
    _, pixels, paddle_logits = x0_25_case
    assert openvino_f32.ok, openvino_f32.summary()
    assert openvino_f32.agreement.max_relative_difference <= 1e-4
    assert relative_error(Runtime(openvino_f32.path).predict(pixels), paddle_logits) <= 1e-4
    # A plain OpenVINO user gets the same file at the same precision with the f32 hint.
    compiled = ov.Core().compile_model(openvino_f32.path, "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    outputs = np.concatenate([compiled(image[None])[0] for image in pixels])
    assert relative_error(outputs, paddle_logits) <= 1e-4


@pytest.mark.slow
def test_f32_graph_is_static_folded_and_native(openvino_f32):
    audit = openvino_f32.audit
    assert audit.ops["Transpose"] == 1  # the NHWC input's layout change only
    assert audit.ops["HSwish"] == 28 and audit.ops["HSigmoid"] == 2  # x0_25's, all native
    assert not {"BatchNormInference", "MVN", "Clamp"} & set(audit.ops)
    # Convolutions run in f32 even where OpenVINO's CPU default is bf16.
    assert audit.conv_precisions == {"f32": 27} and audit.pooled_conv_precisions == {"f32": 5}
    runtime = Runtime(openvino_f32.path)
    assert runtime.input_shape == (1, 224, 224, 3) and runtime.layout == "NHWC"
    assert runtime.runtime == "OpenVINO (CPU, f32)"
    assert "OpenVINO float32" in openvino_f32.summary()
    # The weights next to the IR, and no staging folder left behind.
    folder = pathlib.Path(openvino_f32.path).parent
    assert sorted(p.name for p in folder.iterdir()) == ["x0_25.bin", "x0_25.xml"]


def test_audit_flags_a_graph_that_runs_in_the_wrong_precision():
    from keras_lcnet.deploy.audit import OpenVINOAudit

    ops = {"Transpose": 1, "HSwish": 2, "Convolution": 2}
    assert not OpenVINOAudit(ops, "f32", {"f32": 2}).failures
    silently_bf16 = OpenVINOAudit(ops, "f32", {"bf16": 2}).failures
    assert silently_bf16 == ["convolutions computed in {'bf16': 2}, expected ['f32'] for a "
                             "f32 IR"]
    # int8: SE convolutions of pooled inputs may stay float, feature-map ones may not.
    quantized = {**ops, "FakeQuantize": 4}
    assert not OpenVINOAudit(quantized, "int8", {"u8": 2}, {"f32": 2}).failures
    assert OpenVINOAudit(quantized, "int8", {"u8": 1, "f32": 1}).failures
    unfolded = OpenVINOAudit({**ops, "MVN": 3, "Transpose": 5, "Clamp": 2}, "f32", {"f32": 2},
                             decomposed_activations=2)
    assert len(unfolded.failures) == 3
    assert "nothing was quantized" in OpenVINOAudit(ops, "int8", {"u8": 2}).failures[0]


def test_audit_tells_relu6_from_a_decomposed_hswish(tmp_path):
    """MobileNetV2's ReLU6 (after a bias Add) is a Clamp too; only relu6(x + 3) is an h-swish's."""
    import openvino as ov
    import openvino.opset13 as ops

    from keras_lcnet.deploy.audit import audit_openvino

    x = ops.parameter([1, 3, 8, 8], np.float32)
    conv = ops.convolution(x, ops.constant(np.ones((4, 3, 1, 1), np.float32)), [1, 1],
                           [0, 0], [0, 0], [1, 1])
    bias = ops.add(conv, ops.constant(np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1)))
    relu6 = ops.clamp(bias, 0.0, 6.0)  # a folded batch norm's bias, then ReLU6
    shifted = ops.add(relu6, ops.constant(np.float32(3.0)))
    gate = ops.clamp(shifted, 0.0, 6.0)  # relu6(x + 3), left unfused
    ov.save_model(ov.Model([ops.multiply(relu6, gate)], [x]), tmp_path / "m.xml",
                  compress_to_fp16=False)
    audit = audit_openvino(tmp_path / "m.xml")
    assert audit.ops["Clamp"] == 2 and audit.decomposed_activations == 1
    assert len([f for f in audit.failures if "Clamp" in f]) == 1
    ov.save_model(ov.Model([relu6], [x]), tmp_path / "relu6.xml", compress_to_fp16=False)
    assert not audit_openvino(tmp_path / "relu6.xml").failures


@pytest.mark.slow
@needs_bf16
def test_bf16_runs_bf16_and_reports_agreement(x0_25_case, tmp_path):
    model, pixels, _ = x0_25_case
    report = export_openvino(model, tmp_path / "bf16.xml", precision="bf16",
                             verification=pixels)
    assert report.quantize == "bf16" and report.tolerance is None
    assert report.audit.conv_precisions == {"bf16": 27}
    assert report.audit.pooled_conv_precisions == {"bf16": 5}
    # Reported, not limited: the fixture's random (BN-calibrated) weights are far
    # more sensitive to bf16 rounding than trained ones.
    assert 0.0 <= report.agreement.top1_agreement <= 1.0
    assert -1.0 <= report.agreement.cosine_similarity <= 1.0 + 1e-6
    assert report.agreement.max_relative_difference > 0  # not the f32 graph
    assert Runtime(report.path).runtime == "OpenVINO (CPU, bf16)"


def _tiny_ir(path: pathlib.Path, precision: str) -> pathlib.Path:
    """A one-op IR carrying `precision` where export_openvino stores it."""
    from openvino import opset13 as ops

    images = ops.parameter([1, 8, 8, 3], ov.Type.f32, name="images")
    model = ov.Model([ops.relu(images)], [images])
    model.set_rt_info(precision, list(runtime_module.OPENVINO_PRECISION_KEY))
    ov.save_model(model, path)
    return path


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    """OpenVINO reports a CPU without bfloat16 arithmetic."""
    def capabilities(self, device, name):
        return ["FP32", "INT8"] if name == "OPTIMIZATION_CAPABILITIES" else original(
            self, device, name)

    original = ov.Core.get_property
    monkeypatch.setattr(ov.Core, "get_property", capabilities)


def test_bf16_is_refused_on_a_cpu_without_it(x0_25_case, tmp_path, no_bf16_cpu):
    assert not openvino_supports_bf16()
    with pytest.raises(ValueError, match=r"bf16 needs a CPU with AVX512_BF16 or AMX"):
        export_openvino(x0_25_case[0], tmp_path / "bf16.xml", precision="bf16")
    assert not list(tmp_path.iterdir())


def test_runtime_refuses_a_bf16_ir_on_a_cpu_without_it(tmp_path, no_bf16_cpu):
    path = _tiny_ir(tmp_path / "bf16.xml", "bf16")
    with pytest.raises(ValueError, match=r"^OpenVINO bf16 needs a CPU") as error:
        Runtime(path)
    assert "\n" not in str(error.value)
    assert main(["bench", str(path), "--runs", "1"]) == 1


def test_bf16_detection_agrees_with_the_cpu_flags():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU flags from")
    flags = set(cpuinfo.read_text().split())
    assert openvino_supports_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.slow
def test_int8_is_quantized_and_reports_agreement(x0_25_case, tmp_path):
    model, _, _ = x0_25_case
    report = export_openvino(model, tmp_path / "int8.xml", precision="int8",
                             calibration=IMAGES_DIR, image_size=128, strict=False)
    assert report.ok, report.summary()
    assert report.quantize == "int8" and report.tolerance is None
    agreement = report.agreement
    assert agreement.samples == 3 and agreement.inputs == "calibration inputs"
    assert 0.0 <= agreement.top1_agreement <= 1.0
    assert -1.0 <= agreement.cosine_similarity <= 1.0 + 1e-6
    assert report.audit.ops["FakeQuantize"] > 0
    assert set(report.audit.conv_precisions) <= {"u8", "i8"}  # every feature-map conv
    assert report.input_shape == (1, 128, 128, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "fp16"}, "`precision` must be one of"),
        ({"precision": "int8"}, "needs `calibration`"),
        ({"path": "model.onnx"}, "must end with '.xml'"),
    ],
)
def test_bad_arguments_raise_one_line(x0_25_case, tmp_path, kwargs, message):
    kwargs = {"path": tmp_path / "m.xml", **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        export_openvino(x0_25_case[0], **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_failed_write_leaves_nothing(x0_25_case, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ov, "save_model", fail)
    with pytest.raises(OSError, match="disk full"):
        export_openvino(x0_25_case[0], tmp_path / "m.xml")
    assert not list(tmp_path.iterdir())


def test_runtime_refuses_bad_ir_files_in_one_line(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<net name='broken'")
    with pytest.raises(ValueError, match=r"Cannot open .*bad\.xml.* with OpenVINO") as error:
        Runtime(path)
    assert "\n" not in str(error.value)


def test_runtime_refuses_an_unknown_stored_precision(tmp_path):
    with pytest.raises(ValueError, match="Unknown keras_lcnet precision 'fp8'"):
        Runtime(_tiny_ir(tmp_path / "odd.xml", "fp8"))


def test_runtime_runs_a_tiny_ir_in_f32(tmp_path):
    runtime = Runtime(_tiny_ir(tmp_path / "tiny.xml", "f32"), num_threads=1)
    assert runtime.input_shape == (1, 8, 8, 3) and runtime.runtime == "OpenVINO (CPU, f32)"
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(runtime.predict(images), np.maximum(images, 0))


@pytest.mark.slow
def test_cli_export_and_bench_openvino(tmp_path, capsys):
    path = tmp_path / "x.xml"
    assert main(["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8",
                 "--output", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO float32" in out and "verification OK" in out and "convolutions in f32 x" in out
    assert main(["bench", str(path), "--threads", "2", "--runs", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_threads"] == 2 and data["runs"] == 3
    assert data["runtime"].startswith("OpenVINO")


@pytest.mark.slow
def test_cli_export_openvino_int8(tmp_path, capsys):
    path = tmp_path / "int8.xml"
    assert main(["export", "--variant", "x0_25", "--weights", str(CHECKPOINT), "--classes", "8",
                 "--output", str(path), "--precision", "int8", "--calibration-dir",
                 str(IMAGES_DIR), "--image-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO int8" in out and "[1, 128, 128, 3]" in out and "FakeQuantize" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--output", "m.xml", "--quantize", "int8"], "not --quantize"),
        (["--output", "m.tflite", "--precision", "bf16"], "--precision applies to OpenVINO"),
        (["--output", "m.xml", "--precision", "int8"], "--precision int8 needs --calibration-dir"),
        (["--output", "m.xml", "--nchw-input"], "apply to ONNX"),
        (["--format", "openvino", "--output", "m.onnx"], "written to a *.xml file"),
    ],
)
def test_cli_export_openvino_errors_exit_1(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--variant", "x0_25", "--weights", "none", *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("keras-lcnet: error:")
    assert not list(tmp_path.iterdir())


def test_runtime_rejects_unsupported_input_types_in_one_line(tmp_path):
    from openvino import opset13 as ops

    onnx = pytest.importorskip("onnx")
    images = ops.parameter([1, 8, 8, 3], ov.Type.i32, name="images")
    ov.save_model(ov.Model([ops.relu(images)], [images]), tmp_path / "int32.xml")
    with pytest.raises(ValueError, match=r"takes i32 input; supported: \['f32'\]"):
        Runtime(tmp_path / "int32.xml")
    # The same check for ONNX (float64 input), now shared by both runtimes.
    value = onnx.helper.make_tensor_value_info("images", onnx.TensorProto.DOUBLE, [1, 8, 8, 3])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["images"], ["outputs"])], "double", [value],
        [onnx.helper.make_tensor_value_info("outputs", onnx.TensorProto.DOUBLE, [1, 8, 8, 3])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              tmp_path / "double.onnx")
    with pytest.raises(ValueError, match=r"takes tensor\(double\) input; supported: "):
        Runtime(tmp_path / "double.onnx")


def _hswish_ranges(quantized) -> list[tuple[float, float]]:
    """(input_low, input_high) of every FakeQuantize on an h-swish output."""
    ranges = []
    for op in quantized.get_ordered_ops():
        source = op.input_value(0).get_node() if op.get_type_name() == "FakeQuantize" else None
        if source is not None and source.get_type_name() == "HSwish":
            low, high = (op.input_value(i).get_node().get_data().ravel() for i in (1, 2))
            ranges += zip(low.tolist(), high.tolist(), strict=True)
    return ranges


@pytest.mark.slow
def test_int8_quantizes_hswish_outputs_asymmetrically(x0_25_case):
    # h-swish outputs lie in [-0.375, max): a symmetric signed range (low = -high * 128 / 127)
    # wastes half its levels; NNCF's MIXED preset fits [low, high] to the data instead.
    # (Informative weights: in a fresh random model the activations fade to near zero.)
    from keras_lcnet.deploy import openvino

    model = x0_25_case[0]
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    ranges = _hswish_ranges(openvino._quantize(openvino.convert(model, (1, 32, 32, 3)), images, 1))
    assert len(ranges) >= 10
    for low, high in ranges:
        # NNCF widens the range by up to one step so that zero is a level exactly.
        assert -0.375 - (high - low) / 255 <= low <= 0.0 <= high  # (some channels are dead)
    # (A range whose data is near-symmetric may still come out as -128:127 steps.)
    symmetric = [low == pytest.approx(-high * 128 / 127, rel=1e-3) for low, high in ranges]
    assert sum(symmetric) < len(ranges) / 2
