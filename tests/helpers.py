"""Test helpers: the reference fixtures, test presets, tolerances, a subprocess runner,
transformers-named copies of the fixtures and seeded file mutations for fuzz tests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType

import numpy as np

from keras_lcnet import presets
from keras_lcnet.presets import Preset

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
IMAGES_DIR = pathlib.Path(__file__).parent.parent / "examples" / "images"
CASES = ("pplcnet_x0_35", "pplcnet_x0_25", "pplcnet_x0_25_textline", "pplcnet_x0_25_no_last_conv")


def load_case(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The constructor kwargs and arrays of a reference fixture made by tools/make_fixtures.py."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return json.loads(str(arrays.pop("config"))), arrays


def small_preset(name: str, classes: int, **fields) -> Preset:
    """A test preset of width x0_25 (the reference checkpoints'), at an address never fetched.

    Register it with `register_presets` and put its checkpoint in the `keras_home`
    fixture's mirror with `publish`.
    """
    return Preset(
        name=name, variant="x0_25", tag=name, classes=classes,
        url=f"https://example.invalid/models/{name}_pretrained.pdparams", **fields,
    )


def register_presets(monkeypatch, *added: Preset) -> dict[str, Preset]:
    """Adds presets to the registry for one test; returns them by name."""
    monkeypatch.setattr(presets, "PRESETS", (*presets.PRESETS, *added))
    return {preset.name: preset for preset in added}


def publish(mirror: pathlib.Path, preset: Preset, source: str | os.PathLike) -> None:
    """Puts a copy of `source` in the test mirror as the preset's published checkpoint."""
    shutil.copy(source, pathlib.Path(mirror) / preset.file_name)


def model_kwargs(config: dict) -> dict:
    """PPLCNet(...) arguments matching a PaddleClas constructor config."""
    return {
        "scale": config["scale"],
        "classes": config["class_num"],
        "dropout_rate": config["dropout_prob"],
        "class_expand": config["class_expand"],
        "stride_list": config["stride_list"],
        "use_last_conv": config["use_last_conv"],
        "classifier_activation": None,
    }


def seeded_paddle_weights(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, np.ndarray]:
    """The seeded PaddleClas weights of the preset parity fixtures, regenerated from the seed.

    tools/make_preset_fixtures.py loads these into PaddleClas' PPLCNet and the tests
    into a `.pdparams`, so only the BN statistics need committing. The recipe: one
    `np.random.default_rng(seed)` draws every tensor in sorted-key order, in float64, cast
    to float32 after scaling. Kernels are He-scaled normals, N(0, 2 / fan_in): fan_in is
    in_channels / groups * kh * kw for a conv kernel `[out, in / groups, kh, kw]` and
    `in` for Paddle's Linear `[in, out]`. Biases (rank 1) are N(0, 0.1**2).

    Args:
        shapes: PaddleClas parameter name -> shape, BN parameters excluded.
        seed: The fixture's seed.

    Returns:
        Parameter name -> float32 array.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if len(shape) == 1:
            std = 0.1
        else:
            fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]))
            std = float(np.sqrt(2.0 / fan_in))
        weights[key] = (rng.standard_normal(shape) * std).astype(np.float32)
    return weights


def weights_checksum(weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-tensor float64 sums in sorted-key order: catches a change in NumPy's streams."""
    return np.array([np.sum(weights[key], dtype=np.float64) for key in sorted(weights)])


def relative_error(actual, expected) -> float:
    expected = np.asarray(expected, dtype=np.float64)
    return float(
        np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected))
    )


