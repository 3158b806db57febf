"""Resolving `weights=`: download and cache published checkpoints, load files into a model."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable

import keras
import numpy as np

from keras_lcnet import presets
from keras_lcnet.architecture import STAGES
from keras_lcnet.cache import (
    CACHE_SUBDIR,
    cache_dir,
    cached_checkpoint_path,
    converted_cache_path,
)
from keras_lcnet.checkpoints import huggingface as hf
from keras_lcnet.checkpoints import timm
from keras_lcnet.checkpoints.keras_files import HDF5_SIGNATURE, ZIP_SIGNATURE, read_keras_weights
from keras_lcnet.checkpoints.mapping import Sources, assign_arrays, convert_pdparams
from keras_lcnet.checkpoints.paddle_onnx import (
    PaddleOnnxModel,
    is_paddle_onnx,
    onnx_in_folder,
    read_paddle_onnx,
)
from keras_lcnet.checkpoints.pdiparams import (
    InferenceModel,
    is_inference_model,
    read_inference_model,
)
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.presets import (
    PADDLECLAS_DROPOUT,
    PRETRAINED_TAGS,
    InputContract,
    Preset,
    find_preset,
    preset_named,
)

logger = logging.getLogger(__name__)

# A folder URL (`file:///data/mirror/`, `https://intranet/weights/`) that
# holds the upstream files under their own names, tried instead of upstream.
MIRROR_ENV = "KERAS_LCNET_MIRROR"
_CACHE_FORMAT = "keras_lcnet-converted-v1"
# `(state dict, dropout_rate) -> (arrays, sources)`: convert_pdparams or a variant's own.
Converter = Callable[[dict[str, np.ndarray], float], tuple[dict[str, np.ndarray], Sources]]


def download_url(preset: Preset) -> str:
    """The preset's upstream URL, or its file in the `$KERAS_LCNET_MIRROR` folder."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{preset.file_name}" if mirror else preset.url


def fetch_checkpoint(preset: Preset) -> str:
    """Returns the local path of a published checkpoint, downloading it if needed.

    A file already at `cached_checkpoint_path(preset)` is used without touching
    the network.

    Raises:
        WeightsUnavailableError: The download failed; the message names the
            URL and where to place the file by hand.
    """
    try:
        return keras.utils.get_file(
            fname=preset.file_name,
            origin=download_url(preset),
            cache_dir=cache_dir(),
            cache_subdir=CACHE_SUBDIR,
        )
    except Exception as e:  # get_file raises a bare Exception on network errors
        raise WeightsUnavailableError(
            f"Could not download {download_url(preset)} ({e}). To use the preset "
            f"'{preset.name}' (PPLCNet_{preset.variant}) offline, download that file on "
            f"another machine and place it at {cached_checkpoint_path(preset)} (or "
            "pass its path as `weights=`); `keras-lcnet convert FILE.pdparams "
            f"--preset {preset.name} --output FILE.keras` converts it once to a Keras model."
        ) from None


def _atomic_savez(path: str, arrays: dict[str, np.ndarray], mode: int) -> None:
    """Writes an .npz with permissions `mode` so that `path` is either absent or complete."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, mode)  # mkstemp makes it private (0600)
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _non_finite(arrays: dict[str, np.ndarray]) -> str | None:
    """The first tensor holding NaN or infinity, if any."""
    return next((key for key, value in arrays.items() if not np.isfinite(value).all()), None)


def _read_converted(path: str) -> dict[str, np.ndarray] | None:
    """The cached conversion at `path`, or `None` when absent or unreadable."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        if str(arrays.pop("__format__", "")) != _CACHE_FORMAT:
            raise CheckpointError("not a keras_lcnet converted-weights cache")
        # Converted weights are finite floats; anything else is damage.
        bad = next((k for k, v in arrays.items() if v.dtype.kind != "f"), None)
        bad = bad or _non_finite(arrays)
        if bad:
            raise CheckpointError(f"tensor '{bad}' is not all finite floats")
        return arrays
    except Exception as e:
        logger.warning("Rebuilding the corrupt weights cache %s (%s).", path, e)
        return None


