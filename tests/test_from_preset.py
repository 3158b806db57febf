"""from_preset, weights=<preset name>, list_presets and load_image(preset=...), offline.

The presets here are registered for each test and point at the `keras_home`
fixture's file:// mirror, which holds copies of the PaddleClas reference
checkpoints (tests/fixtures, made by tools/make_fixtures.py).
"""

from __future__ import annotations

import json
import pickle
import tracemalloc

import cv2
import numpy as np
import pytest
from helpers import (
    FIXTURES,
    load_case,
    publish,
    register_presets,
    relative_error,
    small_preset,
)
from PIL import Image

import keras_lcnet
from keras_lcnet import presets, weights
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.presets import InputContract, Preset

TEXTLINE_STRIDES = (2, (2, 1), (2, 1), (2, 1), (2, 1))
# Preset name -> the reference case its mirrored checkpoint is a copy of.
CASES = {
    "t_orientation": "pplcnet_x0_25_no_last_conv",
    "t_textline": "pplcnet_x0_25_textline",
    "t_student": "pplcnet_x0_25_no_last_conv",
    "t_bgr": "pplcnet_x0_25_no_last_conv",
}


@pytest.fixture
def task_presets(tmp_path, monkeypatch):
    """Test presets, as the registry describes PaddleX' doc_ori and textline_ori."""
    labels = tmp_path / "orientation.json"
    labels.write_text(json.dumps({"source": "test", "labels": ["0", "90", "180", "270"]}))
    no_last_conv = {"use_last_conv": False, "dropout_rate": 0.2}
    added = (
        small_preset("t_orientation", 4, labels=str(labels), architecture=no_last_conv,
                     postprocess={"top": 1}),
        small_preset("t_student", 4, labels=str(labels), architecture=no_last_conv),
        small_preset("t_textline", 2, labels=None, postprocess={"top": 1},
                     architecture={"stride_list": TEXTLINE_STRIDES, "dropout_rate": 0.2},
                     input=InputContract(size=(80, 160), resize_short=None)),
        small_preset("t_multi", 4, labels=None, task="multi_label", architecture=no_last_conv,
                     postprocess={"threshold": 0.5}),
        small_preset("t_bgr", 4, labels=None, architecture=no_last_conv,
                     input=InputContract(channel_order="BGR", mean=(0.485, 0.456, 0.406)[::-1])),
    )
    return register_presets(monkeypatch, *added)


def _mirror(tmp_path, preset: Preset, source=None) -> None:
    """Publishes a copy of the preset's reference checkpoint in the test mirror."""
    publish(tmp_path / "mirror", preset, source or FIXTURES / f"{CASES[preset.name]}.pdparams")


def _weights_of(model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy() for v in model.weights}


@pytest.mark.parametrize("name", ["t_orientation", "t_textline"])
def test_from_preset_downloads_caches_and_reproduces_paddleclas(
    keras_home, tmp_path, task_presets, name
):
    preset = task_presets[name]
    _mirror(tmp_path, preset)
    _, arrays = load_case(CASES[name])
    pixels = arrays["pixels_0"].astype("float32")
    logits = keras_lcnet.from_preset(name, classifier_activation=None)
    assert relative_error(logits.predict(pixels, verbose=0), arrays["logits_0"]) <= 1e-4
    assert logits.input_shape == (None, *preset.input.size, 3)
    cached = keras_home / "models" / preset.file_name
    converted = keras_home / "models" / f"{name}_pretrained.keras_lcnet.npz"
    assert cached.is_file() and converted.is_file()
    # Neither the mirror nor the upstream file is needed once converted.
    (tmp_path / "mirror" / preset.file_name).unlink()
    cached.unlink()
    model = keras_lcnet.from_preset(name)  # the task's own activation: softmax
    expected = np.exp(arrays["logits_0"]) / np.exp(arrays["logits_0"]).sum(-1, keepdims=True)
    assert relative_error(model.predict(pixels, verbose=0), expected) <= 1e-4


