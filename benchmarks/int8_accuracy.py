"""int8 accuracy of a TRAINED PP-LCNet: LiteRT and OpenVINO full-integer exports against float.

No ImageNet weights can be downloaded where this runs, so the weights are
trained here, with the recipe of `examples/transfer_learning.py` (imported,
not copied): PP-LCNet from scratch on scikit-learn's 1,797 digits, upsampled
to RGB images, split 80/20 (stratified). The trained float model (class
scores as logits: the softmax is dropped, XNNPACK has no int8 softmax) is
quantized with each recipe, calibrated on images of the TRAIN split, and
every export is run on the whole held-out VALIDATION split: top-1 agreement
with the float Keras model, top-1 accuracy against the labels, the mean
cosine similarity of the logits, and how close to a tie the float model was
on the images where the export disagrees (its top-2 logit margin).

    python benchmarks/int8_accuracy.py             # x0_25 and x1_0; writes int8_accuracy.md here
    python benchmarks/int8_accuracy.py --variants x0_25 --output-dir /tmp/int8 --no-write

Trained models are cached in --output-dir (`digits_<variant>_<size>px_<epochs>e_seed<seed>.keras`)
and reused by later runs with the same settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import os
import pathlib
import platform
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata

import keras
import numpy as np

from keras_lcnet.deploy import export_litert, export_openvino
from keras_lcnet.deploy.comparison import CPU_FLAGS, cpu_flags
from keras_lcnet.deploy.latency import cpu_model
from keras_lcnet.deploy.runtime import Runtime
from keras_lcnet.deploy.verify import compare, keras_outputs

HERE = pathlib.Path(__file__).parent
EXAMPLE = HERE.parent / "examples" / "transfer_learning.py"
TARGET = 0.99  # issue 13: top-1 agreement with float, with >= 200 calibration images
MIN_CALIBRATION = 200
PACKAGES = (
    "tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "openvino", "nncf", "scikit-learn",
)
NONE = "-"  # table cell of a value that does not apply

# recipe(model, folder, calibration) -> path of the written export
Recipe = Callable[[keras.Model, pathlib.Path, np.ndarray], str]


def _litert_int8(model: keras.Model, folder: pathlib.Path, calibration: np.ndarray) -> str:
    path = folder / f"{model.name}_int8.tflite"
    return export_litert(model, path, quantize="int8", calibration=calibration, strict=False).path


def _litert_int8_native(model: keras.Model, folder: pathlib.Path,
                       calibration: np.ndarray) -> str:
    path = folder / f"{model.name}_int8_native.tflite"
    return export_litert(model, path, quantize="int8", calibration=calibration,
                         int8_hard_swish="native", strict=False).path


def _openvino_int8(model: keras.Model, folder: pathlib.Path, calibration: np.ndarray) -> str:
    path = folder / f"{model.name}_int8.xml"
    return export_openvino(model, path, precision="int8", calibration=calibration,
                           strict=False).path


RECIPES: dict[str, Recipe] = {
    "LiteRT int8 (export_litert default)": _litert_int8,
    'LiteRT int8, int8_hard_swish="native"': _litert_int8_native,
    "OpenVINO int8 (export_openvino default: NNCF MIXED preset)": _openvino_int8,
}


@dataclasses.dataclass
class Digits:
    """The example's digits split: calibration from train, evaluation on validation."""

    calibration: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    train_size: int


@dataclasses.dataclass
class Row:
    """One model on the validation split.

    Attributes:
        variant: PP-LCNet width.
        recipe: `"float (Keras)"` or the name of a quantization recipe.
        accuracy: Top-1 accuracy against the labels.
        agreement: Top-1 agreement with the float Keras model (`None` for it).
        samples: Validation images measured.
        cosine: Mean cosine similarity of the logits with float (`None` for it).
        margins: Float top-2 logit margins: of the images where the export
            disagrees with float, ascending (for the float row: of all images).
    """

    variant: str
    recipe: str
    accuracy: float
    samples: int
    agreement: float | None = None
    cosine: float | None = None
    margins: tuple[float, ...] = ()


def load_example():
    """`examples/transfer_learning.py` as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("transfer_learning", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_args(example, variant: str, image_size: int, epochs: int, seed: int):
    """The example's own defaults (its recipe), with the width, size, epochs and seed set."""
    return example.parse_args([
        "--variant", variant, "--image-size", str(image_size), "--epochs", str(epochs),
        "--seed", str(seed),
    ])


