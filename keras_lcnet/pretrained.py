"""Building a model from a checkpoint or a preset alone, without knowing its architecture.

`keras_lcnet.PPLCNet_x1_0(weights=path)` needs the caller to know the
checkpoint's architecture; `from_checkpoint(path)` reads it off the file, and
`from_preset(name)` off the registry (`keras_lcnet.presets`).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_lcnet import presets
from keras_lcnet.architecture import CLASS_EXPAND, DEFAULT_STRIDES
from keras_lcnet.checkpoints import huggingface as hf
from keras_lcnet.checkpoints import timm
from keras_lcnet.checkpoints.mapping import infer_architecture
from keras_lcnet.checkpoints.paddle_onnx import is_paddle_onnx, onnx_in_folder, read_paddle_onnx
from keras_lcnet.checkpoints.pdiparams import is_inference_model, read_inference_model
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.checkpoints.shapes_v2 import infer_architecture_v2, is_v2_state
from keras_lcnet.model import PPLCNet, resolve_input_contract, resolve_strides
from keras_lcnet.presets import TASKS, Preset, get_preset, variant_name
from keras_lcnet.weights import (
    load_inference_model,
    load_paddle_onnx,
    load_pdparams,
    load_timm,
    load_transformers,
    load_weights,
)

# Arguments a PaddleClas checkpoint's shapes determine; overrides may only agree.
_DETERMINED = ("scale", "classes", "use_last_conv", "class_expand")
_HEAD_ARGUMENTS = ("classes", "use_last_conv", "class_expand", "classifier_activation")
# Arguments a preset's checkpoint fixes, with PPLCNet's defaults.
_PRESET_FIXED = {
    "stride_list": DEFAULT_STRIDES,
    "use_last_conv": True,
    "class_expand": CLASS_EXPAND,
}


def checkpoint_config(
    state: dict[str, np.ndarray], origin: str = "the checkpoint", **overrides
) -> dict:
    """The `PPLCNet` arguments for a PaddleClas state dict, with `overrides` merged in.

    Width, classes and head come from the tensor shapes (see
    `keras_lcnet.checkpoints.mapping.infer_architecture`); an override of one
    of them must agree with the file. `stride_list` and `dropout_rate` leave
    no trace in a checkpoint: pass them as it was trained. A checkpoint
    without a classifier gives a model with `include_top=False`.

    Args:
        state: `{name: array}` as `read_pdparams` returns.
        origin: How to name the checkpoint in error messages.
        **overrides: Further `PPLCNet` arguments; `None` for a determined one
            (`scale`, `classes`, ...) means "as the checkpoint says".

    Returns:
        Keyword arguments for `keras_lcnet.PPLCNet` (without `weights`).

    Raises:
        ValueError: An override contradicts the checkpoint.
        CheckpointError: The file is not a PP-LCNet of a published width.
    """
    found = infer_architecture(state, origin)
    for name in _DETERMINED:
        if overrides.get(name) is None:  # not given
            overrides.pop(name, None)
        elif overrides[name] != found[name]:
            head = f"{found['classes']} classes" if found["include_top"] else "no classifier"
            given = f"{name}={overrides[name]!r}"
            if name == "scale":
                given += f" ({variant_name(overrides[name])})"
            raise ValueError(
                f"{given} does not match {origin}, a PPLCNet_"
                f"{variant_name(found['scale'])} checkpoint with {head}: leave {name} out."
            )
    if not found["include_top"]:  # a backbone: the head arguments mean nothing
        found = {"scale": found["scale"], "include_top": False}
        overrides = {k: v for k, v in overrides.items() if k not in _HEAD_ARGUMENTS}
    return {**found, **overrides}


def _transformers_config(folder: str, config: dict, state: dict, overrides: dict) -> dict:
    """The `PPLCNet` arguments for a transformers checkpoint folder, `overrides` merged in."""
    config_path = os.path.join(folder, hf.CONFIG_FILE)
    found = hf.architecture_from_config(config, config_path)
    hf.check_config_against_tensors(found, state, config_path)  # before building anything
    found["include_top"] = "head.weight" in state  # a PPLCNetBackbone has no head
    found["use_last_conv"] = True  # transformers' classifier always has it
    if not found["include_top"]:
        found.pop("classes")
    for name, value in found.items():
        given = overrides.get(name)
        if given is None or (name == "include_top" and not given):
            continue  # not given, "as the checkpoint says", or dropping the head
        same = resolve_strides(given) == resolve_strides(value) if name == "stride_list" else (
            given == value
        )
        if not same:
            raise ValueError(
                f"{name}={given!r} contradicts {config_path} ({name}={value!r}): leave {name} out."
            )
    if not found["include_top"] or overrides.get("include_top") is False:
        found = {k: v for k, v in found.items() if k not in _HEAD_ARGUMENTS}
        overrides = {k: v for k, v in overrides.items() if k not in _HEAD_ARGUMENTS}
    contract = hf.read_input_contract(folder)
    if contract is not None:  # the processor's pixels, BGR included, made in the graph
        overrides["input_contract"] = resolve_input_contract(
            overrides.get("input_contract"), contract, os.path.join(folder, hf.PREPROCESSOR_FILE)
        )
    # None for a determined argument means "as the checkpoint says".
    return {**found, **{k: v for k, v in overrides.items() if v is not None or k not in found}}


def _from_transformers(source: str | os.PathLike, **overrides) -> keras.Model:
    folder = hf.resolve_folder(source)
    config = hf.read_config(folder)  # another model_type is refused before the weights are read
    state = hf.read_safetensors(os.path.join(folder, hf.WEIGHTS_FILE))
    model = PPLCNet(weights=None, **_transformers_config(folder, config, state, overrides))
    load_transformers(model, folder, state)
    return model


def _timm_config(source: str, config: dict | None, state: dict, overrides: dict) -> dict:
    """The `PPLCNet` arguments for a timm LCNet checkpoint, `overrides` merged in.

    Width, classes and head come from the tensors; `config` (timm's
    `config.json`, `None` for a bare file) must agree on the classes and
    gives the in-graph normalization.
    """
    path = timm.weights_file(source)
    paddle = timm.paddle_state(state, path)
    head_bias = "last_conv.bias" in paddle
    if overrides.get("head_bias") not in (None, head_bias):
        raise ValueError(
            f"head_bias={overrides['head_bias']!r} contradicts {path} (head_bias={head_bias}): "
            "leave head_bias out."
        )
    found = checkpoint_config(paddle, path, **{**overrides, "head_bias": head_bias})
    if config is None:
        return found
    config_path = os.path.join(source, hf.CONFIG_FILE)
    # timm's normalization, whatever its statistics, is made in the graph.
    found["input_contract"] = resolve_input_contract(
        overrides.get("input_contract"), timm.input_contract(config, config_path), config_path
    )
    timm.check_num_classes(config, state, config_path, path)
    return found


def _from_timm(source: str, **overrides) -> keras.Model:
    # Another architecture in config.json is refused before the weights are read.
    config = timm.read_config(source) if os.path.isdir(source) else None
    state = timm.read_state(timm.weights_file(source))
    if timm.is_v2(state):
        return _from_timm_v2(source, state, **overrides)
    model = PPLCNet(weights=None, **_timm_config(source, config, state, overrides))
    load_timm(model, source, state)
    return model


def _build_v2(state: dict, origin: str, overrides: dict) -> keras.Model:
    """The `PPLCNetV2` that PaddleClas-named tensors describe, without weights.

    Scale, depths and classes come from the shapes; an override of one of
    them must agree. A checkpoint without a classifier gives `include_top=False`.
    """
    from keras_lcnet.model_v2 import PPLCNetV2

    found = infer_architecture_v2(state, origin)
    for name in ("scale", "depths", "classes"):
        given = overrides.get(name)
        if given is None or found[name] is None:
            continue
        if np.atleast_1d(given).tolist() != np.atleast_1d(found[name]).tolist():
            raise ValueError(
                f"{name}={given!r} contradicts {origin} ({name}={found[name]!r}): "
                f"leave {name} out."
            )
    config = {"scale": found["scale"], "depths": found["depths"]}
    if found["include_top"]:
        config["classes"] = found["classes"]
    else:
        config["include_top"] = False
    return PPLCNetV2(weights=None, **{**overrides, **config})


def _from_timm_v2(source: str, state: dict, **overrides) -> keras.Model:
    """timm's `lcnetv2_*`: PaddleClas' network under other names (`timm.paddle_state_v2`)."""
    from keras_lcnet.weights_v2 import load_timm_v2

    path = timm.weights_file(source)
    model = _build_v2(timm.paddle_state_v2(state), path, overrides)
    load_timm_v2(model, source, state)
    return model


def _from_paddle_onnx(path: str, **overrides) -> keras.Model:
    """The PP-LCNet of paddle2onnx's export: strides and dropout from the graph."""
    exported = read_paddle_onnx(path)
    given = overrides.get("stride_list")
    if given is not None and resolve_strides(given) != resolve_strides(exported.stride_list):
        raise ValueError(
            f"stride_list={given!r} contradicts {path} (stride_list={exported.stride_list!r}): "
            "leave stride_list out."
        )
    overrides["stride_list"] = exported.stride_list
    if exported.dropout_rate:
        overrides.setdefault("dropout_rate", exported.dropout_rate)
    model = PPLCNet(weights=None, **checkpoint_config(exported.state, path, **overrides))
    load_paddle_onnx(model, path, exported)
    return model


