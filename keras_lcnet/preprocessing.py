"""Model inputs: PaddleClas' evaluation transform (`load_image`) and `preprocess_input`."""

from __future__ import annotations

import os

import keras
import numpy as np

RESIZE_SHORT = 256
CROP_SIZE = 224


def preprocess_input(x, data_format: str | None = None):
    """A placeholder method for backward compatibility.

    PP-LCNet models built with `include_preprocessing=True` (the default)
    take RGB pixels in `[0, 255]` and normalize them inside the graph, as
    `keras.applications.MobileNetV3Small` does, so this returns `x`
    unchanged. For a model built with `include_preprocessing=False`, use
    `keras.applications.imagenet_utils.preprocess_input(x, mode="torch")`,
    which computes PaddleClas' `(x / 255 - mean) / std`.

    Args:
        x: A floating point `numpy.array` or a tensor.
        data_format: Optional data format of the image tensor/array; unused,
            kept for API compatibility with `keras.applications`.

    Returns:
        Unchanged `numpy.array` or tensor.
    """
    return x


def load_image(
    path: str | os.PathLike,
    size: int = CROP_SIZE,
    resize_short: int = RESIZE_SHORT,
    data_format: str | None = None,
) -> np.ndarray:
    """Loads an image with PaddleClas' evaluation transform, as a batch of one.

    Decode to RGB (EXIF orientation applied, as OpenCV does), resize the short
    side to `resize_short` with bilinear interpolation (OpenCV's INTER_LINEAR:
    half-pixel centers, no antialiasing; the long side is `round()`-ed), round
    to 8-bit, then center-crop `size` x `size` at `(dim - size) // 2`. The
    result holds RGB pixels in `[0, 255]`, the input contract of models built
    with `include_preprocessing=True`.

    Args:
        path: Path of an image file Pillow can read.
        size: Side of the square center crop. Defaults to 224.
        resize_short: Length of the short side after resizing. Defaults to 256.
        data_format: `"channels_last"` or `"channels_first"` layout of the
            result; defaults to `keras.config.image_data_format()`.

    Returns:
        A float32 array of shape `(1, size, size, 3)` (channels last).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: The file is not a readable image, or the sizes are
            inconsistent.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if size < 1 or resize_short < size:
        raise ValueError(
            f"Need 1 <= size <= resize_short, got size={size}, resize_short={resize_short}."
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No image file at {path!r}.")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            pixels = np.asarray(img, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot read {path!r} as an image: {e}") from None
    height, width = pixels.shape[:2]
    percent = resize_short / min(height, width)
    new_size = (round(height * percent), round(width * percent))
    resized = keras.ops.image.resize(
        pixels,
        new_size,
        interpolation="bilinear",
        antialias=False,
        data_format="channels_last",
    )
    resized = np.clip(np.round(keras.ops.convert_to_numpy(resized)), 0, 255)
    top = (new_size[0] - size) // 2
    left = (new_size[1] - size) // 2
    crop = resized[top : top + size, left : left + size].astype(np.float32)[None]
    data_format = data_format or keras.config.image_data_format()
    if data_format == "channels_first":
        crop = crop.transpose(0, 3, 1, 2)
    return crop
