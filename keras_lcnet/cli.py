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

from keras_lcnet import __version__, cli_v2, presets
from keras_lcnet.architecture import DEFAULT_STRIDES, MIN_INPUT_SIZE
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
    if cli_v2.is_v2(value):
        return value
    value = value if value.startswith("x") else f"x{value}"
    if value not in VARIANTS:
        raise argparse.ArgumentTypeError(
            f"unknown variant {value!r}; choose from {', '.join((*VARIANTS, *cli_v2.VARIANTS))}"
        )
    return value


def _preset(value: str) -> str:
    try:
        return get_preset(value).name
    except ValueError as e:  # the message suggests the closest name
        raise argparse.ArgumentTypeError(str(e)) from None


def _info_target(value: str) -> tuple[str, str]:
    """`info`'s argument: a known preset name first, else an existing checkpoint or hf:// repo."""
    try:
        return "preset", get_preset(value).name
    except ValueError as e:
        if value.startswith("hf://") or os.path.exists(value):
            return "checkpoint", value
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a preset nor an existing checkpoint file, folder or "
            f"hf://owner/repo: {e}"
        ) from None


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


def _thread_counts(value: str) -> list[int]:
    return [_positive_int(part) for part in value.split(",")]


# `keras_lcnet.deploy.comparison.TARGETS`, named here so that parsing imports no Keras.
COMPARE_TARGETS = ("litert-f32", "litert-f16", "litert-int8", "onnx-f32", "openvino-f32",
                   "openvino-bf16", "openvino-int8")


def _compare_targets(value: str) -> list[str]:
    targets = [part.strip() for part in value.split(",")]
    unknown = [t for t in targets if t not in COMPARE_TARGETS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown target {unknown[0]!r}; choose from {', '.join(COMPARE_TARGETS)}")
    return list(dict.fromkeys(targets))


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


def _records_file(value: str) -> str:
    if not value.lower().endswith((".jsonl", ".csv", ".parquet")):
        raise argparse.ArgumentTypeError(f"{value!r} must end with .jsonl, .csv or .parquet")
    return _output_file(value)


def _predict_model_file(value: str) -> str:
    if not value.lower().endswith((".keras", ".tflite", ".onnx")):
        raise argparse.ArgumentTypeError(f"{value!r} must be a .keras, .tflite or .onnx file")
    return value


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
        "scale": VARIANTS.get(args.variant),  # None for v2_* (scale and depths in one name)
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
    if cli_v2.is_v2(args.variant):
        return cli_v2.build_model(args.variant, weights, overrides, _is_pdparams(weights))
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
        f"{name}={kwargs[name]!r}"
        for name in defaults  # in PPLCNet's argument order
        if name in kwargs and name != "scale"
        and json.dumps(kwargs[name]) != json.dumps(defaults[name].default)
    ]
    return f"keras_lcnet.PPLCNet_{variant_name(kwargs['scale'])}({', '.join(arguments)})"


def _preset_load_call(path: str, preset: Preset, overrides: dict) -> str:
    """The Python expression that rebuilds a converted preset model from `path`."""
    if path.endswith(".keras"):
        return f"keras.saving.load_model({path!r})"
    arguments = "".join(f", {name}={value!r}" for name, value in overrides.items())
    return f"keras_lcnet.from_preset({preset.name!r}, weights={path!r}{arguments})"


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


def _predict_model(args: argparse.Namespace):
    """The `--model` file, the preset's model, or the ImageNet model of `--variant`/`--weights`."""
    if args.model is not None:
        return args.model  # predict_files opens it with the runtime that fits
    from keras_lcnet import from_preset

    with contextlib.redirect_stdout(sys.stderr):  # download progress: stdout holds results
        if args.preset is not None:
            return from_preset(args.preset)
        if _weights(args) is None:
            print("keras-lcnet: --weights none: random weights, the classes below are "
                  "meaningless.", file=sys.stderr)
        model = _build_model(args, logits=False)
    if model.output_shape[-1] != 1000:
        raise ValueError("`predict` decodes ImageNet-1k classes; these weights have "
                         f"{model.output_shape[-1]} classes.")
    return model


