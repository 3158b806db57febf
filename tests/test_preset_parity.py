"""Parity of the x1_0 preset architectures and the channel order of PaddleClas' deploy pipeline.

The fixtures were written by tools/make_preset_fixtures.py running PaddleClas itself.
They hold no x1_0 weights (~12 MB each): the non-BN parameters are regenerated from the
seed by `seeded_paddle_weights` (the recipe the tool loaded into PaddleClas), and the
BN-calibrated BatchNorm tensors, pixels and PaddleClas' logits come from the .npz.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import (
    FIXTURES,
    load_case,
    model_kwargs,
    relative_error,
    seeded_paddle_weights,
    weights_checksum,
)

import keras_lcnet

TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|
# Across the two inputs, and between R-G-B and B-G-R, logits must move at least this much.
CLEAR_MARGIN = 0.1
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
IMAGE = FIXTURES / "channel_order.png"
# The x1_0 presets: PULC 2-class (224), image_orientation-like head without last conv,
# textline/language strides (80x160), person attribute (256x192).
CASES = ("preset_x1_0", "preset_x1_0_no_last_conv", "preset_x1_0_textline", "preset_x1_0_attribute")


def _seeded_model(name: str, tmp_path):
    """The PaddleClas reference of `name`, rebuilt through a .pdparams from seed + BN tensors."""
    config, arrays = load_case(name)
    weights = seeded_paddle_weights(config["param_shapes"], config["seed"])
    np.testing.assert_allclose(
        weights_checksum(weights),
        arrays["weights_checksum"],
        rtol=1e-6,
        err_msg="the seeded weights differ from the tool's: did NumPy's random stream change?",
    )
    shapes = config["bn_shapes"]
    offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in shapes.values()])
    for (key, shape), start, stop in zip(shapes.items(), offsets[:-1], offsets[1:], strict=True):
        weights[key] = arrays["bn_state"][start:stop].reshape(shape)
    path = tmp_path / f"{name}.pdparams"
    with open(path, "wb") as f:
        pickle.dump(weights, f, protocol=4)
    model = keras_lcnet.PPLCNet(
        weights=str(path), input_shape=(None, None, 3), **model_kwargs(config)
    )
    return model, arrays


def _normalize(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels (NHWC, [0, 255]) -> PaddleClas' network input, NHWC."""
    return ((pixels / 255.0 - MEAN) / STD).astype(np.float32)


def _deploy_tensor(contract: str) -> np.ndarray:
    """PaddleClas' deploy input for channel_order.png, as a NHWC batch of one."""
    with np.load(FIXTURES / "channel_order.npz", allow_pickle=False) as data:
        return data[contract].transpose(1, 2, 0)[None]


def _unnormalize(tensor: np.ndarray) -> np.ndarray:
    """PaddleClas' network input (NHWC) -> the RGB pixels it came from, float in [0, 255]."""
    return (tensor * STD + MEAN) * 255.0


def _red_blue_swapped(tensor: np.ndarray) -> np.ndarray:
    """The deploy input of the same image read as B-G-R (no cv2 BGR -> RGB flip)."""
    return _normalize(_unnormalize(tensor)[..., ::-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_seeded_x1_0_logits_match_paddleclas(name, tmp_path):
    model, arrays = _seeded_model(name, tmp_path)
    expected = [arrays["logits_0"], arrays["logits_1"]]
    # BN-calibrated: the reference logits depend on the input, so parity means something.
    assert relative_error(expected[1], expected[0]) > CLEAR_MARGIN
    for i in (0, 1):
        actual = model.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0)
        assert relative_error(actual, expected[i]) <= TOLERANCE, f"input {i}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "contract"),
    [("preset_x1_0_no_last_conv", "resize_short_crop"), ("preset_x1_0_textline", "direct_resize")],
)
def test_channel_order_changes_the_logits(name, contract, tmp_path):
    # PaddleClas' own deploy tensor gives its logits; the same image in B-G-R order must not.
    model, arrays = _seeded_model(name, tmp_path)
    pixels = _unnormalize(_deploy_tensor(contract))
    expected = arrays["deploy_logits"]
    assert relative_error(model.predict(pixels, verbose=0), expected) <= TOLERANCE
    swapped = model.predict(pixels[..., ::-1], verbose=0)
    assert relative_error(swapped, expected) > CLEAR_MARGIN


def test_load_image_gives_paddleclas_deploy_input_resize_short_crop():
    reference = _deploy_tensor("resize_short_crop")
    ours = _normalize(keras_lcnet.load_image(IMAGE, data_format="channels_last"))
    # cv2's fixed-point bilinear vs our exact rounding: at most one level of 255 apart,
    # as tests/test_preprocessing.py allows (seen here: 11% of the values).
    level = np.abs(ours - reference) * STD * 255.0
    assert level.max() <= 1.0 + 1e-3
    assert level.mean() < 0.2
    # The image is colourful: B-G-R order moves the input by tens of levels on average.
    swapped = np.abs(_red_blue_swapped(ours) - reference) * STD * 255.0
    assert swapped.mean() > 50


def test_load_image_gives_paddleclas_deploy_input_direct_resize():
    reference = _deploy_tensor("direct_resize")
    swapped = np.abs(_red_blue_swapped(reference) - reference) * STD * 255.0
    assert swapped.mean() > 50  # colourful enough, as above
    # PULC textline_orientation's contract: a direct resize to 80x160, no crop.
    pixels = keras_lcnet.load_image(IMAGE, preset="pulc_textline_orientation")
    level = np.abs(_normalize(pixels) - reference) * STD * 255.0
    assert level.max() <= 1.0 + 1e-3
    assert level.mean() < 0.2
