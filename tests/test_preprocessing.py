"""preprocess_input, decode_predictions and load_image (PaddleClas' eval protocol)."""

from __future__ import annotations

import pathlib
import struct
import tracemalloc
import zlib

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


def _assert_one_line_naming(error: Exception, path) -> None:
    assert str(path) in str(error) and "\n" not in str(error), str(error)


def _full_resize_then_crop(pixels, size, resize_short) -> np.ndarray:
    """What load_image did before it resized only the crop: the whole image, then crop."""
    tf = pytest.importorskip("tensorflow")
    height, width = pixels.shape[:2]
    percent = resize_short / min(height, width)
    new_size = (round(height * percent), round(width * percent))
    resized = tf.image.resize(pixels.astype(np.float32), new_size, "bilinear", antialias=False)
    resized = np.round(resized.numpy())
    top, left = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return resized[top : top + size, left : left + size]


@pytest.mark.parametrize(
    ("shape", "size", "resize_short"),
    [
        ((517, 301), 224, 256),  # odd, downscaled
        ((120, 173), 224, 256),  # upscaled
        ((1003, 1500), 224, 256),  # downscaled ~4x
        ((256, 300), 224, 256),  # short side already right
        ((7, 300), 224, 256),  # extreme aspect, upscaled 36x
        ((300, 3), 224, 256),  # extreme aspect, upscaled 85x
        ((517, 301), 320, 366),
        ((333, 250), 99, 99),  # no crop along the short side
        ((41, 29), 5, 7),
    ],
)
def test_load_image_equals_full_resize_then_crop(tmp_path, shape, size, resize_short):
    # Noise, not a photo: many interpolated values end in exactly .5, so any
    # difference in the float arithmetic would flip some roundings.
    pixels = np.random.RandomState(sum(shape)).randint(0, 256, (*shape, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(pixels).save(path)
    ours = keras_lcnet.load_image(path, size=size, resize_short=resize_short)
    np.testing.assert_array_equal(ours[0], _full_resize_then_crop(pixels, size, resize_short))


@pytest.mark.parametrize("shape", [(1, 1200), (2000, 1)])
def test_load_image_memory_does_not_grow_with_the_aspect_ratio(tmp_path, shape):
    # Resizing the whole 1x1200 image first made a 256x307200 float image (GBs).
    pixels = np.random.RandomState(0).randint(0, 256, (*shape, 3), dtype=np.uint8)
    path = tmp_path / "strip.png"
    Image.fromarray(pixels).save(path)
    tracemalloc.start()
    try:
        ours = keras_lcnet.load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    # A 1-pixel-thin image resizes like its 1-D profile along the long axis,
    # which tf.image.resize can do cheaply as a reference.
    tf = pytest.importorskip("tensorflow")
    long_side = round(max(shape) * 256)
    thin = (1, long_side) if shape[0] == 1 else (long_side, 1)
    profile = np.round(tf.image.resize(pixels.astype(np.float32), thin, antialias=False).numpy())
    start = (long_side - 224) // 2
    if shape[0] == 1:
        expected = np.broadcast_to(profile[:, start : start + 224], (224, 224, 3))
    else:
        expected = np.broadcast_to(profile[start : start + 224], (224, 224, 3))
    np.testing.assert_array_equal(ours[0], expected)


def _gradient16(height=300, width=260) -> np.ndarray:
    """A 16-bit diagonal gradient whose low bytes vary too."""
    return (np.add.outer(np.arange(height) * 97, np.arange(width) * 211) % 65536).astype(np.uint16)


@pytest.mark.parametrize("kind", ["grey.png", "grey.pgm", "rgb.png", "rgba.png"])
def test_16_bit_images_load_like_their_8_bit_twin_and_opencv(tmp_path, kind):
    # 16-bit grey PNGs open as Pillow mode "I;16", 16-bit PGMs as "I": both
    # used to come out white. OpenCV (PaddleClas' decoder) keeps the high byte.
    grey = _gradient16()
    channels = {"grey": [grey], "rgb": [grey, ~grey, grey[::-1]]}
    channels["rgba"] = [*channels["rgb"], np.full_like(grey, 40000)]
    name, ext = kind.split(".")
    deep = np.dstack(channels[name]).squeeze()
    path16, path8 = tmp_path / f"deep.{ext}", tmp_path / "twin.png"
    assert cv2.imwrite(str(path16), deep) and cv2.imwrite(str(path8), (deep >> 8).astype(np.uint8))
    ours = keras_lcnet.load_image(path16)
    np.testing.assert_array_equal(ours, keras_lcnet.load_image(path8))
    diff = np.abs(ours[0] - _paddleclas_eval_with_opencv(path16))
    assert diff.max() <= 1.0 and diff.mean() < 0.2


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.linspace(0, 1, 300 * 260, dtype=np.float32).reshape(300, 260), "floating-point"),
        (np.full((300, 260), 70000, np.int32), "16-bit range"),
    ],
)
def test_images_without_a_known_8_bit_scale_are_refused(tmp_path, pixels, message):
    path = tmp_path / "scientific.tif"
    Image.fromarray(pixels).save(path)
    with pytest.raises(ValueError, match=message) as info:
        keras_lcnet.load_image(path)
    _assert_one_line_naming(info.value, path)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0\0")
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_decompression_bomb_is_a_clear_value_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))  # 67 bytes claiming 10 gigapixels
    with pytest.raises(ValueError, match=r"10000000000 pixels.*PIL.Image.MAX_IMAGE_PIXELS") as info:
        keras_lcnet.load_image(path)
    _assert_one_line_naming(info.value, path)


@pytest.mark.parametrize("data_format", ["channels_lastt", "NHWC", "", "CHANNELS_FIRST"])
def test_load_image_rejects_unknown_data_format(data_format):
    with pytest.raises(ValueError, match="data_format"):
        keras_lcnet.load_image(IMAGES[0], data_format=data_format)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 224.0},
        {"size": True, "resize_short": 2},
        {"size": 0},
        {"size": -3, "resize_short": -3},
        {"size": "224"},
        {"resize_short": 300.5},
        {"resize_short": None},
        {"size": 300},  # larger than resize_short=256
    ],
)
def test_load_image_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="size") as info:
        keras_lcnet.load_image(IMAGES[0], **kwargs)
    assert "\n" not in str(info.value)


def test_load_image_accepts_numpy_integer_sizes():
    x = keras_lcnet.load_image(IMAGES[0], size=np.int64(96), resize_short=np.int32(128))
    assert x.shape == (1, 96, 96, 3)


@pytest.mark.parametrize("kind", ["empty", "directory", "text", "truncated_jpeg", "truncated_png"])
def test_load_image_bad_files_give_one_line_errors_naming_them(tmp_path, kind):
    path = tmp_path / kind
    png = tmp_path / "noise.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), np.uint8)).save(png)
    jpeg = IMAGES[0].read_bytes()
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(
            {
                "empty": b"",
                "text": b"not an image",
                "truncated_jpeg": jpeg[: len(jpeg) // 2],
                "truncated_png": png.read_bytes()[: png.stat().st_size // 2],
            }[kind]
        )
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        keras_lcnet.load_image(path)
    _assert_one_line_naming(info.value, path)


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
