"""Classify images with PP-LCNet and print the top-5 ImageNet classes.

    python examples/classify_image.py examples/images/cat.jpg
    python examples/classify_image.py photo.jpg --variant x2_5 --weights imagenet_ssld
    python examples/classify_image.py photo.jpg --weights PPLCNet_x1_0_pretrained.pdparams

The ImageNet weights are downloaded once into the Keras cache
(`~/.keras/models/`). Offline, the script stops with the library's message
saying where to put the file, or you pass a local `.pdparams`/`.weights.h5`
file with `--weights`. A checkpoint with other classes than ImageNet's 1000
(a PaddleClas fine-tune) prints class indices instead of names.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

import keras_lcnet
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.presets import VARIANTS

DEFAULT_IMAGE = pathlib.Path(__file__).parent / "images" / "cat.jpg"


def checkpoint_classes(path: str) -> int:
    """Class count of a PaddleClas checkpoint, so fine-tuned files load too."""
    if pathlib.Path(path).read_bytes()[:4] == b"\x89HDF":  # Keras weights: assume ImageNet
        return 1000
    fc = read_pdparams(path).get("fc.weight")
    return 1000 if fc is None else int(fc.shape[-1])


def parse_args() -> argparse.Namespace:
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
    args.weights = None if args.weights.lower() == "none" else args.weights
    if args.smoke:
        args.variant, args.weights = "x0_25", None
    return args


def classify(args: argparse.Namespace) -> None:
    classes = 1000
    if args.weights not in (None, "imagenet", "imagenet_ssld"):
        classes = checkpoint_classes(args.weights)
    model = keras_lcnet.PPLCNet(scale=VARIANTS[args.variant], weights=args.weights, classes=classes)
    if args.weights is None:
        print("Random weights (--weights none / --smoke): the classes below are meaningless.")

    # PaddleClas' eval transform: RGB in [0, 255], short side 256, center crop 224.
    # The model normalizes inside (include_preprocessing=True), so no other step is needed.
    batch = np.concatenate([keras_lcnet.load_image(path) for path in args.images])
    probabilities = model.predict(keras_lcnet.preprocess_input(batch), verbose=0)

    for path, probs in zip(args.images, probabilities, strict=True):
        print(f"{path}  ({model.name}, weights={args.weights})")
        if classes == 1000:
            top = keras_lcnet.decode_predictions(probs[None], top=args.top)[0]
        else:
            top = [("", f"class {i}", float(probs[i])) for i in np.argsort(probs)[::-1][: args.top]]
        for rank, (_, label, score) in enumerate(top, 1):
            print(f"  {rank}. {label:<28} {score:7.2%}")


def main() -> int:
    args = parse_args()
    try:
        classify(args)
    except (ValueError, OSError) as e:
        # Offline, the library's WeightsUnavailableError (an OSError) names the URL,
        # the cache path to place the file at and `keras-lcnet convert`.
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
