"""transformers' PP-LCNet checkpoints: parity with transformers itself, forms, bad input."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
from helpers import FIXTURES, relative_error, run_python
from PIL import Image

import keras_lcnet
from keras_lcnet.checkpoints import huggingface as hf
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError
from keras_lcnet.weights import load_weights

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

TOLERANCE = 1e-4  # max |keras - transformers| / max |transformers|
TEXTLINE = [2, [2, 1], [2, 1], [2, 1], [2, 1]]
CLASSES = 7
DROPOUT = 0.3  # not the default 0.2, so a fold with the wrong factor shows


def _block_configs(stride_list) -> list:
    """transformers' default `block_configs` with PaddleClas' `stride_list` applied."""
    stages = transformers.PPLCNetConfig().block_configs
    for stage, stride in zip(stages[1:], stride_list[1:], strict=True):
        stage[0][3] = stride
    return stages


def _randomize(model, seed: int) -> None:
    """He-scaled kernels, spread BN parameters, then BN statistics calibrated on random batches."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim > 1:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) * (2 / fan_in) ** 0.5)
            elif "normalization.weight" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # a cumulative average over the batches
        model.train()
        for _ in range(3):
            model(torch.randn((4, 3, 96, 96), generator=generator))
    model.eval()


def _save(tmp_path, cls, stride_list=(2, 2, 2, 2, 2), seed: int = 0):
    """A randomized transformers model of width 0.25 saved with `save_pretrained`."""
    config = transformers.PPLCNetConfig(
        scale=0.25,
        stem_stride=stride_list[0],
        block_configs=_block_configs(stride_list),
        hidden_dropout_prob=DROPOUT,
        id2label={i: f"class_{i}" for i in range(CLASSES)},
    )
    model = getattr(transformers, cls)(config)
    _randomize(model, seed)
    folder = tmp_path / cls
    model.save_pretrained(folder)
    return folder, model


def _torch_outputs(model, pixels: np.ndarray) -> np.ndarray:
    """transformers' logits (or last feature map, channels last) for NHWC pixels."""
    with torch.no_grad():
        outputs = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
    if hasattr(outputs, "feature_maps"):
        return outputs.feature_maps[-1].numpy().transpose(0, 2, 3, 1)
    return outputs.last_hidden_state.numpy()


def _pixels(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, height, width, 3)).astype(np.float32)


def _check_parity(folder, model, sizes) -> None:
    keras_model = keras_lcnet.from_checkpoint(
        folder, include_preprocessing=False, classifier_activation=None
    )
    for size in sizes:
        pixels = _pixels(*size)
        expected = _torch_outputs(model, pixels)
        # Calibrated BN: the outputs depend on the input, so parity means something.
        assert relative_error(expected[0], expected[1]) > 1e-2
        error = relative_error(keras_model.predict(pixels, verbose=0), expected)
        assert error <= TOLERANCE, f"{size}: {error:.2e}"


@pytest.mark.slow
def test_classifier_matches_transformers(tmp_path):
    folder, model = _save(tmp_path, "PPLCNetForImageClassification")
    _check_parity(folder, model, [(224, 224), (97, 131)])


@pytest.mark.slow
def test_textline_strides_match_transformers(tmp_path):
    folder, model = _save(tmp_path, "PPLCNetForImageClassification", TEXTLINE)
    built = keras_lcnet.from_checkpoint(folder, include_preprocessing=False)
    assert tuple(built.get_layer("blocks4_0_dw_conv").strides) == (2, 1)
    _check_parity(folder, model, [(224, 224), (48, 193)])


@pytest.mark.slow
def test_backbone_checkpoint_builds_a_model_without_top(tmp_path):
    folder, model = _save(tmp_path, "PPLCNetBackbone")
    built = keras_lcnet.from_checkpoint(folder, include_preprocessing=False)
    assert built.get_layer("blocks6_1_pw_conv_act").output is built.output  # no head
    _check_parity(folder, model, [(224, 224), (97, 131)])