def test_student_prefixed_checkpoint_loads_like_the_plain_one(keras_home, tmp_path, task_presets):
    plain = FIXTURES / "pplcnet_x0_25_no_last_conv.pdparams"
    state = read_pdparams(plain)
    student = tmp_path / "student.pdparams"
    with open(student, "wb") as f:
        pickle.dump({f"Student.{k}": v for k, v in state.items()}, f, protocol=4)
    _mirror(tmp_path, task_presets["t_orientation"], plain)
    _mirror(tmp_path, task_presets["t_student"], student)
    reference = _weights_of(keras_lcnet.from_preset("t_orientation"))
    for model in (
        keras_lcnet.from_preset("t_student"),
        keras_lcnet.from_checkpoint(student),  # a .pdparams path, architecture read off it
        keras_lcnet.PPLCNet_x0_25(weights=str(student), classes=4, use_last_conv=False),
    ):
        loaded = _weights_of(model)
        assert loaded.keys() == reference.keys()
        assert all(np.array_equal(loaded[k], reference[k]) for k in reference)


def test_a_partly_prefixed_checkpoint_is_not_renamed(tmp_path):
    state = read_pdparams(FIXTURES / "pplcnet_x0_25_no_last_conv.pdparams")
    state = {("Student." if k.startswith("conv1") else "") + k: v for k, v in state.items()}
    path = tmp_path / "mixed.pdparams"
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)
    with pytest.raises(CheckpointError, match=r"conv1\.conv\.weight"):
        keras_lcnet.from_checkpoint(path)


def test_overrides_that_leave_the_checkpoint_alone(keras_home, tmp_path, task_presets):
    _mirror(tmp_path, task_presets["t_textline"])
    reference = _weights_of(keras_lcnet.from_preset("t_textline"))
    backbone = keras_lcnet.from_preset(
        "t_textline", include_top=False, input_shape=(None, None, 3), name="lines",
        stride_list=[2, [2, 1], [2, 1], [2, 1], [2, 1]],  # the preset's, as lists
    )
    assert backbone.name == "lines" and backbone.output_shape == (None, None, None, 128)
    loaded = _weights_of(backbone)
    assert all(np.array_equal(value, reference[path]) for path, value in loaded.items())
    random = keras_lcnet.from_preset("t_textline", weights=None)  # no download either
    assert random.output_shape == (None, 2)
    assert not np.array_equal(_weights_of(random)["fc/kernel"], reference["fc/kernel"])


@pytest.mark.parametrize(
    ("name", "override"),
    [
        ("t_orientation", {"classes": 5}),
        ("t_orientation", {"scale": 0.5}),
        ("t_orientation", {"use_last_conv": True}),
        ("t_orientation", {"class_expand": 640}),
        ("t_textline", {"stride_list": [2, 2, 2, 2, 2]}),
    ],
)
def test_overrides_that_contradict_the_checkpoint_are_refused(
    keras_home, task_presets, name, override
):
    (key,) = override
    with pytest.raises(ValueError, match=f"{key}=.* contradicts the checkpoint of preset '{name}'"
                       ) as info:
        keras_lcnet.from_preset(name, **override)
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_known_ones(task_presets):
    with pytest.raises(ValueError, match=r"Unknown preset 'nope'\. Valid presets: .*t_textline"):
        keras_lcnet.from_preset("nope")


def test_offline_error_names_preset_url_and_cache_path(keras_home, task_presets):
    preset = task_presets["t_orientation"]
    with pytest.raises(WeightsUnavailableError) as info:
        keras_lcnet.from_preset("t_orientation")
    message = str(info.value)
    assert "'t_orientation'" in message and weights.download_url(preset) in message
    assert str(keras_home / "models" / preset.file_name) in message
    assert not list((keras_home / "models").glob("*"))


def test_a_checkpoint_with_another_head_names_the_presets_it_fits(
    keras_home, tmp_path, task_presets
):
    # A 2-class text-line checkpoint where the 4-class orientation one should be.
    _mirror(tmp_path, task_presets["t_orientation"], FIXTURES / "pplcnet_x0_25_textline.pdparams")
    with pytest.raises(
        CheckpointError,
        match=r"has 2 classes, not the 4 of preset 't_orientation'; presets with 2 classes: "
        r".*\bt_textline\.",
    ) as info:
        keras_lcnet.from_preset("t_orientation")
    assert "\n" not in str(info.value)
    assert not list((keras_home / "models").glob("*.npz"))


