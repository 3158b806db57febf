"""Backbone use: stage features, PaddleClas construction options, freezing."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from helpers import FIXTURES, load_case, run_python

import keras_lcnet
from keras_lcnet.architecture import STAGES, STEM, make_divisible
from keras_lcnet.model import _build_features, stage_output_layer
from keras_lcnet.presets import VARIANTS, InputContract

STAGE_BASE_CHANNELS = {"blocks2": 32, "blocks3": 64, "blocks4": 128, "blocks5": 256, "blocks6": 512}
STAGE_STRIDES = {"blocks2": 2, "blocks3": 4, "blocks4": 8, "blocks5": 16, "blocks6": 32}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stage_shapes_per_width(variant):
    scale = VARIANTS[variant]
    base = keras_lcnet.PPLCNet(scale=scale, weights=None, include_top=False)
    features = keras_lcnet.feature_extractor(base)
    x = np.zeros((1, 224, 320, 3), np.float32)
    maps = features(x)
    assert list(maps) == list(STAGE_STRIDES)
    for stage, fmap in maps.items():
        stride = STAGE_STRIDES[stage]
        assert tuple(fmap.shape) == (
            1,
            224 // stride,
            320 // stride,
            make_divisible(STAGE_BASE_CHANNELS[stage] * scale),
        )


def test_builder_stage_outputs_are_the_named_stage_output_layers():
    # feature_extractor and freeze_backbone find stages by these names only.
    inputs = keras.Input((64, 64, 3))
    features = _build_features(inputs, 0.25, [(2, 2)] * 5, contract=InputContract())
    assert list(features) == [STEM, *STAGES]
    model = keras.Model(inputs, features)
    for stage, tensor in features.items():
        assert model.get_layer(stage_output_layer(stage)).output is tensor, stage


def test_features_share_weights_and_match_the_backbone():
    path = str(FIXTURES / "pplcnet_x0_35.pdparams")
    base = keras_lcnet.PPLCNet(scale=0.35, weights=path, include_top=False)
    features = keras_lcnet.feature_extractor(base, stages=["blocks4", "blocks6"])
    assert not [w for w in features.weights if all(w is not v for v in base.weights)]
    _, arrays = load_case("pplcnet_x0_35")
    x = arrays["pixels_1"].astype("float32")  # 161x227: odd, non-square
    maps = features.predict(x, verbose=0)
    assert sorted(maps) == ["blocks4", "blocks6"]
    np.testing.assert_allclose(maps["blocks6"], base.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert maps["blocks4"].shape == (1, 21, 29, 48)


def test_feature_extractor_errors():
    base = keras_lcnet.PPLCNet_x0_25(weights=None, include_top=False)
    with pytest.raises(ValueError, match="choose from"):
        keras_lcnet.feature_extractor(base, stages=["blocks7"])
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=re.escape("built by keras_lcnet.PPLCNet")):
        keras_lcnet.feature_extractor(other)


def test_text_line_stride_list_shapes():
    config, _ = load_case("pplcnet_x0_25_textline")
    model = keras_lcnet.PPLCNet(
        scale=0.25,
        weights=None,
        include_top=False,
        stride_list=config["stride_list"],
        input_shape=(80, 160, 3),
    )
    maps = keras_lcnet.feature_extractor(model)(np.zeros((1, 80, 160, 3), np.float32))
    # [2, 1] strides halve the height only, with symmetric padding as in Paddle.
    assert {k: tuple(v.shape[1:3]) for k, v in maps.items()} == {
        "blocks2": (40, 80),
        "blocks3": (20, 80),
        "blocks4": (10, 80),
        "blocks5": (5, 80),
        "blocks6": (3, 80),
    }


def test_class_expand_and_no_last_conv():
    model = keras_lcnet.PPLCNet(scale=0.5, weights=None, class_expand=640, classes=3)
    assert model.get_layer("last_conv").filters == 640
    plain = keras_lcnet.PPLCNet(scale=0.5, weights=None, use_last_conv=False, classes=3)
    names = {layer.name for layer in plain.layers}
    assert "last_conv" not in names and "dropout" not in names
    assert plain.get_layer("fc").kernel.shape == (256, 3)


@pytest.mark.parametrize(
    "up_to, first_trainable", [("conv1", "blocks2_0_dw_conv"), ("blocks5", "blocks6_0_dw_conv")]
)
def test_freeze_backbone_up_to_a_stage(up_to, first_trainable):
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=3)
    keras_lcnet.freeze_backbone(model, up_to=up_to)
    trainable = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert trainable[0] == first_trainable
    assert not any(
        isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in trainable
    )
    assert "fc" in trainable


@pytest.mark.slow
def test_frozen_layers_and_bn_statistics_do_not_move_in_fit():
    keras.utils.set_random_seed(0)
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=3, input_shape=(64, 64, 3))
    keras_lcnet.freeze_backbone(model, up_to="blocks4")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    frozen = {
        v.path: v.numpy().copy()
        for v in model.weights
        if v.path.startswith(("conv1", "blocks4")) or "moving" in v.path
    }
    trainable = {v.path: v.numpy().copy() for v in model.trainable_weights}
    x = np.random.RandomState(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=2, verbose=0)
    for v in model.weights:
        if v.path in frozen:
            np.testing.assert_array_equal(v.numpy(), frozen[v.path], err_msg=v.path)
    assert any(not np.array_equal(v.numpy(), trainable[v.path]) for v in model.trainable_weights)


def test_freeze_backbone_rejects_unknown_stage():
    model = keras_lcnet.PPLCNet_x0_25(weights=None, include_top=False)
    with pytest.raises(ValueError, match="choose from"):
        keras_lcnet.freeze_backbone(model, up_to="head")


@pytest.mark.parametrize("kind", ["mobilenet", "sequential", "wrapped"])
def test_freeze_backbone_refuses_other_models_and_freezes_nothing(kind):
    if kind == "mobilenet":
        model = keras.applications.MobileNetV3Small(weights=None, input_shape=(64, 64, 3))
    elif kind == "sequential":
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.BatchNormalization()])
    else:  # the backbone nested in a bigger model: its layers are not the model's
        backbone = keras_lcnet.PPLCNet_x0_25(weights=None, include_top=False, pooling="avg")
        inputs = keras.Input((64, 64, 3))
        model = keras.Model(inputs, keras.layers.Dense(2)(backbone(inputs)))
    before = [v.path for v in model.trainable_weights]
    assert before
    with pytest.raises(ValueError, match=re.escape("built by keras_lcnet.PPLCNet")) as info:
        keras_lcnet.freeze_backbone(model)
    assert "\n" not in str(info.value)
    assert [v.path for v in model.trainable_weights] == before


def test_freeze_backbone_accepts_a_feature_extractor():
    base = keras_lcnet.PPLCNet_x0_25(weights=None, include_top=False)
    features = keras_lcnet.feature_extractor(base)
    keras_lcnet.freeze_backbone(features, up_to="blocks3")
    assert not features.get_layer("blocks3_1_pw_conv").trainable
    assert features.get_layer("blocks4_0_dw_conv").trainable


@pytest.mark.slow
def test_feature_extraction_example_smoke():
    proc = run_python(
        "import runpy, sys; sys.argv = ['feature_extraction.py', '--smoke'];"
        "runpy.run_path('examples/feature_extraction.py', run_name='__main__')"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "blocks6: (1, 2, 2, 128)  stride 32" in proc.stdout
