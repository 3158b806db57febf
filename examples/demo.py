"""`make demo`: classify the bundled sample images with PP-LCNet x1_0.

Uses PaddleClas' ImageNet weights when they are cached or can be downloaded;
offline, it says in one line how to get them and still runs the model with
random weights so the whole pipeline is exercised.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import keras_lcnet
from keras_lcnet.weights import WeightsUnavailableError, cached_checkpoint_path, find_checkpoint

IMAGES = pathlib.Path(__file__).parent / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="x1_0", help="PP-LCNet width (default x1_0)")
    parser.add_argument("images", nargs="*", type=pathlib.Path, help="images (default: bundled)")
    args = parser.parse_args()
    images = args.images or sorted(IMAGES.glob("*.jpg"))
    scale = keras_lcnet.model.VARIANTS[args.variant]

    try:
        model = keras_lcnet.PPLCNet(scale=scale, weights="imagenet")
        source = "PaddleClas ImageNet weights"
    except WeightsUnavailableError:
        entry = find_checkpoint(scale, "imagenet")
        print(
            f"ImageNet weights are not available offline: download {entry.url} to "
            f"{cached_checkpoint_path(entry)} and run again. Using random weights now."
        )
        model = keras_lcnet.PPLCNet(scale=scale, weights=None)
        source = "random weights: labels are meaningless"

    print(f"{model.name} ({model.count_params():,} parameters, {source})")
    batch = np.concatenate([keras_lcnet.load_image(path) for path in images])
    predictions = model.predict(keras_lcnet.preprocess_input(batch), verbose=0)
    for path, top in zip(images, keras_lcnet.decode_predictions(predictions, top=3)):
        guesses = ", ".join(f"{name} {score:.2f}" for _, name, score in top)
        print(f"  {path.name:<12} {guesses}")


if __name__ == "__main__":
    main()
