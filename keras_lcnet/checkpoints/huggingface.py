"""transformers' PP-LCNet checkpoints: `save_pretrained` folders, `hf://` repos, `.safetensors`.

A folder holds `config.json` (`model_type: pp_lcnet`), `model.safetensors`
and optionally `preprocessor_config.json`. Reading one needs only the
`safetensors` package (its NumPy API: no pickle, no torch, no transformers);
`hf://owner/repo[@revision]` is fetched into the Hugging Face cache by
`huggingface_hub` (the `[hf]` extra).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import numpy as np

from keras_lcnet.architecture import (
    BLOCKS,
    SE_REDUCTION,
    STAGES,
    STEM,
    STEM_CHANNELS,
    stage_channels,
)
from keras_lcnet.checkpoints.mapping import Sources, convert_tensors, keras_path
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.presets import VARIANTS, InputContract

HF_SCHEME = "hf://"
MODEL_TYPE = "pp_lcnet"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILE = "preprocessor_config.json"
_FILES = (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE)
_INSTALL = "pip install 'keras-lcnet[hf]'"
# transformers' module names -> PaddleClas', whose mapping to Keras is in `mapping`.
_MODULES = {
    "depthwise_convolution": "dw_conv",
    "pointwise_convolution": "pw_conv",
    "convolution": "conv",
    "normalization": "bn",
    "squeeze_excitation_module": "se",
}
_PARAMS = {"running_mean": "_mean", "running_var": "_variance"}
_SE_CONVS = {"0": "conv1", "2": "conv2"}  # nn.ModuleList [conv, ReLU, conv, Hardsigmoid]
_LINEAR = (1, 0)  # torch nn.Linear [out, in] -> Keras Dense (in, out)


def is_transformers_source(weights) -> bool:
    """Whether `weights` names an `hf://` repo or a folder holding a `config.json`."""
    if not isinstance(weights, (str, os.PathLike)):
        return False
    if os.fspath(weights).startswith(HF_SCHEME):
        return True
    # A Paddle inference model's folder holds inference.json instead.
    return os.path.isfile(os.path.join(weights, CONFIG_FILE))


def is_safetensors(path: str) -> bool:
    """Whether a file starts like a safetensors file: a u64 header size, then `{`."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1


def resolve_folder(source: str | os.PathLike) -> str:
    """The local folder of a checkpoint folder or an `hf://owner/repo[@revision]` repo.

    A repo is fetched with `huggingface_hub.snapshot_download` (its cache
    and `HF_HUB_OFFLINE` apply); only the three files PP-LCNet needs are fetched.

    Raises:
        WeightsUnavailableError: `huggingface_hub` is missing, or the repo
            could not be fetched; the message says how to get the folder.
    """
    source = os.fspath(source)
    if not source.startswith(HF_SCHEME):
        return source
    repo, _, revision = source[len(HF_SCHEME) :].partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsUnavailableError(
            f"Reading {source} needs huggingface_hub: {_INSTALL}, or download the repo "
            "and pass its folder as `weights=`."
        ) from None
    try:
        return snapshot_download(repo, revision=revision or None, allow_patterns=list(_FILES))
    except Exception as e:  # network, auth, offline and missing-repo errors alike
        reason = " ".join(str(e).split()) or type(e).__name__
        command = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
        raise WeightsUnavailableError(
            f"Could not fetch the Hugging Face repo '{repo}'"
            f"{f' at revision {revision!r}' if revision else ''} ({reason}). Offline, download "
            f"its {', '.join(_FILES)} on another machine (`{command} --local-dir DIR`) and "
            "pass that folder as `weights=` or to `from_checkpoint`."
        ) from None


def read_config(folder: str) -> dict:
    """The folder's `config.json`, checked to be a transformers PP-LCNet's.

    Raises:
        CheckpointError: No readable `config.json`, or another `model_type`.
    """
    path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{folder} is not a transformers checkpoint folder: cannot read {CONFIG_FILE} "
            f"({type(e).__name__})."
        ) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MODEL_TYPE:
        raise CheckpointError(
            f"{path} describes a model_type {model_type!r}, not PP-LCNet ('{MODEL_TYPE}')."
        )
    return config


def _unsupported(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}, which keras_lcnet's PP-LCNet does not support.")


