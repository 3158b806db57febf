"""Model inputs: PaddleClas' evaluation transform (`load_image`) and `preprocess_input`."""

from __future__ import annotations

import numbers
import os
from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_lcnet.presets import get_preset

if TYPE_CHECKING:
    from PIL import Image

    from keras_lcnet.presets import Preset

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
    preset: str | Preset | None = None,
) -> np.ndarray:
    """Loads an image with PaddleClas' evaluation transform, as a batch of one.

    Decode to RGB (EXIF orientation applied, as OpenCV does), resize the short
    side to `resize_short` with bilinear interpolation (OpenCV's INTER_LINEAR:
    half-pixel centers, no antialiasing; the long side is `round()`-ed), round
    to 8-bit, then center-crop `size` x `size` at `(dim - size) // 2`. The
    result holds RGB pixels in `[0, 255]`, the input contract of models built
    with `include_preprocessing=True`.

    With `preset`, the preset's own pipeline (`preset.input`) is followed
    instead: its `(height, width)` size, and either its short-side resize and
    center crop or, where it has no `resize_short` (e.g. the 80x160 text-line
    presets), a direct bilinear resize to that size. The pixels stay RGB in
    `[0, 255]` whatever the preset's channel order: the model's in-graph
    preprocessing takes it from there.

    Only the cropped pixels are interpolated, so memory stays within a few
    times the decoded image whatever its aspect ratio. 16-bit images keep
    their high byte, like OpenCV's `cv2.imread`; floating-point images and
    32-bit integer images beyond the 16-bit range are refused, since no
    8-bit scale is defined for them.

    Args:
        path: Path of an image file Pillow can read.
        size: Side of the square center crop. Defaults to 224.
        resize_short: Length of the short side after resizing, at least
            `size`. Defaults to 256.
        data_format: `"channels_last"` or `"channels_first"` layout of the
            result; defaults to `keras.config.image_data_format()`.
        preset: A preset name or `keras_lcnet.presets.Preset` whose input
            pipeline to follow; `size` and `resize_short` are then the
            preset's (leave them out).

    Returns:
        A float32 array of shape `(1, size, size, 3)` (with a preset,
        `(1, height, width, 3)`), or channels first for `"channels_first"`.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: The file is not a readable image, has more pixels than
            Pillow's `PIL.Image.MAX_IMAGE_PIXELS` allows, or has no 8-bit
            scale; or the arguments are invalid.
    """
    out_size, resize_short = _target(size, resize_short, preset)
    if data_format is None:
        data_format = keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"`data_format` must be None, 'channels_last' or 'channels_first', got {data_format!r}."
        )
    pixels = _read_rgb8(os.fspath(path))
    crop = _resized_center_crop(pixels, out_size, resize_short)[None]
    if data_format == "channels_first":
        crop = crop.transpose(0, 3, 1, 2)
    return crop


def _target(size, resize_short, preset) -> tuple[tuple[int, int], int | None]:
    """`((height, width), resize_short)` from the arguments or the preset's input contract."""
    if preset is None:
        if resize_short is None:  # only a preset's contract may skip the crop
            raise ValueError("`resize_short` must be a positive integer, got None.")
        _check_sizes((size, size), resize_short)
        return (int(size), int(size)), int(resize_short)
    if (size, resize_short) != (CROP_SIZE, RESIZE_SHORT):
        raise ValueError("Pass either `preset` or `size`/`resize_short`, not both.")
    contract = get_preset(preset).input
    if contract.interpolation != "bilinear":
        raise NotImplementedError(
            f"load_image resizes bilinearly; the preset wants {contract.interpolation!r}."
        )
    _check_sizes(contract.size, contract.resize_short)
    return tuple(contract.size), contract.resize_short


def _check_sizes(size: tuple, resize_short) -> None:
    named = [("size", s) for s in size]
    if resize_short is not None:  # None: a direct resize to `size`
        named.append(("resize_short", resize_short))
    for name, value in named:
        # bool is an Integral, but `size=True` is surely a mistake.
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if resize_short is not None and resize_short < max(size):
        raise ValueError(
            f"`resize_short` ({resize_short}) must be at least `size` ({max(size)}): "
            "the crop is cut from the resized image."
        )