def _load_pretrained(
    model: keras.Model, preset: Preset, convert: Converter = convert_pdparams
) -> None:
    """Loads a published checkpoint, converting it once and caching the result.

    A cache entry is used only if it reads back intact and fits the model;
    anything else is rebuilt from the upstream file. The cache is written
    (atomically) only after the upstream file was read and fitted the model.
    `convert` maps the state dict to Keras paths (PP-LCNetV2 passes its own).
    """
    converted = converted_cache_path(preset)
    cached = _read_converted(converted)
    if cached is not None:
        try:
            assign_arrays(model, cached, converted)
            return
        except CheckpointError as e:
            logger.warning("Rebuilding the stale weights cache %s (%s).", converted, e)
    source = fetch_checkpoint(preset)
    dropout_rate = preset.architecture.get("dropout_rate", PADDLECLAS_DROPOUT)
    arrays, sources = _convert_download(source, dropout_rate, convert)
    try:
        assign_arrays(model, arrays, source, sources)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{_head_hint(arrays, preset, source)}") from None
    # The cache is as readable as the download it stands for.
    mode = stat.S_IMODE(os.stat(source).st_mode)
    _atomic_savez(converted, {"__format__": np.array(_CACHE_FORMAT), **arrays}, mode)


def _head_hint(arrays: dict[str, np.ndarray], preset: Preset, source: str) -> str:
    """Which presets a checkpoint whose classifier does not fit `preset` looks like."""
    fc = arrays.get("fc/kernel")
    if fc is None or fc.ndim != 2 or fc.shape[-1] == preset.classes:
        return ""
    classes = fc.shape[-1]
    alike = ", ".join(p.name for p in presets.PRESETS if p.classes == classes) or "none"
    return (
        f" {source} has {classes} classes, not the {preset.classes} of preset "
        f"'{preset.name}'; presets with {classes} classes: {alike}."
    )


def _convert_download(
    source: str, dropout_rate: float, convert: Converter = convert_pdparams
) -> tuple[dict[str, np.ndarray], Sources]:
    """Reads and converts a downloaded checkpoint; a corrupt one is removed."""
    try:
        state = read_pdparams(source)
        bad = _non_finite(state)  # a cache of it would be rebuilt on every call
        if bad:
            raise CheckpointError(f"{source}: tensor '{bad}' holds NaN or infinite values.")
    except CheckpointError as e:
        # A corrupt download is never trusted: drop it so the next call fetches anew.
        with contextlib.suppress(OSError):
            os.remove(source)
        raise CheckpointError(
            f"{e} The file was removed from the cache; the next call downloads it again."
        ) from None
    return convert(state, dropout_rate)


def _dropout_rate(model: keras.Model) -> float:
    with contextlib.suppress(ValueError):
        return float(model.get_layer("dropout").rate)
    return PADDLECLAS_DROPOUT


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


def load_inference_model(
    model: keras.Model, path: str | os.PathLike, inference: InferenceModel | None = None
) -> None:
    """Loads a Paddle inference model (a program + `.pdiparams`) into a PP-LCNet.

    The dropout factor folded into the classifier is the program's own.

    Args:
        model: The model.
        path: The model's folder, prefix, `.pdiparams`, `.json` or `.pdmodel` file.
        inference: The files as `read_inference_model` read them; read from
            `path` otherwise.

    Raises:
        CheckpointError: The files cannot be read or do not fit the model.
    """
    inference = read_inference_model(path) if inference is None else inference
    arrays, sources = convert_pdparams(inference.state, inference.dropout_rate)
    # Name tensors as the file does (`conv2d_3.w_0`), with the PaddleClas name beside.
    sources = {
        key: (f"{inference.names.get(name, name)} ({name})", layout)
        for key, (name, layout) in sources.items()
    }
    assign_arrays(model, arrays, inference.origin, sources)


def _model_strides(model: keras.Model) -> list[tuple[int, int]] | None:
    """The `stride_list` a model was built with, read off its stem and first blocks."""
    names = ["conv1"] + [f"{stage}_0_dw_conv" for stage in STAGES[1:]]
    try:
        return [tuple(model.get_layer(name).strides) for name in names]
    except ValueError:  # not a model built by PPLCNet
        return None