def load_digits_split(example, image_size: int, seed: int, calibration: int,
                      limit: int | None = None) -> Digits:
    """The example's split; the first `calibration` train images calibrate the int8 models."""
    x_train, x_val, _, y_val = example.load_data(image_size, seed, limit=limit)
    if calibration > len(x_train):
        raise ValueError(f"--calibration {calibration} exceeds the {len(x_train)} train images.")
    return Digits(x_train[:calibration], x_val, y_val, len(x_train))


def trained_model(example, args, output_dir: pathlib.Path, limit: int | None = None):
    """Trains a digits classifier with the example's recipe, or loads the cached one.

    Returns:
        The trained Keras model (softmax head, as the example builds it).
    """
    name = f"digits_{args.variant}_{args.image_size}px_{args.epochs}e_seed{args.seed}"
    cached = output_dir / (name + (f"_limit{limit}" if limit else "") + ".keras")
    if cached.exists():
        return keras.models.load_model(cached)
    keras.utils.set_random_seed(args.seed)
    model = example.build_model(args)
    x_train, x_val, y_train, y_val = example.load_data(args.image_size, args.seed, limit=limit)
    example.train(model, (x_train, y_train), (x_val, y_val), args)
    staged = cached.with_name(".partial-" + cached.name)  # no half-written cache on failure
    model.save(staged)
    os.replace(staged, cached)
    return model


def logits_model(model: keras.Model) -> keras.Model:
    """The trained classifier as one flat graph ending in logits (no augmentation, no softmax).

    The backbone's own graph is extended by a copy of the `head` Dense layer
    without its softmax, so the exporters see the PP-LCNet layers themselves
    (not a nested model) and XNNPACK needs no int8 softmax.
    """
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    head = model.get_layer("head")
    logits = keras.layers.Dense(head.units, name="logits")
    outputs = logits(backbone.output)
    logits.set_weights(head.get_weights())
    return keras.Model(backbone.input, outputs, name=f"{model.name}_logits")


def evaluate(model: keras.Model, variant: str, data: Digits, recipes: dict[str, Recipe],
             folder: pathlib.Path) -> list[Row]:
    """Float and every recipe's export on the validation split.

    Args:
        model: The float logits model.
        variant: Its width, for the rows.
        data: Calibration and validation images.
        recipes: Name -> `recipe(model, folder, calibration)` writing an export.
        folder: Where the exports are written.

    Returns:
        The float row, then one row per recipe.
    """
    reference = keras_outputs(model, data.x_val, 32)
    samples = len(data.y_val)
    margins = _margins(reference)
    rows = [Row(variant, "float (Keras)", _accuracy(reference, data.y_val), samples,
                margins=tuple(margins))]
    threads = os.cpu_count() or 1
    for name, recipe in recipes.items():
        outputs = Runtime(recipe(model, folder, data.calibration), threads).predict(data.x_val)
        agreement = compare(outputs, reference, "validation images")
        differ = np.argmax(outputs, axis=1) != np.argmax(reference, axis=1)
        rows.append(Row(variant, name, _accuracy(outputs, data.y_val), samples,
                        agreement.top1_agreement, agreement.cosine_similarity,
                        tuple(np.sort(margins[differ]))))
    return rows


def _margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per image: how far the float model was from a tie."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]).astype(float)


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def measure(variant: str, image_size: int, epochs: int, calibration: int,
            output_dir: pathlib.Path, recipes: dict[str, Recipe] | None = None,
            seed: int = 0, limit: int | None = None) -> list[Row]:
    """Trains (or reuses) one width on the digits and measures every recipe against float.

    Args:
        variant: PP-LCNet width, e.g. `"x0_25"`.
        image_size: Side of the digit images.
        epochs: Training epochs (the example's recipe otherwise).
        calibration: Train images that calibrate the int8 models.
        output_dir: Cache of trained models; exports go to a temporary folder.
        recipes: Name -> recipe; default `RECIPES`.
        seed: Seed of the split and the training.
        limit: Use only the first `limit` digits (quick tests).

    Returns:
        Rows as `evaluate` returns them.
    """
    example = load_example()
    args = example_args(example, variant, image_size, epochs, seed)
    model = logits_model(trained_model(example, args, output_dir, limit))
    data = load_digits_split(example, image_size, seed, calibration, limit)
    with tempfile.TemporaryDirectory() as folder:
        return evaluate(model, variant, data, recipes or RECIPES, pathlib.Path(folder))


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def _margin_cell(row: Row) -> str:
    """Float row: median margin of all images; export: the disagreeing images' margins."""
    if row.agreement is None:
        return f"median {np.median(row.margins):.2f}" if row.margins else NONE
    if not row.margins:
        return NONE
    listed = ", ".join(f"{m:.2f}" for m in row.margins[:5])
    return f"{len(row.margins)}: " + listed + (", ..." if len(row.margins) > 5 else "")


