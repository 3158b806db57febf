"""Published weights: registry, download, cache and offline behaviour (no network)."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
from helpers import FIXTURES

import keras_lcnet
from keras_lcnet import presets, weights
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.presets import VARIANTS

# A real PaddleClas x0_25 checkpoint with 8 classes stands in for the published
# x0_25 file: with include_top=False the head is not used.
X0_25 = FIXTURES / "pplcnet_x0_25.pdparams"
X0_35 = FIXTURES / "pplcnet_x0_35.pdparams"
IMAGENET_X0_25 = "PPLCNet_x0_25_pretrained.pdparams"


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
    assert "keras-lcnet convert" in message
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