def _result(record: dict, task: str):
    """A record as `predict --json` prints its result (and the text lines are made from)."""
    if "attributes" in record:
        return record["attributes"]
    pairs = [{"label": label, "score": score}
             for label, score in zip(record["labels"], record["scores"], strict=True)]
    for pair, wnid in zip(pairs, record.get("wnids", ()), strict=False):
        pair.update(wnid=wnid, score=pair.pop("score"))  # keys in the order printed
    return pairs[0] if task == "binary" else pairs


def _print_records(records, args: argparse.Namespace) -> int:
    """Prints each record as text or JSON on stdout, each failure on stderr."""
    task = "single_label" if args.preset is None else get_preset(args.preset).task
    failed = 0
    for record in records:
        if "error" in record:
            _error(f"{record['path']}: {record['error']}")
            failed += 1
        elif args.json:
            print(json.dumps({"path": record["path"], "result": _result(record, task)}))
        else:
            print(record["path"], *_text_lines(_result(record, task), task), sep="\n")
    return 1 if failed else 0


def _progress(records, args: argparse.Namespace, done: set):
    """`records` with a progress bar (images/s, ETA) on stderr, when it is a terminal."""
    if not sys.stderr.isatty():
        return records
    from tqdm import tqdm

    from keras_lcnet.batch import find_images

    total = sum(path not in done for path in find_images(args.images))  # paths only: cheap
    return tqdm(records, total=total, unit="img", smoothing=0.1, file=sys.stderr)


def _save_records(records, skip: set, args: argparse.Namespace) -> int:
    """Writes `records` to `--output` batch by batch, then a summary on stderr.

    `skip`, which `records` reads, gets the paths the file already has records of.
    """
    from keras_lcnet.record_files import open_records, write_records

    written, failures = 0, []  # the first few failed paths, for the summary
    with open_records(args.output, resume=args.resume) as out:
        done, failed = out.done, out.failed
        skip.update(done)
        try:
            for record in _progress(write_records(records, out, args.batch_size), args, done):
                written += 1
                if "error" in record:
                    failed += 1
                    failures += [record["path"]][: 5 - len(failures)]
        except KeyboardInterrupt:
            print(f"keras-lcnet: interrupted; {args.output} holds every finished batch, run "
                  "the same command with --resume to go on.", file=sys.stderr)
            return 130
    print(f"keras-lcnet: {written} records written to {args.output}"
          + (f" after the {len(done)} it held" if done else ""), file=sys.stderr)
    if failed:
        more = failed - len(failures)  # failures found on resuming are not named
        shown = ": " + ", ".join(failures + ([f"{more} more"] if more else [])) if failures else ""
        print(f"keras-lcnet: {failed} of {written + len(done)} inputs failed, see their "
              f"\"error\" in {args.output}{shown}", file=sys.stderr)
    return 1 if failed else 0


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
    groups["PP-LCNetV2 ImageNet-1k weights (not presets: --variant v2_small|v2_base|v2_large "
           "--weights imagenet|imagenet_ssld)"] = [_preset_row(p) for p in presets.V2_PRESETS]
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
    if args.output is not None:
        from keras_lcnet.record_files import check_format

        check_format(args.output)  # e.g. pyarrow missing: say so before building a model
    _import_keras()
    from keras_lcnet.batch import predict_files

    # The model (or --model file) is opened here, before --output is touched.
    skip: set[str] = set()  # read lazily: --resume fills it before the first input is read
    records = predict_files(args.images, _predict_model(args), preset=args.preset, top=args.top,
                            batch_size=args.batch_size, workers=args.workers, skip=skip)
    if args.output is None:
        return _print_records(records, args)
    return _save_records(records, skip, args)


def _architecture_text(arch: dict) -> str:
    """An architecture on one line: width, head, strides unless default, last conv, dropout."""
    if "depths" in arch:
        return cli_v2.architecture_text(arch)
    parts = [f"PPLCNet_{arch['variant']}"]
    parts.append(f"{arch['classes']} classes" if arch["include_top"] else "no classifier")
    strides = arch["stride_list"]
    if strides is None:
        parts.append("strides not recorded")
    elif strides != list(DEFAULT_STRIDES):
        parts.append(f"strides {json.dumps(strides, separators=(',', ':'))}")
    if arch["include_top"]:
        has_last = arch["use_last_conv"]
        parts.append(f"last conv {arch['class_expand']}" if has_last else "no last conv")
        if has_last:
            dropout = arch["dropout_rate"]
            parts.append("dropout not recorded" if dropout is None else f"dropout {dropout:g}")
    return ", ".join(parts)