def run_python(code: str, backend: str = "tensorflow", timeout: int = 600, **env: str):
    """Runs `code` in a fresh interpreter with the given Keras backend."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=pathlib.Path(__file__).parent.parent,
    )


def onnx_reference(path) -> dict[str, np.ndarray]:
    """A paddle2onnx fixture's logits and inputs (tools/make_onnx_fixtures.py).

    The inputs live in the inference fixtures; `source_<i>` says where.
    """
    path = pathlib.Path(path)
    with np.load(path.parent / "onnxruntime.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files if key.startswith("logits_")}
        sources = {k[len("source_") :]: str(data[k]) for k in data.files if k.startswith("source_")}
    for i, source in sources.items():
        fixture, key = source.split("/")
        with np.load(FIXTURES / fixture / "reference.npz", allow_pickle=False) as data:
            arrays[f"pixels_{i}"] = data[key]
    return arrays


# --------------------------------------------------------------------------- transformers


_TRANSFORMERS_PARTS = {
    "dw_conv": "depthwise_convolution",
    "pw_conv": "pointwise_convolution",
    "conv": "convolution",
    "bn": "normalization",
    "se": "squeeze_excitation_module",
    "conv1": "convolutions.0",  # the SE block's nn.ModuleList [conv, ReLU, conv, Hardsigmoid]
    "conv2": "convolutions.2",
    "_mean": "running_mean",
    "_variance": "running_var",
}


def transformers_name(key: str) -> str:
    """transformers' name of a PaddleClas PP-LCNet tensor (`blocks5.2.dw_conv.bn._mean` is
    `encoder.blocks.3.layers.2.depthwise_convolution.normalization.running_mean`)."""
    if key.startswith("fc."):
        return "head." + key[3:]
    if key == "last_conv.weight":
        return "last_convolution.weight"
    parts = key.split(".")
    if parts[0] == "conv1":
        prefix, rest = ["encoder", "convolution"], parts[1:]
    else:  # PaddleClas names the stages blocks2..blocks6, transformers 0..4
        stage = str(int(parts[0].removeprefix("blocks")) - 2)
        prefix, rest = ["encoder", "blocks", stage, "layers", parts[1]], parts[2:]
    return ".".join(prefix + [_TRANSFORMERS_PARTS.get(p, p) for p in rest])


def transformers_folder(
    pdparams: str | os.PathLike, folder: pathlib.Path, stride_list=(2, 2, 2, 2, 2),
    dropout_rate: float = 0.2, labels: Sequence[str] | None = None,
) -> pathlib.Path:
    """A PaddleClas checkpoint saved as transformers' `save_pretrained` would save it.

    `config.json` is written as `PPLCNetConfig` writes it (PP-LCNet's block table with
    `stride_list` applied), `model.safetensors` with transformers' names and layouts.
    """
    from safetensors.numpy import save_file

    from keras_lcnet.architecture import BLOCKS
    from keras_lcnet.checkpoints.mapping import infer_architecture
    from keras_lcnet.checkpoints.pdparams import read_pdparams

    state = read_pdparams(pdparams)
    found = infer_architecture(state)
    tensors = {}
    for key, value in state.items():
        value = value.T if key == "fc.weight" else value  # torch's Linear is [out, in]
        tensors[transformers_name(key)] = np.ascontiguousarray(value)
        if key.endswith("bn._mean"):
            tensors[transformers_name(key).replace("running_mean", "num_batches_tracked")] = (
                np.array(0, np.int64)
            )
    blocks = [[list(block) for block in stage] for stage in BLOCKS.values()]
    for stage, stride in zip(blocks[1:], stride_list[1:], strict=True):
        stage[0][3] = list(stride) if isinstance(stride, (list, tuple)) else stride
    classes = found["classes"] or 0
    config = {
        "architectures": ["PPLCNetForImageClassification" if classes else "PPLCNetBackbone"],
        "block_configs": blocks, "class_expand": found["class_expand"], "divisor": 8,
        "hidden_act": "hardswish", "hidden_dropout_prob": dropout_rate,
        "id2label": {str(i): name for i, name in enumerate(labels or [f"LABEL_{i}" for i in
                                                                        range(classes)])},
        "model_type": "pp_lcnet", "reduction": 4, "scale": found["scale"],
        "stem_channels": 16, "stem_stride": stride_list[0],
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


# --------------------------------------------------------------------------- mutations


def mutate(data: bytes, rng: np.random.Generator, hotspots: Sequence[int] = ()) -> bytes:
    """One random corruption of `data`.

    Kinds: a flipped bit, a cut (truncation), inserted random bytes, a deleted span, a
    huge or negative binary integer (u64, u32, i32) written over a size field, or a run
    of ASCII digits replaced by a huge number (lengths in JSON headers). Half of the
    mutations land near a `hotspots` position (e.g. where the format's headers and
    opcodes are), the rest anywhere.
    """
    data = bytearray(data)
    if len(hotspots) and rng.random() < 0.5:
        pos = int(hotspots[int(rng.integers(len(hotspots)))]) + int(rng.integers(0, 8))
    else:
        pos = int(rng.integers(0, len(data)))
    pos = min(pos, len(data) - 1)
    kind = int(rng.integers(0, 7))
    if kind == 0:
        data[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:
        del data[pos:]
    elif kind == 2:
        data[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
    elif kind == 3:
        del data[pos : pos + int(rng.integers(1, 64))]
    elif kind == 4:
        form, value = [("<Q", int(rng.integers(2**31, 2**63))), ("<I", 2**32 - 1),
                       ("<i", -int(rng.integers(1, 2**31)))][int(rng.integers(3))]
        data[pos : pos + struct.calcsize(form)] = struct.pack(form, value)
    else:
        digits = re.compile(rb"\d+").search(bytes(data), pos) or re.compile(rb"\d+").search(data)
        if digits:
            huge = str(int(rng.integers(2**31, 2**63)) * int(rng.integers(1, 10**6))).encode()
            data[digits.start() : digits.end()] = huge
    return bytes(data)


def mutations(
    data: bytes, seed: int, count: int, hotspots: Sequence[int] = ()
) -> Iterator[bytes]:
    """`count` seeded corruptions of `data` (see `mutate`): the same bytes for the same seed."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield mutate(data, rng, hotspots)