def from_checkpoint(
    path: str | os.PathLike, state: dict[str, np.ndarray] | None = None, **overrides
) -> keras.Model:
    """Builds the PP-LCNet a checkpoint describes, with its weights.

    A PaddleClas `.pdparams` file or a Paddle inference model gives width,
    classes and head by its tensor shapes (an inference model's program also
    gives `dropout_rate`); a transformers PP-LCNet folder (`save_pretrained`'s
    `config.json` + `model.safetensors`) or `hf://owner/repo[@revision]`
    gives everything, strides and dropout included, by its `config.json`,
    and the input contract (BGR pixels for transformers' image processor,
    reproduced in the graph) by its `preprocessor_config.json`.
    A timm LCNet checkpoint (`lcnet_*`: a folder with timm's `config.json`
    and `model.safetensors`, such a file alone, or `hf://timm/lcnet_050.ra2_in1k`)
    gives width, classes and head (with its bias) by its tensors; its
    preprocessing is `keras_lcnet.checkpoints.timm.read_input_contract`'s.
    paddle2onnx's ONNX export (an `.onnx` file, needs the `onnx` package)
    gives them by its graph. A PP-LCNetV2 checkpoint (PaddleClas
    `.pdparams`, or timm's `lcnetv2_*`) builds a `PPLCNetV2` (branch form;
    `deploy=True` folds on load) whose scale, depths and classes come from
    the tensor shapes.

    Example:

    ```python
    model = keras_lcnet.from_checkpoint("textline_ori.pdparams",
                                        stride_list=[2, [2, 1], [2, 1], [2, 1], [2, 1]])
    model = keras_lcnet.from_checkpoint("hf://PaddlePaddle/PP-LCNet_x1_0_doc_ori_safetensors")
    model = keras_lcnet.from_checkpoint("hf://timm/lcnet_050.ra2_in1k")
    model = keras_lcnet.from_checkpoint("inference.onnx")  # paddle2onnx's export
    ```

    Args:
        path: A PaddleClas `.pdparams` file (read once); a Paddle inference
            model: its folder (`inference.pdiparams` with `inference.json` or
            `.pdmodel`), prefix, or `.pdiparams` file with the program beside it; a
            transformers or timm checkpoint folder; timm's `.safetensors`
            file; `hf://owner/repo[@revision]`; or paddle2onnx's `.onnx`
            export of a PP-LCNet.
        state: The `.pdparams` tensors, when the caller has already read them
            with `read_pdparams`.
        **overrides: `PPLCNet` arguments the file cannot say (`stride_list`
            and `dropout_rate` of a `.pdparams`, `input_shape`,
            `classifier_activation`, `name`, ...), or that must agree with it
            (`scale`, `classes`, ...); `include_top=False` drops the head.

    Returns:
        A `keras.Model` holding the checkpoint's weights.

    Raises:
        ValueError: An override contradicts the checkpoint.
        CheckpointError: The file is not a readable PP-LCNet checkpoint.
        WeightsUnavailableError: An `hf://` repo could not be fetched.
        ImportError: An ONNX file and no `onnx` package.
    """
    path = hf.resolve_folder(path)  # an hf:// repo is fetched once; its files tell its form
    path = onnx_in_folder(path) or path  # PaddleX' ONNX folder
    if state is None and timm.is_timm_source(path):
        return _from_timm(path, **overrides)
    if state is None and hf.is_transformers_source(path):
        return _from_transformers(path, **overrides)
    if state is None and is_inference_model(path):
        inference = read_inference_model(path)
        if inference.dropout_rate:
            overrides.setdefault("dropout_rate", inference.dropout_rate)
        config = checkpoint_config(inference.state, inference.origin, **overrides)
        model = PPLCNet(weights=None, **config)
        load_inference_model(model, path, inference)
        return model
    if state is None and is_paddle_onnx(path):
        return _from_paddle_onnx(path, **overrides)
    if state is None and os.path.isfile(path) and hf.is_safetensors(path):
        # A bare transformers model.safetensors: shapes only, strides as given.
        paddle = hf.paddle_state(hf.read_safetensors(path))
        model = PPLCNet(weights=None, **checkpoint_config(paddle, path, **overrides))
        load_weights(model, path)
        return model
    state = read_pdparams(path) if state is None else state
    if is_v2_state(state):
        from keras_lcnet.weights_v2 import load_pdparams_v2

        model = _build_v2(state, path, overrides)
        load_pdparams_v2(model, path, state)  # the dropout fold uses the model's dropout_rate
        return model
    model = PPLCNet(weights=None, **checkpoint_config(state, path, **overrides))
    load_pdparams(model, path, state)  # the dropout fold uses the model's dropout_rate
    return model


