"""PP-LCNetV2 export: a branch-form model is folded, verified and matches PaddleClas.

The fixture is tools/make_v2_fixtures.py's BN-calibrated random
`PPLCNetV2(scale=0.25, depths=[2, 2, 4, 2])` with PaddleClas' own logits.
"""

from __future__ import annotations

import keras
import pytest
from helpers import FIXTURES, load_case, relative_error

import keras_lcnet
from keras_lcnet.layers import RepDepthwiseConv2D, SqueezeExcite

pytestmark = [pytest.mark.export, pytest.mark.slow]
for _module in ("ai_edge_litert", "tf2onnx", "onnxruntime", "onnx"):
    pytest.importorskip(_module)

CASE = "pplcnetv2_x0_25"
TOLERANCE = 1e-4  # the exporters' FLOAT32_TOLERANCE, against PaddleClas' logits


@pytest.fixture(scope="module")
def v2_case():
    config, arrays = load_case(CASE)
    model = keras_lcnet.PPLCNetV2(
        weights=str(FIXTURES / f"{CASE}.pdparams"), scale=config["scale"],
        depths=config["depths"], classes=config["class_num"],
        dropout_rate=config["dropout_prob"], classifier_activation=None,
    )
    return model, arrays["pixels_0"].astype("float32"), arrays["logits_0"]


def _depthwise_layers(model: keras.Model) -> int:
    """Depthwise convolutions of the folded model: one per rep block, no branches."""
    kinds = (RepDepthwiseConv2D, keras.layers.DepthwiseConv2D)
    return sum(isinstance(layer, kinds) for layer in model.layers)


def _conv_layers(model: keras.Model) -> int:
    """Convolutions of the folded model; a squeeze-and-excite block holds two."""
    kinds = (RepDepthwiseConv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2D)
    convs = sum(isinstance(layer, kinds) for layer in model.layers)
    return convs + 2 * sum(isinstance(layer, SqueezeExcite) for layer in model.layers)


def test_litert_export_of_the_branch_form_is_folded(v2_case, tmp_path):
    from keras_lcnet.deploy import export_litert
    from keras_lcnet.deploy.runtime import Runtime

    model, pixels, logits = v2_case
    report = export_litert(model, tmp_path / "v2.tflite", verification=pixels)
    assert report.ok, report.summary()
    audit = report.audit
    assert audit.partitions == 1 and not audit.undelegated and not audit.custom_ops
    assert audit.ops["DEPTHWISE_CONV_2D"] == _depthwise_layers(model)
    assert relative_error(Runtime(report.path).predict(pixels), logits) <= TOLERANCE
    assert any(not layer.deploy for layer in model.layers
               if isinstance(layer, RepDepthwiseConv2D))  # the model passed in is unchanged


def test_onnx_export_of_the_branch_form_is_folded(v2_case, tmp_path):
    from keras_lcnet.deploy import export_onnx
    from keras_lcnet.deploy.runtime import Runtime

    model, pixels, logits = v2_case
    report = export_onnx(model, tmp_path / "v2.onnx", verification=pixels)
    assert report.ok, report.summary()
    assert report.audit.ops["Conv"] == _conv_layers(model)
    assert not report.audit.ops.get("BatchNormalization")
    assert relative_error(Runtime(report.path).predict(pixels), logits) <= TOLERANCE


def test_cli_export_of_a_v2_checkpoint_is_folded_and_verified(tmp_path, capsys):
    from keras_lcnet.cli import main

    output = tmp_path / "v2.tflite"
    argv = ["export", "--weights", str(FIXTURES / f"{CASE}.pdparams"), "--logits",
            "--output", str(output)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "verification OK" in out and "1 partition(s)" in out
    model = keras_lcnet.PPLCNetV2(weights=None, scale=0.25, depths=[2, 2, 4, 2], classes=10)
    assert f"DEPTHWISE_CONV_2D x{_depthwise_layers(model)}," in out


def test_openvino_export_of_the_branch_form_is_folded(v2_case, tmp_path):
    pytest.importorskip("openvino")
    from keras_lcnet.deploy import export_openvino
    from keras_lcnet.deploy.runtime import Runtime

    model, pixels, logits = v2_case
    report = export_openvino(model, tmp_path / "v2.xml", verification=pixels)
    assert report.ok, report.summary()
    assert report.audit.ops["GroupConvolution"] == _depthwise_layers(model)
    assert relative_error(Runtime(report.path).predict(pixels), logits) <= TOLERANCE