# JSON values of every type, and numbers out of every range, for `json_mutations`.
ODD_VALUES = (
    None, True, False, 0, -1, 1.5, -0.5, 2**63, 1e308, float("nan"), "", "x", "0.25",
    [], [2, [2, 1]], [0], {}, {"0": 1}, [[[]]],
)


def json_mutations(obj, seed: int, count: int) -> Iterator[object]:
    """`count` seeded copies of a JSON document with one value replaced or one key dropped."""
    rng = np.random.default_rng(seed)
    paths = list(_json_paths(obj))
    for _ in range(count):
        copy = json.loads(json.dumps(obj))
        path = paths[int(rng.integers(len(paths)))]
        parent = copy
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
        yield copy


def _json_paths(obj, path=()):
    """Paths (key/index tuples) to every value below `obj`."""
    items = () if not isinstance(obj, (dict, list)) else (
        obj.items() if isinstance(obj, dict) else enumerate(obj)
    )
    for key, value in items:
        yield (*path, key)
        yield from _json_paths(value, (*path, key))


_CHECKPOINT_SCRIPT = """
import numpy as np, keras_lcnet
from helpers import relative_error
source, pixels, expected = {args}
model = keras_lcnet.from_checkpoint(source, classifier_activation=None)
print("RESULT", relative_error(model.predict(np.load(pixels), verbose=0), np.load(expected)))
"""


def checkpoint_error_on_backend(source, pixels, expected, backend: str, tmp_path) -> float:
    """`from_checkpoint(source)`'s relative error against `expected` on another Keras backend."""
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "expected.npy", expected)
    paths = (source, tmp_path / "pixels.npy", tmp_path / "expected.npy")
    args = ", ".join(repr(str(p)) for p in paths)
    proc = run_python(_CHECKPOINT_SCRIPT.format(args=args), backend=backend, PYTHONPATH="tests")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return float(line.split()[1])


@contextlib.contextmanager
def script_module(path: pathlib.Path, name: str) -> Iterator[ModuleType]:
    """A script (benchmarks/, examples/) imported as module `name` while in use.

    It is registered in `sys.modules` meanwhile: its dataclasses look their module up there.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]