def table(rows: list[Row]) -> str:
    """The results as a Markdown table."""
    lines = ["| width | model | top-1 accuracy | top-1 agreement with float | logits cosine "
             "| disagreements: float top-2 logit margin |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        cosine = NONE if row.cosine is None else f"{row.cosine:.5f}"
        lines.append(f"| {row.variant} | {row.recipe} | {_percent(row.accuracy)} | "
                     f"{_percent(row.agreement)} | {cosine} | {_margin_cell(row)} |")
    return "\n".join(lines)


def report(rows: list[Row], settings: dict) -> str:
    """The Markdown report: set-up, recipe and results.

    Args:
        rows: From `measure`, for every width.
        settings: `image_size`, `epochs`, `calibration`, `validation`, `train`, `seed`.
    """
    flags = cpu_flags()
    flag_text = "unknown" if flags is None else (" ".join(flags) or "none")
    missed = [r for r in rows if r.agreement is not None and r.agreement < TARGET]
    verdict = ("every exported model reaches" if not missed else
               f"{len(missed)} of the exported models miss") + f" the {TARGET:.0%} target."
    return "\n".join([
        "# int8 accuracy on trained weights", "",
        "Written by `benchmarks/int8_accuracy.py` "
        f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC); do not edit.",
        "",
        f"- CPU: {cpu_model()}; flags {flag_text} (of {', '.join(CPU_FLAGS)}); "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}.",
        f"- Versions: {_versions()}.",
        "- Data: scikit-learn's 1,797 8x8 digits, upsampled (bilinear) to "
        f"{settings['image_size']}x{settings['image_size']} RGB in [0, 255]; stratified 80/20 "
        f"split (seed {settings['seed']}): {settings['train']} train, "
        f"{settings['validation']} validation images.",
        f"- Training: `examples/transfer_learning.py`'s recipe, from scratch, {settings['epochs']} "
        "epochs (Adam 2e-3 with cosine decay, batch 32, shifts and rotations, dropout 0.2). "
        "Exported as logits (softmax dropped).",
        f"- Calibration: the first {settings['calibration']} images of the train split; "
        f"measured on all {settings['validation']} validation images (batch 1).",
        "- Agreement: the same arg-max class as the float Keras model; cosine: mean over "
        "images of the cosine similarity of the 10 logits; margin: the float model's top-1 "
        "minus top-2 logit (float row: median over all images; export rows: the images "
        "where the export disagrees, smallest first), i.e. how near a tie they were.",
        "", table(rows), "",
        f"Target (issue 13): top-1 agreement >= {TARGET:.0%}; {verdict}", "",
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["x0_25", "x1_0"])
    parser.add_argument("--image-size", type=int, default=32, help="the example's default")
    parser.add_argument("--epochs", type=int, default=20, help="the example's default")
    parser.add_argument("--calibration", type=int, default=300,
                        help=f"train images for calibration (at least {MIN_CALIBRATION})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=pathlib.Path, default=HERE / "out" / "int8_accuracy",
                        help="cache of trained models")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help="print the report instead of writing int8_accuracy.md")
    args = parser.parse_args(argv)
    if args.calibration < MIN_CALIBRATION:
        parser.error(f"--calibration must be at least {MIN_CALIBRATION} (the issue's minimum).")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        rows += measure(variant, args.image_size, args.epochs, args.calibration,
                        args.output_dir, seed=args.seed)
        print(table([r for r in rows if r.variant == variant]), flush=True)
    data = load_digits_split(load_example(), args.image_size, args.seed, args.calibration)
    text = report(rows, {
        "image_size": args.image_size, "epochs": args.epochs, "seed": args.seed,
        "calibration": args.calibration, "validation": len(data.y_val), "train": data.train_size,
    })
    if args.write:
        (HERE / "int8_accuracy.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
