"""timm's PP-LCNet and PP-LCNetV2 checkpoints (`lcnet_*`, `lcnetv2_*`): safetensors files.

timm (`timm/models/mobilenetv3.py`, `_gen_lcnet`) builds PaddleClas' network
under its own module names, with one difference: its head conv (`conv_head`,
PaddleClas' `last_conv`) has a bias. Its `lcnet_050/075/100.ra2_in1k` weights
were trained by timm. A checkpoint is a `model.safetensors` (read with
safetensors' NumPy API: no pickle, no torch, no timm), alone or in a folder
beside timm's `config.json` (`architecture: lcnet_*`, `pretrained_cfg`), as
`timm.models.push_to_hf_hub` publishes it; `hf://timm/lcnet_050.ra2_in1k` is
fetched into such a folder by `keras_lcnet.checkpoints.huggingface`.

The form is told by content: a `config.json` with timm's `architecture` and
`pretrained_cfg`, or tensors named like timm's (`conv_stem.weight`, ...).

timm's `lcnetv2_*` (`timm/models/lcnetv2.py`) is PaddleClas' PPLCNetV2 module
for module, rep branches unfolded, sigmoid SE gate, no head-conv bias; only
names differ (`se.fc1` for `se.conv1`, `pw_conv.0` for `pw_conv_1`,
`conv_head` / `classifier` for `last_conv` / `fc`, torch's BN names), which
`paddle_state_v2` translates.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import numpy as np

from keras_lcnet.architecture import BLOCKS
from keras_lcnet.checkpoints import huggingface as hf
from keras_lcnet.checkpoints.mapping import Sources, convert_tensors, keras_path
from keras_lcnet.errors import CheckpointError
from keras_lcnet.presets import InputContract

ARCHITECTURES = ("lcnet_035", "lcnet_050", "lcnet_075", "lcnet_100", "lcnet_150")
ARCHITECTURES_V2 = ("lcnetv2_small", "lcnetv2_base", "lcnetv2_large")
STEM_KEY = "conv_stem.weight"  # timm's EfficientNet / MobileNetV3 family, LCNet included
STEM_KEY_V2 = "stem.0.bn.running_mean"  # PaddleClas' V2 module names, torch's BN names
# timm's lcnetv2 names -> PaddleClas' PPLCNetV2 names (substrings).
_RENAMES_V2 = (
    (".running_mean", "._mean"),
    (".running_var", "._variance"),
    (".se.fc1.", ".se.conv1."),
    (".se.fc2.", ".se.conv2."),
    (".pw_conv.0.", ".pw_conv_1."),
    (".pw_conv.1.", ".pw_conv_2."),
)
# timm's arch_def splits PaddleClas' blocks5 (one 3x3 block, then five 5x5) into
# stages 3 and 4 (`dsa_r1_k3_s2_c256, dsa_r1_k5_s1_c256`, then `dsa_r4_k5_s1_c256`).
_STAGE_LENGTHS = (1, 2, 2, 2, 4, 2)
_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
_HEAD = {
    "conv_head.weight": "last_conv.weight",
    "conv_head.bias": "last_conv.bias",
    "classifier.weight": "fc.weight",
    "classifier.bias": "fc.bias",
}
_LINEAR = (1, 0)  # torch nn.Linear [out, in] -> Paddle Linear [in, out] and Keras Dense


def _bn_names(timm_module: str, paddle_module: str) -> dict[str, str]:
    return {f"{timm_module}.{t}": f"{paddle_module}.{p}" for t, p in _BN.items()}


def _name_table() -> dict[str, str]:
    """Every tensor name of timm's LCNet -> its PaddleClas name."""
    table = {STEM_KEY: "conv1.conv.weight", **_bn_names("bn1", "conv1.bn"), **_HEAD}
    paddle_blocks = [(f"{stage}.{i}", block[4]) for stage, blocks in BLOCKS.items()
                     for i, block in enumerate(blocks)]
    timm_blocks = [f"blocks.{s}.{b}" for s, n in enumerate(_STAGE_LENGTHS) for b in range(n)]
    for ours, (theirs, use_se) in zip(timm_blocks, paddle_blocks, strict=True):
        table[f"{ours}.conv_dw.weight"] = f"{theirs}.dw_conv.conv.weight"
        table.update(_bn_names(f"{ours}.bn1", f"{theirs}.dw_conv.bn"))
        if use_se:
            for param in ("weight", "bias"):
                table[f"{ours}.se.conv_reduce.{param}"] = f"{theirs}.se.conv1.{param}"
                table[f"{ours}.se.conv_expand.{param}"] = f"{theirs}.se.conv2.{param}"
        table[f"{ours}.conv_pw.weight"] = f"{theirs}.pw_conv.conv.weight"
        table.update(_bn_names(f"{ours}.bn2", f"{theirs}.pw_conv.bn"))
    return table