def test_weights_preset_name_in_the_constructors(keras_home, tmp_path, task_presets):
    _mirror(tmp_path, task_presets["t_orientation"])
    reference = _weights_of(keras_lcnet.from_preset("t_orientation"))
    for model in (
        keras_lcnet.PPLCNet_x0_25(weights="t_orientation", classes=4, use_last_conv=False),
        keras_lcnet.PPLCNet(scale=0.25, weights="t_orientation", include_top=False,
                            use_last_conv=False),
    ):
        loaded = _weights_of(model)
        assert all(np.array_equal(value, reference[path]) for path, value in loaded.items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0.25, "use_last_conv": False}, "`classes` should be 4"),
        ({"scale": 0.5, "classes": 4, "use_last_conv": False},
         r"holds PPLCNet_x0_25 weights; build it with scale=0\.25"),
        ({"scale": 0.25, "classes": 4}, "needs use_last_conv=False"),
        ({"scale": 0.25, "classes": 4, "use_last_conv": False, "classifier_activation": "relu"},
         "Only `None` and `'softmax'`"),
    ],
)
def test_weights_preset_name_checks_the_architecture_before_downloading(
    keras_home, task_presets, kwargs, message
):
    with pytest.raises(ValueError, match=message) as info:
        keras_lcnet.PPLCNet(weights="t_orientation", **kwargs)
    assert "\n" not in str(info.value)


def test_a_sigmoid_preset_allows_only_sigmoid_or_logits(keras_home, task_presets):
    with pytest.raises(ValueError, match="Only `None` and `'sigmoid'`"):
        keras_lcnet.PPLCNet_x0_25(weights="t_multi", classes=4, use_last_conv=False)


def test_unknown_weights_name_mentions_presets(keras_home):
    with pytest.raises(ValueError, match=r"a preset name .*\(no such file or preset\)"):
        keras_lcnet.PPLCNet_x0_25(weights="pulc_nothing_like_this")


def test_load_weights_refuses_another_width(task_presets):
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=4, use_last_conv=False)
    with pytest.raises(ValueError, match=r"holds PPLCNet_x0_25 weights; the model has scale=0\.5"):
        weights.load_weights(model, "t_orientation", scale=0.5)


def test_bgr_presets_build_their_contract_into_the_graph(keras_home, task_presets, tmp_path):
    _mirror(tmp_path, presets.get_preset("t_bgr"))
    bgr = keras_lcnet.from_preset("t_bgr", classifier_activation=None)
    by_name = keras_lcnet.PPLCNet_x0_25(
        weights="t_bgr", classes=4, use_last_conv=False, classifier_activation=None
    )
    assert [layer.name for layer in bgr.layers][1:3] == ["reverse_channels", "normalization"]
    # The same weights and statistics built for RGB see the channels the other way round.
    contract = presets.get_preset("t_bgr").input
    rgb = keras_lcnet.PPLCNet_x0_25(
        weights=None, classes=4, use_last_conv=False, classifier_activation=None,
        input_contract=InputContract(mean=contract.mean, std=contract.std),
    )
    rgb.set_weights(bgr.get_weights())
    shape = (1, *bgr.input_shape[1:])  # the preset's input size
    pixels = np.random.default_rng(0).uniform(0, 255, shape).astype("float32")
    expected = rgb.predict(pixels[..., ::-1].copy(), verbose=0)
    for model in (bgr, by_name):
        np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, rtol=1e-5, atol=1e-5)
    plain = keras_lcnet.from_preset("t_bgr", weights=None, include_preprocessing=False)
    assert "reverse_channels" not in [layer.name for layer in plain.layers]


