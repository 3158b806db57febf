"""timm's LCNet checkpoints: parity with timm itself, forms, preprocessing, bad input.

The fixtures (tools/make_timm_fixtures.py) hold timm's logits for seeded weights
that the tests regenerate; each test writes the checkpoint timm would save.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import keras
import numpy as np
import pytest
from helpers import (
    FIXTURES,
    checkpoint_error_on_backend,
    relative_error,
    seeded_paddle_weights,
    weights_checksum,
)

import keras_lcnet
from keras_lcnet.checkpoints import timm
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.presets import IMAGENET_MEAN, IMAGENET_STD, InputContract
from keras_lcnet.weights import load_weights

safetensors_numpy = pytest.importorskip("safetensors.numpy")

TOLERANCE = 1e-4  # max |keras - timm| / max |timm|
CLASSES = 10
SCALES = {"lcnet_050": 0.5, "lcnet_100": 1.0}


def _case(architecture: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"timm_{architecture}.npz", allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return json.loads(str(arrays.pop("config"))), arrays


def _timm_state(config: dict, arrays: dict, dtype=np.float32) -> dict[str, np.ndarray]:
    """The state dict timm evaluated, as `model.state_dict()` holds it (counters included)."""
    seeded = seeded_paddle_weights(config["param_shapes"], config["seed"])
    # Regenerated from the seed: a change in NumPy's streams must fail loudly here.
    np.testing.assert_array_equal(
        weights_checksum({k: v.astype(np.float16).astype(np.float32) for k, v in seeded.items()}),
        arrays["weights_checksum"],
    )
    state = {key: value.astype(np.float16) for key, value in seeded.items()}
    offset, bn_state = 0, arrays["bn_state"]
    for key, shape in config["bn_shapes"].items():
        size = int(np.prod(shape))
        state[key] = bn_state[offset : offset + size].reshape(shape)
        offset += size
        if key.endswith("running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = np.array(4, np.int64)
    assert offset == bn_state.size
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in state.items()}


def _write_folder(path, architecture: str, dtype=np.float32):
    """A folder as timm's `push_to_hf_hub` writes it: `config.json` + `model.safetensors`."""
    config, arrays = _case(architecture)
    path.mkdir()
    safetensors_numpy.save_file(_timm_state(config, arrays, dtype), path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config["timm_config"], indent=2))
    return path


@pytest.fixture(scope="module")
def folder_050(tmp_path_factory):
    """lcnet_050 written in float16: timm ran with exactly these values."""
    return _write_folder(tmp_path_factory.mktemp("timm") / "lcnet_050", "lcnet_050", np.float16)


def _check_parity(model, architecture: str, sizes=(0, 1)) -> None:
    _, arrays = _case(architecture)
    for i in sizes:
        expected = arrays[f"logits_{i}"]
        # Calibrated BN: the outputs depend on the input, so parity means something.
        assert relative_error(expected[0], expected[1]) > 1e-2
        pixels = arrays[f"pixels_{i}"].astype(np.float32)
        error = relative_error(model.predict(pixels, verbose=0), expected)
        assert error <= TOLERANCE, f"{architecture} pixels_{i}: {error:.2e}"


def test_from_checkpoint_folder_matches_timm(folder_050):
    model = keras_lcnet.from_checkpoint(folder_050, classifier_activation=None)
    assert model.get_layer("last_conv").use_bias
    assert model.output.shape[-1] == CLASSES
    _check_parity(model, "lcnet_050")


@pytest.mark.slow
def test_lcnet_100_float32_file_matches_timm(tmp_path):
    folder = _write_folder(tmp_path / "lcnet_100", "lcnet_100")
    model = keras_lcnet.from_checkpoint(folder / "model.safetensors", classifier_activation=None)
    assert model.name == "PPLCNet_x1_0"
    _check_parity(model, "lcnet_100")


def _kwargs(**changes) -> dict:
    kwargs = {"scale": 0.5, "classes": CLASSES, "head_bias": True, "classifier_activation": None}
    return {**kwargs, **changes}


def test_weights_argument_takes_a_timm_folder_and_a_bare_file(folder_050):
    for weights in (folder_050, str(folder_050 / "model.safetensors")):
        model = keras_lcnet.PPLCNet(weights=weights, **_kwargs())
        _check_parity(model, "lcnet_050", sizes=(1,))


def test_bfloat16_file_loads_as_float32(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    config, arrays = _case("lcnet_050")
    state = _timm_state(config, arrays)
    path = tmp_path / "bf16.safetensors"
    safetensors_numpy.save_file({k: v.astype(ml_dtypes.bfloat16) if v.dtype.kind == "f" else v
                                 for k, v in state.items()}, path)
    model = keras_lcnet.PPLCNet(weights=None, **_kwargs())
    load_weights(model, path)
    expected = state["conv_stem.weight"].astype(ml_dtypes.bfloat16).astype(np.float32)
    kernel = keras.ops.convert_to_numpy(model.get_layer("conv1").kernel)
    np.testing.assert_array_equal(kernel, expected.transpose(2, 3, 1, 0))


def _model_and_weights(**changes):
    model = keras_lcnet.PPLCNet(weights=None, **_kwargs(**changes))
    return model, [w.copy() for w in model.get_weights()]


def _unchanged(model, before) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))


