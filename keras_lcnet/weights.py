"""PaddleClas' published PP-LCNet checkpoints: registry, download, cache, loading."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile

import keras
import numpy as np

from keras_lcnet.model import PRETRAINED_TAGS, VARIANTS, variant_name
from keras_lcnet.paddle_checkpoint import (
    HEAD_KEYS,
    CheckpointError,
    convert_pdparams,
    keras_path,
    paddle_shape,
    read_pdparams,
)

logger = logging.getLogger(__name__)

BASE_URL = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
ACCURACY_SOURCE = (
    "PaddleClas model zoo, docs/en/models/ImageNet1k/PP-LCNet.md "
    "(ImageNet-1k val, 224x224 center crop of 256)"
)
LICENSE = "Apache-2.0 (PaddleClas, PaddlePaddle Authors)"
# The dropout_prob the published checkpoints were trained with.
PUBLISHED_DROPOUT = 0.2
CACHE_SUBDIR = "models"
_CACHE_FORMAT = "keras_lcnet-converted-v1"
_HEAD_PATHS = frozenset(keras_path(key)[0] for key in HEAD_KEYS)


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One checkpoint published by PaddleClas.

    Attributes:
        variant: Width suffix, e.g. `"x1_0"`.
        tag: `"imagenet"` or `"imagenet_ssld"` (distilled with SSLD).
        top1: Published ImageNet-1k top-1 accuracy, percent.
        top5: Published top-5 accuracy, percent (`None` where unpublished).
    """

    variant: str
    tag: str
    top1: float
    top5: float | None

    @property
    def scale(self) -> float:
        return VARIANTS[self.variant]

    @property
    def file_name(self) -> str:
        ssld = "_ssld" if self.tag == "imagenet_ssld" else ""
        return f"PPLCNet_{self.variant}{ssld}_pretrained.pdparams"

    @property
    def url(self) -> str:
        return BASE_URL + self.file_name


# The single source of truth for published weights; accuracy from ACCURACY_SOURCE.
REGISTRY: tuple[PretrainedWeights, ...] = (
    PretrainedWeights("x0_25", "imagenet", 51.86, 75.65),
    PretrainedWeights("x0_35", "imagenet", 58.09, 80.83),
    PretrainedWeights("x0_5", "imagenet", 63.14, 84.66),
    PretrainedWeights("x0_75", "imagenet", 68.18, 88.30),
    PretrainedWeights("x1_0", "imagenet", 71.32, 90.03),
    PretrainedWeights("x1_5", "imagenet", 73.71, 91.53),
    PretrainedWeights("x2_0", "imagenet", 75.18, 92.27),
    PretrainedWeights("x2_5", "imagenet", 76.60, 93.00),
    PretrainedWeights("x0_25", "imagenet_ssld", 53.43, None),
    PretrainedWeights("x0_5", "imagenet_ssld", 66.10, 86.46),
    PretrainedWeights("x1_0", "imagenet_ssld", 74.39, 92.09),
    PretrainedWeights("x2_5", "imagenet_ssld", 80.82, 95.33),
)


class WeightsUnavailableError(OSError):
    """A published checkpoint is neither cached nor downloadable."""


def find_checkpoint(scale_or_variant: float | str, tag: str = "imagenet") -> PretrainedWeights:
    """Looks up a published checkpoint by width and tag.

    Args:
        scale_or_variant: Width multiplier (`1.0`) or suffix (`"x1_0"`).
        tag: `"imagenet"` or `"imagenet_ssld"`.

    Raises:
        ValueError: No such checkpoint was published; the message lists
            those that were.
    """
    variant = scale_or_variant
    if not isinstance(variant, str):
        variant = variant_name(variant)
    elif not variant.startswith("x"):
        variant = f"x{variant}"
    for entry in REGISTRY:
        if (entry.variant, entry.tag) == (variant, tag):
            return entry
    published = ", ".join(f"{e.variant}/{e.tag}" for e in REGISTRY)
    raise ValueError(
        f"PaddleClas publishes no '{tag}' weights for PP-LCNet {variant}. "
        f"Published (width/weights): {published}."
    )