@pytest.fixture(scope="module")
def textline(tmp_path_factory):
    """A saved text-line classifier, its transformers model and logits for `_pixels(48, 193)`."""
    folder, model = _save(tmp_path_factory.mktemp("hf"), "PPLCNetForImageClassification", TEXTLINE)
    return folder, model, _torch_outputs(model, _pixels(48, 193))


def _kwargs(**changes) -> dict:
    kwargs = {
        "scale": 0.25, "classes": CLASSES, "stride_list": TEXTLINE, "dropout_rate": DROPOUT,
        "include_preprocessing": False, "classifier_activation": None,
    }
    return {**kwargs, **changes}


def test_weights_argument_takes_a_folder_and_a_safetensors_file(textline):
    folder, _, expected = textline
    for weights in (folder, folder / hf.WEIGHTS_FILE):
        model = keras_lcnet.PPLCNet(weights=weights, **_kwargs())
        assert relative_error(model.predict(_pixels(48, 193), verbose=0), expected) <= TOLERANCE


def test_weights_folder_with_other_strides_is_refused(textline):
    with pytest.raises(ValueError, match=r"stride_list=\[2, \[2, 1\]") as e:
        keras_lcnet.PPLCNet(weights=textline[0], **_kwargs(stride_list=[2] * 5))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "override",
    [{"classes": 5}, {"scale": 0.5}, {"stride_list": [2] * 5}, {"dropout_rate": 0.2},
     {"class_expand": 640}, {"use_last_conv": False}],
)
def test_override_contradicting_the_config_is_one_line(textline, override):
    (name,) = override
    with pytest.raises(ValueError, match=f"{name}=.*contradicts .*config\\.json") as e:
        keras_lcnet.from_checkpoint(textline[0], include_preprocessing=False, **override)
    assert "\n" not in str(e.value)


def test_agreeing_overrides_and_include_top_false(textline):
    folder = textline[0]
    model = keras_lcnet.from_checkpoint(folder, include_top=False, include_preprocessing=False)
    assert model.get_layer("blocks6_1_pw_conv_act").output is model.output
    model = keras_lcnet.from_checkpoint(
        folder, classes=CLASSES, stride_list=[2, (2, 1), (2, 1), (2, 1), (2, 1)], scale=None,
        include_preprocessing=False,
    )
    assert model.output.shape[-1] == CLASSES


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _edit_config(folder, **changes) -> None:
    path = folder / hf.CONFIG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_another_model_type_is_refused(textline, tmp_path):
    folder = _copy(textline[0], tmp_path)
    _edit_config(folder, model_type="resnet")
    with pytest.raises(CheckpointError, match=r"config\.json describes a model_type 'resnet'") as e:
        keras_lcnet.from_checkpoint(folder)
    assert "\n" not in str(e.value)


def test_se_reduction_other_than_4_is_refused(textline, tmp_path):
    folder = _copy(textline[0], tmp_path)
    _edit_config(folder, reduction=8)
    with pytest.raises(CheckpointError, match=r"config\.json: reduction is 8"):
        keras_lcnet.from_checkpoint(folder, include_preprocessing=False)


@pytest.mark.parametrize(
    "change", [{"block_configs": [[[3, 16, 32]]] * 5}, {"block_configs": "default"}]
)
def test_malformed_block_configs_are_one_line(textline, tmp_path, change):
    folder = _copy(textline[0], tmp_path)
    _edit_config(folder, **change)
    with pytest.raises(CheckpointError, match=r"config\.json: .*block") as e:
        keras_lcnet.from_checkpoint(folder, include_preprocessing=False)
    assert "\n" not in str(e.value)


