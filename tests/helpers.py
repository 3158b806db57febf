"""Test helpers: the reference fixtures, test presets, tolerances and a subprocess runner."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

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


def mutate_bytes(data: bytes, rng: np.random.Generator, hot_spots: Sequence[int] = ()) -> bytes:
    """One seeded corruption of a file: a flipped bit, a cut, an insertion or a huge number.

    Half the mutations land near one of `hot_spots` (offsets of headers and size
    fields, where a corruption changes structure rather than a weight's value).
    """
    data = bytearray(data)
    if hot_spots and rng.random() < 0.5:
        spot = int(hot_spots[int(rng.integers(0, len(hot_spots)))])
        pos = min(max(spot + int(rng.integers(-16, 16)), 0), len(data) - 1)
    else:
        pos = int(rng.integers(0, len(data)))
    kind = int(rng.integers(0, 4))
    if kind == 0:
        data[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:
        del data[pos:]
    elif kind == 2:
        data[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
    else:  # a size field's worth of 0xff...: a little-endian integer or a varint's start
        data[pos : pos + 8] = int(rng.integers(2**31, 2**63)).to_bytes(8, "little")
    return bytes(data)


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
