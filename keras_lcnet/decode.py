"""Model outputs -> labels: ImageNet-1k `decode_predictions`, and `decode_outputs` for every
preset's task (PaddleClas' deploy post-processors, `deploy/python/postprocess.py`)."""

from __future__ import annotations

import functools
import json
import numbers
from importlib import resources

import keras
import numpy as np

from keras_lcnet.labels import preset_labels
from keras_lcnet.presets import Preset, get_preset

NUM_CLASSES = 1000
_LABELLED_TASKS = ("single_label", "binary", "multi_label")

# The decoders' parameters and their defaults in upstream's post-processors
# (`None`: upstream's default is meaningless, the preset must set it).
_PARAMETERS = {
    "single_label": {"top": 1},  # Topk
    "binary": {"threshold": None},  # ThreshOutput (upstream default 0: always class 1)
    "multi_label": {"threshold": 0.5},  # MultiLabelThreshOutput
    "person_attribute": {"threshold": 0.5, "glasses_threshold": 0.3, "hold_threshold": 0.6},
    "vehicle_attribute": {"color_threshold": 0.5, "type_threshold": 0.5},
    "table_attribute": {
        f"{name}_threshold": 0.5
        for name in ("source", "number", "color", "clarity", "obstruction", "angle")
    },
}
# Attribute names and values as PaddleClas' PersonAttribute / VehicleAttribute /
# TableAttribute spell them.
_AGES = ("AgeLess18", "Age18-60", "AgeOver60")
_DIRECTIONS = ("Front", "Side", "Back")
_BAGS = ("HandBag", "ShoulderBag", "Backpack")
_UPPER = ("UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice")
_LOWER = ("LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts", "Skirt&Dress")
_COLORS = ("yellow", "orange", "green", "gray", "red", "blue", "white", "golden", "brown", "black")
_TYPES = ("sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate")
# (attribute, value above its threshold, value otherwise), by output index.
_TABLE = (
    ("source", "Scanned", "Photo"),
    ("number", "Little", "Numerous"),
    ("color", "Black-and-White", "Multicolor"),
    ("clarity", "Clear", "Blurry"),
    ("obstruction", "Without-Obstacles", "With-Obstacles"),
    ("angle", "Horizontal", "Tilted"),
)