def test_model_without_head_bias_names_the_option(folder_050):
    model, before = _model_and_weights(head_bias=False)
    with pytest.raises(CheckpointError, match=r"'conv_head\.bias' \[1280\].*head_bias") as e:
        load_weights(model, folder_050)
    assert "\n" not in str(e.value)
    assert _unchanged(model, before)


def _other_model_file(tmp_path):
    """timm's mobilenetv3_small_050 tensors (zeros): a timm checkpoint that is no LCNet."""
    config, _ = _case("lcnet_050")
    state = {
        key: np.zeros(shape, np.int64 if key.endswith("num_batches_tracked") else np.float16)
        for key, shape in config["other_model"].items()
    }
    path = tmp_path / "mobilenetv3.safetensors"
    safetensors_numpy.save_file(state, path)
    return path


def test_other_timm_model_is_refused_and_loads_nothing(tmp_path):
    path = _other_model_file(tmp_path)
    model, before = _model_and_weights()
    message = rf"{re.escape(str(path))} is not a timm LCNet checkpoint: it holds 'blocks\.0\.0\.se"
    with pytest.raises(CheckpointError, match=message) as e:
        load_weights(model, path)
    assert "\n" not in str(e.value)
    assert _unchanged(model, before)
    with pytest.raises(CheckpointError, match=message):
        keras_lcnet.from_checkpoint(path)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _edit_config(folder, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_folder_of_another_timm_architecture_is_refused(folder_050, tmp_path):
    folder = _copy(folder_050, tmp_path)
    _edit_config(folder, architecture="mobilenetv3_small_050")
    expected = r"config\.json describes timm's 'mobilenetv3_small_050', not an LCNet"
    def build(weights):
        return keras_lcnet.PPLCNet(weights=weights, **_kwargs())

    for load in (keras_lcnet.from_checkpoint, build):
        with pytest.raises(CheckpointError, match=expected) as e:
            load(folder)
        assert "\n" not in str(e.value)


def test_truncated_file_is_one_line_and_loads_nothing(folder_050, tmp_path):
    folder = _copy(folder_050, tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    message = f"{re.escape(str(path))} is not a readable safetensors"
    for weights in (folder, path):
        model, before = _model_and_weights()
        with pytest.raises(CheckpointError, match=message) as e:
            load_weights(model, weights)
        assert "\n" not in str(e.value)
        assert _unchanged(model, before)
    with pytest.raises(CheckpointError, match=message):
        keras_lcnet.from_checkpoint(folder)


def test_folder_without_safetensors_names_the_file(folder_050, tmp_path):
    folder = _copy(folder_050, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not exist.*pickle") as e:
        keras_lcnet.from_checkpoint(folder)
    assert "\n" not in str(e.value)


def test_missing_tensor_is_named(folder_050, tmp_path):
    folder = _copy(folder_050, tmp_path)
    path = folder / "model.safetensors"
    state = safetensors_numpy.load_file(path)
    del state["blocks.4.2.bn1.running_var"]
    safetensors_numpy.save_file(state, path)
    with pytest.raises(CheckpointError, match=r"it lacks 'blocks\.4\.2\.bn1\.running_var'") as e:
        keras_lcnet.from_checkpoint(folder)
    assert "\n" not in str(e.value)


def test_input_contract_is_timms_eval_transform(folder_050):
    # timm's lcnet_*.ra2_in1k pretrained_cfg: 224, crop_pct 0.875, bicubic, ImageNet stats;
    # its eval transform resizes the short side to floor(224 / 0.875) = 256.
    assert timm.read_input_contract(folder_050) == InputContract(
        size=(224, 224), resize_short=256, interpolation="bicubic",
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )


def test_other_statistics_are_built_into_the_graph(folder_050, tmp_path):
    folder = _copy(folder_050, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, pretrained_cfg={**config["pretrained_cfg"], "mean": [0.5] * 3})
    model = keras_lcnet.from_checkpoint(folder)
    mean = model.get_layer("normalization").get_config()["mean"]
    np.testing.assert_allclose(np.ravel(mean), [127.5] * 3)
    # weights= refuses a model whose preprocessing feeds other pixels than the folder says.
    with pytest.raises(ValueError, match=r"mean \[0\.5, 0\.5, 0\.5\]") as e:
        keras_lcnet.PPLCNet_x0_5(weights=folder, classes=10, head_bias=True)
    assert "\n" not in str(e.value)
    keras_lcnet.PPLCNet_x0_5(weights=folder, classes=10, head_bias=True,
                             include_preprocessing=False)


def test_config_num_classes_must_match_the_classifier(folder_050, tmp_path):
    folder = _copy(folder_050, tmp_path)
    _edit_config(folder, num_classes=1000)
    with pytest.raises(CheckpointError, match=r"num_classes=1000.*classifier for 10") as e:
        keras_lcnet.from_checkpoint(folder)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"num_classes=1000.*classifier for 10"):
        keras_lcnet.PPLCNet_x0_5(weights=folder, classes=10, head_bias=True)


@pytest.mark.parametrize("override", [{"head_bias": False}, {"classes": 5}, {"scale": 1.0}])
def test_override_contradicting_the_checkpoint_is_one_line(folder_050, override):
    (name,) = override
    with pytest.raises(ValueError, match=f"{name}=") as e:
        keras_lcnet.from_checkpoint(folder_050, **override)
    assert "\n" not in str(e.value)


def test_include_top_false_gives_the_backbone(folder_050):
    model = keras_lcnet.from_checkpoint(folder_050, include_top=False)
    assert model.get_layer("blocks6_1_pw_conv_act").output is model.output


def test_checkpoint_without_classifier_gives_the_backbone(tmp_path):
    """What timm saves with `num_classes=0`: `conv_head` kept, no `classifier`."""
    config, arrays = _case("lcnet_050")
    state = _timm_state(config, arrays)
    del state["classifier.weight"], state["classifier.bias"]
    path = tmp_path / "backbone.safetensors"
    safetensors_numpy.save_file(state, path)
    model = keras_lcnet.from_checkpoint(path)
    assert model.get_layer("blocks6_1_pw_conv_act").output is model.output
    kernel = keras.ops.convert_to_numpy(model.get_layer("blocks6_1_pw_conv").kernel)
    np.testing.assert_array_equal(kernel, state["blocks.5.1.conv_pw.weight"].transpose(2, 3, 1, 0))


def test_head_bias_survives_get_config_and_keras_files(folder_050, tmp_path):
    model = keras_lcnet.from_checkpoint(folder_050, classifier_activation=None)
    clone = keras.Model.from_config(model.get_config())
    assert clone.get_layer("last_conv").use_bias
    model.save(tmp_path / "timm.keras")
    _check_parity(keras.saving.load_model(tmp_path / "timm.keras"), "lcnet_050", sizes=(1,))
    assert not keras_lcnet.PPLCNet(weights=None).get_layer("last_conv").use_bias  # PaddleClas'


def test_hf_url_is_fetched_once(folder_050, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(folder_050)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = keras_lcnet.from_checkpoint("hf://timm/lcnet_050.ra2_in1k", classifier_activation=None)
    assert calls == [("timm/lcnet_050.ra2_in1k", None)]
    _check_parity(model, "lcnet_050", sizes=(1,))
    contract = timm.read_input_contract("hf://timm/lcnet_050.ra2_in1k")
    assert contract.interpolation == "bicubic"


def test_hf_url_offline_names_the_repo_and_the_folder(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    expected = r"'timm/lcnet_050\.ra2_in1k'.*hf download timm/lcnet_050\.ra2_in1k --local-dir"
    with pytest.raises(WeightsUnavailableError, match=expected) as e:
        keras_lcnet.from_checkpoint("hf://timm/lcnet_050.ra2_in1k")
    assert "\n" not in str(e.value)


def test_folder_needs_neither_huggingface_hub_nor_timm(folder_050, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setitem(sys.modules, "timm", None)
    assert keras_lcnet.from_checkpoint(folder_050).output.shape[-1] == CLASSES


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_match_timm(folder_050, tmp_path, backend):
    _, arrays = _case("lcnet_050")
    pixels = arrays["pixels_1"].astype(np.float32)
    error = checkpoint_error_on_backend(folder_050, pixels, arrays["logits_1"], backend, tmp_path)
    assert error <= TOLERANCE


def test_paddleclas_weights_refuse_head_bias(keras_home):
    with pytest.raises(ValueError, match="head_bias=False") as e:
        keras_lcnet.PPLCNet(weights="imagenet", head_bias=True)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("scale", "parameters"),
    # timm's own counts (`sum(p.numel() for p in timm.create_model(name).parameters())`).
    [(0.5, 1_880_856), (0.75, 2_358_288), (1.0, 2_953_800)],
)
def test_head_bias_gives_timms_parameter_count(scale, parameters):
    model = keras_lcnet.PPLCNet(scale=scale, weights=None, head_bias=True)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == parameters


def test_describe_checkpoint_and_cli_convert_read_a_timm_folder(folder_050, tmp_path, capsys):
    from keras_lcnet.cli import main

    described = keras_lcnet.describe_checkpoint(folder_050)
    assert described["form"] == "timm"
    architecture = described["architecture"]
    assert (architecture["variant"], architecture["classes"]) == ("x0_5", 10)
    assert architecture["head_bias"] is True
    assert described["input"]["interpolation"] == "bicubic"
    output = tmp_path / "timm.keras"
    assert main(["convert", str(folder_050), "--logits", "--output", str(output)]) == 0
    _check_parity(keras.saving.load_model(output), "lcnet_050")
