"""Model outputs -> labels: ImageNet-1k `decode_predictions`, with the class index bundled."""

from __future__ import annotations

import functools
import json
from importlib import resources

import keras
import numpy as np

NUM_CLASSES = 1000


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
