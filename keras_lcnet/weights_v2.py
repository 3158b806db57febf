"""Resolving `weights=` for PP-LCNetV2: PaddleClas `.pdparams` and Keras weights files."""

from __future__ import annotations

import contextlib
import os

import keras

from keras_lcnet.architecture_v2 import DROPOUT_V2
from keras_lcnet.checkpoints.keras_files import HDF5_SIGNATURE, ZIP_SIGNATURE, read_keras_weights
from keras_lcnet.checkpoints.mapping import assign_arrays
from keras_lcnet.checkpoints.mapping_v2 import convert_pdparams_v2, fold_rep_arrays
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.presets import PRETRAINED_TAGS, find_preset_v2
from keras_lcnet.weights import _load_pretrained


def validate_weights_v2(weights) -> None:
    """Refuses a `weights=` value PP-LCNetV2 cannot load, before anything is built.

    Raises:
        ValueError: `weights` is neither `None`, an ImageNet tag nor the path
            to a file.
    """
    if weights is None or weights in PRETRAINED_TAGS:
        return
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return
    raise ValueError(
        "The `weights` argument of PPLCNetV2 should be `None` (random initialization), "
        "'imagenet', 'imagenet_ssld' (base only) or the path to a PaddleClas `.pdparams`, "
        "Keras `.weights.h5` or `.keras` file. "
        f"Received: weights={weights!r}"
        + (" (no such file)" if isinstance(weights, (str, os.PathLike)) else "")
    )


def _dropout_rate(model: keras.Model) -> float:
    with contextlib.suppress(ValueError):
        return float(model.get_layer("dropout").rate)
    return DROPOUT_V2


def load_pdparams_v2(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads a PaddleClas PP-LCNetV2 `.pdparams` checkpoint, all or nothing.

    The rep blocks' branches are loaded; a model in deploy form gets them
    folded. The model's `dropout_rate` is taken as the checkpoint's
    `dropout_prob` (folded into the classifier).

    Args:
        model: A model built by `keras_lcnet.PPLCNetV2`.
        path: The checkpoint.

    Raises:
        CheckpointError: The file cannot be read or does not fit the model.
    """
    path = os.fspath(path)
    arrays, sources = convert_pdparams_v2(read_pdparams(path), _dropout_rate(model))
    fold_rep_arrays(model, arrays, sources, path)
    assign_arrays(model, arrays, path, sources)


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
            file, or a Keras `.weights.h5` / `.keras` file saved from a model
            of the same form (branch or deploy).
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
    with open(path, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if head == HDF5_SIGNATURE or head.startswith(ZIP_SIGNATURE):
        with read_keras_weights(model, path, archive=head != HDF5_SIGNATURE) as (arrays, sources):
            assign_arrays(model, arrays, path, sources)
    else:
        load_pdparams_v2(model, path)