def test_missing_safetensors_is_one_line(textline, tmp_path):
    folder = _copy(textline[0], tmp_path)
    (folder / hf.WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not exist") as e:
        keras_lcnet.from_checkpoint(folder, include_preprocessing=False)
    assert "\n" not in str(e.value)


def _model_and_weights():
    model = keras_lcnet.PPLCNet(weights=None, **_kwargs())
    return model, [w.copy() for w in model.get_weights()]


def _unchanged(model, before) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))


def test_truncated_safetensors_is_one_line_and_loads_nothing(textline, tmp_path):
    folder = _copy(textline[0], tmp_path)
    path = folder / hf.WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-1000])
    model, before = _model_and_weights()
    message = f"{re.escape(str(path))} is not a readable safetensors"
    with pytest.raises(CheckpointError, match=message) as e:
        load_weights(model, folder)
    assert "\n" not in str(e.value)
    assert _unchanged(model, before)


def test_missing_tensor_is_one_line_and_loads_nothing(textline, tmp_path):
    folder = _copy(textline[0], tmp_path)
    path = folder / hf.WEIGHTS_FILE
    state = safetensors_numpy.load_file(path)
    del state["encoder.blocks.3.layers.2.depthwise_convolution.normalization.running_var"]
    safetensors_numpy.save_file(state, path)
    model, before = _model_and_weights()
    message = f"{re.escape(str(path))} has no tensor .*blocks5_2_dw_conv_bn"
    with pytest.raises(CheckpointError, match=message) as e:
        load_weights(model, folder)
    assert "\n" not in str(e.value)
    assert _unchanged(model, before)


def _with_processor(textline, tmp_path):
    folder = _copy(textline[0], tmp_path)
    # What transformers' PPLCNetImageProcessor saves (its defaults).
    processor = {
        "image_processor_type": "PPLCNetImageProcessor", "resize_short": 256,
        "crop_size": {"height": 224, "width": 224},
        "image_mean": [0.406, 0.456, 0.485], "image_std": [0.225, 0.224, 0.229],
    }
    (folder / hf.PREPROCESSOR_FILE).write_text(json.dumps(processor))
    return folder


def test_bgr_processor_contract_is_built_into_the_graph(textline, tmp_path):
    folder = _with_processor(textline, tmp_path)
    contract = hf.read_input_contract(str(folder))
    assert contract.channel_order == "BGR"
    assert contract.mean == (0.485, 0.456, 0.406) and contract.std == (0.229, 0.224, 0.225)
    model = keras_lcnet.from_checkpoint(folder, classifier_activation=None)
    names = [layer.name for layer in model.layers]
    assert names[1:3] == ["reverse_channels", "normalization"]
    # Without the processor file the same weights see RGB: the flip changes the outputs.
    plain = keras_lcnet.from_checkpoint(textline[0], classifier_activation=None)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 48, 193, 3)).astype("float32")
    flipped = pixels[..., ::-1].copy()
    np.testing.assert_allclose(model.predict(pixels, verbose=0),
                               plain.predict(flipped, verbose=0), rtol=1e-5, atol=1e-5)
    assert relative_error(model.predict(pixels, verbose=0), plain.predict(pixels, verbose=0)) > 1e-2


def test_model_with_other_preprocessing_is_refused_by_weights(textline, tmp_path):
    folder = _with_processor(textline, tmp_path)
    rgb = keras_lcnet.PPLCNet(weights=None, **_kwargs(include_preprocessing=True))
    with pytest.raises(ValueError, match="BGR pixels") as e:
        load_weights(rgb, folder)
    assert "\n" not in str(e.value)
    contract = hf.read_input_contract(str(folder))
    bgr = keras_lcnet.PPLCNet(weights=None, input_contract=contract,
                              **_kwargs(include_preprocessing=True))
    load_weights(bgr, folder)
    load_weights(keras_lcnet.PPLCNet(weights=None, **_kwargs()), folder)  # no preprocessing