def load_transformers(
    model: keras.Model, source: str | os.PathLike, state: dict[str, np.ndarray] | None = None
) -> None:
    """Loads a transformers PP-LCNet checkpoint (a folder or `hf://owner/repo[@rev]`).

    The strides in `config.json` leave no trace in the tensors, so they are
    checked against the model's; the classifier's `1 - hidden_dropout_prob`
    factor is folded in.

    Args:
        model: The model.
        source: A `save_pretrained` folder or an `hf://` repo.
        state: The folder's `model.safetensors` tensors, when already read.

    Raises:
        ValueError: The model's strides are not the checkpoint's.
        CheckpointError: The folder is not a readable PP-LCNet checkpoint or
            does not fit the model.
        WeightsUnavailableError: An `hf://` repo could not be fetched.
    """
    folder = hf.resolve_folder(source)
    config_path = os.path.join(folder, hf.CONFIG_FILE)
    found = hf.architecture_from_config(hf.read_config(folder), config_path)
    strides, built = _stride_pairs(found["stride_list"]), _model_strides(model)
    if built is not None and built != strides:
        raise ValueError(
            f"{config_path} has stride_list={found['stride_list']}, the model {built}: build it "
            "with that stride_list, or with keras_lcnet.from_checkpoint."
        )
    contract = hf.read_input_contract(folder)
    if contract is not None:
        _check_preprocessing(model, contract, os.path.join(folder, hf.PREPROCESSOR_FILE))
    path = os.path.join(folder, hf.WEIGHTS_FILE)
    state = hf.read_safetensors(path) if state is None else state
    arrays, sources = hf.convert_transformers(state, found["dropout_rate"], path)
    assign_arrays(model, arrays, path, sources)


def _check_preprocessing(model: keras.Model, contract: InputContract, origin: str) -> None:
    """Refuses a model whose in-graph preprocessing feeds other pixels than `contract`."""
    names = {layer.name: layer for layer in model.layers}
    if "normalization" not in names:
        return  # include_preprocessing=False: the caller feeds the network input
    mean = np.ravel(names["normalization"].get_config()["mean"])
    flips = "reverse_channels" in names
    if flips != (contract.channel_order == "BGR") or not np.allclose(
        mean, [255.0 * m for m in contract.mean]
    ):
        raise ValueError(
            f"{origin} feeds the network {contract.channel_order} pixels normalized with mean "
            f"{list(contract.mean)}, which the model's preprocessing does not: build it with "
            "keras_lcnet.from_checkpoint, input_contract=..., or include_preprocessing=False."
        )


def load_timm(
    model: keras.Model, source: str | os.PathLike, state: dict[str, np.ndarray] | None = None
) -> None:
    """Loads a timm LCNet checkpoint: a folder with timm's `config.json` or a `.safetensors` file.

    timm's head conv has a bias: build the model with `head_bias=True` (or
    use `keras_lcnet.from_checkpoint`, which reads everything off the file).

    Args:
        model: The model.
        source: A timm folder (`config.json` + `model.safetensors`) or its
            `model.safetensors`.
        state: The file's tensors, when already read.

    Raises:
        CheckpointError: The folder's `config.json` describes another timm
            model or class count, the file is not a readable timm LCNet
            checkpoint, or it does not fit the model.
    """
    source = os.fspath(source)
    config = None
    if os.path.isdir(source):
        # Another architecture is refused before the weights are read.
        config, config_path = timm.read_config(source), os.path.join(source, hf.CONFIG_FILE)
        _check_preprocessing(model, timm.input_contract(config, config_path), config_path)
    path = timm.weights_file(source)
    state = timm.read_state(path) if state is None else state
    if config is not None:
        timm.check_num_classes(config, state, config_path, path)
    arrays, sources = timm.convert_timm(state, path)
    assign_arrays(model, arrays, path, sources)


def load_paddle_onnx(
    model: keras.Model, path: str | os.PathLike, exported: PaddleOnnxModel | None = None
) -> None:
    """Loads paddle2onnx's ONNX export of a PP-LCNet into a PP-LCNet model.

    The graph's strides are checked against the model's; the dropout factor
    folded into the classifier is the graph's own.

    Args:
        model: The model.
        path: The `.onnx` file.
        exported: The file as `read_paddle_onnx` read it; read from `path`
            otherwise.

    Raises:
        ImportError: The `onnx` package is missing.
        ValueError: The model's strides are not the graph's.
        CheckpointError: The file is not paddle2onnx's PP-LCNet or does not
            fit the model.
    """
    exported = read_paddle_onnx(path) if exported is None else exported
    built = _model_strides(model)
    if built is not None and built != _stride_pairs(exported.stride_list):
        raise ValueError(
            f"{exported.origin} has stride_list={exported.stride_list}, the model {built}: "
            "build it with that stride_list, or with keras_lcnet.from_checkpoint."
        )
    load_inference_model(model, path, exported)