def list_presets(task: str | None = None) -> list[Preset]:
    """The published checkpoints (presets), ImageNet ones included.

    Example:

    ```python
    for preset in keras_lcnet.list_presets(task="binary"):
        print(preset.name, preset.classes, preset.input.size)
    ```

    Args:
        task: Only the presets of this task kind (one of
            `keras_lcnet.presets.TASKS`, e.g. `"single_label"`); all if `None`.

    Returns:
        A list of `keras_lcnet.presets.Preset`, in registry order.

    Raises:
        ValueError: `task` is not a known task kind.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; tasks: {', '.join(TASKS)}.")
    return [p for p in presets.PRESETS if task is None or p.task == task]


def _preset_config(preset: Preset) -> dict:
    """The `PPLCNet` arguments that rebuild a preset's network with its weights."""
    size = tuple(preset.input.size)
    channels_last = keras.config.image_data_format() == "channels_last"
    return {
        "scale": preset.scale,
        "classes": preset.classes,
        "input_shape": (*size, 3) if channels_last else (3, *size),
        "classifier_activation": preset.activation,
        **_PRESET_FIXED,
        **preset.architecture,
        "weights": preset.name,
    }


def _same(name: str, given, expected) -> bool:
    if name == "stride_list":  # [2, [2, 1]] and (2, (2, 1)) are the same strides
        return resolve_strides(given) == resolve_strides(expected)
    return given == expected


