"""The `keras-lcnet` command line: predict, convert, info, export and bench.

Arguments are checked by argparse before anything heavy is imported (exit
code 2); Keras and its backend are imported only by the commands that need
them, so `--help`, `--version` and `info` start at once. Errors are one line
on stderr, `keras-lcnet: error: ...`, with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from keras_lcnet import __version__, presets
from keras_lcnet.architecture import MIN_INPUT_SIZE
from keras_lcnet.cache import cache_dir, is_cached
from keras_lcnet.labels import preset_labels
from keras_lcnet.presets import PRETRAINED_TAGS, VARIANTS, Preset, get_preset, variant_name
from keras_lcnet.startup import import_keras_quietly as _import_keras

if TYPE_CHECKING:
    import keras

DEFAULT_VARIANT = "x1_0"
DEFAULT_TOP = 5
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


def _preset(value: str) -> str:
    try:
        return get_preset(value).name
    except ValueError as e:  # the message suggests the closest name
        raise argparse.ArgumentTypeError(str(e)) from None


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


def _weights(args: argparse.Namespace) -> str | None:
    """`--weights` as `weights=`: `imagenet` when not given, `None` for `none` (random)."""
    if args.weights is None:  # not given (so a --preset may fix it instead)
        return "imagenet"
    return None if args.weights.lower() == "none" else args.weights


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
    weights = _weights(args)
    if _is_pdparams(weights):
        return from_checkpoint(weights, **overrides)
    overrides.setdefault("scale", VARIANTS[DEFAULT_VARIANT])
    return PPLCNet(weights=weights, **overrides)


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


def _preset_load_call(path: str, preset: Preset, logits: bool) -> str:
    """The Python expression that rebuilds a converted preset model from `path`."""
    if path.endswith(".keras"):
        return f"keras.saving.load_model({path!r})"
    activation = ", classifier_activation=None" if logits else ""
    return f"keras_lcnet.from_preset({preset.name!r}, weights={path!r}{activation})"


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


# predict: each image's result is made JSON data, then printed as JSON or as text.


def _read_images(paths: Sequence[str], preset: str | None) -> tuple[list[str], list]:
    """The images that load (with the preset's input pipeline, if any), and their paths.

    A bad file is reported on stderr; the others are still classified.
    """
    from keras_lcnet import load_image

    read, images = [], []
    for path in paths:
        try:
            images.append(load_image(path, preset=preset))
            read.append(path)
        except FileNotFoundError:
            _error(f"{path}: no such file")
        except (ValueError, OSError) as e:
            _error(f"{path}: {e}")
    return read, images


def _imagenet_results(args: argparse.Namespace, images) -> list[list[dict]]:
    """The top ImageNet classes of `images`, for the model `--variant`/`--weights` describe."""
    from keras_lcnet import decode_predictions

    if _weights(args) is None:
        print("keras-lcnet: --weights none: random weights, the classes below are meaningless.",
              file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # download progress: stdout holds results
        model = _build_model(args, logits=False)
    if model.output_shape[-1] != 1000:
        raise ValueError("`predict` decodes ImageNet-1k classes; these weights have "
                         f"{model.output_shape[-1]} classes.")
    scores = model.predict(images, verbose=0)
    return [
        [{"label": name, "wnid": wnid, "score": score} for wnid, name, score in top]
        for top in decode_predictions(scores, top=args.top or DEFAULT_TOP)
    ]


def _jsonable(value):
    """A decoded result as JSON data: each `(label, score)` pair becomes a dict."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return {"label": value[0], "score": value[1]}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _preset_results(args: argparse.Namespace, images) -> list:
    """`images` decoded as the preset's task decodes them (`keras_lcnet.decode_outputs`)."""
    from keras_lcnet import decode_outputs, from_preset

    with contextlib.redirect_stdout(sys.stderr):  # download progress: stdout holds results
        model = from_preset(args.preset)
    scores = model.predict(images, verbose=0)
    return [_jsonable(result) for result in decode_outputs(scores, args.preset, top=args.top)]


def _scored(entry: dict) -> str:
    return f"{entry['label']:<30} {entry['score']:.4f}"


def _attribute_text(value) -> str:
    if value is None:  # below its threshold: upstream says "unknown"
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    if isinstance(value, dict):
        return f"{value['label']} ({value['score']:.4f})"
    return str(value)


def _text_lines(result, task: str) -> list[str]:
    """A result as indented lines: ranked labels, one label, labels, or `key: value`."""
    if task == "single_label":
        return [
            f"  {rank}. {entry['label']:<30} "
            + (f"{entry['wnid']}  " if "wnid" in entry else "")
            + f"{entry['score']:.4f}"
            for rank, entry in enumerate(result, 1)
        ]
    if task == "binary":
        return [f"  {_scored(result)}"]
    if task == "multi_label":
        return [f"  {_scored(entry)}" for entry in result] or ["  (no label reaches its threshold)"]
    return [f"  {key}: {_attribute_text(value)}" for key, value in result.items()]


# info: the registry as a table, or one preset in full.


def _resize_rule(preset: Preset) -> str:
    short = preset.input.resize_short
    return "direct resize" if short is None else f"center crop of short side {short}"


def _preset_row(preset: Preset) -> tuple[str, ...]:
    """A preset's row in `info`: its first (headline) metric, the short resize rule."""
    height, width = preset.input.size
    short = preset.input.resize_short
    metric = f"{preset.metrics[0].name} {preset.metrics[0].value:g}" if preset.metrics else "-"
    return (
        preset.name,
        preset.task,
        str(preset.classes),
        f"{height}x{width}",
        "direct" if short is None else f"crop {short}",
        preset.input.channel_order,
        metric,
        "yes" if is_cached(preset) else "no",
    )


def _list_presets() -> None:
    header = ("preset", "task", "classes", "input", "resize", "channels", "published metric",
              "cached")
    groups = {"ImageNet-1k presets": [], "Task presets": []}
    for preset in presets.PRESETS:  # read now: the registry may be extended at run time
        group = "ImageNet-1k presets" if preset.tag in PRETRAINED_TAGS else "Task presets"
        groups[group].append(_preset_row(preset))
    rows = [header] + [row for group in groups.values() for row in group]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for title, group in groups.items():
        print(f"{title}:")
        for row in (header, *group):
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  " + "  ".join(cells).rstrip())
        print()
    licenses = dict.fromkeys(preset.license for preset in presets.PRESETS)
    print("Resize: a direct resize to the input size, or a center crop of it after resizing the\n"
          "short side. Metrics are upstream's published figures, each on its model's own\n"
          "evaluation set; `keras-lcnet info NAME` shows a preset's sources, labels, URL and\n"
          "license.\n"
          f"Weights licenses: {'; '.join(licenses)}.\n"
          f"Cache: {os.path.join(cache_dir(), 'models')}")


def _labels_text(preset: Preset) -> str:
    if preset.labels is None:
        return f"none bundled: outputs decode to class indices 0-{preset.classes - 1}"
    labels = preset_labels(preset)
    shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
    return f"{shown} ({len(labels)} labels, {os.path.join('keras_lcnet/data', preset.labels)})"


def _metrics_text(preset: Preset) -> str:
    """The published metrics, each group followed by its source."""
    by_source: dict[str, list[str]] = {}
    for metric in preset.metrics:
        by_source.setdefault(metric.source, []).append(f"{metric.name} {metric.value:g}")
    groups = (f"{', '.join(values)} ({source})" for source, values in by_source.items())
    return "; ".join(groups) or "none published"


def _describe(preset: Preset) -> None:
    contract = preset.input
    architecture = {"scale": preset.scale, "classes": preset.classes, **preset.architecture}
    fields = {
        "task": f"{preset.task} ({preset.activation} outputs)",
        "architecture": f"PPLCNet_{preset.variant}: "
        + ", ".join(f"{name}={value!r}" for name, value in architecture.items()),
        "input": f"{contract.size[0]}x{contract.size[1]} (height x width), "
        f"{_resize_rule(preset)}, {contract.interpolation}",
        "channels": f"{contract.channel_order}, x / 255 normalized with mean "
        f"{contract.mean} and std {contract.std}",
        "labels": _labels_text(preset),
        "postprocess": ", ".join(f"{k}={v!r}" for k, v in preset.postprocess.items()) or "-",
        "metrics": _metrics_text(preset),
        "url": preset.url,
        "cached": "yes" if is_cached(preset) else "no",
        "license": preset.license,
        "source": preset.source,
        "load": f"keras_lcnet.from_preset({preset.name!r})",
    }
    print(preset.name)
    for key, value in fields.items():
        print(f"  {key + ':':<13} {value}")


# The commands.


def _cmd_predict(args: argparse.Namespace) -> int:
    _import_keras()
    import numpy as np

    paths, images = _read_images(args.images, args.preset)
    if not images:
        return 1
    batch = np.concatenate(images)
    if args.preset is None:
        task, results = "single_label", _imagenet_results(args, batch)
    else:
        task, results = get_preset(args.preset).task, _preset_results(args, batch)
    for path, result in zip(paths, results, strict=True):
        if args.json:
            print(json.dumps({"path": path, "result": result}))
        else:
            print(path, *_text_lines(result, task), sep="\n")
    return 0 if len(paths) == len(args.images) else 1


def _convert_checkpoint(args: argparse.Namespace, state: dict) -> tuple[keras.Model, str, str]:
    """The model a checkpoint's shapes and the flags describe, its head, and its load call."""
    from keras_lcnet.pretrained import checkpoint_config, from_checkpoint

    overrides = _flag_overrides(args, args.logits)
    kwargs = checkpoint_config(state, args.checkpoint, **overrides)
    model = from_checkpoint(args.checkpoint, state=state, **overrides)
    head = "no classifier"
    if "classes" in kwargs:
        head = f"{kwargs['classes']} classes, " + ("logits" if args.logits else "softmax scores")
    return model, head, _load_call(args.output, kwargs)


def _convert_preset(
    args: argparse.Namespace, state: dict | None
) -> tuple[keras.Model, str, str]:
    """A preset's model with its published weights (fetched) or a local file's, and the rest.

    The preset gives what a checkpoint cannot tell: strides, dropout, input size.
    """
    from keras_lcnet.errors import CheckpointError
    from keras_lcnet.pretrained import from_preset
    from keras_lcnet.weights import load_pdparams

    preset = get_preset(args.preset)
    activation = {"classifier_activation": None} if args.logits else {}
    if state is None:
        model = from_preset(preset.name, **activation)  # from the cache, or downloaded
    else:
        model = from_preset(preset.name, weights=None, **activation)
        try:
            load_pdparams(model, args.checkpoint, state)
        except CheckpointError as e:
            raise CheckpointError(f"Not a checkpoint of preset '{preset.name}': {e}") from None
    outputs = "logits" if args.logits else f"{preset.activation} scores"
    head = f"preset '{preset.name}', {preset.classes} classes, {outputs}"
    return model, head, _preset_load_call(args.output, preset, args.logits)


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_lcnet.checkpoints.pdparams import read_pdparams

    # NumPy only: a bad file fails before Keras loads.
    state = None if args.checkpoint is None else read_pdparams(args.checkpoint)
    _import_keras()
    convert = _convert_checkpoint if args.preset is None else _convert_preset
    model, head, load_call = convert(args, state)
    _save_atomically(model, args.output)
    print(f"Wrote {args.output} ({model.name}, {head}). Load it with\n    {load_call}")
    if args.output.endswith(".keras"):
        print("after `import keras, keras_lcnet` (which registers its layers with Keras).")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    # Keras is not imported: the registry, label files and cache are plain files.
    if args.preset is None:
        _list_presets()
    else:
        _describe(get_preset(args.preset))
    return 0


_FORMATS = {".tflite": "litert", ".onnx": "onnx", ".xml": "openvino"}
_FORMAT_SUFFIXES = {"litert": ".tflite", "onnx": ".onnx", "openvino": ".xml"}


def _export_format(args: argparse.Namespace) -> str:
    """The export format; flags that do not fit it are an error (before anything is built)."""
    suffix = os.path.splitext(args.output)[1].lower()
    fmt = args.format or _FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(f"Cannot tell the format from {args.output!r}: name it *.tflite, "
                         "*.onnx or *.xml (OpenVINO), or pass --format.")
    if fmt == "onnx" and (args.quantize or args.calibration_dir or args.uint8_input):
        raise ValueError("--quantize, --calibration-dir and --uint8-input apply to LiteRT "
                         "exports (--calibration-dir also to OpenVINO int8); ONNX exports "
                         "are float32.")
    if fmt != "onnx" and (args.opset is not None or args.nchw_input):
        raise ValueError("--opset and --nchw-input apply to ONNX exports.")
    _check_openvino_flags(args, fmt)
    if "int8" in (args.quantize, args.precision) and not args.calibration_dir:
        flag = "--quantize" if args.quantize else "--precision"
        raise ValueError(f"{flag} int8 needs --calibration-dir, a folder of representative "
                         "images (a few hundred from your own data is typical).")
    if not args.output.lower().endswith(_FORMAT_SUFFIXES[fmt]):
        raise ValueError(f"A {fmt} export is written to a *{_FORMAT_SUFFIXES[fmt]} file; got "
                         f"--output {args.output!r}.")
    return fmt


def _check_openvino_flags(args: argparse.Namespace, fmt: str) -> None:
    """--precision belongs to OpenVINO, whose int8 recipe is --precision int8."""
    if fmt != "openvino" and args.precision:
        raise ValueError("--precision applies to OpenVINO exports (*.xml); LiteRT uses "
                         "--quantize.")
    if fmt == "openvino" and (args.quantize or args.uint8_input):
        raise ValueError("OpenVINO exports take --precision f32|bf16|int8 (int8 with "
                         "--calibration-dir), not --quantize or --uint8-input.")


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = _export_format(args)
    _import_keras()
    from keras_lcnet.deploy import ExportError, export_litert, export_onnx, export_openvino

    # XNNPACK has no int8 softmax: an int8 model ending in one is split in two.
    logits = args.logits or args.quantize == "int8"
    model = _build_model(args, logits)
    print(f"{model.name}, weights: {_weights(args) or 'random (none)'}, outputs: "
          + ("logits (apply softmax on the host)" if logits else "softmax scores"))
    common = {"batch_size": args.batch_size, "image_size": args.image_size, "strict": False}
    if fmt == "litert":
        report = export_litert(model, args.output, quantize=args.quantize,
                               calibration=args.calibration_dir, uint8_input=args.uint8_input,
                               **common)
    elif fmt == "openvino":
        report = export_openvino(model, args.output, precision=args.precision or "f32",
                                 calibration=args.calibration_dir, **common)
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


# Flag combinations argparse's groups cannot express ("--preset excludes --variant and
# --weights, which go together"), checked after parsing with argparse's message and exit 2.

# The flags whose values a preset fixes, by destination.
_PRESET_FIXES = {
    "variant": "--variant",
    "weights": "--weights",
    "classes": "--classes",
    "stride_list": "--stride-list",
    "dropout_rate": "--dropout-rate",
}


def _preset_conflict(args: argparse.Namespace) -> str | None:
    if args.preset is None:
        return None
    given = [flag for dest, flag in _PRESET_FIXES.items() if getattr(args, dest, None) is not None]
    return f"argument --preset: not allowed with argument {given[0]}" if given else None


def _check_predict(args: argparse.Namespace) -> str | None:
    if args.preset is not None and args.top is not None:
        task = get_preset(args.preset).task
        if task != "single_label":
            return (f"argument --top: applies to single_label presets; '{args.preset}' is "
                    f"{task}")
    return _preset_conflict(args)


def _check_convert(args: argparse.Namespace) -> str | None:
    if args.checkpoint is None and args.preset is None:
        return "give the CHECKPOINT to convert, or --preset NAME to fetch a published one"
    return _preset_conflict(args)


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: after parsing, its `check` default judges the flag combinations.

    `check(args)` returns what is wrong, or `None`; a problem is reported like
    any invalid argument (usage, `keras-lcnet <command>: error: ...`, exit code 2).
    """

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        check: Callable[[argparse.Namespace], str | None] | None = self.get_default("check")
        problem = check(namespace) if check else None
        if problem:
            self.error(problem)
        return namespace, extras


def _shared_flags() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers for the flags several commands share."""
    variant = argparse.ArgumentParser(add_help=False)
    variant.add_argument("--variant", type=_variant, default=None,
                         help=f"width, e.g. x0_25 (default: a .pdparams file's own, else "
                         f"{DEFAULT_VARIANT})")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", default=None,
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


def _add_predict(sub, shared: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("predict", help="classify images: ImageNet classes, or a preset's labels",
                       parents=[shared["variant"], shared["weights"]])
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--preset", type=_preset, default=None, metavar="NAME",
                   help="a preset (keras-lcnet info lists them): its model, weights, input "
                   "size and labels; not with --variant or --weights")
    p.add_argument("--top", type=_positive_int, default=None,
                   help=f"how many classes to print (default {DEFAULT_TOP}, or a "
                   "single_label preset's own)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image: its path and result")
    p.set_defaults(func=_cmd_predict, check=_check_predict)


def _add_convert(sub, shared: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="convert a PaddleClas .pdparams file to a Keras file",
                       parents=[shared["variant"], shared["architecture"]])
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="PaddleClas .pdparams file (default with --preset: the published one)")
    p.add_argument("--preset", type=_preset, default=None, metavar="NAME",
                   help="the preset the checkpoint belongs to (its architecture and input "
                   "size); without a CHECKPOINT, its published file is fetched")
    p.add_argument("--output", required=True, type=_model_file,
                   help="FILE.keras (the whole model) or FILE.weights.h5 (the weights)")
    p.set_defaults(func=_cmd_convert, check=_check_convert)


