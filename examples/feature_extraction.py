"""Multi-scale PP-LCNet features, as a detection or segmentation neck consumes them.

Prints the shape and stride of each stage map (PaddleClas' blocks2..blocks6)
for an image, and shows how to freeze the backbone for fine-tuning.

    python examples/feature_extraction.py examples/images/cat.jpg --variant x1_0
    python examples/feature_extraction.py --smoke   # seconds, random weights
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import keras_lcnet
from keras_lcnet.presets import VARIANTS

DEFAULT_IMAGE = pathlib.Path(__file__).parent / "images" / "cat.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description="Print PP-LCNet's multi-scale feature maps.")
    parser.add_argument("image", nargs="?", type=pathlib.Path, default=DEFAULT_IMAGE)
    parser.add_argument("--variant", default="x1_0", choices=list(VARIANTS))
    parser.add_argument(
        "--weights", default="imagenet", help="imagenet, imagenet_ssld, none or a file path"
    )
    parser.add_argument("--size", type=int, default=320, help="input side (any size >= 32)")
    parser.add_argument("--smoke", action="store_true", help="x0_25, random weights, 64x64")
    args = parser.parse_args()
    if args.smoke:
        args.variant, args.weights, args.size = "x0_25", "none", 64

    weights = None if args.weights.lower() == "none" else args.weights
    base = keras_lcnet.PPLCNet(
        scale=VARIANTS[args.variant], weights=weights, include_top=False
    )
    features = keras_lcnet.feature_extractor(base)

    # load_image center-crops like PaddleClas' eval; a detector would resize instead.
    image = keras_lcnet.load_image(args.image, size=args.size, resize_short=args.size)
    maps = features.predict(image, verbose=0)
    print(f"{base.name} on a {args.size}x{args.size} image ({args.weights} weights):")
    for stage, fmap in maps.items():
        stride = args.size // fmap.shape[1]
        print(f"  {stage}: {tuple(fmap.shape)}  stride {stride}  mean {np.mean(fmap):+.3f}")

    # Fine-tuning recipe: freeze the stem and blocks2..blocks4, keep BN statistics.
    keras_lcnet.freeze_backbone(base, up_to="blocks4")
    trainable = sum(int(np.prod(w.shape)) for w in base.trainable_weights)
    print(f"after freeze_backbone(up_to='blocks4'): {trainable:,} trainable parameters")


if __name__ == "__main__":
    main()