def _stride_pairs(stride_list) -> list[tuple[int, int]]:
    """Five `(h, w)` stride pairs of a `stride_list` of ints and pairs."""
    return [(s, s) if isinstance(s, int) else tuple(s) for s in stride_list]


def load_keras_file(model: keras.Model, path: str) -> bool:
    """Loads a Keras weights file (`.weights.h5`, `.keras`, legacy `.h5`), found by content.

    Returns:
        Whether `path` was one (and is now loaded); `False` leaves the model as it was.

    Raises:
        CheckpointError: A Keras file that does not fit the model.
    """
    with open(path, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE and not head.startswith(ZIP_SIGNATURE):
        return False
    with read_keras_weights(model, path, archive=head != HDF5_SIGNATURE) as (arrays, sources):
        assign_arrays(model, arrays, path, sources)
    return True


def load_weights(
    model: keras.Model, weights: str | os.PathLike, scale: float | None = None
) -> None:
    """Loads `weights` into a PP-LCNet model built by `keras_lcnet.PPLCNet`.

    A file is recognized by its content, not its name: a PaddleClas
    `.pdparams` checkpoint, a Paddle inference model (a folder, prefix or
    `.pdiparams` file with its `.json` or `.pdmodel` program beside it), a Keras
    `.weights.h5` file, a Keras `.keras` model (its weights; the architecture
    comes from `model`), a legacy Keras `.h5` file or a transformers
    `model.safetensors`, or paddle2onnx's ONNX export of a PP-LCNet (its
    strides must be the model's). A folder with a `config.json`, or
    `hf://owner/repo[@revision]`, is a transformers PP-LCNet checkpoint, or
    timm's when its `config.json` is timm's (`architecture: lcnet_*`); a
    `.safetensors` file with timm's tensor names (`conv_stem.weight`, ...)
    is timm's too (see `load_timm`).
    Loading is all or nothing: every variable of the model must be in the
    file with its exact shape, or nothing is assigned.

    Args:
        model: The model.
        weights: `"imagenet"`, `"imagenet_ssld"`, a preset name (see
            `keras_lcnet.list_presets()`), the path to a file or a
            transformers or timm checkpoint folder, or
            `hf://owner/repo[@revision]`.
        scale: The model's width multiplier; needed for the ImageNet tags,
            checked against a preset's.

    Raises:
        ValueError: `scale` is missing for an ImageNet tag or is not the
            preset's, or the model's strides are not a transformers
            checkpoint's or an ONNX graph's.
        CheckpointError: The file cannot be read or does not fit the model;
            the message names the first tensor at fault and both shapes.
        WeightsUnavailableError: A published checkpoint or an `hf://` repo
            could not be fetched.
        ImportError: An ONNX file and no `onnx` package.
    """
    if weights in PRETRAINED_TAGS:
        if scale is None:
            raise ValueError(f"`scale` is needed to load '{weights}' weights.")
        _load_pretrained(model, find_preset(scale, weights))
        return
    preset = preset_named(weights)
    if preset is not None:
        if scale is not None and scale != preset.scale:
            raise ValueError(
                f"Preset '{weights}' holds PPLCNet_{preset.variant} weights; the model "
                f"has scale={scale}."
            )
        _load_pretrained(model, preset)
        return
    weights = hf.resolve_folder(weights)  # an hf:// repo is fetched once; its files tell its form
    if timm.is_timm_source(weights):
        load_timm(model, weights)
        return
    if hf.is_transformers_source(weights):
        load_transformers(model, weights)
        return
    path = onnx_in_folder(weights) or os.fspath(weights)
    if is_inference_model(path):
        load_inference_model(model, path)
        return
    if load_keras_file(model, path):
        return
    if hf.is_safetensors(path):  # a bare model.safetensors: no config, strides unchecked
        arrays, sources = hf.convert_transformers(
            hf.read_safetensors(path), _dropout_rate(model), path
        )
        assign_arrays(model, arrays, path, sources)
    elif is_paddle_onnx(path):  # paddle2onnx's export
        load_paddle_onnx(model, path)
    else:
        load_pdparams(model, path)
