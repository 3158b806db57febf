"""Export PP-LCNet to LiteRT, verify it against Keras, and time it on this CPU.

    python examples/export_litert.py --variant x1_0 --weights imagenet --output lcnet.tflite
    python examples/export_litert.py --quantize int8 --calibration-dir my_images/ \\
        --output lcnet_int8.tflite --threads 2
    python examples/export_litert.py --smoke   # fast offline check: x0_25, random weights

The same steps as `keras-lcnet export` followed by `keras-lcnet bench`. Runs on
the TensorFlow backend (Keras' default; see KERAS_BACKEND).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import keras_lcnet
from keras_lcnet.deploy import QUANTIZE_MODES, export_litert, measure
from keras_lcnet.presets import VARIANTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="x1_0",
                        help="PP-LCNet width (default x1_0)")
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet, imagenet_ssld, none, or a checkpoint path")
    parser.add_argument("--output", type=pathlib.Path, help="the .tflite file to write")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=None)
    parser.add_argument("--calibration-dir", help="representative images, for --quantize int8")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for timing")
    parser.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument("--smoke", action="store_true",
                        help="x0_25 with random weights into a temporary folder, 20 runs")
    args = parser.parse_args()

    if args.smoke:
        args.variant, args.weights, args.runs = "x0_25", "none", 20
    weights = None if args.weights.lower() == "none" else args.weights
    scale = VARIANTS[args.variant]
    # int8 models end with logits: XNNPACK has no int8 softmax.
    activation = None if args.quantize == "int8" else "softmax"
    try:
        model = keras_lcnet.PPLCNet(scale=scale, weights=weights, classifier_activation=activation)
    except (ValueError, OSError) as e:  # offline, the message says where to put the file
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{model.name}: {model.count_params():,} parameters, weights: {weights or 'random'}")

    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or pathlib.Path(tmp) / f"{model.name}.tflite"
        report = export_litert(model, output, quantize=args.quantize,
                               calibration=args.calibration_dir, strict=False)
        print(report.summary())
        print(measure(output, num_threads=args.threads, runs=args.runs).summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