def _origin_text(described: dict, args: argparse.Namespace, built: dict) -> str:
    """Where `convert` took each part of the architecture from."""
    origin = f"read from the {described['title']}'s {described['architecture_from']}"
    flags = {"stride_list": "--stride-list", "dropout_rate": "--dropout-rate"}
    unrecorded = [
        f"{name} ({flag if getattr(args, name) is not None else 'default'})"
        for name, flag in flags.items()
        if described["architecture"][name] is None and built[name] is not None
    ]
    return origin + (f"; not in the file: {', '.join(unrecorded)}" if unrecorded else "")


def _rebuild_kwargs(arch: dict, args: argparse.Namespace) -> dict:
    """The `PPLCNet` arguments of a converted model's architecture (for `_load_call`)."""
    kwargs = {"scale": arch["scale"], "include_top": arch["include_top"],
              "stride_list": arch["stride_list"]}
    if args.no_preprocessing:
        kwargs["include_preprocessing"] = False
    if arch["include_top"]:
        kwargs.update(classes=arch["classes"], use_last_conv=arch["use_last_conv"],
                      classifier_activation=None if args.logits else "softmax")
    if arch["include_top"] and arch["use_last_conv"]:
        kwargs.update(class_expand=arch["class_expand"], dropout_rate=arch["dropout_rate"])
    return kwargs


def _convert_checkpoint(
    args: argparse.Namespace, described: dict
) -> tuple[keras.Model, str, str]:
    """The model `from_checkpoint` builds from any checkpoint form and the flags, and the rest."""
    from keras_lcnet.checkpoints.forms import architecture_of_layers
    from keras_lcnet.pretrained import from_checkpoint

    if described["form"] == "keras":  # nothing to convert
        raise ValueError(
            f"{args.checkpoint} is a Keras file already: load it with keras.saving.load_model "
            "(.keras) or as weights= of the model it was saved from (.weights.h5)."
        )
    overrides = _flag_overrides(args, args.logits)
    if args.no_preprocessing:
        overrides["include_preprocessing"] = False
    if described["architecture"] and "depths" in described["architecture"]:
        return cli_v2.convert_checkpoint(args, described, overrides)
    if cli_v2.is_v2(args.variant):
        raise ValueError(f"{args.checkpoint} is not a PP-LCNetV2 checkpoint: leave --variant "
                         f"{args.variant} out.")
    model = from_checkpoint(args.checkpoint, **overrides)
    built = architecture_of_layers({layer.name: layer.get_config() for layer in model.layers})
    print(f"Architecture: {_architecture_text(built)} ({_origin_text(described, args, built)})")
    head = "no classifier"
    if built["include_top"]:
        head = f"{built['classes']} classes, " + ("logits" if args.logits else "softmax scores")
    return model, head, _load_call(args.output, _rebuild_kwargs(built, args))


def _convert_preset(args: argparse.Namespace) -> tuple[keras.Model, str, str]:
    """A preset's model with its published weights (fetched) or a local file's, and the rest.

    The preset gives what a checkpoint may not tell: strides, dropout, input size.
    """
    from keras_lcnet.errors import CheckpointError
    from keras_lcnet.pretrained import from_preset
    from keras_lcnet.weights import load_weights

    preset = get_preset(args.preset)
    overrides = {"classifier_activation": None} if args.logits else {}
    if args.no_preprocessing:
        overrides["include_preprocessing"] = False
    if args.checkpoint is None:
        model = from_preset(preset.name, **overrides)  # from the cache, or downloaded
    else:
        model = from_preset(preset.name, weights=None, **overrides)
        try:
            load_weights(model, args.checkpoint)
        except CheckpointError as e:
            raise CheckpointError(f"Not a checkpoint of preset '{preset.name}': {e}") from None
    outputs = "logits" if args.logits else f"{preset.activation} scores"
    head = f"preset '{preset.name}', {preset.classes} classes, {outputs}"
    return model, head, _preset_load_call(args.output, preset, overrides)


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_lcnet.checkpoints.forms import describe_checkpoint

    # NumPy only: a bad file fails before Keras loads.
    described = None if args.checkpoint is None else describe_checkpoint(args.checkpoint)
    _import_keras()
    if args.preset is None:
        model, head, load_call = _convert_checkpoint(args, described)
    else:
        model, head, load_call = _convert_preset(args)
    _save_atomically(model, args.output)
    print(f"Wrote {args.output} ({model.name}, {head}). Load it with\n    {load_call}")
    if args.output.endswith(".keras"):
        print("after `import keras, keras_lcnet` (which registers its layers with Keras).")
    return 0