def from_preset(preset: str | Preset, **overrides) -> keras.Model:
    """Builds a published checkpoint's network with its weights, from its preset name.

    Width, classes, strides, head, input size and output activation come from
    the preset (`keras_lcnet.list_presets()`); its weights are downloaded,
    converted and cached like `weights="imagenet"`. The model takes RGB pixels
    in `[0, 255]` (`keras_lcnet.load_image(path, preset=name)`) and outputs
    what the preset's task decodes (`keras_lcnet.decode_outputs`).

    Example:

    ```python
    model = keras_lcnet.from_preset("PPLCNet_x1_0_imagenet")
    image = keras_lcnet.load_image("cat.jpg", preset="PPLCNet_x1_0_imagenet")
    print(keras_lcnet.decode_outputs(model.predict(image), "PPLCNet_x1_0_imagenet"))
    ```

    Args:
        preset: A preset name, or a `keras_lcnet.presets.Preset`.
        **overrides: Further `PPLCNet` arguments, e.g. `include_top=False`,
            `classifier_activation=None` (logits), `input_shape=(None, None, 3)`,
            `name`, or `weights=None` (the architecture only). `scale`,
            `classes`, `stride_list`, `use_last_conv` and `class_expand` are
            fixed by the checkpoint and may only repeat the preset's values
            (`None` for one of them means "as the preset says").

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: Unknown preset, or an override the checkpoint contradicts.
        WeightsUnavailableError: The weights could not be downloaded.
        CheckpointError: The downloaded file is not the preset's checkpoint.
    """
    preset = get_preset(preset)
    config = _preset_config(preset)
    for name in ("scale", "classes", *_PRESET_FIXED):
        if overrides.get(name) is None:  # not given, or "as the preset says"
            overrides.pop(name, None)
        elif not _same(name, overrides[name], config[name]):
            raise ValueError(
                f"{name}={overrides[name]!r} contradicts the checkpoint of preset "
                f"'{preset.name}' ({name}={config[name]!r}): leave {name} out."
            )
    return PPLCNet(**{**config, "input_contract": preset.input, **overrides})
