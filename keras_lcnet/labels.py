"""The class names of the presets, read from their label files, without Keras.

`keras_lcnet.decode` names its outputs with them; `keras-lcnet info NAME`
lists them without importing Keras.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from importlib import resources

from keras_lcnet.presets import Preset, get_preset


@functools.cache
def _read_labels(name: str) -> tuple[str, ...]:
    """The class names in a label file: `{"labels": [...]}`, or Keras' ImageNet class index."""
    if os.path.isabs(name):
        text = pathlib.Path(name).read_text(encoding="utf-8")
    else:
        text = resources.files("keras_lcnet").joinpath("data").joinpath(name).read_text("utf-8")
    data = json.loads(text)
    if "labels" in data:
        return tuple(data["labels"])
    return tuple(data[str(i)][1] for i in range(len(data)))  # {"0": [wnid, name], ...}


def preset_labels(preset: str | Preset) -> tuple[str, ...]:
    """The class names of a preset, by output index.

    Args:
        preset: A preset name or `keras_lcnet.presets.Preset`. Its `labels`
            is a JSON file in `keras_lcnet/data` (or an absolute path) holding
            `{"labels": [...]}` or Keras' ImageNet class index (whose class
            descriptions are taken); without one, the labels are the indices
            as strings.

    Returns:
        A tuple of `preset.classes` strings.

    Raises:
        ValueError: The label file does not have `preset.classes` entries.
    """
    preset = get_preset(preset)
    if preset.labels is None:
        return tuple(str(i) for i in range(preset.classes))
    labels = _read_labels(preset.labels)
    if len(labels) != preset.classes:
        raise ValueError(
            f"{preset.labels} holds {len(labels)} labels but preset '{preset.name}' "
            f"has {preset.classes} classes."
        )
    return labels
