"""The `keras-lcnet` command line: predict, convert, info, export and bench.

Arguments are checked by argparse before anything heavy is imported (exit
code 2); Keras and its backend are imported only by the commands that need
them, so `--help` and `--version` start at once. Errors are one line on
stderr, `keras-lcnet: error: ...`, with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from keras_lcnet import __version__
from keras_lcnet.architecture import MIN_INPUT_SIZE
from keras_lcnet.presets import PRETRAINED_TAGS, VARIANTS, variant_name

if TYPE_CHECKING:
    import keras

DEFAULT_VARIANT = "x1_0"
_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# Written to fd 2 by TensorFlow's native code while it loads, before absl's
# log level applies (TensorFlow 2.21): the oneDNN and CPU-feature notes.
_NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
)


def _error(message: object) -> None:
    print("keras-lcnet: error:", " ".join(str(message).splitlines()), file=sys.stderr)


# Argument types: a bad value exits with code 2 and argparse's message.


def _variant(value: str) -> str:
    value = value if value.startswith("x") else f"x{value}"
    if value not in VARIANTS:
        raise argparse.ArgumentTypeError(
            f"unknown variant {value!r}; choose from {', '.join(VARIANTS)}"
        )
    return value


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _number(value: str, kind: type):
    try:
        return kind(value)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {value!r}") from None


def _positive_int(value: str) -> int:
    number = _number(value, int)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = _number(value, float)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def _image_size(value: str) -> int:
    size = _number(value, int)
    if size < MIN_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"PP-LCNet needs at least {MIN_INPUT_SIZE}, got {value}")
    return size


def _stride_list(value: str) -> list:
    example = "'2,[2,1],[2,1],[2,1],[2,1]'"
    try:
        strides = json.loads(f"[{value.strip()}]")
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"cannot parse {value!r}; write it as PaddleClas does, e.g. {example}"
        ) from None
    if len(strides) == 1 and isinstance(strides[0], list):  # written with outer brackets
        strides = strides[0]
    return strides


def _output_file(value: str) -> str:
    if not os.path.isdir(os.path.dirname(os.path.abspath(value))):
        raise argparse.ArgumentTypeError(f"the folder of {value!r} does not exist")
    return value


def _model_file(value: str) -> str:
    if not value.endswith((".keras", ".weights.h5")):
        raise argparse.ArgumentTypeError(
            f"{value!r} must end with .keras (the whole model) or .weights.h5 (the weights)"
        )
    return _output_file(value)


# Imports and models, shared by the commands.


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Drops the native start-up log lines written to file descriptor 2; keeps the rest."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture:
                text = line.decode(errors="replace")
                if not _NATIVE_NOISE.match(text):
                    sys.stderr.write(text)


def _import_keras() -> None:
    """Imports Keras and its backend, without TensorFlow's start-up notes.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL` (then every line is theirs to
    see), it is set to 2 and the notes TensorFlow 2.21 prints regardless
    (oneDNN, absl's pre-initialization warning) are filtered out.
    """
    if "keras" in sys.modules:
        return
    if _TF_LOG_LEVEL in os.environ:
        importlib.import_module("keras")
        return
    os.environ[_TF_LOG_LEVEL] = "2"
    with _native_stderr_filtered():
        importlib.import_module("keras")


def _is_pdparams(weights: str | None) -> bool:
    """Whether `weights` names a file that is not a Keras HDF5 file (so, a checkpoint)."""
    if weights is None or weights in PRETRAINED_TAGS or not os.path.isfile(weights):
        return False
    import h5py

    return not h5py.is_hdf5(weights)


def _flag_overrides(args: argparse.Namespace, logits: bool) -> dict:
    """The `PPLCNet` arguments the user set with flags, and the output activation."""
    flags = {
        "scale": VARIANTS[args.variant] if args.variant else None,
        "classes": getattr(args, "classes", None),
        "stride_list": getattr(args, "stride_list", None),
        "dropout_rate": getattr(args, "dropout_rate", None),
    }
    set_flags = {name: value for name, value in flags.items() if value is not None}
    return {**set_flags, "classifier_activation": None if logits else "softmax"}


def _build_model(args: argparse.Namespace, logits: bool) -> keras.Model:
    """The model `--variant`, `--weights` and the architecture flags describe.

    A `.pdparams` file's shapes give the width, head and classes.
    """
    from keras_lcnet.model import PPLCNet
    from keras_lcnet.pretrained import from_checkpoint

    overrides = _flag_overrides(args, logits)
    if _is_pdparams(args.weights):
        return from_checkpoint(args.weights, **overrides)
    overrides.setdefault("scale", VARIANTS[DEFAULT_VARIANT])
    return PPLCNet(weights=args.weights, **overrides)


def _load_call(path: str, kwargs: dict) -> str:
    """The Python expression that rebuilds the converted model from `path`."""
    if path.endswith(".keras"):
        return f"keras.saving.load_model({path!r})"
    from keras_lcnet.model import PPLCNet

    defaults = inspect.signature(PPLCNet).parameters
    # json.dumps makes (2, 2, 2, 2, 2) and [2, 2, 2, 2, 2] the same stride_list.
    arguments = [f"weights={path!r}"] + [
        f"{name}={value!r}"
        for name, value in kwargs.items()
        if name != "scale" and json.dumps(value) != json.dumps(defaults[name].default)
    ]
    return f"keras_lcnet.PPLCNet_{variant_name(kwargs['scale'])}({', '.join(arguments)})"


def _save_atomically(model: keras.Model, path: str) -> None:
    """Saves the whole model (`.keras`) or its weights (`.weights.h5`); never half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".keras-lcnet-") as tmp:
        staged = os.path.join(tmp, os.path.basename(path))  # Keras goes by the suffix
        if path.endswith(".keras"):
            model.save(staged)
        else:
            model.save_weights(staged)
        os.replace(staged, path)


