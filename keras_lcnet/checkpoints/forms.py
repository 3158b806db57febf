"""What a checkpoint is, without building a model: its form, architecture, size and labels.

`FORMS` is a table of `(name, detector, describer)` rows tried in order, the
same order in which `keras_lcnet.weights.load_weights` recognizes files: the
first detector that accepts a source names its form. Adding a form is one
row. Only NumPy, safetensors and h5py are used, never Keras: describing a
checkpoint builds nothing.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from keras_lcnet.architecture import BLOCKS, STAGES, STEM, variant_of_channels
from keras_lcnet.checkpoints import huggingface as hf
from keras_lcnet.checkpoints import timm
from keras_lcnet.checkpoints.mapping import infer_architecture
from keras_lcnet.checkpoints.paddle_onnx import is_paddle_onnx, onnx_in_folder, read_paddle_onnx
from keras_lcnet.checkpoints.pdiparams import is_inference_model, read_inference_model
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.checkpoints.shapes_v2 import infer_architecture_v2, is_v2_state
from keras_lcnet.errors import CheckpointError
from keras_lcnet.presets import VARIANTS, InputContract

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # as keras_files, which imports Keras
_ZIP_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class Form:
    """One checkpoint form keras_lcnet reads.

    Attributes:
        name: Short name, e.g. `"pdparams"` (`describe_checkpoint`'s `form`).
        title: What it is, for people, e.g. `"PaddleClas .pdparams checkpoint"`.
        detect: `detect(source) -> bool`, by content where possible; cheap.
        describe: `describe(source) -> dict`, the form-specific fields of
            `describe_checkpoint`'s result.
        architecture_from: Where the architecture is read, e.g. `"tensor shapes"`.
    """

    name: str
    title: str
    detect: Callable[[str], bool]
    describe: Callable[[str], dict]
    architecture_from: str


def _shapes(tensors: Mapping[str, object]) -> dict:
    """Tensor and parameter counts of `{name: array or shape}`."""
    shapes = [tuple(getattr(value, "shape", value)) for value in tensors.values()]
    return {"tensors": len(shapes), "parameters": sum(math.prod(s) for s in shapes)}


def _architecture(found: dict, stride_list=None, dropout_rate=None) -> dict:
    """`infer_architecture`'s result in `describe_checkpoint`'s terms (`None`: not recorded)."""
    scale = found["scale"]
    variant = next(name for name, value in VARIANTS.items() if value == scale)
    head = found["include_top"] and found["use_last_conv"]
    return {
        "variant": variant,
        "scale": scale,
        "include_top": found["include_top"],
        "classes": found["classes"] if found["include_top"] else None,
        "stride_list": None if stride_list is None else _paddle_strides(stride_list),
        "use_last_conv": found["use_last_conv"] if found["include_top"] else None,
        "class_expand": found["class_expand"] if head else None,
        "dropout_rate": dropout_rate if head else None,
    }


def _architecture_v2(state: Mapping[str, object], origin: str) -> dict:
    """A PP-LCNetV2's architecture in `describe_checkpoint`'s terms."""
    found = infer_architecture_v2(state, origin)
    return {
        "variant": None if found["variant"] is None else f"v2_{found['variant']}",
        "scale": found["scale"],
        "depths": found["depths"],
        "include_top": found["include_top"],
        "classes": found["classes"],
    }


def _paddle_strides(stride_list) -> list:
    """Strides in PaddleClas' notation: `2` for `(2, 2)`, `[2, 1]` for `(2, 1)`."""
    pairs = [(s, s) if isinstance(s, int) else tuple(s) for s in stride_list]
    return [h if h == w else [h, w] for h, w in pairs]


def _is_file(source: str) -> bool:
    return not source.startswith(hf.HF_SCHEME) and os.path.isfile(source)


def _starts_with(*signatures: bytes) -> Callable[[str], bool]:
    def detect(source: str) -> bool:
        if not _is_file(source):
            return False
        with open(source, "rb") as f:
            head = f.read(8)
        return head.startswith(signatures)

    return detect


def _describe_pdparams(source: str) -> dict:
    state = read_pdparams(source)
    if is_v2_state(state):
        return {"architecture": _architecture_v2(state, source), **_shapes(state)}
    return {"architecture": _architecture(infer_architecture(state, source)), **_shapes(state)}


def _describe_inference(source: str) -> dict:
    model = read_inference_model(source)
    # The program holds the dropout probability, not the strides.
    found = infer_architecture(model.state, model.origin)
    return {
        "architecture": _architecture(found, dropout_rate=model.dropout_rate),
        **_shapes(model.state),
    }


def _describe_paddle_onnx(source: str) -> dict:
    exported = read_paddle_onnx(onnx_in_folder(source) or source)
    found = infer_architecture(exported.state, exported.origin)
    return {
        "architecture": _architecture(found, exported.stride_list, exported.dropout_rate),
        **_shapes(exported.state),
    }


def _describe_timm(source: str) -> dict:
    folder = hf.resolve_folder(source)
    config = timm.read_config(folder) if os.path.isdir(folder) else None
    path = timm.weights_file(folder)
    state = timm.read_state(path)
    if timm.is_v2(state):
        architecture = _architecture_v2(timm.paddle_state_v2(state), path)
    else:
        found = infer_architecture(timm.paddle_state(state, path), path)
        architecture = {**_architecture(found), "head_bias": "conv_head.bias" in state}
    # timm's dropout is inactive at inference: nothing to fold, so none recorded.
    contract = None if config is None else timm.input_contract(config, folder)
    return {
        "architecture": architecture,
        **_shapes(state),
        "labels": None,
        "input": None if contract is None else _contract(contract),
    }


def _safetensors_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """`{name: shape}` of a safetensors file, from its header alone."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(f"Reading {path} needs safetensors: {hf._INSTALL}.") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} does not exist: a transformers folder holds its weights.")
    try:
        with safe_open(path, framework="numpy") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except Exception as e:  # SafetensorError, OSError: one message whatever the damage
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})."
        ) from None


def _paddle_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """transformers tensors as PaddleClas-named stand-ins of their Paddle shapes (no data)."""
    return hf.paddle_state({key: np.broadcast_to(np.float32(0), s) for key, s in shapes.items()})


def _labels(config: dict, origin: str) -> list[str] | None:
    """`id2label` as a list in class order, or `None` without one."""
    id2label = config.get("id2label")
    if not id2label:
        return None
    try:
        return [str(id2label[key]) for key in sorted(id2label, key=int)]
    except (TypeError, ValueError, KeyError):
        raise CheckpointError(f"{origin}: id2label is not a mapping of class ids.") from None


def _describe_transformers(source: str) -> dict:
    folder = hf.resolve_folder(source)
    config_path = os.path.join(folder, hf.CONFIG_FILE)
    config = hf.read_config(folder)
    found = hf.architecture_from_config(config, config_path)
    shapes = _safetensors_shapes(os.path.join(folder, hf.WEIGHTS_FILE))
    hf.check_config_against_tensors(found, shapes, config_path)
    include_top = "head.weight" in shapes  # a PPLCNetBackbone has no head
    if include_top:  # the head's rows, whether or not config.json lists id2label
        found["classes"] = shapes["head.weight"][0] if shapes["head.weight"] else None
    contract = hf.read_input_contract(folder)
    architecture = _architecture(
        {**found, "include_top": include_top, "use_last_conv": True},
        found["stride_list"],
        found["dropout_rate"],
    )
    return {
        "architecture": architecture,
        **_shapes(shapes),
        "labels": _labels(config, config_path) if include_top else None,
        "input": None if contract is None else _contract(contract),
    }


def _contract(contract: InputContract) -> dict:
    return {
        "size": list(contract.size),
        "resize_short": contract.resize_short,
        "interpolation": contract.interpolation,
        "channel_order": contract.channel_order,
        "mean": list(contract.mean),
        "std": list(contract.std),
    }


def _describe_safetensors(source: str) -> dict:
    shapes = _safetensors_shapes(source)
    found = infer_architecture(_paddle_shapes(shapes), source)
    return {"architecture": _architecture(found), **_shapes(shapes)}


def _describe_keras(source: str) -> dict:
    """A Keras file: its tensors, and for a `.keras` or legacy `.h5` model its architecture."""
    import h5py

    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                config = json.loads(archive.read("config.json"))["config"]
                weights = io.BytesIO(archive.read("model.weights.h5"))
        else:
            weights = source
            config = None
        with h5py.File(weights, "r") as f:
            shapes = {}
            f.visititems(lambda name, item: _record_dataset(shapes, name, item))
            if config is None and "model_config" in f.attrs:  # a legacy whole-model .h5
                config = json.loads(f.attrs["model_config"])["config"]
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{source} is not a readable Keras file ({e}).") from None
    layers = {}
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        layers = {c["config"]["name"]: c["config"] for c in config["layers"] if "config" in c}
    return {"architecture": architecture_of_layers(layers), **_shapes(shapes)}


def _record_dataset(shapes: dict, name: str, item) -> None:
    import h5py

    if isinstance(item, h5py.Dataset):
        shapes[name] = item.shape


def architecture_of_layers(layers: Mapping[str, Mapping]) -> dict | None:
    """The architecture of a PP-LCNet from its layers' Keras configs, by layer name.

    Args:
        layers: `{layer name: layer.get_config()}`, of a built model or of a
            `.keras` file's `config.json`.

    Returns:
        The `architecture` dict of `describe_checkpoint`, or `None` when the
        layers are not those of a `keras_lcnet.PPLCNet` of a published width.
    """
    try:
        names = {STEM: STEM, **{s: f"{s}_{len(b) - 1}_pw_conv" for s, b in BLOCKS.items()}}
        variant = variant_of_channels({k: layers[n]["filters"] for k, n in names.items()})
        first = [STEM] + [f"{stage}_0_dw_conv" for stage in STAGES[1:]]
        strides = [layers[name]["strides"] for name in first]
    except (KeyError, TypeError):
        return None
    if variant is None:
        return None
    fc, last, dropout = layers.get("fc"), layers.get("last_conv"), layers.get("dropout")
    found = {
        "scale": VARIANTS[variant],
        "include_top": fc is not None,
        "classes": fc["units"] if fc else None,
        "use_last_conv": last is not None,
        "class_expand": last["filters"] if last else None,
    }
    return _architecture(found, strides, dropout["rate"] if dropout else None)


FORMS: list[Form] = [
    # First match wins, as in `load_weights`: folders and hf:// before files.
    Form("timm", "timm LCNet / LCNetV2 checkpoint",
         lambda s: timm.is_timm_source(s), _describe_timm, "tensor shapes"),
    Form("transformers", "transformers PP-LCNet checkpoint",
         lambda s: hf.is_transformers_source(s), _describe_transformers, "config.json"),
    Form("paddle-onnx", "paddle2onnx ONNX export",
         lambda s: onnx_in_folder(s) is not None or is_paddle_onnx(s), _describe_paddle_onnx,
         "ONNX graph"),
    Form("paddle-inference", "Paddle inference model",
         lambda s: not s.startswith(hf.HF_SCHEME) and is_inference_model(s), _describe_inference,
         "tensor shapes and program"),
    Form("keras", "Keras file",
         _starts_with(_HDF5_SIGNATURE, _ZIP_SIGNATURE), _describe_keras, "model config"),
    Form("safetensors", "bare transformers .safetensors file",
         lambda s: _is_file(s) and hf.is_safetensors(s), _describe_safetensors, "tensor shapes"),
    Form("pdparams", "PaddleClas .pdparams checkpoint", _is_file, _describe_pdparams,
         "tensor shapes"),
]


def find_form(source: str | os.PathLike) -> Form:
    """The form of a checkpoint source: the first row of `FORMS` that detects it.

    Args:
        source: A checkpoint file or folder, or `hf://owner/repo[@revision]`.

    Returns:
        The `Form`.

    Raises:
        FileNotFoundError: `source` does not exist (and is not an `hf://` repo).
        CheckpointError: `source` is neither a file nor a folder (a FIFO, ...).
    """
    source = os.fspath(source)
    for form in FORMS:
        if form.detect(source):
            return form
    if not os.path.exists(source):
        raise FileNotFoundError(f"No such file or folder: {source}")
    raise CheckpointError(f"{source} is neither a file nor a folder: not a checkpoint.")


def describe_checkpoint(source: str | os.PathLike) -> dict:
    """Describes a checkpoint without building a model: form, architecture, size, labels.

    Example:

    ```python
    info = keras_lcnet.describe_checkpoint("textline_ori.pdparams")
    print(info["form"], info["architecture"]["variant"], info["architecture"]["classes"])
    ```

    Args:
        source: Any checkpoint `keras_lcnet.from_checkpoint` or `weights=`
            reads: a PaddleClas `.pdparams` file, a Paddle inference model,
            a transformers folder, `hf://owner/repo[@revision]`, a bare
            `.safetensors` file, or a Keras file.

    Returns:
        A JSON-serializable dict: `source`; `form` and `title` (see `FORMS`);
        `architecture` (`variant`, `scale`, `include_top`, `classes`,
        `stride_list`, `use_last_conv`, `class_expand`, `dropout_rate`; a
        value the file does not record is `None`; the whole entry is `None`
        for a Keras weights file, which records no architecture; for a
        PP-LCNetV2 `variant` (`"v2_small"`, ... or `None`), `scale`,
        `depths`, `include_top` and `classes`);
        `architecture_from`; `tensors` and `parameters` (numbers stored,
        BatchNorm statistics included); `labels` (a list, or `None`); and
        `input` (the input contract the checkpoint's own preprocessing
        gives, or `None`).

    Raises:
        FileNotFoundError: No such file, folder or `hf://` repo form.
        CheckpointError: The checkpoint is unreadable or not a PP-LCNet.
        WeightsUnavailableError: An `hf://` repo could not be fetched.
    """
    source = os.fspath(source)
    local = hf.resolve_folder(source)  # an hf:// repo is fetched once; its files tell its form
    form = find_form(local)
    described = {
        "source": source,
        "form": form.name,
        "title": form.title,
        "architecture": None,
        "architecture_from": form.architecture_from,
        "tensors": 0,
        "parameters": 0,
        "labels": None,
        "input": None,
    }
    described.update(form.describe(local))  # keeps the order above
    if described["architecture"] is None:  # a Keras weights file
        described["architecture_from"] = None
    return described
