"""PP-LCNetV2 in the command line: `--variant v2_*`, V2 checkpoints in `convert` and `info`.

Kept apart from `cli` (PP-LCNet's flags and commands), which calls these
where a V2 model or checkpoint takes another path. Keras is imported only
when a model is built.
"""

from __future__ import annotations

import json
import os

from keras_lcnet.architecture_v2 import VARIANTS_V2

PREFIX = "v2_"
VARIANTS = tuple(f"{PREFIX}{name}" for name in VARIANTS_V2)  # v2_small, v2_base, v2_large


def is_v2(variant: str | None) -> bool:
    """Whether a `--variant` value names a PP-LCNetV2."""
    return variant in VARIANTS


def build_model(variant: str, weights: str | None, overrides: dict, checkpoint: bool):
    """The PP-LCNetV2 of `--variant v2_*` with `--weights` and the flags.

    Args:
        variant: `"v2_small"`, `"v2_base"` or `"v2_large"`.
        weights: `weights=` (a tag, a file or `None`).
        overrides: `PPLCNetV2` arguments from the flags (`classes`, ...).
        checkpoint: Whether `weights` is a checkpoint file (not a Keras one):
            its shapes give the classes, and they must be `variant`'s.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: `--stride-list` (PP-LCNet only), or a checkpoint of
            another architecture.
    """
    import keras_lcnet

    if overrides.get("stride_list") is not None:
        raise ValueError("--stride-list applies to PP-LCNet (x0_25 ... x2_5), not to "
                         f"{variant}: leave it out.")
    name = variant[len(PREFIX):]
    if not checkpoint:
        return getattr(keras_lcnet, f"PPLCNetV2_{name}")(weights=weights, **overrides)
    from keras_lcnet.checkpoints.forms import describe_checkpoint

    found = describe_checkpoint(weights)["architecture"] or {}
    if found.get("variant") != variant:
        raise ValueError(f"{weights} is not a PPLCNetV2_{name} checkpoint "
                         f"({found.get('variant') or 'another architecture'}): leave --variant "
                         "out to build the model it holds.")
    return keras_lcnet.from_checkpoint(weights, **overrides)


def architecture_text(arch: dict) -> str:
    """A V2 architecture (as `describe_checkpoint` gives it) on one line."""
    name = f"PPLCNetV2_{arch['variant'][len(PREFIX):]}" if arch["variant"] else "PPLCNetV2"
    depths = json.dumps(arch["depths"], separators=(",", ":"))
    head = f"{arch['classes']} classes" if arch["include_top"] else "no classifier"
    return f"{name}, scale {arch['scale']:g}, depths {depths}, {head}"


def load_call(path: str, arch: dict, no_preprocessing: bool, logits: bool) -> str:
    """The Python expression that rebuilds a converted V2 model from `path`."""
    if path.endswith(".keras"):
        return f"keras.saving.load_model({path!r})"
    arguments = [f"weights={path!r}", f"scale={arch['scale']!r}", f"depths={arch['depths']!r}"]
    if not arch["include_top"]:
        arguments.append("include_top=False")
    elif arch["classes"] != 1000:
        arguments.append(f"classes={arch['classes']}")
    if arch["include_top"] and logits:
        arguments.append("classifier_activation=None")
    if no_preprocessing:
        arguments.append("include_preprocessing=False")
    return f"keras_lcnet.PPLCNetV2({', '.join(arguments)})"


def convert_checkpoint(args, described: dict, overrides: dict):
    """`convert` of a PP-LCNetV2 checkpoint: the model, its head line and its load call.

    Raises:
        ValueError: `--variant` names another architecture, or `--stride-list`.
    """
    from keras_lcnet.pretrained import from_checkpoint

    arch = described["architecture"]
    if args.variant is not None and args.variant != arch["variant"]:
        raise ValueError(f"{args.checkpoint} is a {architecture_text(arch)} checkpoint, not "
                         f"{args.variant}: leave --variant out.")
    if overrides.pop("stride_list", None) is not None:
        raise ValueError("--stride-list applies to PP-LCNet, not to a PP-LCNetV2 checkpoint: "
                         "leave it out.")
    overrides.pop("scale", None)
    model = from_checkpoint(os.fspath(args.checkpoint), **overrides)
    origin = f"read from the {described['title']}'s {described['architecture_from']}"
    print(f"Architecture: {architecture_text(arch)} ({origin})")
    head = "no classifier"
    if arch["include_top"]:
        head = f"{arch['classes']} classes, " + ("logits" if args.logits else "softmax scores")
    call = load_call(args.output, arch, args.no_preprocessing, args.logits)
    return model, head, call
