"""The `keras-lcnet` command line: predict, convert, info (and export, bench)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from keras_lcnet.presets import VARIANTS


def _variant(value: str) -> str:
    value = value if value.startswith("x") else f"x{value}"
    if value not in VARIANTS:
        raise argparse.ArgumentTypeError(
            f"unknown variant {value!r}; choose from {', '.join(VARIANTS)}"
        )
    return value


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


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


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_lcnet import decode_predictions, load_image
    from keras_lcnet.model import PPLCNet

    model = PPLCNet(scale=VARIANTS[args.variant], weights=args.weights)
    if model.output_shape[-1] != 1000:
        raise ValueError("`predict` decodes ImageNet-1k classes; these weights have "
                         f"{model.output_shape[-1]} classes.")
    images = np.concatenate([load_image(path) for path in args.images])
    predictions = decode_predictions(model.predict(images, verbose=0), top=args.top)
    for path, top in zip(args.images, predictions, strict=True):
        print(path)
        for rank, (wnid, name, score) in enumerate(top, 1):
            print(f"  {rank}. {name:<30} {wnid}  {score:.4f}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_lcnet.checkpoints.pdparams import read_pdparams
    from keras_lcnet.model import PPLCNet
    from keras_lcnet.weights import load_pdparams

    if not args.output.endswith(".weights.h5"):
        raise ValueError(f"--output must end with '.weights.h5', got {args.output!r}.")
    state = read_pdparams(args.checkpoint)
    # The head's shape is read off the file; the strides leave no trace in it.
    use_last_conv = "last_conv.weight" in state
    classes = args.classes or (state["fc.weight"].shape[-1] if "fc.weight" in state else 1000)
    model = PPLCNet(
        scale=VARIANTS[args.variant],
        weights=None,
        classes=int(classes),
        use_last_conv=use_last_conv,
        class_expand=int(state["last_conv.weight"].shape[0]) if use_last_conv else 1280,
        stride_list=args.stride_list,
        dropout_rate=args.dropout_rate,
    )
    load_pdparams(model, args.checkpoint, state)  # the file is read once
    model.save_weights(args.output)
    print(f"Wrote {args.output} ({model.name}, {classes} classes). Load it with "
          f"keras_lcnet.PPLCNet_{args.variant}(weights={args.output!r}"
          + ("" if classes == 1000 else f", classes={classes}") + ").")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from keras_lcnet.presets import IMAGENET_ACCURACY_SOURCE, PADDLECLAS_LICENSE, PRESETS
    from keras_lcnet.weights import cached_checkpoint_path

    rows = [("model", "weights", "top-1", "top-5", "cached", "url")]
    for entry in PRESETS:
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


def _cmd_export(args: argparse.Namespace) -> int:
    from keras_lcnet.deploy import ExportError, export_litert, export_onnx
    from keras_lcnet.model import PPLCNet

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
    # XNNPACK has no int8 softmax: an int8 model ending in one is split in two.
    logits = args.logits or args.quantize == "int8"
    model = PPLCNet(scale=VARIANTS[args.variant], weights=args.weights, classes=args.classes,
                    classifier_activation=None if logits else "softmax")
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
    from keras_lcnet.deploy.latency import measure

    if args.budget_ms is not None and not args.budget_ms > 0:
        raise ValueError(f"--budget-ms must be positive, got {args.budget_ms}.")
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-lcnet` (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="keras-lcnet",
        description="PP-LCNet for Keras 3: classify images, convert PaddleClas "
        "checkpoints, list the published weights, export to LiteRT/ONNX and time them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="top-k ImageNet classes of images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--variant", type=_variant, default="x1_0", help="width (default x1_0)")
    p.add_argument("--weights", type=_weights, default="imagenet",
                   help="imagenet, imagenet_ssld, none, or a .pdparams/.weights.h5 path "
                   "(default imagenet)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("convert", help="convert a PaddleClas .pdparams file to Keras weights")
    p.add_argument("checkpoint", help="PaddleClas .pdparams file")
    p.add_argument("--variant", type=_variant, required=True, help="width of the checkpoint")
    p.add_argument("--output", required=True, help="Keras weights file to write (*.weights.h5)")
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes (default: read from the checkpoint)")
    p.add_argument("--stride-list", type=_stride_list, default=[2, 2, 2, 2, 2],
                   help="PaddleClas stride_list, e.g. '2,[2,1],[2,1],[2,1],[2,1]' "
                   "(default 2,2,2,2,2)")
    p.add_argument("--dropout-rate", type=float, default=0.2,
                   help="the checkpoint's dropout_prob (default 0.2)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="list PaddleClas' published PP-LCNet weights")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export to LiteRT (.tflite) or ONNX, verified against Keras")
    p.add_argument("--variant", type=_variant, default="x1_0", help="width (default x1_0)")
    p.add_argument("--weights", type=_weights, default="imagenet",
                   help="none, imagenet, imagenet_ssld, or a .pdparams/.weights.h5 path "
                   "(default imagenet)")
    p.add_argument("--classes", type=int, default=1000,
                   help="classes of the weights (default 1000)")
    p.add_argument("--output", required=True, help="file to write: *.tflite or *.onnx")
    p.add_argument("--format", choices=("litert", "onnx"), default=None,
                   help="default: from the --output suffix")
    p.add_argument("--quantize", choices=("float16", "dynamic", "int8"), default=None,
                   help="LiteRT quantization recipe (default: none, float32)")
    p.add_argument("--calibration-dir", default=None,
                   help="folder of representative images (needed for --quantize int8)")
    p.add_argument("--uint8-input", action="store_true",
                   help="int8 model taking uint8 pixels (raw camera frames)")
    p.add_argument("--logits", action="store_true",
                   help="output logits instead of softmax scores (always so for int8)")
    p.add_argument("--image-size", type=int, default=224, help="input height and width (224)")
    p.add_argument("--batch-size", type=int, default=1, help="static batch size (default 1)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 14-18 (default 17)")
    p.add_argument("--nchw-input", action="store_true",
                   help="ONNX model takes NCHW images (no Transpose in the graph)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="time a .tflite or .onnx model on this CPU")
    p.add_argument("model", help="a .tflite (LiteRT, XNNPACK) or .onnx (onnxruntime) file")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--budget-ms", type=float, default=None,
                   help="exit with code 1 when the median latency is over this many ms")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-lcnet`; returns the exit code (errors: one line, code 1)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"keras-lcnet: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
