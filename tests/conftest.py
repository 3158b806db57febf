"""Test session setup (backend, logging) and shared fixtures; helpers live in helpers.py."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> pathlib.Path:
    """An empty, private Keras cache; downloads come from a local folder, never the network."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("KERAS_LCNET_MIRROR", mirror.as_uri() + "/")
    return home