def _labels_line(described: dict) -> str:
    labels, arch = described["labels"], described["architecture"]
    if labels:
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        return f"{shown} ({len(labels)} labels)"
    if arch and arch["include_top"]:
        return f"none in the file: outputs decode to class indices 0-{arch['classes'] - 1}"
    return "none"


def _input_line(contract: dict | None) -> str:
    if contract is None:
        return "not recorded (PaddleClas' default: 224x224, RGB, ImageNet statistics)"
    short = contract["resize_short"]
    resize = "direct resize" if short is None else f"center crop of short side {short}"
    return (
        f"{contract['size'][0]}x{contract['size'][1]} (height x width), {resize}, "
        f"{contract['channel_order']} normalized with mean {contract['mean']} and std "
        f"{contract['std']}"
    )


def _describe_source(source: str, as_json: bool) -> None:
    """`info SOURCE`: a checkpoint's form, architecture, size, labels and input contract."""
    from keras_lcnet.checkpoints.forms import describe_checkpoint

    described = describe_checkpoint(source)
    if as_json:
        print(json.dumps(described))
        return
    arch = described["architecture"]
    fields = {
        "form": f"{described['form']} ({described['title']})",
        "architecture": "not recorded (a weights file: build the model it was saved from)"
        if arch is None
        else f"{_architecture_text(arch)} (read from its {described['architecture_from']})",
        "tensors": f"{described['tensors']} ({described['parameters']:,} numbers, "
        "BatchNorm statistics included)",
        "labels": _labels_line(described),
        "input": _input_line(described["input"]),
    }
    print(source)
    for key, value in fields.items():
        print(f"  {key + ':':<13} {value}")


def _cmd_info(args: argparse.Namespace) -> int:
    # Keras is not imported: the registry, label files, cache and checkpoint readers need
    # only plain files and NumPy.
    if args.source is None:
        _list_presets()
        return 0
    kind, value = args.source
    if kind == "preset":
        _describe(get_preset(value))
    else:
        _describe_source(value, args.json)
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
    if args.int8_hard_swish and (fmt != "litert" or args.quantize != "int8"):
        raise ValueError("--int8-hard-swish applies to LiteRT int8 exports (*.tflite with "
                         "--quantize int8).")
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
                               int8_hard_swish=args.int8_hard_swish or "xnnpack", **common)
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


def _compare_model(args: argparse.Namespace) -> tuple[keras.Model, tuple[int, int] | None]:
    """The model --preset or --variant/--weights describe, and its input size.

    Logits outputs: XNNPACK has no int8 softmax (an int8 model ending in one is split).
    """
    from keras_lcnet import from_preset

    with contextlib.redirect_stdout(sys.stderr):  # download progress: stdout holds the report
        if args.preset is not None:
            size = args.image_size or get_preset(args.preset).input.size
            return from_preset(args.preset, classifier_activation=None), size
        if _weights(args) is None:
            print("keras-lcnet: --weights none: random weights; int8 and bf16 agreement "
                  "with Keras says little.", file=sys.stderr)
        return _build_model(args, logits=True), args.image_size


