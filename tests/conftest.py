"""Test session setup (backend, logging) and shared fixtures; helpers live in helpers.py."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from helpers import FIXTURES, load_case, model_kwargs


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> pathlib.Path:
    """An empty, private Keras cache; downloads come from a local folder, never the network."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("KERAS_LCNET_MIRROR", mirror.as_uri() + "/")
    return home


@pytest.fixture(scope="session")
def x0_25_case():
    """PaddleClas x0_25 with informative random weights (BN calibrated), its reference
    pixels and PaddleClas' own logits for them (tools/make_fixtures.py)."""
    from keras_lcnet.model import PPLCNet

    config, arrays = load_case("pplcnet_x0_25")
    model = PPLCNet(weights=str(FIXTURES / "pplcnet_x0_25.pdparams"), **model_kwargs(config))
    return model, arrays["pixels_0"].astype(np.float32), arrays["logits_0"]
