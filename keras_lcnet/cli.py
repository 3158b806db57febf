"""The `keras-lcnet` command line: predict, convert, info (and export, bench)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from keras_lcnet.model import VARIANTS


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
    try:
        strides = json.loads(f"[{value.strip().strip('[]')}]")
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"cannot parse {value!r}; write it as PaddleClas does, e.g. '2,[2,1],[2,1],[2,1],[2,1]'"
        ) from None
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
    for path, top in zip(args.images, predictions):
        print(path)
        for rank, (wnid, name, score) in enumerate(top, 1):
            print(f"  {rank}. {name:<30} {wnid}  {score:.4f}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_lcnet.model import PPLCNet
    from keras_lcnet.paddle_checkpoint import read_pdparams

    if not args.output.endswith(".weights.h5"):
        raise ValueError(f"--output must end with '.weights.h5', got {args.output!r}.")
    state = read_pdparams(args.checkpoint)
    # The head's shape is read off the file; the strides leave no trace in it.
    use_last_conv = "last_conv.weight" in state
    classes = args.classes or (state["fc.weight"].shape[-1] if "fc.weight" in state else 1000)
    model = PPLCNet(
        scale=VARIANTS[args.variant],
        weights=args.checkpoint,
        classes=int(classes),
        use_last_conv=use_last_conv,
        class_expand=int(state["last_conv.weight"].shape[0]) if use_last_conv else 1280,
        stride_list=args.stride_list,
        dropout_rate=args.dropout_rate,
    )
    model.save_weights(args.output)
    print(f"Wrote {args.output} ({model.name}, {classes} classes). Load it with "
          f"keras_lcnet.PPLCNet_{args.variant}(weights={args.output!r}"
          + ("" if classes == 1000 else f", classes={classes}") + ").")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from keras_lcnet.weights import ACCURACY_SOURCE, LICENSE, REGISTRY, cached_checkpoint_path

    rows = [("model", "weights", "top-1", "top-5", "cached", "url")]
    for entry in REGISTRY:
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
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\nAccuracy: {ACCURACY_SOURCE}.\nWeights license: {LICENSE}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-lcnet` (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="keras-lcnet",
        description="PP-LCNet for Keras 3: classify images, convert PaddleClas "
        "checkpoints, list the published weights.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="top-k ImageNet classes of images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--variant", type=_variant, default="x1_0", help="width (default x1_0)")
    p.add_argument("--weights", type=_weights, default="imagenet",
                   help="imagenet, imagenet_ssld, or a .pdparams/.weights.h5 path (default imagenet)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("convert", help="convert a PaddleClas .pdparams file to Keras weights")
    p.add_argument("checkpoint", help="PaddleClas .pdparams file")
    p.add_argument("--variant", type=_variant, required=True, help="width of the checkpoint")
    p.add_argument("--output", required=True, help="Keras weights file to write (*.weights.h5)")
    p.add_argument("--classes", type=int, default=None,
                   help="number of classes (default: read from the checkpoint)")
    p.add_argument("--stride-list", type=_stride_list, default=[2, 2, 2, 2, 2],
                   help="PaddleClas stride_list, e.g. '2,[2,1],[2,1],[2,1],[2,1]' (default 2,2,2,2,2)")
    p.add_argument("--dropout-rate", type=float, default=0.2,
                   help="the checkpoint's dropout_prob (default 0.2)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("info", help="list PaddleClas' published PP-LCNet weights")
    p.set_defaults(func=_cmd_info)
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