def test_input_contract_contradicting_the_preset_is_one_line(keras_home, task_presets):
    with pytest.raises(ValueError, match="contradicts weights='t_bgr'") as info:
        keras_lcnet.PPLCNet_x0_25(
            weights="t_bgr", classes=4, use_last_conv=False, input_contract=InputContract()
        )
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"must be a keras_lcnet\.presets\.InputContract"):
        keras_lcnet.PPLCNet_x0_25(weights=None, input_contract={"channel_order": "BGR"})


def test_list_presets(task_presets):
    everything = keras_lcnet.list_presets()
    assert everything == list(presets.PRESETS)
    assert {"PPLCNet_x1_0_imagenet", "t_textline"} <= {p.name for p in everything}
    multi = keras_lcnet.list_presets(task="multi_label")
    assert [p.name for p in multi] == [p.name for p in everything if p.task == "multi_label"]
    assert "t_multi" in [p.name for p in multi]
    with pytest.raises(ValueError, match="Unknown task 'binery'; tasks: single_label, binary"):
        keras_lcnet.list_presets(task="binery")


@pytest.fixture
def noise_image(tmp_path):
    pixels = np.random.RandomState(3).randint(0, 256, (97, 301, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    return path


def test_load_image_with_a_direct_resize_preset_matches_opencv(task_presets, tmp_path):
    # A text line: wider than tall, and a photo-like image upscaled along one axis.
    for shape in ((37, 411), (517, 301)):
        base = np.random.RandomState(sum(shape)).randint(0, 256, (9, 17, 3), dtype=np.uint8)
        path = tmp_path / f"line_{shape[0]}.png"
        Image.fromarray(base).resize(shape[::-1], Image.BICUBIC).save(path)
        ours = keras_lcnet.load_image(path, preset="t_textline")
        assert ours.shape == (1, 80, 160, 3) and ours.dtype == np.float32
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        reference = cv2.resize(rgb, (160, 80), interpolation=cv2.INTER_LINEAR)
        diff = np.abs(ours[0] - reference.astype(np.float32))
        assert diff.max() <= 1.0 and diff.mean() < 0.2


def test_load_image_with_a_crop_preset_is_the_default_transform(task_presets, noise_image):
    ours = keras_lcnet.load_image(noise_image, preset="t_orientation", data_format="channels_first")
    np.testing.assert_array_equal(
        ours, keras_lcnet.load_image(noise_image, data_format="channels_first")
    )
    with pytest.raises(ValueError, match="either `preset` or `size`"):
        keras_lcnet.load_image(noise_image, size=100, preset="t_orientation")
    with pytest.raises(ValueError, match="Unknown preset"):
        keras_lcnet.load_image(noise_image, preset="nope")


def test_load_image_direct_resize_memory_does_not_grow_with_the_image(task_presets, tmp_path):
    pixels = np.random.RandomState(0).randint(0, 256, (1, 3000, 3), dtype=np.uint8)
    path = tmp_path / "strip.png"
    Image.fromarray(pixels).save(path)
    tracemalloc.start()
    try:
        ours = keras_lcnet.load_image(path, preset="t_textline")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    # Every row of a 1-pixel-high image resizes to the same row.
    reference = cv2.resize(pixels, (160, 80), interpolation=cv2.INTER_LINEAR)
    assert np.abs(ours[0] - reference).max() <= 1.0


def test_the_presets_dropout_is_folded_into_the_classifier(keras_home, tmp_path, monkeypatch):
    # Paddle scales the head by 1 - dropout_prob at inference; the preset says which.
    preset = small_preset("t_dropout", 2, labels=None,
                          architecture={"stride_list": TEXTLINE_STRIDES, "dropout_rate": 0.1})
    register_presets(monkeypatch, preset)
    _mirror(tmp_path, preset, FIXTURES / "pplcnet_x0_25_textline.pdparams")
    model = keras_lcnet.from_preset("t_dropout")
    fc = read_pdparams(FIXTURES / "pplcnet_x0_25_textline.pdparams")["fc.weight"]
    np.testing.assert_allclose(model.get_layer("fc").kernel.numpy(), fc * 0.9, rtol=1e-6)