def _cmd_compare(args: argparse.Namespace) -> int:
    _import_keras()
    from keras_lcnet.deploy.comparison import DEFAULT_TARGETS, compare_runtimes

    model, image_size = _compare_model(args)
    # Converters print to stdout, which holds only the report.
    with contextlib.redirect_stdout(sys.stderr):
        report = compare_runtimes(model, image_size=image_size, threads=args.threads or [1],
                                  runs=args.runs, warmup=args.warmup,
                                  precisions=args.precisions or DEFAULT_TARGETS,
                                  calibration=args.calibration_dir)
    print(report.to_json() if args.json else report.table())
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.compare:
        return _cmd_compare(args)
    _import_keras()
    from keras_lcnet.deploy.latency import measure

    threads = args.threads[0] if args.threads else 1
    result = measure(args.model, num_threads=threads, runs=args.runs, warmup=args.warmup)
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
    if args.resume and args.output is None:
        return "argument --resume: needs --output, the file to resume"
    if args.json and args.output is not None:
        return "argument --json: not allowed with argument --output (its suffix sets the format)"
    if args.model is not None and (args.variant or args.weights):
        return "argument --model: not allowed with --variant or --weights"
    if args.preset is not None and args.top is not None:
        task = get_preset(args.preset).task
        if task != "single_label":
            return (f"argument --top: applies to single_label presets; '{args.preset}' is "
                    f"{task}")
    return _preset_conflict(args)


def _check_info(args: argparse.Namespace) -> str | None:
    if args.json and (args.source is None or args.source[0] == "preset"):
        return "argument --json: applies to info SOURCE, a checkpoint file, folder or hf:// repo"
    return None


def _check_convert(args: argparse.Namespace) -> str | None:
    if args.checkpoint is None and args.preset is None:
        return "give the CHECKPOINT to convert, or --preset NAME to fetch a published one"
    return _preset_conflict(args)


# bench flags that only --compare uses, by destination.
_COMPARE_ONLY = {
    "variant": "--variant",
    "weights": "--weights",
    "preset": "--preset",
    "image_size": "--image-size",
    "calibration_dir": "--calibration-dir",
    "precisions": "--precisions",
}


def _check_bench(args: argparse.Namespace) -> str | None:
    if args.compare:
        if args.model is not None:
            return "argument MODEL: not allowed with --compare (it exports the model itself)"
        if args.budget_ms is not None:
            return "argument --budget-ms: not allowed with --compare"
        return _preset_conflict(args)
    if args.model is None:
        return "give the MODEL file to time, or --compare to export and time every runtime"
    given = [flag for dest, flag in _COMPARE_ONLY.items() if getattr(args, dest) is not None]
    if given:
        return f"argument {given[0]}: applies to --compare"
    if args.threads and len(args.threads) > 1:
        return "argument --threads: one thread count without --compare"
    return None


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
                         help=f"width, e.g. x0_25, or a PP-LCNetV2: v2_small, v2_base, "
                         f"v2_large (default: a checkpoint's own, else {DEFAULT_VARIANT})")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", default=None,
                         help="imagenet, imagenet_ssld, none (random), or a .pdparams or "
                         ".weights.h5 file (default imagenet)")
    architecture = argparse.ArgumentParser(add_help=False)
    architecture.add_argument("--classes", type=_positive_int, default=None,
                              help="number of classes (default: a checkpoint's own, else "
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
    p.add_argument("images", nargs="+", metavar="SOURCE",
                   help="image files, folders (searched recursively) or quoted glob patterns")
    p.add_argument("--preset", type=_preset, default=None, metavar="NAME",
                   help="a preset (keras-lcnet info lists them): its model, weights, input "
                   "size and labels; not with --variant or --weights")
    p.add_argument("--top", type=_positive_int, default=None,
                   help=f"how many classes to print (default {DEFAULT_TOP}, or a "
                   "single_label preset's own)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image: its path and result")
    p.add_argument("--model", type=_predict_model_file, default=None, metavar="FILE",
                   help="classify with this .keras, .tflite or .onnx file instead; with "
                   "--preset, the preset's input pipeline and labels apply")
    p.add_argument("--output", type=_records_file, default=None, metavar="FILE",
                   help="write one record per input to FILE.jsonl, .csv or .parquet instead "
                   "of printing")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="images per model call (default 32)")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="image decoding threads (default: the number of CPUs)")
    p.add_argument("--resume", action="store_true",
                   help="keep --output's records and classify only the inputs it lacks")
    p.set_defaults(func=_cmd_predict, check=_check_predict)