def cache_dir() -> str:
    """The Keras cache folder: `$KERAS_HOME` or `~/.keras`, as `get_file` uses it."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    with contextlib.suppress(OSError):
        os.makedirs(base, exist_ok=True)
    if not os.access(base, os.W_OK):  # get_file's own fallback
        base = os.path.join(tempfile.gettempdir(), ".keras")
    return base


def cached_checkpoint_path(entry: PretrainedWeights) -> str:
    """Where `get_file` keeps (and looks for) the upstream file."""
    return os.path.join(cache_dir(), CACHE_SUBDIR, entry.file_name)


def converted_cache_path(entry: PretrainedWeights) -> str:
    """Where the converted Keras weights of a checkpoint are cached."""
    return cached_checkpoint_path(entry).removesuffix(".pdparams") + ".keras_lcnet.npz"


def fetch_checkpoint(entry: PretrainedWeights) -> str:
    """Returns the local path of a published checkpoint, downloading it if needed.

    A file already at `cached_checkpoint_path(entry)` is used without touching
    the network.

    Raises:
        WeightsUnavailableError: The download failed; the message names the
            URL and where to place the file by hand.
    """
    try:
        return keras.utils.get_file(
            fname=entry.file_name,
            origin=entry.url,
            cache_dir=cache_dir(),
            cache_subdir=CACHE_SUBDIR,
        )
    except Exception as e:  # get_file raises a bare Exception on network errors
        raise WeightsUnavailableError(
            f"Could not download {entry.url} ({e}). To use the '{entry.tag}' "
            f"weights of PPLCNet_{entry.variant} offline, download that file on "
            f"another machine and place it at {cached_checkpoint_path(entry)} (or "
            "pass its path as `weights=`); `keras-lcnet convert FILE.pdparams "
            f"--variant {entry.variant} --output FILE.weights.h5` converts it once "
            "to a Keras weights file."
        ) from None


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes an .npz so that `path` is either absent or complete."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _read_converted(path: str) -> dict[str, np.ndarray] | None:
    """The cached conversion at `path`, or `None` when absent or unreadable."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        if str(arrays.pop("__format__", "")) != _CACHE_FORMAT:
            raise CheckpointError("not a keras_lcnet converted-weights cache")
        return arrays
    except Exception as e:
        logger.warning("Rebuilding the corrupt weights cache %s (%s).", path, e)
        return None


def _load_pretrained(model: keras.Model, entry: PretrainedWeights) -> None:
    """Loads a published checkpoint, converting it once and caching the result.

    A cache entry is used only if it reads back intact and fits the model;
    anything else is rebuilt from the upstream file. The cache is written
    (atomically) only after the upstream file was read and fitted the model.
    """
    converted = converted_cache_path(entry)
    cached = _read_converted(converted)
    if cached is not None:
        try:
            assign_arrays(model, cached, converted)
            return
        except CheckpointError as e:
            logger.warning("Rebuilding the stale weights cache %s (%s).", converted, e)
    source = fetch_checkpoint(entry)
    try:
        state = read_pdparams(source)
    except CheckpointError as e:
        # An unreadable download is never trusted: drop it so the next call fetches anew.
        with contextlib.suppress(OSError):
            os.remove(source)
        raise CheckpointError(
            f"{e} The file was removed from the cache; the next call downloads it again."
        ) from None
    arrays, sources = convert_pdparams(state, dropout_rate=PUBLISHED_DROPOUT)
    assign_arrays(model, arrays, source, sources)
    _atomic_savez(converted, {"__format__": np.array(_CACHE_FORMAT), **arrays})


