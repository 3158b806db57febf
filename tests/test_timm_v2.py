"""timm's PP-LCNetV2 checkpoints (`lcnetv2_*`): parity with timm itself, forms, bad input.

The fixture (tools/make_timm_v2_fixtures.py) holds timm's `lcnetv2_small` logits for
seeded weights (10 classes) that the tests regenerate; each test writes the
checkpoint timm would save. timm's lcnetv2 is PaddleClas' PPLCNetV2 under other
names (branches unfolded, sigmoid SE gate, no head-conv bias).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import FIXTURES, checkpoint_error_on_backend, relative_error
from test_timm import _timm_state

import keras_lcnet
from keras_lcnet.errors import CheckpointError
from keras_lcnet.layers import RepDepthwiseConv2D

safetensors_numpy = pytest.importorskip("safetensors.numpy")

ARCHITECTURE = "lcnetv2_small"
TOLERANCE = 1e-4  # max |keras - timm| / max |timm|
CLASSES = 10


def _case() -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"timm_{ARCHITECTURE}.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return json.loads(str(arrays.pop("config"))), arrays


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """lcnetv2_small as timm's `push_to_hf_hub` writes it, in float16 (timm ran those values)."""
    config, arrays = _case()
    path = tmp_path_factory.mktemp("timm") / ARCHITECTURE
    path.mkdir()
    state = _timm_state(config, arrays, np.float16)
    safetensors_numpy.save_file(state, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config["timm_config"], indent=2))
    return path


def _check_parity(model, sizes=(0, 1)) -> None:
    _, arrays = _case()
    for i in sizes:
        expected = arrays[f"logits_{i}"]
        assert relative_error(expected[0], expected[1]) > 1e-2  # outputs depend on the input
        pixels = arrays[f"pixels_{i}"].astype(np.float32)
        error = relative_error(model.predict(pixels, verbose=0), expected)
        assert error <= TOLERANCE, f"pixels_{i}: {error:.2e}"


def _is_branch_form(model) -> bool:
    reps = [layer for layer in model.layers if isinstance(layer, RepDepthwiseConv2D)]
    return bool(reps) and not any(layer.deploy for layer in reps)


def test_from_checkpoint_folder_matches_timm(folder):
    model = keras_lcnet.from_checkpoint(folder, classifier_activation=None)
    assert _is_branch_form(model)
    assert model.output.shape[-1] == CLASSES
    assert not model.get_layer("last_conv").use_bias
    _check_parity(model)


def test_bare_file_in_deploy_form_matches_timm(folder):
    model = keras_lcnet.from_checkpoint(folder / "model.safetensors", deploy=True,
                                        classifier_activation=None)
    assert not any(not layer.deploy for layer in model.layers
                   if isinstance(layer, RepDepthwiseConv2D))
    _check_parity(model, sizes=(1,))


def test_weights_argument_takes_the_folder(folder):
    model = keras_lcnet.PPLCNetV2_small(weights=str(folder), classes=CLASSES,
                                       classifier_activation=None)
    _check_parity(model, sizes=(0,))


def test_weights_argument_takes_the_bare_file(folder):
    model = keras_lcnet.PPLCNetV2_small(weights=str(folder / "model.safetensors"),
                                       classes=CLASSES, classifier_activation=None)
    _check_parity(model, sizes=(0,))


def test_describe_checkpoint_reads_the_variant(folder):
    described = keras_lcnet.describe_checkpoint(folder)
    assert described["form"] == "timm"
    assert described["architecture"] == {
        "variant": "v2_small", "scale": 0.75, "depths": [2, 2, 4, 2],
        "include_top": True, "classes": CLASSES,
    }
    assert described["input"]["interpolation"] == "bicubic"


def test_hf_url_builds_the_v2(folder, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append(repo_id)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = keras_lcnet.from_checkpoint("hf://timm/lcnetv2_small.paddle_in1k",
                                        classifier_activation=None)
    assert calls == ["timm/lcnetv2_small.paddle_in1k"]
    _check_parity(model, sizes=(1,))


def test_missing_branch_tensor_is_named_and_loads_nothing(folder, tmp_path):
    config, arrays = _case()
    state = _timm_state(config, arrays)
    del state["stages.2.1.dw_conv_list.2.bn.running_var"]
    path = tmp_path / "model.safetensors"
    safetensors_numpy.save_file(state, path)
    with pytest.raises(CheckpointError, match=r"list_2_bn") as e:
        keras_lcnet.from_checkpoint(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override", [{"scale": 1.0}, {"depths": [2, 2, 6, 2]}, {"classes": 5}])
def test_override_contradicting_the_checkpoint_is_one_line(folder, override):
    (name,) = override
    with pytest.raises(ValueError, match=rf"{name}=.* contradicts .*leave {name} out"):
        keras_lcnet.from_checkpoint(folder, **override)


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_match_timm(folder, tmp_path, backend):
    _, arrays = _case()
    pixels = arrays["pixels_1"].astype(np.float32)
    error = checkpoint_error_on_backend(folder, pixels, arrays["logits_1"], backend, tmp_path)
    assert error <= TOLERANCE


def test_other_normalization_statistics_are_refused(folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["mean"] = [0.5, 0.5, 0.5]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mean \(0\.5, 0\.5, 0\.5\).*include_preprocessing"):
        keras_lcnet.from_checkpoint(copy)
    model = keras_lcnet.from_checkpoint(copy, include_preprocessing=False)  # the caller normalizes
    assert model.output.shape[-1] == CLASSES


def test_folder_whose_config_names_a_v1_is_refused(folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "lcnet_050"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'lcnet_050' but its weights .*mixes two") as e:
        keras_lcnet.from_checkpoint(copy)
    assert "\n" not in str(e.value)


def test_config_num_classes_must_match_the_classifier(folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["num_classes"] = 1000
    (copy / "config.json").write_text(json.dumps(config))
    message = rf"num_classes=1000.*classifier for {CLASSES}.*mixes two"
    with pytest.raises(CheckpointError, match=message) as e:
        keras_lcnet.from_checkpoint(copy)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=message):
        keras_lcnet.PPLCNetV2_small(weights=str(copy), classes=CLASSES)