def _add_convert(sub, shared: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint (.pdparams, Paddle inference "
                       "model, transformers folder or hf:// repo, ...) to a Keras file",
                       parents=[shared["variant"], shared["architecture"]])
    p.add_argument("checkpoint", nargs="?", default=None, metavar="SOURCE",
                   help="any checkpoint keras_lcnet.from_checkpoint reads: a .pdparams file, a "
                   "Paddle inference model folder, a transformers folder, hf://owner/repo[@rev] "
                   "(default with --preset: the published one)")
    p.add_argument("--no-preprocessing", action="store_true",
                   help="the model takes normalized pixels (include_preprocessing=False), as "
                   "transformers checkpoints whose processor feeds BGR need")
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
    p.add_argument("--int8-hard-swish", choices=("xnnpack", "native"), default=None,
                   help="LiteRT int8 h-swish: xnnpack (default; int8 ADD/MUL, one XNNPACK "
                   "partition) or native (int8 HARD_SWISH: closer to float, not delegated)")
    p.add_argument("--precision", choices=("f32", "bf16", "int8"), default=None,
                   help="OpenVINO precision (default f32): bf16 needs a CPU with AVX512_BF16 "
                   "or AMX; int8 is NNCF quantization on --calibration-dir")
    p.add_argument("--image-size", type=_image_size, default=224,
                   help=f"input height and width, at least {MIN_INPUT_SIZE} (default 224)")
    p.add_argument("--batch-size", type=int, default=1, help="static batch size (default 1)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 14-18 (default 17)")
    p.add_argument("--nchw-input", action="store_true",
                   help="ONNX model takes NCHW images (no Transpose in the graph)")


def _add_bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="a .tflite (LiteRT, XNNPACK), .onnx (onnxruntime) or .xml (OpenVINO IR) "
                   "file; not with --compare")
    p.add_argument("--threads", type=_thread_counts, default=None, metavar="N[,N...]",
                   help="CPU threads (default 1); with --compare, a list, e.g. 1,2")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--budget-ms", type=_positive_float, default=None,
                   help="exit with code 1 when the median latency is over this many ms")
    p.add_argument("--compare", action="store_true",
                   help="export the model (--variant/--weights or --preset) to every runtime "
                   "and precision that runs here, time them interleaved, mark the fastest")
    p.add_argument("--preset", type=_preset, default=None, metavar="NAME",
                   help="with --compare: a preset's model and input size; not with --variant "
                   "or --weights")
    p.add_argument("--image-size", type=_image_size, default=None,
                   help=f"with --compare: input height and width, at least {MIN_INPUT_SIZE} "
                   "(default 224, or the preset's)")
    p.add_argument("--calibration-dir", default=None,
                   help="with --compare: images to calibrate and verify the int8 targets on "
                   "(default: random pixels, which time int8 truthfully but not its accuracy)")
    p.add_argument("--precisions", type=_compare_targets, default=None, metavar="T[,T...]",
                   help="with --compare: targets to try, from " + ", ".join(COMPARE_TARGETS)
                   + " (default: all but litert-f16)")


def _epoch_pair(value: str) -> tuple[int, int]:
    """`--epochs F,U`: frozen and unfrozen epoch counts (`F` alone means `F,0`)."""
    parts = value.split(",")
    counts = [_number(part.strip(), int) for part in parts]
    if len(counts) > 2 or min(counts) < 0 or sum(counts) == 0:
        raise argparse.ArgumentTypeError(
            f"expected FROZEN,UNFROZEN epoch counts such as 5,10, got {value!r}")
    return (counts[0], counts[1] if len(counts) == 2 else 0)


