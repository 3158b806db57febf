"""Architecture, keras.applications behaviour, serialization and training."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from helpers import load_case, run_python

import keras_lcnet
from keras_lcnet.architecture import make_divisible, stage_channels
from keras_lcnet.presets import VARIANTS

# Learnable parameters of PaddleClas' PPLCNet with 1000 classes (porting notes,
# counted on the reference structure); BN running statistics excluded.
PADDLECLAS_PARAMS = {
    "x0_25": 1_521_184,
    "x0_35": 1_643_090,
    "x0_5": 1_879_576,
    "x0_75": 2_357_008,
    "x1_0": 2_952_520,
    "x1_5": 4_499_832,
    "x2_0": 6_521_512,
    "x2_5": 9_017_560,
}
# Stem / blocks2..6 channels per width (porting notes).
PADDLECLAS_CHANNELS = {
    "x0_25": (8, 8, 16, 32, 64, 128),
    "x0_35": (8, 16, 24, 48, 88, 176),
    "x0_5": (8, 16, 32, 64, 128, 256),
    "x0_75": (16, 24, 48, 96, 192, 384),
    "x1_0": (16, 32, 64, 128, 256, 512),
    "x1_5": (24, 48, 96, 192, 384, 768),
    "x2_0": (32, 64, 128, 256, 512, 1024),
    "x2_5": (40, 80, 160, 320, 640, 1280),
}


def _trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_count_and_widths_match_paddleclas(variant):
    constructor = getattr(keras_lcnet, f"PPLCNet_{variant}")
    model = constructor(weights=None)
    assert model.name == f"PPLCNet_{variant}"
    assert _trainable_params(model) == PADDLECLAS_PARAMS[variant]
    assert tuple(stage_channels(VARIANTS[variant]).values()) == PADDLECLAS_CHANNELS[variant]
    assert model.get_layer("conv1").filters == PADDLECLAS_CHANNELS[variant][0]


def test_make_divisible_rounds_like_paddleclas():
    assert make_divisible(16 * 0.35) == 8
    assert make_divisible(512 * 0.35) == 176
    assert make_divisible(64 * 0.35) == 24
    assert make_divisible(3.0) == 8  # never below the divisor


def test_block_structure_and_names():
    model = keras_lcnet.PPLCNet_x1_0(weights=None)
    names = {layer.name for layer in model.layers}
    # 13 depthwise-separable blocks, SE only in blocks6, 5x5 kernels from blocks5_1.
    blocks = sorted(n.removesuffix("_dw_conv") for n in names if n.endswith("_dw_conv"))
    assert len(blocks) == 13
    assert sorted(n for n in names if n.endswith("_se")) == ["blocks6_0_se", "blocks6_1_se"]
    kernels = {b: model.get_layer(f"{b}_dw_conv").kernel_size for b in blocks}
    assert kernels["blocks5_0"] == (3, 3) and kernels["blocks5_1"] == (5, 5)
    assert kernels["blocks4_1"] == (3, 3) and kernels["blocks6_1"] == (5, 5)
    assert model.get_layer("conv1_bn").epsilon == pytest.approx(1e-5)
    assert not model.get_layer("last_conv").use_bias
    assert model.get_layer("last_conv").filters == 1280
    assert model.get_layer("dropout").rate == pytest.approx(0.2)
    # Symmetric padding ahead of every strided conv.
    assert {n for n in names if n.endswith("_pad")} == {
        "conv1_pad",
        "blocks3_0_dw_conv_pad",
        "blocks4_0_dw_conv_pad",
        "blocks5_0_dw_conv_pad",
        "blocks6_0_dw_conv_pad",
    }


@pytest.mark.parametrize("size", [(224, 224), (161, 227), (32, 32)])
def test_include_top_false_returns_stride_32_map(size):
    model = keras_lcnet.PPLCNet_x0_5(weights=None, include_top=False, input_shape=(*size, 3))
    expected = tuple(-(-s // 32) for s in size)
    assert model.output_shape == (None, *expected, make_divisible(512 * 0.5))


@pytest.mark.parametrize("pooling, layer", [("avg", "avg_pool"), ("max", "max_pool")])
def test_pooling(pooling, layer):
    model = keras_lcnet.PPLCNet_x0_25(weights=None, include_top=False, pooling=pooling)
    assert model.output_shape == (None, 128)
    assert model.layers[-1].name == layer


def test_input_tensor_and_other_channel_counts():
    inputs = keras.Input((96, 128, 5))
    model = keras_lcnet.PPLCNet_x0_25(
        weights=None, input_tensor=inputs, include_preprocessing=False, classes=7
    )
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 7)
    out = model.predict(np.random.rand(2, 96, 128, 5).astype("float32"), verbose=0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_classifier_activation_none_gives_logits():
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=3, classifier_activation=None)
    assert model.layers[-1].name == "fc"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": "imagenet21k"}, "weights"),
        ({"weights": "/no/such/file.pdparams"}, "no such file"),
        ({"weights": "imagenet", "classes": 10}, "classes"),
        ({"weights": "imagenet", "classifier_activation": "sigmoid"}, "classifier_activation"),
        ({"weights": None, "input_shape": (31, 224, 3)}, "at least 32x32"),
        ({"weights": None, "pooling": "mean", "include_top": False}, "pooling"),
        ({"weights": None, "input_shape": (224, 224, 1)}, "include_preprocessing=False"),
        ({"weights": "imagenet_ssld", "scale": 0.35}, "Published"),
        ({"weights": "imagenet", "scale": 0.6}, "Published"),
        (
            {"weights": "imagenet", "input_shape": (224, 224, 4), "include_preprocessing": False},
            "3 input channels",
        ),
        ({"weights": None, "stride_list": [2, 2, 2]}, "stride_list"),
        ({"weights": None, "stride_list": [2, [2, 0], 2, 2, 2]}, "stride_list[1]"),
        ({"weights": None, "dropout_rate": 1.0}, "dropout_rate"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
    kwargs = {"scale": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        keras_lcnet.PPLCNet(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": 224}, "(height, width, channels)"),
        ({"input_shape": (224.0, 224, 3)}, "must hold ints"),
        ({"input_shape": ("224", 224, 3)}, "must hold ints"),
        ({"input_shape": (True, 224, 3)}, "must hold ints"),
        ({"input_shape": (224, 224, None), "include_preprocessing": False}, "positive channel"),
        ({"input_shape": (224, 224, 0), "include_preprocessing": False}, "positive channel"),
        ({"scale": True}, "`scale`"),
        ({"scale": float("nan")}, "`scale`"),
        ({"scale": float("inf")}, "`scale`"),
        ({"classes": True}, "`classes`"),
        ({"dropout_rate": "0.2"}, "`dropout_rate`"),
        ({"dropout_rate": None}, "`dropout_rate`"),
        ({"dropout_rate": False}, "`dropout_rate`"),
        ({"class_expand": True}, "`class_expand`"),
        ({"class_expand": "1280"}, "`class_expand`"),
        ({"class_expand": 0}, "`class_expand`"),
    ],
)
def test_malformed_arguments_raise_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        keras_lcnet.PPLCNet(**{"weights": None, **kwargs})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": True},  # would look up (and download) the x1_0 weights
        {"input_shape": (224, 224, None), "include_preprocessing": False},
        {"input_shape": (None, None, None), "include_preprocessing": False},
        {"input_shape": (224, 224, 1), "include_preprocessing": False},
        {"input_shape": (224, 224, None)},
    ],
)
def test_pretrained_weights_refuse_malformed_arguments_before_any_download(kwargs, keras_home):
    with pytest.raises(ValueError, match=r"scale|input_shape") as info:
        keras_lcnet.PPLCNet(**{"weights": "imagenet", **kwargs})
    assert "\n" not in str(info.value)
    assert not keras_home.exists() or not any(keras_home.rglob("*.pdparams"))


def test_numpy_sizes_and_rates_are_accepted():
    model = keras_lcnet.PPLCNet_x0_25(
        weights=None, input_shape=(np.int64(64), 64, 3), dropout_rate=np.float32(0.1)
    )
    assert model.input_shape == (None, 64, 64, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride_list": [2, [2, 1], [2, 1], [2, 1], [2, 1]], "input_shape": (80, 160, 3)},
        {"use_last_conv": False},
        {"class_expand": 640, "dropout_rate": 0.1},
    ],
)
def test_named_constructor_builds_what_pplcnet_builds(kwargs):
    def configs(model):  # the input layer's automatic name differs between builds
        return [(type(layer).__name__, layer.get_config()) for layer in model.layers[1:]]

    kwargs = {"weights": None, "classes": 5, **kwargs}
    named = keras_lcnet.PPLCNet_x0_25(**kwargs)
    direct = keras_lcnet.PPLCNet(scale=0.25, **kwargs)
    assert configs(named) == configs(direct)
    assert (named.name, named.input_shape, named.output_shape) == (
        direct.name,
        direct.input_shape,
        direct.output_shape,
    )
    # The arguments took effect: not the default x0_25.
    assert configs(named) != configs(keras_lcnet.PPLCNet_x0_25(weights=None, classes=5))


def test_layers_serialize_with_full_config():
    se = keras_lcnet.SqueezeExcite(reduction=2, name="se")
    clone = keras_lcnet.SqueezeExcite.from_config(se.get_config())
    assert (clone.reduction, clone.name, clone.data_format) == (2, "se", se.data_format)
    x = np.random.rand(2, 5, 7, 8).astype("float32")
    assert se.compute_output_shape(x.shape) == x.shape
    y = keras.ops.convert_to_numpy(se(x))
    assert y.shape == x.shape
    hs = keras_lcnet.HardSwish()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(hs(np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0]))),
        [0.0, 0.0, -1 / 3, 0.0, 2 / 3, 3.0, 5.0],
        atol=1e-6,
    )
    assert keras.saving.get_registered_name(keras_lcnet.HardSwish) == "keras_lcnet>HardSwish"
    flip = keras_lcnet.ReverseChannels.from_config(keras_lcnet.ReverseChannels().get_config())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(flip(x)), x[..., ::-1])
    first = keras_lcnet.ReverseChannels(data_format="channels_first")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first(x)), x[:, ::-1])


@pytest.mark.slow
def test_keras_file_reloads_in_a_fresh_process(tmp_path):
    _, arrays = load_case("pplcnet_x0_35")
    model = keras_lcnet.PPLCNet(
        scale=0.35,
        classes=10,
        classifier_activation=None,
        weights="tests/fixtures/pplcnet_x0_35.pdparams",
    )
    path = tmp_path / "model.keras"
    model.save(path)
    expected = model.predict(arrays["pixels_0"].astype("float32"), verbose=0)
    np.save(tmp_path / "expected.npy", expected)
    np.save(tmp_path / "pixels.npy", arrays["pixels_0"].astype("float32"))
    proc = run_python(
        "import keras, numpy as np, keras_lcnet\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"y = m.predict(np.load({str(tmp_path / 'pixels.npy')!r}), verbose=0)\n"
        f"np.testing.assert_array_equal(y, np.load({str(tmp_path / 'expected.npy')!r}))\n"
        "print(type(m.get_layer('blocks6_0_se')).__name__, type(m.get_layer('act')).__name__)"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["SqueezeExcite", "HardSwish"]


def test_weights_h5_file_loads(tmp_path):
    source = keras_lcnet.PPLCNet(
        scale=0.35, classes=10, weights="tests/fixtures/pplcnet_x0_35.pdparams"
    )
    path = tmp_path / "x0_35.weights.h5"
    source.save_weights(path)
    loaded = keras_lcnet.PPLCNet_x0_35(classes=10, weights=str(path))
    x = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), source.predict(x, verbose=0))
    # Keras matches layers by name, so a backbone takes the same file.
    backbone = keras_lcnet.PPLCNet_x0_35(include_top=False, weights=str(path))
    expected = {v.path: v.numpy() for v in source.weights}
    assert all(np.array_equal(v.numpy(), expected[v.path]) for v in backbone.weights)


@pytest.mark.slow
@pytest.mark.export
def test_hard_swish_lowers_to_native_tflite_op(tmp_path):
    Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

    model = keras_lcnet.PPLCNet_x0_25(weights=None, input_shape=(64, 64, 3), classes=4)
    path = str(tmp_path / "model.tflite")
    model.export(path, format="litert", verbose=False)
    ops = {op["op_name"] for op in Interpreter(path)._get_ops_details()}
    assert "HARD_SWISH" in ops
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops)


@pytest.mark.slow
def test_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = keras_lcnet.PPLCNet_x0_25(weights=None, input_shape=(64, 64, 3), classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (12, 64, 64, 3)).astype("float32")
    y = np.arange(12) % 3
    history = model.fit(x, y, epochs=8, batch_size=12, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.8 * history[0]