def _stride_list(config: dict, path: str) -> list:
    """`stride_list` from `block_configs`; every other block setting must be PP-LCNet's."""
    stages = config.get("block_configs")
    if not isinstance(stages, list) or len(stages) != len(STAGES):
        raise _unsupported(path, f"block_configs is not {len(STAGES)} stages")
    strides = [config.get("stem_stride", 2)]
    for stage, blocks in zip(STAGES, stages, strict=True):
        if not isinstance(blocks, list) or len(blocks) != len(BLOCKS[stage]):
            raise _unsupported(path, f"block_configs of {stage} is not {len(BLOCKS[stage])} blocks")
        for i, (block, ours) in enumerate(zip(blocks, BLOCKS[stage], strict=True)):
            if not isinstance(block, list) or len(block) != len(ours):
                raise _unsupported(path, f"block {stage}.{i} is {block!r}, not {list(ours)}")
            kernel, in_c, out_c, stride, use_se = block
            settable = i == 0 and stage != STAGES[0]
            if [kernel, in_c, out_c, use_se] != [ours[0], ours[1], ours[2], ours[4]] or (
                not settable and stride != ours[3]
            ):
                raise _unsupported(path, f"block {stage}.{i} is {block}, PP-LCNet's is {ours}")
            if settable:
                strides.append(stride)
    return strides


def architecture_from_config(config: dict, path: str) -> dict:
    """The `PPLCNet` arguments a transformers `config.json` determines.

    Args:
        config: The parsed `config.json`.
        path: How to name it in error messages.

    Returns:
        `{"scale", "stride_list", "class_expand", "dropout_rate", "classes"}`.

    Raises:
        CheckpointError: A setting keras_lcnet's PP-LCNet cannot build (an
            SE `reduction` other than 4, other blocks or stem channels, an
            unpublished width) or a value of the wrong type or range.
    """
    fixed = {
        "reduction": SE_REDUCTION, "stem_channels": STEM_CHANNELS, "divisor": 8,
        "hidden_act": "hardswish",
    }
    for key, expected in fixed.items():
        if config.get(key, expected) != expected:
            raise _unsupported(path, f"{key} is {config[key]!r} (PP-LCNet's is {expected!r})")
    labels = config.get("id2label") or {}
    if not isinstance(labels, dict):
        raise CheckpointError(f"{path}: id2label is {labels!r}, not a mapping of class ids.")
    found = {
        "scale": config.get("scale", 1.0),
        "stride_list": _stride_list(config, path),
        "class_expand": config.get("class_expand", 1280),
        "dropout_rate": config.get("hidden_dropout_prob", 0.2),
        "classes": len(labels) or None,
    }
    _check_values(found, path)
    return found


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_values(found: dict, path: str) -> None:
    """Refuses values of the wrong type or range, before they reach `PPLCNet`."""
    scale, dropout = found["scale"], found["dropout_rate"]
    checks = (
        ("scale", scale, not isinstance(scale, bool) and scale in VARIANTS.values()),
        ("class_expand", found["class_expand"], _is_count(found["class_expand"])),
        ("hidden_dropout_prob", dropout, isinstance(dropout, (int, float))
         and not isinstance(dropout, bool) and 0 <= dropout < 1),
        ("the stride list", found["stride_list"], all(map(_is_stride, found["stride_list"]))),
    )
    for key, value, ok in checks:
        if not ok:
            raise CheckpointError(
                f"{path}: {key} is {value!r}, which a PP-LCNet config does not hold (widths "
                f"{', '.join(map(str, VARIANTS.values()))}; strides 1 or 2, or pairs of them; "
                "dropout in [0, 1))."
            )
    found["dropout_rate"] = float(dropout)


def _is_stride(stride) -> bool:
    """PP-LCNet's strides: 1 or 2, or a pair of them (text-line models: `[2, 1]`)."""
    pair = stride if isinstance(stride, list) else [stride, stride]
    return len(pair) == 2 and all(_is_count(s) and s <= 2 for s in pair)


def check_config_against_tensors(found: dict, shapes: Mapping[str, object], path: str) -> None:
    """Refuses a config whose widths the tensors contradict, before a model is built from it.

    Args:
        found: `architecture_from_config`'s result.
        shapes: `{transformers name: array or shape}` of the folder's weights.
        path: The config's path, for messages.

    Raises:
        CheckpointError: `scale`, `class_expand` or the `id2label` count is not
            what the stem, `last_convolution` or `head` tensor has.
    """
    rows = {
        "scale": ("encoder.convolution.convolution.weight", stage_channels(found["scale"])[STEM]),
        "class_expand": ("last_convolution.weight", found["class_expand"]),
        "id2label": ("head.weight", found["classes"]),
    }
    for name, (key, expected) in rows.items():
        shape = tuple(getattr(shapes.get(key), "shape", shapes.get(key)) or ())
        if key in shapes and expected is not None and shape[:1] != (expected,):
            raise CheckpointError(
                f"{path}: {name} means {expected} rows in '{key}', which has shape "
                f"{list(shape)}: the config and the weights are not of one model."
            )


