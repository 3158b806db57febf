"""Test helpers: the reference fixtures, tolerances and a subprocess runner."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
IMAGES_DIR = pathlib.Path(__file__).parent.parent / "examples" / "images"
CASES = ("pplcnet_x0_35", "pplcnet_x0_25", "pplcnet_x0_25_textline", "pplcnet_x0_25_no_last_conv")


def load_case(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The constructor kwargs and arrays of a reference fixture made by tools/make_fixtures.py."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return json.loads(str(arrays.pop("config"))), arrays


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
