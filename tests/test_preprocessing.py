"""preprocess_input, decode_predictions and load_image (PaddleClas' eval protocol)."""

from __future__ import annotations

import pathlib

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

import keras_lcnet

IMAGES = sorted((pathlib.Path(__file__).parent.parent / "examples" / "images").glob("*.jpg"))


def _paddleclas_eval_with_opencv(path) -> np.ndarray:
    """PaddleClas' DecodeImage/ResizeImage/CropImage as its configs run them (cv2)."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    percent = 256 / min(h, w)
    size = (round(w * percent), round(h * percent))
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    top, left = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    return img[top : top + 224, left : left + 224].astype(np.float32)


@pytest.fixture(params=["bundled", "tall_odd", "small_upscaled"])
def image_path(request, tmp_path):
    if request.param == "bundled":
        return IMAGES[0]
    rng = np.random.RandomState(0)
    shape = (517, 301, 3) if request.param == "tall_odd" else (120, 173, 3)
    base = rng.uniform(0, 255, (shape[0] // 8, shape[1] // 8, 3)).astype(np.uint8)
    img = Image.fromarray(base).resize((shape[1], shape[0]), Image.BICUBIC)
    path = tmp_path / f"{request.param}.png"
    img.save(path)
    return path


def test_load_image_matches_opencv_reference(image_path):
    ours = keras_lcnet.load_image(image_path)
    assert ours.shape == (1, 224, 224, 3) and ours.dtype == np.float32
    reference = _paddleclas_eval_with_opencv(image_path)
    diff = np.abs(ours[0] - reference)
    # OpenCV interpolates 8-bit images in fixed point and truncates a little;
    # we round the exact bilinear value. Seen: 5-13% of pixels one level apart.
    assert diff.max() <= 1.0
    assert diff.mean() < 0.2


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        keras_lcnet.load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read"):
        keras_lcnet.load_image(bad)
    with pytest.raises(ValueError, match="size"):
        keras_lcnet.load_image(IMAGES[0], size=300)


def test_load_image_channels_first_and_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((300, 260), 77, np.uint8)).save(path)
    x = keras_lcnet.load_image(path, data_format="channels_first")
    assert x.shape == (1, 3, 224, 224)
    assert np.all(x == 77)


def test_preprocess_input_is_the_identity_of_the_input_contract():
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert keras_lcnet.preprocess_input(x) is x
    # ...because the model normalizes itself: both routes give the same output.
    with_layer = keras_lcnet.PPLCNet_x0_25(weights=None, classes=5, classifier_activation=None)
    without = keras_lcnet.PPLCNet_x0_25(
        weights=None, classes=5, classifier_activation=None, include_preprocessing=False
    )
    without.set_weights(with_layer.get_weights())
    normalized = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")
    np.testing.assert_allclose(
        with_layer.predict(x, verbose=0),
        without.predict(normalized, verbose=0),
        rtol=1e-4,
        atol=1e-5,
    )


def test_decode_predictions():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [281, 285, 7]] = [0.7, 0.2, 0.1]
    preds[1, 504] = 1.0
    decoded = keras_lcnet.decode_predictions(keras.ops.convert_to_tensor(preds), top=3)
    assert [d[:2] for d in decoded[0]] == [
        ("n02123045", "tabby"),
        ("n02124075", "Egyptian_cat"),
        ("n01514668", "cock"),
    ]
    assert decoded[0][0][2] == pytest.approx(0.7)
    assert decoded[1][0][:2] == ("n03063599", "coffee_mug")
    assert len(keras_lcnet.decode_predictions(preds)[1]) == 5


@pytest.mark.parametrize("shape", [(1000,), (2, 10), (1, 1000, 1)])
def test_decode_predictions_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r"\(samples, 1000\)"):
        keras_lcnet.decode_predictions(np.zeros(shape))


def test_class_index_is_the_imagenet_order():
    from keras_lcnet.decode import _class_index

    index = _class_index()
    wnids = [index[str(i)][0] for i in range(1000)]
    assert len(index) == 1000
    assert wnids == sorted(set(wnids))
