"""Classify images with PP-LCNet and print the top-5 ImageNet classes.

    python examples/classify_image.py examples/images/cat.jpg
    python examples/classify_image.py photo.jpg --variant x2_5 --weights imagenet_ssld
    python examples/classify_image.py photo.jpg --weights PPLCNet_x1_0_pretrained.pdparams

The ImageNet weights are downloaded once into the Keras cache
(`~/.keras/models/`). Offline, the script stops with the library's message
saying where to put the file, or you pass a local `.pdparams`/`.weights.h5`
file with `--weights`. A `.pdparams` checkpoint brings its own width and head:
one with other classes than ImageNet's 1000 (a PaddleClas fine-tune) prints
class indices instead of names.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

import keras_lcnet
from keras_lcnet.presets import VARIANTS

DEFAULT_IMAGE = pathlib.Path(__file__).parent / "images" / "cat.jpg"


def build_model(variant: str, weights: str | None):
    """PP-LCNet with `weights`; a `.pdparams` file's shapes give the width and classes."""
    if weights is None or not weights.endswith(".pdparams"):
        return keras_lcnet.PPLCNet(scale=VARIANTS[variant], weights=weights)
    return keras_lcnet.from_checkpoint(weights)


def classify(paths: list[str], variant: str, weights: str | None, top: int) -> None:
    """Prints the `top` classes of each image."""
    model = build_model(variant, weights)
    if weights is None:
        print("Random weights (--weights none / --smoke): the classes below are meaningless.")
    # PaddleClas' eval transform: RGB in [0, 255], short side 256, center crop 224.
    # The model normalizes inside (include_preprocessing=True): nothing else to do.
    batch = np.concatenate([keras_lcnet.load_image(path) for path in paths])
    for path, probs in zip(paths, model.predict(batch, verbose=0), strict=True):
        print(f"{path}  ({model.name}, weights={weights})")
        if len(probs) == 1000:
            ranked = keras_lcnet.decode_predictions(probs[None], top=top)[0]
        else:
            ranked = [("", f"class {i}", float(probs[i])) for i in np.argsort(probs)[::-1][:top]]
        for rank, (_, label, score) in enumerate(ranked, 1):
            print(f"  {rank}. {label:<28} {score:7.2%}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", nargs="*", default=[str(DEFAULT_IMAGE)],
                        help="image files (default: the bundled cat)")
    parser.add_argument("--variant", default="x1_0", choices=list(VARIANTS), help="PP-LCNet width")
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet, imagenet_ssld, none (random) or a weights file")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print")
    parser.add_argument("--smoke", action="store_true",
                        help="x0_25 with random weights: checks the pipeline in seconds, offline")
    args = parser.parse_args()
    weights = None if args.smoke or args.weights.lower() == "none" else args.weights
    try:
        classify(args.images, "x0_25" if args.smoke else args.variant, weights, args.top)
    except (ValueError, OSError) as e:
        # Offline, the library's WeightsUnavailableError (an OSError) names the URL,
        # the cache path to place the file at and `keras-lcnet convert`.
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
