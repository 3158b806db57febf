"""Building a model from a checkpoint alone: its shapes say the width, head and classes.

`keras_lcnet.PPLCNet_x1_0(weights=path)` needs the caller to know the
checkpoint's architecture; `from_checkpoint(path)` reads it off the file.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_lcnet.checkpoints.mapping import infer_architecture
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.model import PPLCNet
from keras_lcnet.presets import variant_name
from keras_lcnet.weights import load_pdparams

# Arguments a PaddleClas checkpoint's shapes determine; overrides may only agree.
_DETERMINED = ("scale", "classes", "use_last_conv", "class_expand")
_HEAD_ARGUMENTS = ("classes", "use_last_conv", "class_expand", "classifier_activation")


def checkpoint_config(
    state: dict[str, np.ndarray], origin: str = "the checkpoint", **overrides
) -> dict:
    """The `PPLCNet` arguments for a PaddleClas state dict, with `overrides` merged in.

    Width, classes and head come from the tensor shapes (see
    `keras_lcnet.checkpoints.mapping.infer_architecture`); an override of one
    of them must agree with the file. `stride_list` and `dropout_rate` leave
    no trace in a checkpoint: pass them as it was trained. A checkpoint
    without a classifier gives a model with `include_top=False`.

    Args:
        state: `{name: array}` as `read_pdparams` returns.
        origin: How to name the checkpoint in error messages.
        **overrides: Further `PPLCNet` arguments; `None` for a determined one
            (`scale`, `classes`, ...) means "as the checkpoint says".

    Returns:
        Keyword arguments for `keras_lcnet.PPLCNet` (without `weights`).

    Raises:
        ValueError: An override contradicts the checkpoint.
        CheckpointError: The file is not a PP-LCNet of a published width.
    """
    found = infer_architecture(state, origin)
    for name in _DETERMINED:
        if overrides.get(name) is None:  # not given
            overrides.pop(name, None)
        elif overrides[name] != found[name]:
            head = f"{found['classes']} classes" if found["include_top"] else "no classifier"
            given = f"{name}={overrides[name]!r}"
            if name == "scale":
                given += f" ({variant_name(overrides[name])})"
            raise ValueError(
                f"{given} does not match {origin}, a PPLCNet_"
                f"{variant_name(found['scale'])} checkpoint with {head}: leave {name} out."
            )
    if not found["include_top"]:  # a backbone: the head arguments mean nothing
        found = {"scale": found["scale"], "include_top": False}
        overrides = {k: v for k, v in overrides.items() if k not in _HEAD_ARGUMENTS}
    return {**found, **overrides}


def from_checkpoint(
    path: str | os.PathLike, state: dict[str, np.ndarray] | None = None, **overrides
) -> keras.Model:
    """Builds the PP-LCNet a PaddleClas `.pdparams` checkpoint describes, with its weights.

    Example:

    ```python
    model = keras_lcnet.from_checkpoint("textline_ori.pdparams",
                                        stride_list=[2, [2, 1], [2, 1], [2, 1], [2, 1]])
    ```

    Args:
        path: A PaddleClas `.pdparams` file (read once).
        state: Its tensors, when the caller has already read them with
            `read_pdparams`.
        **overrides: `PPLCNet` arguments the file cannot say (`stride_list`,
            `dropout_rate`, `input_shape`, `classifier_activation`, `name`,
            ...), or that must agree with it (`scale`, `classes`).

    Returns:
        A `keras.Model` holding the checkpoint's weights.

    Raises:
        ValueError: An override contradicts the checkpoint.
        CheckpointError: The file is not a readable PP-LCNet checkpoint.
    """
    path = os.fspath(path)
    state = read_pdparams(path) if state is None else state
    model = PPLCNet(weights=None, **checkpoint_config(state, path, **overrides))
    load_pdparams(model, path, state)  # the dropout fold uses the model's dropout_rate
    return model