@functools.cache
def _class_index() -> dict[str, list[str]]:
    text = resources.files("keras_lcnet").joinpath("data/imagenet_class_index.json").read_text()
    return json.loads(text)


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Decodes the prediction of an ImageNet model.

    Works offline: the class index ships with the package.

    Args:
        preds: NumPy array or backend tensor encoding a batch of predictions,
            shape `(samples, 1000)`.
        top: Integer, how many top-guesses to return. Defaults to `5`.

    Returns:
        A list of lists of top class prediction tuples
        `(class_name, class_description, score)`. One list of tuples per
        sample in batch input.

    Raises:
        ValueError: In case of invalid shape of the `preds` array (must be 2D,
            `(samples, 1000)`).
    """
    preds = np.asarray(keras.ops.convert_to_numpy(preds))
    if preds.ndim != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D "
            f"array of shape (samples, {NUM_CLASSES})). Received array with "
            f"shape: {preds.shape}"
        )
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"`top` must be a positive integer, got {top!r}.")
    index = _class_index()
    results = []
    for pred in preds:
        top_indices = np.argsort(pred)[::-1][:top]
        results.append([(*index[str(i)], float(pred[i])) for i in top_indices])
    return results


def _parameters(preset: Preset, top) -> dict:
    """The preset's decoder parameters over upstream's defaults; `top` overrides."""
    defaults = _PARAMETERS[preset.task]
    unknown = sorted(set(preset.postprocess) - set(defaults))
    if unknown:
        raise ValueError(
            f"Preset '{preset.name}' sets {unknown}, which the {preset.task} decoder does "
            f"not take (it takes {sorted(defaults)})."
        )
    params = {**defaults, **preset.postprocess}
    missing = sorted(k for k, v in params.items() if v is None)
    if missing:
        raise ValueError(f"Preset '{preset.name}' does not set {missing} for its decoder.")
    if top is not None:
        if preset.task != "single_label":
            raise ValueError(
                f"`top` applies to single_label presets; '{preset.name}' is {preset.task}."
            )
        params["top"] = top
    k = params.get("top", 1)
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`top` must be a positive integer, got {k!r}.")
    return params


def _probabilities(outputs, preset: Preset) -> np.ndarray:
    """The outputs as float64 `(samples, classes)` probabilities, checked."""
    # float64 like upstream's `.tolist()`: a float32 0.3 is then above a 0.3 threshold.
    probs = np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != preset.classes:
        raise ValueError(
            f"`decode_outputs` expects a batch of shape (samples, {preset.classes}) for "
            f"preset '{preset.name}'. Received shape: {probs.shape}"
        )
    if not np.all((probs >= 0) & (probs <= 1)):  # NaN fails too
        raise ValueError(
            f"`decode_outputs` expects probabilities in [0, 1], the output of "
            f"classifier_activation='{preset.activation}'; received values outside."
        )
    return probs


def _top_k(probs, labels, params) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[: params["top"]]  # ties in index order
    return [(labels[i], float(probs[i])) for i in order]


def _binary(probs, labels, params) -> tuple[str, float]:
    score = float(probs[1])
    if score < params["threshold"]:
        return labels[0], 1.0 - score
    return labels[1], score


def _multi_label(probs, labels, params) -> list[tuple[str, float]]:
    return [(labels[i], float(probs[i])) for i in np.flatnonzero(probs >= params["threshold"])]


def _person(res, labels, params) -> dict:
    threshold = params["threshold"]
    bag = int(np.argmax(res[15:18]))
    upper = ["LongSleeve" if res[3] > res[2] else "ShortSleeve"]
    upper += [name for name, r in zip(_UPPER, res[4:8], strict=True) if r > threshold]
    lower = [name for name, r in zip(_LOWER, res[8:14], strict=True) if r > threshold]
    return {
        "gender": "Female" if res[22] > threshold else "Male",
        "age": _AGES[int(np.argmax(res[19:22]))],
        "direction": _DIRECTIONS[int(np.argmax(res[23:26]))],
        "glasses": bool(res[1] > params["glasses_threshold"]),
        "hat": bool(res[0] > threshold),
        "hold_objects_in_front": bool(res[18] > params["hold_threshold"]),
        "bag": _BAGS[bag] if res[15 + bag] > threshold else "No bag",
        "upper": upper,
        "lower": lower or [_LOWER[int(np.argmax(res[8:14]))]],
        "shoe": "Boots" if res[14] > threshold else "No boots",
    }


def _vehicle(res, labels, params) -> dict:
    color, kind = int(np.argmax(res[:10])), int(np.argmax(res[10:19]))
    return {
        "color": (_COLORS[color], float(res[color]))
        if res[color] >= params["color_threshold"]
        else None,
        "type": (_TYPES[kind], float(res[10 + kind]))
        if res[10 + kind] >= params["type_threshold"]
        else None,
    }


def _table(res, labels, params) -> dict:
    # Upstream's labels compare attributes 4 and 5 with `number_threshold` (its
    # `output` vector uses their own); each attribute's own threshold is used here.
    return {
        name: above if r > params[f"{name}_threshold"] else below
        for (name, above, below), r in zip(_TABLE, res, strict=True)
    }


_DECODERS = {
    "single_label": _top_k,
    "binary": _binary,
    "multi_label": _multi_label,
    "person_attribute": _person,
    "vehicle_attribute": _vehicle,
    "table_attribute": _table,
}


def decode_outputs(outputs, preset: str | Preset, top: int | None = None) -> list:
    """Decodes a batch of a preset model's outputs as the preset's upstream pipeline does.

    The rules are PaddleClas' deploy post-processors (`deploy/python/postprocess.py`)
    with the preset's parameters (`preset.postprocess`). One result per sample:

    - `single_label` (`Topk`): a list of `(label, score)`, best first (equal
      scores in index order), `top` of them (the preset's `top` by default).
    - `binary` (`ThreshOutput`): `(label, score)`: class 1 with `p[1]` when
      `p[1] >= threshold`, else class 0 with `1 - p[1]`.
    - `multi_label` (`MultiLabelThreshOutput`): a list of `(label, score)` of
      every class with `p >= threshold`, in index order.
    - `person_attribute` (`PersonAttribute`): a dict with `"gender"`
      (`"Female"`/`"Male"`), `"age"`, `"direction"`, `"glasses"`, `"hat"`,
      `"hold_objects_in_front"` (bools), `"bag"` (`"No bag"` below the
      threshold), `"upper"` (sleeve, then patterns), `"lower"` (lists) and
      `"shoe"`, spelled as upstream spells them.
    - `vehicle_attribute` (`VehicleAttribute`): `{"color": (name, score),
      "type": (name, score)}`, each `None` where upstream says "unknown"
      (best score below its threshold).
    - `table_attribute` (`TableAttribute`): `{"source", "number", "color",
      "clarity", "obstruction", "angle"}` -> upstream's value names. Each
      attribute is compared with its own threshold; upstream compares
      `obstruction` and `angle` with `number_threshold` (the same value, 0.5,
      in its published config).

    Labels come from the preset's label file (`preset_labels`). Scores are the
    outputs' values (upstream rounds `Topk` scores to 5 decimals for display);
    comparisons are in float64, as upstream's `.tolist()`.

    Example:

    ```python
    model = keras_lcnet.from_preset("PPLCNet_x1_0_imagenet")
    image = keras_lcnet.load_image("cat.jpg", preset="PPLCNet_x1_0_imagenet")
    [top5] = keras_lcnet.decode_outputs(model.predict(image), "PPLCNet_x1_0_imagenet")
    ```

    Args:
        outputs: NumPy array or backend tensor of shape `(samples, classes)`:
            the probabilities the preset's model outputs (its
            `classifier_activation`, not logits).
        preset: A preset name or `keras_lcnet.presets.Preset`.
        top: For `single_label` presets, how many classes to return.

    Returns:
        A list with one result per sample, shaped by the task as above.

    Raises:
        ValueError: Outputs of another shape or outside `[0, 1]`, an unknown
            preset, `top` for another task, or decoder parameters the preset
            sets wrongly.
    """
    preset = get_preset(preset)
    params = _parameters(preset, top)
    probs = _probabilities(outputs, preset)
    # The attribute decoders name their outputs themselves, as upstream's do.
    labels = preset_labels(preset) if preset.task in _LABELLED_TASKS else ()
    decoder = _DECODERS[preset.task]
    return [decoder(row, labels, params) for row in probs]