NAMES = _name_table()


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _is_timm_config(config: dict | None) -> bool:
    return bool(config) and "architecture" in config and "pretrained_cfg" in config


def is_timm_source(source) -> bool:
    """Whether a local path is a timm checkpoint: a folder or a `.safetensors` file.

    A folder is timm's when its `config.json` has timm's `architecture` and
    `pretrained_cfg`; a file when it is safetensors holding `conv_stem.weight`.
    An unreadable file is not timm's (another reader names the damage).
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    source = os.fspath(source)
    if os.path.isdir(source):
        return _is_timm_config(_read_json(os.path.join(source, hf.CONFIG_FILE)))
    if not os.path.isfile(source) or not hf.is_safetensors(source):
        return False
    try:
        from safetensors import safe_open

        with safe_open(source, "np") as f:  # reads the header only
            names = f.keys()
        return STEM_KEY in names or STEM_KEY_V2 in names
    except Exception:  # ImportError, SafetensorError: let the safetensors reader say it
        return False


def read_config(folder: str) -> dict:
    """The folder's `config.json`, checked to describe one of timm's LCNets.

    Raises:
        CheckpointError: No readable timm `config.json`, or another architecture.
    """
    path = os.path.join(folder, hf.CONFIG_FILE)
    config = _read_json(path)
    if not _is_timm_config(config):
        raise CheckpointError(
            f"{path} is not a timm model config (no readable 'architecture' and 'pretrained_cfg')."
        )
    architecture = config["architecture"]
    if architecture not in ARCHITECTURES + ARCHITECTURES_V2:
        raise CheckpointError(
            f"{path} describes timm's {architecture!r}, not an LCNet "
            f"({', '.join(ARCHITECTURES + ARCHITECTURES_V2)}): keras_lcnet loads only those."
        )
    return config


def check_num_classes(config: dict, state, config_path: str, weights_path: str) -> None:
    """A folder's `config.json` `num_classes` must be its classifier's output count.

    Raises:
        CheckpointError: They differ: the folder mixes two checkpoints.
    """
    classifier = state.get("classifier.weight")  # [out, in] in lcnet_* and lcnetv2_*
    if classifier is None or config.get("num_classes", classifier.shape[0]) == classifier.shape[0]:
        return
    raise CheckpointError(
        f"{config_path} has num_classes={config['num_classes']}, but {weights_path} holds a "
        f"classifier for {classifier.shape[0]}: the folder mixes two checkpoints."
    )


def input_contract(config: dict, path: str = "config.json") -> InputContract:
    """timm's evaluation transform for a checkpoint, from its `pretrained_cfg`.

    timm resizes the short side to `floor(size / crop_pct)` with the
    configured interpolation (bicubic for `lcnet_*.ra2_in1k`), center-crops
    `size`, and normalizes RGB `x / 255` with the listed mean and std.

    Raises:
        CheckpointError: `pretrained_cfg` lacks a field or holds another crop mode.
    """
    cfg = config.get("pretrained_cfg") or {}
    try:
        _, height, width = cfg["input_size"]
        if cfg.get("crop_mode", "center") != "center" or height != width:
            raise ValueError(f"crop_mode {cfg.get('crop_mode')!r}, input_size {cfg['input_size']}")
        return InputContract(
            size=(int(height), int(width)),
            resize_short=math.floor(height / float(cfg.get("crop_pct", 0.875))),
            interpolation=str(cfg.get("interpolation", "bilinear")),
            mean=tuple(float(m) for m in cfg["mean"]),
            std=tuple(float(s) for s in cfg["std"]),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(
            f"{path}: pretrained_cfg is not a center-crop eval transform keras_lcnet can "
            f"describe ({type(e).__name__}: {e})."
        ) from None


def read_input_contract(source: str | os.PathLike) -> InputContract:
    """The preprocessing timm evaluates a checkpoint folder (or `hf://` repo) with.

    Example:

    ```python
    from keras_lcnet.checkpoints import timm
    contract = timm.read_input_contract("hf://timm/lcnet_050.ra2_in1k")
    # InputContract(size=(224, 224), resize_short=256, interpolation='bicubic', ...)
    ```

    Args:
        source: A folder with timm's `config.json`, or `hf://owner/repo[@revision]`.

    Returns:
        A `keras_lcnet.presets.InputContract`: size, short-side resize
        (`floor(size / crop_pct)`), interpolation, mean and std.

    Raises:
        CheckpointError: No timm LCNet `config.json`, or an eval transform
            other than resize + center crop.
        WeightsUnavailableError: An `hf://` repo could not be fetched.
    """
    folder = hf.resolve_folder(source)
    return input_contract(read_config(folder), os.path.join(folder, hf.CONFIG_FILE))


def read_state(path: str) -> dict[str, np.ndarray]:
    """A timm `.safetensors` file's tensors; bfloat16 ones are read via `ml_dtypes`.

    Raises:
        CheckpointError: The file is missing, truncated or not safetensors.
    """
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path} does not exist: keras_lcnet reads timm's model.safetensors (never "
            "pytorch_model.bin, a pickle)."
        )
    # Keras depends on ml_dtypes; importing it teaches NumPy the bfloat16 dtype.
    with contextlib.suppress(ImportError):
        import ml_dtypes  # noqa: F401
    return hf.read_safetensors(path)


def _check_names(state, origin: str) -> None:
    """All or nothing: every tensor is one of timm's LCNet's, and the backbone is complete."""
    names = {key for key in state if not key.endswith("num_batches_tracked")}
    unexpected = sorted(names - NAMES.keys())
    missing = sorted(NAMES.keys() - _HEAD.keys() - names)
    if unexpected or missing:
        what = (f"holds '{unexpected[0]}'" if unexpected else f"lacks '{missing[0]}'")
        more = len(unexpected) + len(missing) - 1
        raise CheckpointError(
            f"{origin} is not a timm LCNet checkpoint: it {what}"
            f"{f' (and {more} more differences)' if more else ''}, which timm's lcnet_* "
            "does not have. Is it another timm model (e.g. a MobileNetV3)?"
        )


def paddle_state(state, origin: str) -> dict[str, np.ndarray]:
    """timm's tensors under PaddleClas' names and layouts (the classifier `[in, out]`).

    `keras_lcnet.checkpoints.mapping.infer_architecture` reads width, classes
    and head off the result; `head_bias` is whether `last_conv.bias` is in it.

    Raises:
        CheckpointError: A tensor that is not timm's LCNet's, or one missing.
    """
    _check_names(state, origin)
    paddle = {}
    for key, value in state.items():
        if key in NAMES:
            paddle[NAMES[key]] = value.T if key == "classifier.weight" else value
    return paddle


def is_v2(state) -> bool:
    """Whether timm tensors (or their names) are an `lcnetv2_*`'s rather than an `lcnet_*`'s."""
    return STEM_KEY_V2 in state


def paddle_state_v2(state) -> dict[str, np.ndarray]:
    """timm's `lcnetv2_*` tensors under PaddleClas' PPLCNetV2 names and layouts.

    The result is read as a PaddleClas checkpoint
    (`keras_lcnet.checkpoints.mapping_v2.convert_pdparams_v2`), which names
    any tensor that is not PP-LCNetV2's; `num_batches_tracked` is dropped.

    Args:
        state: `{name: array}` as `read_state` returns.

    Returns:
        `{paddle_name: array}`, the classifier as `[in, out]`.
    """
    paddle = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = _HEAD.get(key, key)
        for theirs, ours in _RENAMES_V2:
            name = name.replace(theirs, ours)
        paddle[name] = value.T if key == "classifier.weight" else value
    return paddle


def convert_timm(state, origin: str) -> tuple[dict[str, np.ndarray], Sources]:
    """Converts timm's LCNet tensors to Keras variable paths and layouts.

    timm's dropout is inverted (the identity at inference) like Keras', so
    no factor is folded into the classifier.

    Args:
        state: `{name: array}` as `read_state` returns (float16 and bfloat16
            are cast to float32).
        origin: How to name the checkpoint in error messages.

    Returns:
        `(arrays, sources)`: float32 arrays by Keras variable path, and for
        each path the timm name and layout it came from.

    Raises:
        CheckpointError: A tensor that is not timm's LCNet's, or one missing.
    """
    _check_names(state, origin)
    tensors = []
    for key, value in state.items():
        if key in NAMES:
            path, layout = keras_path(NAMES[key])
            tensors.append((key, path, _LINEAR if key == "classifier.weight" else layout, value))
    return convert_tensors(tensors, dropout_rate=0.0, origin=origin)


def weights_file(source: str) -> str:
    """The `model.safetensors` of a timm folder, or the file itself."""
    return os.path.join(source, hf.WEIGHTS_FILE) if os.path.isdir(source) else source