def _add_export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, type=_output_file,
                   help="file to write: *.tflite, *.onnx or *.xml (OpenVINO IR, with its .bin)")
    p.add_argument("--format", choices=("litert", "onnx", "openvino"), default=None,
                   help="default: from the --output suffix")
    p.add_argument("--quantize", choices=("float16", "dynamic", "int8"), default=None,
                   help="LiteRT quantization recipe (default: none, float32)")
    p.add_argument("--calibration-dir", default=None,
                   help="folder of representative images (needed for --quantize int8 and "
                   "--precision int8)")
    p.add_argument("--uint8-input", action="store_true",
                   help="int8 model taking uint8 pixels (raw camera frames)")
    p.add_argument("--precision", choices=("f32", "bf16", "int8"), default=None,
                   help="OpenVINO precision (default f32): bf16 needs a CPU with AVX512_BF16 "
                   "or AMX; int8 is NNCF quantization on --calibration-dir")
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
        "checkpoints, list the presets (published weights), export to LiteRT/ONNX and time "
        "them.",
    )
    parser.add_argument("--version", action="version", version=f"keras-lcnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    shared = _shared_flags()
    _add_predict(sub, shared)
    _add_convert(sub, shared)

    p = sub.add_parser("info", help="list the presets (PaddleClas' and PaddleX' published "
                       "PP-LCNet weights), or describe one")
    p.add_argument("preset", nargs="?", type=_preset, default=None,
                   help="describe this preset in full (default: list them all)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export to LiteRT (.tflite), ONNX or OpenVINO (.xml), "
                       "verified against Keras",
                       parents=[shared["variant"], shared["weights"], shared["architecture"]])
    _add_export_flags(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="time a .tflite, .onnx or OpenVINO .xml model on this CPU")
    p.add_argument("model", help="a .tflite (LiteRT, XNNPACK), .onnx (onnxruntime) or .xml "
                   "(OpenVINO IR) file")
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
    except BrokenPipeError:
        # The reader left (`keras-lcnet info | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as e:
        _error(e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
