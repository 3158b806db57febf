"""Resolving `weights=`: published weights (registry, download, cache, offline) and files."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import zipfile

import h5py
import numpy as np
import pytest
from helpers import FIXTURES
from keras.src.legacy.saving import legacy_h5_format

import keras_lcnet
from keras_lcnet import presets, weights
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.presets import VARIANTS

# A real PaddleClas x0_25 checkpoint with 8 classes stands in for the published
# x0_25 file: with include_top=False the head is not used.
X0_25 = FIXTURES / "pplcnet_x0_25.pdparams"
X0_35 = FIXTURES / "pplcnet_x0_35.pdparams"
IMAGENET_X0_25 = "PPLCNet_x0_25_pretrained.pdparams"
CONVERTED_X0_25 = "PPLCNet_x0_25_pretrained.keras_lcnet.npz"


def _backbone(weights_arg="imagenet", **kwargs):
    return keras_lcnet.PPLCNet_x0_25(weights=weights_arg, include_top=False, **kwargs)


def _same_weights(a, b) -> bool:
    return all(
        np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.weights, b.weights, strict=True)
    )


def test_registry_lists_every_published_checkpoint():
    pairs = {(e.variant, e.tag) for e in presets.PRESETS}
    assert {v for v, t in pairs if t == "imagenet"} == set(VARIANTS)
    assert {v for v, t in pairs if t == "imagenet_ssld"} == {"x0_25", "x0_5", "x1_0", "x2_5"}
    entry = presets.find_preset(1.0, "imagenet_ssld")
    assert entry.url == (
        "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
        "PPLCNet_x1_0_ssld_pretrained.pdparams"
    )
    assert presets.find_preset("x2_5").file_name == "PPLCNet_x2_5_pretrained.pdparams"
    assert presets.find_preset("2_5").top1 == pytest.approx(76.60)


def test_unpublished_pair_lists_what_exists():
    with pytest.raises(
        ValueError, match=r"no 'imagenet_ssld' weights .* x0_35.*x1_0/imagenet_ssld"
    ):
        presets.find_preset(0.35, "imagenet_ssld")


def test_download_from_mirror_then_cached(keras_home, tmp_path):
    shutil.copy(X0_25, tmp_path / "mirror" / IMAGENET_X0_25)
    model = _backbone()
    cached = keras_home / "models" / IMAGENET_X0_25
    converted = keras_home / "models" / "PPLCNet_x0_25_pretrained.keras_lcnet.npz"
    assert cached.exists() and converted.exists()
    assert _same_weights(model, _backbone(str(X0_25)))
    # Neither the mirror nor the upstream file is needed once converted.
    (tmp_path / "mirror" / IMAGENET_X0_25).unlink()
    cached.unlink()
    assert _same_weights(_backbone(), model)


def test_preplaced_file_is_used_without_network(keras_home):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_25, keras_home / "models" / IMAGENET_X0_25)
    assert _same_weights(_backbone(), _backbone(str(X0_25)))


def test_offline_error_names_url_path_and_convert(keras_home):
    with pytest.raises(WeightsUnavailableError) as info:
        _backbone()
    message = str(info.value)
    assert weights.download_url(presets.find_preset(0.25)) in message  # the mirror in this test
    assert str(keras_home / "models" / IMAGENET_X0_25) in message
    assert "keras-lcnet convert FILE.pdparams --preset PPLCNet_x0_25_imagenet" in message
    assert not list((keras_home / "models").glob("*"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign_npz"])
def test_corrupt_converted_cache_is_rebuilt(keras_home, damage):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_25, keras_home / "models" / IMAGENET_X0_25)
    reference = _backbone()
    converted = keras_home / "models" / "PPLCNet_x0_25_pretrained.keras_lcnet.npz"
    good = converted.read_bytes()
    if damage == "truncate":
        converted.write_bytes(good[: len(good) // 3])
    elif damage == "garbage":
        converted.write_bytes(b"\0" * 100)
    else:
        np.savez(converted, conv1=np.zeros(3))
    assert _same_weights(_backbone(), reference)
    assert converted.read_bytes() == good


def test_stale_cache_that_does_not_fit_is_rebuilt(keras_home):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_25, keras_home / "models" / IMAGENET_X0_25)
    reference = _backbone()
    converted = keras_home / "models" / "PPLCNet_x0_25_pretrained.keras_lcnet.npz"
    with np.load(converted) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["conv1/kernel"] = np.zeros((3, 3, 3, 5), np.float32)
    np.savez(converted, **arrays)
    assert _same_weights(_backbone(), reference)


def test_hostile_file_in_cache_is_refused_and_removed(keras_home):
    (keras_home / "models").mkdir(parents=True)
    marker = keras_home / "pwned"
    evil = keras_home / "models" / IMAGENET_X0_25

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil.write_bytes(pickle.dumps({"conv1.conv.weight": Exploit()}))
    with pytest.raises(CheckpointError, match="refusing"):
        _backbone()
    assert not marker.exists()
    assert not evil.exists()
    assert not list((keras_home / "models").glob("*.npz"))


def test_wrong_width_in_cache_is_reported_and_not_converted(keras_home):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_35, keras_home / "models" / IMAGENET_X0_25)
    with pytest.raises(
        CheckpointError, match=r"blocks2.0.pw_conv.conv.weight.*\[16, 8, 1, 1\].*\[8, 8, 1, 1\]"
    ):
        _backbone()
    assert not list((keras_home / "models").glob("*.npz"))
    assert not list((keras_home / "models").glob(".tmp-*"))


def test_cache_write_is_atomic(keras_home, monkeypatch):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_25, keras_home / "models" / IMAGENET_X0_25)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _backbone()
    assert sorted(p.name for p in (keras_home / "models").iterdir()) == [IMAGENET_X0_25]


def test_fine_tuned_checkpoint_with_other_class_count():
    model = keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), classes=8, classifier_activation=None)
    assert model.output_shape == (None, 8)


def _place_upstream(keras_home, source=X0_25):
    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(source, keras_home / "models" / IMAGENET_X0_25)


@pytest.mark.parametrize("damage", ["nan", "inf", "integer"])
def test_non_finite_or_integer_cache_is_rebuilt(keras_home, caplog, damage):
    _place_upstream(keras_home)
    reference = _backbone()
    converted = keras_home / "models" / CONVERTED_X0_25
    good = converted.read_bytes()
    with np.load(converted) as data:
        arrays = {k: data[k] for k in data.files}
    if damage == "integer":  # same shape, values rounded: would load silently
        arrays["conv1/kernel"] = np.round(arrays["conv1/kernel"] * 10).astype(np.int64)
    else:
        arrays["conv1/kernel"][0, 0, 0, 0] = np.nan if damage == "nan" else np.inf
    np.savez(converted, **arrays)
    with caplog.at_level(logging.WARNING, logger="keras_lcnet.weights"):
        assert _same_weights(_backbone(), reference)
    assert "Rebuilding the corrupt weights cache" in caplog.text
    assert converted.read_bytes() == good


def test_non_finite_download_is_refused_and_not_cached(keras_home, tmp_path):
    state = read_pdparams(X0_25)
    state["blocks2.0.dw_conv.bn._variance"][1] = np.nan
    poisoned = tmp_path / "poisoned.pdparams"
    with open(poisoned, "wb") as f:
        pickle.dump(state, f, protocol=4)
    _place_upstream(keras_home, poisoned)
    with pytest.raises(CheckpointError, match=r"blocks2\.0\.dw_conv\.bn\._variance.*NaN"):
        _backbone()
    assert not list((keras_home / "models").iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_cache_has_the_permissions_of_the_download(keras_home, tmp_path, umask):
    shutil.copy(X0_25, tmp_path / "mirror" / IMAGENET_X0_25)
    previous = os.umask(umask)
    try:
        _backbone()
    finally:
        os.umask(previous)
    downloaded = (keras_home / "models" / IMAGENET_X0_25).stat().st_mode
    assert downloaded & 0o777 == 0o666 & ~umask
    assert (keras_home / "models" / CONVERTED_X0_25).stat().st_mode == downloaded


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """The 8-class x0_25 fixture as loaded, and saved by Keras in each of its forms."""
    folder = tmp_path_factory.mktemp("keras_files")
    model = keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), classes=8)
    model.save_weights(folder / "model.weights.h5")
    model.save(folder / "model.keras")
    model.save(folder / "legacy.h5")  # legacy HDF5 full model (Keras logs a warning)
    # What Keras 2's model.save_weights("x.h5") wrote, by Keras' own legacy writer.
    with h5py.File(folder / "legacy_weights.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return model, folder


KERAS_FORMS = ["model.weights.h5", "model.keras", "legacy.h5", "legacy_weights.h5"]


@pytest.mark.parametrize(
    ("form", "name"),
    [
        ("model.weights.h5", "weights.bin"),
        ("model.weights.h5", "weights.h5"),
        ("model.keras", "model.keras"),
        ("model.keras", "model.zip"),
        ("legacy.h5", "legacy.h5"),
        ("legacy.h5", "legacy.bin"),
        ("legacy_weights.h5", "legacy_weights.bin"),
    ],
)
def test_keras_files_load_whatever_their_name(keras_files, tmp_path, form, name):
    reference, folder = keras_files
    shutil.copy(folder / form, tmp_path / name)
    model = keras_lcnet.PPLCNet_x0_25(weights=str(tmp_path / name), classes=8)
    assert _same_weights(model, reference)


@pytest.mark.parametrize("form", KERAS_FORMS)
def test_headless_model_takes_the_body_of_a_keras_file(keras_files, form):
    _, folder = keras_files
    assert _same_weights(_backbone(str(folder / form)), _backbone(str(X0_25)))


@pytest.mark.parametrize("form", KERAS_FORMS)
def test_keras_file_class_mismatch_is_one_line(keras_files, form):
    _, folder = keras_files
    with pytest.raises(CheckpointError) as info:
        keras_lcnet.PPLCNet_x0_25(weights=str(folder / form), classes=1000)
    message = str(info.value)
    assert "\n" not in message
    assert "trained for 8 classes" in message and "fc/kernel" in message
    assert "[1280, 8] vs [1280, 1000]" in message
    assert "classes=8" in message and "include_top=False" in message


@pytest.mark.parametrize("form", KERAS_FORMS)
def test_keras_file_of_another_head_names_the_extra_tensor(keras_files, form):
    _, folder = keras_files
    with pytest.raises(CheckpointError, match=r"holds tensor .*last_conv.* \[1, 1, 128, 1280\]"):
        keras_lcnet.PPLCNet_x0_25(weights=str(folder / form), classes=8, use_last_conv=False)


@pytest.mark.parametrize("form", KERAS_FORMS)
def test_failed_keras_load_leaves_model_untouched(keras_files, form):
    _, folder = keras_files
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=1000)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ValueError):  # CheckpointError is one
        weights.load_weights(model, folder / form)
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(model.weights, before, strict=True))


def test_truncated_keras_weights_file_raises(keras_files, tmp_path):
    _, folder = keras_files
    data = (folder / "model.weights.h5").read_bytes()
    (tmp_path / "cut.weights.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable Keras weights file"):
        keras_lcnet.PPLCNet_x0_25(weights=str(tmp_path / "cut.weights.h5"), classes=8)


def test_zip_that_is_not_a_keras_model_raises(tmp_path):
    path = tmp_path / "photos.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cat.jpg", b"not weights")
    with pytest.raises(CheckpointError, match=r"without 'model\.weights\.h5'"):
        keras_lcnet.PPLCNet_x0_25(weights=str(path), classes=8)