def _add_finetune(sub, shared: dict[str, argparse.ArgumentParser]) -> None:
    p = sub.add_parser("finetune", help="fine-tune on an image folder (one sub-folder per "
                       "class): frozen, then unfrozen backbone; resumable",
                       parents=[shared["variant"], shared["weights"]])
    p.add_argument("data_dir", metavar="DATA_DIR", help="training images, one sub-folder per class")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for model.keras (the best epoch), labels.json, history.json "
                   "and the per-epoch backup")
    p.add_argument("--preset", type=_preset, default=None, metavar="NAME",
                   help="start from a preset's width and weights; not with --variant or --weights")
    p.add_argument("--epochs", type=_epoch_pair, default=(5, 10), metavar="F,U",
                   help="epochs with the backbone frozen, then unfrozen (default 5,10)")
    p.add_argument("--learning-rates", type=_positive_float, nargs=2, default=(1e-3, 1e-4),
                   metavar=("FROZEN", "UNFROZEN"), help="Adam learning rates (default 1e-3 1e-4)")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="images per step, over all devices (default 32)")
    p.add_argument("--image-size", type=_image_size, default=224, help="image side (default 224)")
    p.add_argument("--val-dir", default=None, metavar="DIR",
                   help="validation images with the same sub-folders (default: hold out "
                   "--validation-split of DATA_DIR)")
    p.add_argument("--validation-split", type=float, default=0.2,
                   help="fraction of each class held out without --val-dir (default 0.2)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crops and flips of the training images")
    p.add_argument("--mixed-precision", nargs="?", const=True, default=False,
                   choices=[True, "mixed_bfloat16", "mixed_float16"], metavar="POLICY",
                   help="train in mixed precision: mixed_bfloat16 (the default POLICY) or "
                   "mixed_float16 (GPUs)")
    p.add_argument("--export-litert", action="store_true",
                   help="also export the best model to DIR/model.tflite (TensorFlow backend)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over instead of continuing the run in --output")
    p.add_argument("--seed", type=int, default=0, help="seed of the head, split and shuffling")
    p.set_defaults(func=_cmd_finetune)


def _cmd_finetune(args: argparse.Namespace) -> int:
    if args.preset and (args.variant or args.weights):
        raise ValueError("--preset fixes the width and weights: drop --variant and --weights.")
    _import_keras()
    from keras_lcnet.finetuning import finetune

    result = finetune(
        args.data_dir, args.output, variant=args.variant or DEFAULT_VARIANT,
        weights=_weights(args), preset=args.preset, image_size=args.image_size,
        batch_size=args.batch_size, epochs=args.epochs, learning_rates=tuple(args.learning_rates),
        augment=args.augment, validation_split=args.validation_split, val_dir=args.val_dir,
        mixed_precision=args.mixed_precision, export_litert=args.export_litert,
        resume=args.resume, seed=args.seed,
    )
    print(f"best val_accuracy={result.best_val_accuracy:.4f} on {result.devices} device(s): "
          f"{result.model_path}, labels {result.labels_path}"
          + (f", {result.litert_path}" if result.litert_path else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-lcnet` (exposed for docs and tests).

    Returns:
        An `argparse.ArgumentParser` whose parsed namespace has `func`, the command to run.
    """
    parser = argparse.ArgumentParser(
        prog="keras-lcnet",
        description="PP-LCNet for Keras 3: classify images, convert or describe "
        "checkpoints, list the presets (published weights), export to LiteRT/ONNX/OpenVINO "
        "and time them.",
    )
    parser.add_argument("--version", action="version", version=f"keras-lcnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    shared = _shared_flags()
    _add_predict(sub, shared)
    _add_convert(sub, shared)

    p = sub.add_parser("info", help="list the presets (PaddleClas' and PaddleX' published "
                       "PP-LCNet weights), describe one, or describe a checkpoint")
    p.add_argument("source", nargs="?", type=_info_target, default=None, metavar="NAME|SOURCE",
                   help="a preset to describe in full, or a checkpoint (any form "
                   "from_checkpoint reads: file, folder, hf://owner/repo) to describe without "
                   "building a model (default: list the presets)")
    p.add_argument("--json", action="store_true",
                   help="print the checkpoint's description as one JSON object")
    p.set_defaults(func=_cmd_info, check=_check_info)

    p = sub.add_parser("export", help="export to LiteRT (.tflite), ONNX or OpenVINO (.xml), "
                       "verified against Keras",
                       parents=[shared["variant"], shared["weights"], shared["architecture"]])
    _add_export_flags(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="time a .tflite, .onnx or OpenVINO .xml model on this CPU, "
                       "or (--compare) every runtime and precision",
                       parents=[shared["variant"], shared["weights"]])
    _add_bench_flags(p)
    p.set_defaults(func=_cmd_bench, check=_check_bench)
    _add_finetune(sub, shared)
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
    except (ValueError, OSError, NotImplementedError) as e:
        _error(e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