# The commands.


def _cmd_predict(args: argparse.Namespace) -> int:
    _import_keras()
    import numpy as np

    from keras_lcnet import decode_predictions, load_image

    paths, images = [], []
    for path in args.images:  # a bad file is reported, the others are still classified
        try:
            images.append(load_image(path))
            paths.append(path)
        except FileNotFoundError:
            _error(f"{path}: no such file")
        except (ValueError, OSError) as e:
            _error(f"{path}: {e}")
    if not images:
        return 1
    if args.weights is None:
        print("keras-lcnet: --weights none: random weights, the classes below are meaningless.",
              file=sys.stderr)
    model = _build_model(args, logits=False)
    if model.output_shape[-1] != 1000:
        raise ValueError("`predict` decodes ImageNet-1k classes; these weights have "
                         f"{model.output_shape[-1]} classes.")
    scores = model.predict(np.concatenate(images), verbose=0)
    for path, top in zip(paths, decode_predictions(scores, top=args.top), strict=True):
        print(path)
        for rank, (wnid, name, score) in enumerate(top, 1):
            print(f"  {rank}. {name:<30} {wnid}  {score:.4f}")
    return 0 if len(paths) == len(args.images) else 1


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_lcnet.checkpoints.pdparams import read_pdparams

    state = read_pdparams(args.checkpoint)  # NumPy only: a bad file fails before Keras loads
    _import_keras()
    from keras_lcnet.pretrained import checkpoint_config, from_checkpoint

    overrides = _flag_overrides(args, args.logits)
    kwargs = checkpoint_config(state, args.checkpoint, **overrides)
    model = from_checkpoint(args.checkpoint, state=state, **overrides)
    _save_atomically(model, args.output)
    head = "no classifier"
    if "classes" in kwargs:
        head = f"{kwargs['classes']} classes, " + ("logits" if args.logits else "softmax scores")
    print(f"Wrote {args.output} ({model.name}, {head}). Load it with\n"
          f"    {_load_call(args.output, kwargs)}")
    if args.output.endswith(".keras"):
        print("after `import keras, keras_lcnet` (which registers its layers with Keras).")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    _import_keras()
    from keras_lcnet.presets import IMAGENET_ACCURACY_SOURCE, IMAGENET_PRESETS, PADDLECLAS_LICENSE
    from keras_lcnet.weights import cached_checkpoint_path

    rows = [("model", "weights", "top-1", "top-5", "cached", "url")]
    for entry in IMAGENET_PRESETS:
        rows.append((
            f"PPLCNet_{entry.variant}",
            entry.tag,
            f"{entry.top1:.2f}",
            "-" if entry.top5 is None else f"{entry.top5:.2f}",
            "yes" if os.path.exists(cached_checkpoint_path(entry)) else "no",
            entry.url,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"\nAccuracy: {IMAGENET_ACCURACY_SOURCE}.\nWeights license: {PADDLECLAS_LICENSE}.")
    return 0


_FORMATS = {".tflite": "litert", ".onnx": "onnx"}


def _export_format(args: argparse.Namespace) -> str:
    """The export format; flags that do not fit it are an error (before anything is built)."""
    suffix = os.path.splitext(args.output)[1].lower()
    fmt = args.format or _FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(f"Cannot tell the format from {args.output!r}: name it *.tflite or "
                         "*.onnx, or pass --format.")
    if fmt == "onnx" and (args.quantize or args.calibration_dir or args.uint8_input):
        raise ValueError("--quantize, --calibration-dir and --uint8-input apply to LiteRT "
                         "exports; ONNX exports are float32.")
    if fmt == "litert" and (args.opset is not None or args.nchw_input):
        raise ValueError("--opset and --nchw-input apply to ONNX exports.")
    if args.quantize == "int8" and not args.calibration_dir:
        raise ValueError("--quantize int8 needs --calibration-dir, a folder of representative "
                         "images (a few hundred from your own data is typical).")
    return fmt


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = _export_format(args)
    _import_keras()
    from keras_lcnet.deploy import ExportError, export_litert, export_onnx

    # XNNPACK has no int8 softmax: an int8 model ending in one is split in two.
    logits = args.logits or args.quantize == "int8"
    model = _build_model(args, logits)
    print(f"{model.name}, weights: {args.weights or 'random (none)'}, outputs: "
          + ("logits (apply softmax on the host)" if logits else "softmax scores"))
    common = {"batch_size": args.batch_size, "image_size": args.image_size, "strict": False}
    if fmt == "litert":
        report = export_litert(model, args.output, quantize=args.quantize,
                               calibration=args.calibration_dir, uint8_input=args.uint8_input,
                               **common)
    else:
        report = export_onnx(model, args.output, opset=args.opset or 17,
                             nchw_input=args.nchw_input, **common)
    print(report.summary())
    if not report.ok:
        raise ExportError(f"{args.output} was written but failed verification: "
                          + "; ".join(report.failures))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    _import_keras()
    from keras_lcnet.deploy.latency import measure

    result = measure(args.model, num_threads=args.threads, runs=args.runs, warmup=args.warmup)
    over = args.budget_ms is not None and result.median_ms > args.budget_ms
    if args.json:
        data = result.to_dict()
        if args.budget_ms is not None:
            data.update(budget_ms=args.budget_ms, within_budget=not over)
        print(json.dumps(data))
    else:
        print(result.summary())
    if over:
        print(f"keras-lcnet: median {result.median_ms:.3f} ms is over the budget of "
              f"{args.budget_ms} ms", file=sys.stderr)
        return 1
    if args.budget_ms is not None and not args.json:
        print(f"  within the budget of {args.budget_ms} ms")
    return 0


def _shared_flags() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers for the flags several commands share."""
    variant = argparse.ArgumentParser(add_help=False)
    variant.add_argument("--variant", type=_variant, default=None,
                         help=f"width, e.g. x0_25 (default: a .pdparams file's own, else "
                         f"{DEFAULT_VARIANT})")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", type=_weights, default="imagenet",
                         help="imagenet, imagenet_ssld, none (random), or a .pdparams or "
                         ".weights.h5 file (default imagenet)")
    architecture = argparse.ArgumentParser(add_help=False)
    architecture.add_argument("--classes", type=_positive_int, default=None,
                              help="number of classes (default: a .pdparams file's own, else "
                              "1000)")
    architecture.add_argument("--stride-list", type=_stride_list, default=None,
                              help="PaddleClas stride_list, e.g. '2,[2,1],[2,1],[2,1],[2,1]' "
                              "(default 2,2,2,2,2)")
    architecture.add_argument("--dropout-rate", type=float, default=None,
                              help="the checkpoint's dropout_prob (default 0.2)")
    architecture.add_argument("--logits", action="store_true",
                              help="output logits instead of softmax scores")
    return {"variant": variant, "weights": weights, "architecture": architecture}


def _add_export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, type=_output_file,
                   help="file to write: *.tflite or *.onnx")
    p.add_argument("--format", choices=("litert", "onnx"), default=None,
                   help="default: from the --output suffix")
    p.add_argument("--quantize", choices=("float16", "dynamic", "int8"), default=None,
                   help="LiteRT quantization recipe (default: none, float32)")
    p.add_argument("--calibration-dir", default=None,
                   help="folder of representative images (needed for --quantize int8)")
    p.add_argument("--uint8-input", action="store_true",
                   help="int8 model taking uint8 pixels (raw camera frames)")
    p.add_argument("--image-size", type=_image_size, default=224,
                   help=f"input height and width, at least {MIN_INPUT_SIZE} (default 224)")
    p.add_argument("--batch-size", type=int, default=1, help="static batch size (default 1)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 14-18 (default 17)")
    p.add_argument("--nchw-input", action="store_true",
                   help="ONNX model takes NCHW images (no Transpose in the graph)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-lcnet` (exposed for docs and tests).

    Returns:
        An `argparse.ArgumentParser` whose parsed namespace has `func`, the command to run.
    """
    parser = argparse.ArgumentParser(
        prog="keras-lcnet",
        description="PP-LCNet for Keras 3: classify images, convert PaddleClas "
        "checkpoints, list the published weights, export to LiteRT/ONNX and time them.",
    )
    parser.add_argument("--version", action="version", version=f"keras-lcnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    shared = _shared_flags()

    p = sub.add_parser("predict", help="top-k ImageNet classes of images",
                       parents=[shared["variant"], shared["weights"]])
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--top", type=_positive_int, default=5,
                   help="how many classes to print (default 5)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("convert", help="convert a PaddleClas .pdparams file to a Keras file",
                       parents=[shared["variant"], shared["architecture"]])
    p.add_argument("checkpoint", help="PaddleClas .pdparams file")
    p.add_argument("--output", required=True, type=_model_file,
                   help="FILE.keras (the whole model) or FILE.weights.h5 (the weights)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="list PaddleClas' published PP-LCNet weights")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export to LiteRT (.tflite) or ONNX, verified against Keras",
                       parents=[shared["variant"], shared["weights"], shared["architecture"]])
    _add_export_flags(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="time a .tflite or .onnx model on this CPU")
    p.add_argument("model", help="a .tflite (LiteRT, XNNPACK) or .onnx (onnxruntime) file")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--budget-ms", type=_positive_float, default=None,
                   help="exit with code 1 when the median latency is over this many ms")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-lcnet`.

    Args:
        argv: The arguments after the program name; `sys.argv[1:]` by default.

    Returns:
        The exit code: 0, or 1 after an error printed as one line on stderr.
        Invalid arguments exit with code 2 (argparse's `SystemExit`).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        _error(e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