def assign_arrays(
    model: keras.Model,
    arrays: dict[str, np.ndarray],
    origin: str,
    sources: dict[str, tuple[str, tuple[int, ...] | None]] | None = None,
) -> None:
    """Assigns Keras-layout arrays to a model's variables by path, all or nothing.

    Every variable of the model must be present with its exact shape. A
    tensor the model has no variable for is an error, except the
    classification head when the model was built without it.

    Raises:
        CheckpointError: Naming the first missing, mismatching or unexpected
            tensor (by its Paddle name and shapes when `sources` is given).
    """
    sources = sources or {}

    def describe(path: str, shape) -> tuple[str, list[int]]:
        key, layout = sources.get(path, (path, None))
        return key, paddle_shape(tuple(shape), layout)

    variables = {v.path: v for v in model.weights}
    for path in variables:
        if path not in arrays:
            raise CheckpointError(
                f"{origin} has no tensor for the model's variable '{path}': was it "
                "saved from a PP-LCNet of another width or with other options?"
            )
    has_head = any(path in variables for path in _HEAD_PATHS)
    for path in arrays:
        if path not in variables and (has_head or path not in _HEAD_PATHS):
            key, shape = describe(path, arrays[path].shape)
            raise CheckpointError(
                f"{origin} holds tensor '{key}' {shape} that the model does not "
                "have. Was it saved with other PaddleClas options (use_last_conv, "
                "stride_list, class_expand)?"
            )
    for path, variable in variables.items():
        found, expected = arrays[path].shape, tuple(variable.shape)
        if found != expected:
            key, found_shape = describe(path, found)
            _, expected_shape = describe(path, expected)
            if path in ("fc/kernel", "fc/bias") and found[-1] != expected[-1]:
                raise CheckpointError(
                    f"{origin} was trained for {found[-1]} classes but the model "
                    f"has {expected[-1]} ('{key}': {found_shape} vs "
                    f"{expected_shape}). Build the model with classes={found[-1]}, "
                    "or with include_top=False."
                )
            raise CheckpointError(
                f"{origin}: tensor '{key}' has shape {found_shape} but the model "
                f"expects {expected_shape}. Is it a checkpoint of another PP-LCNet "
                "width or variant?"
            )
    for path, variable in variables.items():
        variable.assign(arrays[path])


def _dropout_rate(model: keras.Model) -> float:
    with contextlib.suppress(ValueError):
        return float(model.get_layer("dropout").rate)
    return PUBLISHED_DROPOUT


def load_pdparams(
    model: keras.Model, path: str | os.PathLike, state: dict[str, np.ndarray] | None = None
) -> None:
    """Loads a PaddleClas `.pdparams` checkpoint into a PP-LCNet model.

    The model's `dropout_rate` is taken as the checkpoint's `dropout_prob`
    (PaddleClas' default is 0.2) to fold Paddle's inference-time dropout
    factor into the classifier.

    Args:
        model: The model.
        path: The checkpoint (named in error messages).
        state: The checkpoint's tensors when the caller has already read them
            with `read_pdparams`; read from `path` otherwise.
    """
    path = os.fspath(path)
    state = read_pdparams(path) if state is None else state
    arrays, sources = convert_pdparams(state, _dropout_rate(model))
    assign_arrays(model, arrays, path, sources)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_weights(
    model: keras.Model, weights: str | os.PathLike, scale: float | None = None
) -> None:
    """Loads `weights` into a PP-LCNet model built by `keras_lcnet.PPLCNet`.

    Args:
        model: The model.
        weights: `"imagenet"`, `"imagenet_ssld"`, or the path to a PaddleClas
            `.pdparams` file or a Keras `.weights.h5` file (recognized by
            content, not by name).
        scale: The model's width multiplier; needed for the published tags.
    """
    if weights in PRETRAINED_TAGS:
        if scale is None:
            raise ValueError(f"`scale` is needed to load '{weights}' weights.")
        _load_pretrained(model, find_checkpoint(scale, weights))
        return
    path = os.fspath(weights)
    with open(path, "rb") as f:
        head = f.read(len(_HDF5_SIGNATURE))
    if head == _HDF5_SIGNATURE:
        model.load_weights(path)
    else:
        load_pdparams(model, path)