def read_input_contract(folder: str) -> InputContract | None:
    """The pixels transformers' `PPLCNetImageProcessor` feeds the network, if the folder says.

    The processor normalizes RGB with the statistics it lists, then flips
    the channels: the network sees BGR, normalized with those statistics
    reversed (PaddleX's BGR-ordered ImageNet statistics).

    Returns:
        An `InputContract`, or `None` without `preprocessor_config.json`.

    Raises:
        CheckpointError: The file is not readable JSON.
    """
    path = os.path.join(folder, PREPROCESSOR_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        crop = config.get("crop_size") or {"height": 224, "width": 224}
        size = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        contract = InputContract(
            size=tuple(size),
            resize_short=config.get("resize_short", 256),
            channel_order="BGR",
            # The statistics apply before the flip: reversed, they are in BGR order.
            mean=tuple(config.get("image_mean", (0.406, 0.456, 0.485)))[::-1],
            std=tuple(config.get("image_std", (0.225, 0.224, 0.229)))[::-1],
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path} is not a readable image processor config ({e}).") from None
    numbers = [*contract.mean, *contract.std]
    if (
        not all(map(_is_count, contract.size)) or len(contract.size) != 2
        or not (contract.resize_short is None or _is_count(contract.resize_short))
        or len(numbers) != 6 or not all(isinstance(x, (int, float)) for x in numbers)
    ):
        raise CheckpointError(
            f"{path}: crop_size, resize_short, image_mean or image_std is not a size or 3 "
            "numbers as PPLCNetImageProcessor writes them."
        )
    return contract


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file, read with safetensors' NumPy API (no pickle).

    Raises:
        CheckpointError: The file is missing, truncated or not safetensors.
    """
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError(f"Reading {path} needs safetensors: {_INSTALL}.") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} does not exist: a transformers folder holds its weights.")
    try:
        return load_file(path)
    except Exception as e:  # SafetensorError, OSError: one message whatever the damage
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); "
            "is it truncated?"
        ) from None


def _paddle_name(key: str) -> str:
    """A transformers tensor name in PaddleClas' terms.

    `encoder.blocks.3.layers.2.depthwise_convolution.normalization.running_mean`
    is `blocks5.2.dw_conv.bn._mean` (transformers counts stages from 0,
    PaddleClas names them `blocks2`..`blocks6`).
    """
    parts = key.removeprefix("encoder.").split(".")
    if parts[0] == "convolution":  # the stem
        parts = ["conv1", *parts[1:]]
    elif parts[0] == "blocks" and len(parts) > 3 and parts[1].isdigit():
        parts = [f"blocks{int(parts[1]) + 2}", *parts[3:]]
    if "convolutions" in parts:
        at = parts.index("convolutions")
        parts[at : at + 2] = [_SE_CONVS.get(parts[at + 1], parts[at + 1])]
    parts = [_MODULES.get(p, p) for p in parts[:-1]] + [_PARAMS.get(parts[-1], parts[-1])]
    parts[0] = {"last_convolution": "last_conv", "head": "fc"}.get(parts[0], parts[0])
    return ".".join(parts)


def paddle_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' tensors under PaddleClas' names and layouts (for `infer_architecture`).

    Args:
        state: `{name: array}` as `read_safetensors` returns (or stand-ins
            with the same shapes).

    Returns:
        `{PaddleClas name: array}`, the classifier as Paddle's `[in, out]`.
    """
    return {
        _paddle_name(key): value.T if key == "head.weight" else value  # torch Linear: [out, in]
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }


def convert_transformers(
    state: dict[str, np.ndarray], dropout_rate: float, origin: str
) -> tuple[dict[str, np.ndarray], Sources]:
    """Converts transformers' PP-LCNet tensors to Keras variable paths and layouts.

    `PPLCNetForImageClassification` multiplies the pooled features by
    `1 - hidden_dropout_prob` at inference; that factor is folded into the
    classifier kernel as for PaddleClas checkpoints.

    Args:
        state: `{name: array}` as `read_safetensors` returns.
        dropout_rate: The checkpoint's `hidden_dropout_prob`.
        origin: How to name the checkpoint in error messages.

    Returns:
        `(arrays, sources)`: float32 arrays by Keras variable path, and for
        each path the transformers name and layout it came from.

    Raises:
        CheckpointError: A tensor that is not part of PP-LCNet.
    """
    return convert_tensors(
        (_keras_tensor(key, value, origin) for key, value in state.items()
         if not key.endswith("num_batches_tracked")),
        dropout_rate,
        origin,
    )


def _keras_tensor(key: str, value: np.ndarray, origin: str):
    """`(name, Keras path, permutation, array)` of one transformers tensor."""
    try:
        path, layout = keras_path(_paddle_name(key))
    except CheckpointError:
        raise CheckpointError(
            f"{origin} holds tensor '{key}', which is not a PP-LCNet parameter."
        ) from None
    return key, path, _LINEAR if key == "head.weight" else layout, value
