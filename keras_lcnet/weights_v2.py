"""Resolving `weights=` for PP-LCNetV2: PaddleClas `.pdparams` and Keras weights files."""

from __future__ import annotations

import contextlib
import os

import keras

from keras_lcnet.architecture_v2 import DROPOUT_V2
from keras_lcnet.checkpoints import timm
from keras_lcnet.checkpoints.mapping import assign_arrays
from keras_lcnet.checkpoints.mapping_v2 import convert_pdparams_v2, fold_rep_arrays
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError
from keras_lcnet.presets import PRETRAINED_TAGS, InputContract, find_preset_v2
from keras_lcnet.weights import _load_pretrained, load_keras_file


def validate_weights_v2(weights) -> None:
    """Refuses a `weights=` value PP-LCNetV2 cannot load, before anything is built.

    Raises:
        ValueError: `weights` is neither `None`, an ImageNet tag, the path
            to a file nor a timm folder.
    """
    if weights is None or weights in PRETRAINED_TAGS:
        return
    if isinstance(weights, (str, os.PathLike)) and (
        os.path.isfile(weights) or timm.is_timm_source(weights)
    ):
        return
    raise ValueError(
        "The `weights` argument of PPLCNetV2 should be `None` (random initialization), "
        "'imagenet', 'imagenet_ssld' (base only), a timm `lcnetv2_*` folder or the path to "
        "a PaddleClas `.pdparams`, timm `.safetensors`, Keras `.weights.h5` or `.keras` file. "
        f"Received: weights={weights!r}"
        + (" (no such file)" if isinstance(weights, (str, os.PathLike)) else "")
    )


def _dropout_rate(model: keras.Model) -> float:
    with contextlib.suppress(ValueError):
        return float(model.get_layer("dropout").rate)
    return DROPOUT_V2


def _load_state_v2(model: keras.Model, state, origin: str, dropout_rate: float) -> None:
    """Loads PaddleClas-named PP-LCNetV2 tensors, folding branches for a deploy-form model."""
    arrays, sources = convert_pdparams_v2(state, dropout_rate)
    fold_rep_arrays(model, arrays, sources, origin)
    assign_arrays(model, arrays, origin, sources)


def load_pdparams_v2(
    model: keras.Model, path: str | os.PathLike, state: dict | None = None
) -> None:
    """Loads a PaddleClas PP-LCNetV2 `.pdparams` checkpoint, all or nothing.

    The rep blocks' branches are loaded; a model in deploy form gets them
    folded. The model's `dropout_rate` is taken as the checkpoint's
    `dropout_prob` (folded into the classifier).

    Args:
        model: A model built by `keras_lcnet.PPLCNetV2`.
        path: The checkpoint.
        state: Its tensors, when already read with `read_pdparams`.

    Raises:
        CheckpointError: The file cannot be read or does not fit the model.
    """
    path = os.fspath(path)
    state = read_pdparams(path) if state is None else state
    _load_state_v2(model, state, path, _dropout_rate(model))


def _check_timm_config_v2(model: keras.Model, folder: str) -> dict:
    """A timm folder's `config.json` must name an `lcnetv2_*` and, when the model
    normalizes in its graph, ImageNet's statistics (the ones it builds in).

    Returns:
        The config, for the checks that need the weights.
    """
    config_path = os.path.join(folder, "config.json")
    config = timm.read_config(folder)
    if config["architecture"] not in timm.ARCHITECTURES_V2:
        raise CheckpointError(
            f"{config_path} describes timm's {config['architecture']!r} but its weights "
            "are a PP-LCNetV2's: the folder mixes two checkpoints."
        )
    contract = timm.input_contract(config, config_path)
    in_graph = any(layer.name == "normalization" for layer in model.layers)
    if in_graph and (contract.mean, contract.std) != (InputContract().mean, InputContract().std):
        raise CheckpointError(
            f"{config_path} normalizes with mean {contract.mean} and std {contract.std}; "
            "PPLCNetV2 builds ImageNet's into its graph: normalize the inputs yourself "
            "and pass include_preprocessing=False."
        )
    return config


def load_timm_v2(model: keras.Model, source: str | os.PathLike, state: dict | None = None) -> None:
    """Loads a timm `lcnetv2_*` checkpoint: a timm folder or its `model.safetensors`.

    timm's dropout is inverted (the identity at inference), so nothing is
    folded into the classifier, whatever the model's `dropout_rate`.

    Args:
        model: A model built by `keras_lcnet.PPLCNetV2` (either form).
        source: A timm folder (`config.json` + `model.safetensors`) or the file.
        state: The file's tensors, when already read.

    Raises:
        CheckpointError: The folder describes another timm model, other
            normalization statistics or another class count, or the tensors are not a
            PP-LCNetV2's or do not fit the model.
    """
    source = os.fspath(source)
    # Another architecture is refused before the weights are read.
    config = _check_timm_config_v2(model, source) if os.path.isdir(source) else None
    path = timm.weights_file(source)
    state = timm.read_state(path) if state is None else state
    if config is not None:
        timm.check_num_classes(config, state, os.path.join(source, "config.json"), path)
    _load_state_v2(model, timm.paddle_state_v2(state), path, dropout_rate=0.0)


def load_weights_v2(
    model: keras.Model, weights: str | os.PathLike, variant: str | None = None
) -> None:
    """Loads published weights or a weights file into a PP-LCNetV2.

    Published checkpoints are downloaded, converted and cached as
    PP-LCNet's are (`keras_lcnet.weights`, `$KERAS_LCNET_MIRROR` included)
    and need a branch-form model. A file is recognized by its content.

    Args:
        model: A model built by `keras_lcnet.PPLCNetV2`.
        weights: `"imagenet"` or `"imagenet_ssld"`, a PaddleClas `.pdparams`
            file, timm's `lcnetv2_*` folder or `model.safetensors`, or a Keras
            `.weights.h5` / `.keras` file saved from a model of the same
            form (branch or deploy).
        variant: `"small"`, `"base"` or `"large"`; needed for the tags.

    Raises:
        ValueError: A tag without a published checkpoint for `variant`.
        CheckpointError: The file cannot be read or does not fit the model.
        WeightsUnavailableError: Published weights could not be downloaded.
    """
    if weights in PRETRAINED_TAGS:
        preset = find_preset_v2(str(variant), weights)
        _load_pretrained(model, preset, convert=convert_pdparams_v2)
        return
    path = os.fspath(weights)
    if timm.is_timm_source(path):
        load_timm_v2(model, path)
        return
    if not load_keras_file(model, path):
        load_pdparams_v2(model, path)
