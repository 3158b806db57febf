"""`make demo`: classify the bundled sample images with PP-LCNet x1_0, then deploy it.

Uses PaddleClas' ImageNet weights when they are cached or can be downloaded;
offline, it says in one line how to get them and still runs the model with
random weights so the whole pipeline is exercised. The same model is then
exported to LiteRT and ONNX, each export checked against Keras, and timed
beside keras.applications' MobileNetV3Large exported the same way.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile

import numpy as np

from keras_lcnet.startup import import_keras_quietly

import_keras_quietly()  # before anything loads TensorFlow: no native start-up notes

import keras_lcnet  # noqa: E402
from keras_lcnet.errors import WeightsUnavailableError  # noqa: E402
from keras_lcnet.presets import find_preset  # noqa: E402
from keras_lcnet.weights import cached_checkpoint_path  # noqa: E402

IMAGES = pathlib.Path(__file__).parent / "images"
TIMED_RUNS = 60


def deployment_report(model, source: str) -> None:
    """Exports `model` and MobileNetV3Large to LiteRT and ONNX, verifies and times them."""
    import keras

    from keras_lcnet.deploy import export_litert, export_onnx
    from keras_lcnet.deploy.latency import cpu_model, interleave
    from keras_lcnet.deploy.runtime import Runtime

    # keras.applications weights cannot be downloaded offline either; latency
    # does not depend on the weights' values.
    baseline = keras.applications.MobileNetV3Large(weights=None)
    threads = os.cpu_count() or 1
    print(f"\nDeployment: {model.name} ({source}) and {baseline.name} (weights=None), "
          "static batch 1, 224x224")
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for net in (model, baseline):
            for export, suffix in ((export_litert, "tflite"), (export_onnx, "onnx")):
                report = export(net, os.path.join(tmp, f"{net.name}.{suffix}"), strict=False)
                print(report.summary())
                runners[net.name, suffix] = Runtime(report.path, num_threads=threads)
        # Round-robin over the models so that they share the machine's noise.
        results = interleave(runners, rounds=TIMED_RUNS, block=1, warmup=5)
    print(f"\nLatency, batch 1, {threads} thread(s), median (p90) of {TIMED_RUNS} interleaved "
          f"runs on {cpu_model()}:")
    print(f"  {'model':<18} {'LiteRT/XNNPACK':>18} {'onnxruntime':>18}")
    for net in (model, baseline):
        cells = [f"{results[net.name, s].median_ms:.2f} ({results[net.name, s].p90_ms:.2f}) ms"
                 for s in ("tflite", "onnx")]
        print(f"  {net.name:<18} {cells[0]:>18} {cells[1]:>18}")
    lite = {net.name: results[net.name, "tflite"].median_ms for net in (model, baseline)}
    print(f"  {model.name} / {baseline.name} on LiteRT: "
          f"{lite[model.name] / lite[baseline.name]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="x1_0", help="PP-LCNet width (default x1_0)")
    parser.add_argument("images", nargs="*", type=pathlib.Path, help="images (default: bundled)")
    args = parser.parse_args()
    images = args.images or sorted(IMAGES.glob("*.jpg"))
    scale = keras_lcnet.presets.VARIANTS[args.variant]

    try:
        model = keras_lcnet.PPLCNet(scale=scale, weights="imagenet")
        source = "PaddleClas ImageNet weights"
    except WeightsUnavailableError:
        entry = find_preset(scale, "imagenet")
        print(
            f"ImageNet weights are not available offline: download {entry.url} to "
            f"{cached_checkpoint_path(entry)} and run again. Using random weights now."
        )
        model = keras_lcnet.PPLCNet(scale=scale, weights=None)
        source = "random weights: labels are meaningless"

    print(f"{model.name} ({model.count_params():,} parameters, {source})")
    batch = np.concatenate([keras_lcnet.load_image(path) for path in images])
    predictions = model.predict(keras_lcnet.preprocess_input(batch), verbose=0)
    for path, top in zip(images, keras_lcnet.decode_predictions(predictions, top=3), strict=True):
        guesses = ", ".join(f"{name} {score:.2f}" for _, name, score in top)
        print(f"  {path.name:<12} {guesses}")
    deployment_report(model, source)


if __name__ == "__main__":
    main()