def test_contradicting_input_contract_is_one_line(textline, tmp_path):
    folder = _with_processor(textline, tmp_path)
    with pytest.raises(ValueError, match=r"preprocessor_config\.json") as e:
        keras_lcnet.from_checkpoint(folder, input_contract=keras_lcnet.presets.InputContract())
    assert "\n" not in str(e.value)


def _processor_image(tmp_path):
    """The image of tools/make_processor_fixture.py, as a PNG file."""
    box = np.load(FIXTURES / "hf_processor" / "expected.npz")["image_box"]
    image = tmp_path / "image.png"
    Image.open(FIXTURES / "channel_order.png").convert("RGB").crop(tuple(box)).save(image)
    return image


def test_processor_path_matches_transformers(tmp_path):
    """An image through PPLCNetImageProcessor + torch (tools/make_processor_fixture.py)
    against load_image + the Keras model with its in-graph preprocessing."""
    folder = FIXTURES / "hf_processor"
    expected = np.load(folder / "expected.npz")
    image = _processor_image(tmp_path)
    contract = hf.read_input_contract(str(folder))
    pixels = keras_lcnet.load_image(
        image, size=contract.size[0], resize_short=contract.resize_short
    )
    model = keras_lcnet.from_checkpoint(folder, classifier_activation=None)
    error = relative_error(model.predict(pixels, verbose=0), expected["logits"])
    assert error <= TOLERANCE, f"{error:.2e}"


def test_folder_needs_neither_huggingface_hub_nor_transformers(textline, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    model = keras_lcnet.from_checkpoint(textline[0], include_preprocessing=False)
    assert model.output.shape[-1] == CLASSES


def test_hf_url_without_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(WeightsUnavailableError, match=r"keras-lcnet\[hf\]"):
        keras_lcnet.from_checkpoint("hf://owner/repo")


def test_hf_url_is_fetched_with_snapshot_download(textline, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, sorted(allow_patterns)))
        return str(textline[0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model = keras_lcnet.PPLCNet(weights="hf://owner/repo@v1", **_kwargs())
    assert calls == [("owner/repo", "v1", sorted(hf._FILES))]
    assert relative_error(model.predict(_pixels(48, 193), verbose=0), textline[2]) <= TOLERANCE


def test_hf_url_offline_names_the_repo_and_the_folder(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    expected = r"'owner/repo' at revision 'v2'.*hf download owner/repo --revision v2"
    with pytest.raises(WeightsUnavailableError, match=expected) as e:
        keras_lcnet.from_checkpoint("hf://owner/repo@v2")
    assert "\n" not in str(e.value)


BACKEND_SCRIPT = """
import numpy as np, keras_lcnet
from helpers import FIXTURES, relative_error
folder, pixels, expected, image = {args}
model = keras_lcnet.from_checkpoint(folder, include_preprocessing=False,
                                    classifier_activation=None)
print("RESULT", relative_error(model.predict(np.load(pixels), verbose=0), np.load(expected)))
processor = FIXTURES / "hf_processor"  # in-graph BGR preprocessing vs the processor's
model = keras_lcnet.from_checkpoint(processor, classifier_activation=None)
logits = model.predict(keras_lcnet.load_image(image), verbose=0)
print("RESULT", relative_error(logits, np.load(processor / "expected.npz")["logits"]))
"""


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_match_transformers(textline, tmp_path, backend):
    folder, _, expected = textline
    np.save(tmp_path / "pixels.npy", _pixels(48, 193))
    np.save(tmp_path / "expected.npy", expected)
    image = _processor_image(tmp_path)
    paths = (folder, tmp_path / "pixels.npy", tmp_path / "expected.npy", image)
    args = ", ".join(repr(str(p)) for p in paths)
    proc = run_python(BACKEND_SCRIPT.format(args=args), backend=backend, PYTHONPATH="tests")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [float(x.split()[1]) for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert len(results) == 2 and max(results) <= TOLERANCE, results