def _read_rgb8(path: str) -> np.ndarray:
    """Decodes `path` to a uint8 `(height, width, 3)` RGB array."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No image file at {path!r}.")
    try:
        with Image.open(path) as img:
            return _to_rgb8(ImageOps.exif_transpose(img), path)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"Refusing to decode {path!r}: {e} If you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS (Pillow refuses twice its value) or set it to None."
        ) from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"Cannot read {path!r} as an image: {e}") from None


def _to_rgb8(img: Image.Image, path: str) -> np.ndarray:
    """8-bit RGB pixels of a Pillow image; deep grey images keep their high byte."""
    if img.mode == "F":
        raise ValueError(
            f"{path!r} holds floating-point pixels, which have no standard 8-bit scale "
            "(OpenCV cannot read them either); convert it to an 8- or 16-bit image."
        )
    if img.mode != "I" and not img.mode.startswith("I;16"):
        # Pillow already reduces 16-bit RGB(A) PNGs to their high byte, as OpenCV does.
        return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    # Pillow opens 16-bit grey PNGs as "I;16" and 16-bit PGMs as "I", and its
    # own conversion clips them to 255. OpenCV's `cv2.imread` (PaddleClas'
    # decoder) keeps the high byte of 16-bit samples; so do we.
    deep = np.asarray(img)
    if deep.min() < 0 or deep.max() > 65535:
        raise ValueError(
            f"{path!r} holds 32-bit integer pixels outside the 16-bit range, which have "
            "no standard 8-bit scale; convert it to an 8- or 16-bit image."
        )
    grey = (deep >> 8).astype(np.uint8)
    return np.broadcast_to(grey[..., None], (*grey.shape, 3))


def _resized_center_crop(
    pixels: np.ndarray, size: tuple[int, int], resize_short: int | None
) -> np.ndarray:
    """Resizes `pixels` so the short side is `resize_short`, then center-crops `size`.

    `size` is `(height, width)`; `resize_short=None` resizes straight to it.
    Bilinear interpolation reads at most 2x2 source pixels per output pixel,
    so only the cropped output pixels are computed: memory does not grow
    with the resized image, which is 256 x 307200 for a 1200 x 1 strip. The
    float32 arithmetic is that of TensorFlow's bilinear kernel
    (`keras.ops.image.resize` there), so the result equals resizing the whole
    image and cropping, bit for bit.
    """
    height, width = pixels.shape[:2]
    out_height, out_width = size
    if resize_short is None:
        new_height, new_width = size
    else:
        percent = resize_short / min(height, width)
        new_height, new_width = round(height * percent), round(width * percent)
    top, left = (new_height - out_height) // 2, (new_width - out_width) // 2
    row0, row1, y_weight = _bilinear_taps(height, new_height, top, out_height)
    col0, col1, x_weight = _bilinear_taps(width, new_width, left, out_width)

    # Each tap is one flat `take`, and the arithmetic runs on (rows, columns *
    # channels) arrays: `pixels[np.ix_(rows, cols)]` and weights broadcast over
    # a 3-wide last axis took most of `load_image`'s time after decoding.
    channels = pixels.shape[-1]
    flat = pixels.reshape(-1, channels)
    x_weight = np.repeat(x_weight, channels)

    def along_x(rows: np.ndarray) -> np.ndarray:
        left, right = (flat.take(rows[:, None] * width + cols, axis=0)
                       .reshape(out_height, -1).astype(np.float32) for cols in (col0, col1))
        return left + (right - left) * x_weight

    # Same operations in the same order as TensorFlow: along x, then along y.
    top, bottom = along_x(row0), along_x(row1)
    crop = np.round(top + (bottom - top) * y_weight[:, None])
    return crop.reshape(out_height, out_width, channels)


def _bilinear_taps(
    in_size: int, out_size: int, start: int, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of output pixels `start .. start + count - 1`.

    Half-pixel centers, clamped at the borders, in float32 exactly as
    TensorFlow's `ResizeBilinear` computes them.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    out = np.arange(start, start + count).astype(np.float32)
    source = (out + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(source)
    high = np.minimum(np.ceil(source).astype(np.int64), in_size - 1)
    low = np.minimum(np.maximum(floor.astype(np.int64), 0), high)
    return low, high, source - floor
