"""PP-LCNetV2: structure, parity with PaddleClas, re-parameterization and checkpoint loading.

The reference fixtures were written by tools/make_v2_fixtures.py running PaddleClas
itself: a BN-calibrated random `PPLCNetV2(scale=0.25, depths=[2, 2, 4, 2])` checkpoint,
its logits, and ppcls' parameter counts of the published variants.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from helpers import FIXTURES, load_case, publish, relative_error, run_python

import keras_lcnet
from keras_lcnet import architecture_v2, presets
from keras_lcnet.cache import cached_checkpoint_path, converted_cache_path
from keras_lcnet.checkpoints.mapping_v2 import keras_path_v2
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError, WeightsUnavailableError

CASE = "pplcnetv2_x0_25"
CHECKPOINT = str(FIXTURES / f"{CASE}.pdparams")
TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|
FOLD_TOLERANCE = 1e-5


def _kwargs(config: dict) -> dict:
    return {
        "scale": config["scale"],
        "depths": config["depths"],
        "classes": config["class_num"],
        "dropout_rate": config["dropout_prob"],
        "classifier_activation": None,
    }


@pytest.fixture(scope="module")
def case():
    config, arrays = load_case(CASE)
    return _kwargs(config), arrays


@pytest.fixture(scope="module")
def branch_model(case):
    kwargs, _ = case
    return keras_lcnet.PPLCNetV2(weights=CHECKPOINT, **kwargs)


def _paddleclas_counts() -> dict[str, dict[str, int]]:
    return json.loads((FIXTURES / "pplcnetv2_params.json").read_text())["variants"]


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("variant", ["small", "base", "large"])
def test_parameter_counts_match_paddleclas(variant):
    counts = _paddleclas_counts()[variant]
    constructor = getattr(keras_lcnet, f"PPLCNetV2_{variant}")
    model = constructor(weights=None)
    assert model.name == f"PPLCNetV2_{variant}"
    assert _trainable(model) == counts["branch_form"]
    assert _trainable(keras_lcnet.reparameterize(model)) == counts["deploy_form"]
    assert _trainable(constructor(weights=None, deploy=True)) == counts["deploy_form"]


@pytest.mark.parametrize("deploy", [False, True])
def test_logits_match_paddleclas(case, deploy):
    kwargs, arrays = case
    model = keras_lcnet.PPLCNetV2(weights=CHECKPOINT, deploy=deploy, **kwargs)
    for i in (0, 1):
        logits = model.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0)
        assert relative_error(logits, arrays[f"logits_{i}"]) <= TOLERANCE, i


def test_reparameterized_model_matches_paddleclas(case, branch_model):
    _, arrays = case
    folded = keras_lcnet.reparameterize(branch_model)
    for i in (0, 1):
        logits = folded.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0)
        assert relative_error(logits, arrays[f"logits_{i}"]) <= TOLERANCE, i


def test_normalized_input_matches_paddleclas(case):
    kwargs, arrays = case
    model = keras_lcnet.PPLCNetV2(weights=CHECKPOINT, include_preprocessing=False, **kwargs)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((arrays["pixels_1"] / 255.0 - mean) / std).astype("float32")
    assert relative_error(model.predict(x, verbose=0), arrays["logits_1"]) <= TOLERANCE


def _randomize_batchnorm(model: keras.Model, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters, in every branch too."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        leaf = weight.path.rsplit("/", 1)[-1]
        shape = tuple(weight.shape)
        if leaf in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif leaf in ("beta", "moving_mean", "bias"):
            weight.assign(rng.normal(0.0, 0.2, shape).astype("float32"))


def test_reparameterize_keeps_outputs_with_calibrated_batchnorm():
    model = keras_lcnet.PPLCNetV2(
        scale=0.5, depths=(1, 1, 2, 2), classes=7, classifier_activation=None, weights=None
    )
    _randomize_batchnorm(model, seed=3)
    x = np.random.default_rng(4).uniform(0, 255, (2, 75, 93, 3)).astype("float32")
    # Training-mode passes calibrate the moving statistics on real activations.
    for layer in model.layers:
        for bn in _batchnorms(layer):
            bn.momentum = 0.0
    model(x, training=True)
    folded = keras_lcnet.reparameterize(model)
    expected = model.predict(x, verbose=0)
    assert np.ptp(expected, axis=0).max() > 0.05 * np.abs(expected).max()  # input matters
    assert relative_error(folded.predict(x, verbose=0), expected) <= FOLD_TOLERANCE
    assert not any("/list_" in w.path for w in folded.weights)  # no branch left


def _batchnorms(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer]
    return list(getattr(layer, "bns", []))


def test_reparameterize_leaves_the_model_unchanged(branch_model):
    before = [w.numpy().copy() for w in branch_model.weights]
    keras_lcnet.reparameterize(branch_model)
    after = [w.numpy() for w in branch_model.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize(
    "model",
    [
        lambda: keras_lcnet.PPLCNet(scale=0.25, weights=None),
        lambda: keras_lcnet.PPLCNetV2(
            scale=0.25, depths=(1, 1, 1, 1), deploy=True, weights=None
        ),
    ],
)
def test_reparameterize_refuses_models_without_branches(model):
    with pytest.raises(ValueError, match="no re-parameterizable"):
        keras_lcnet.reparameterize(model())


def test_rep_blocks_have_paddleclas_branches(branch_model):
    layer = branch_model.get_layer("stages_3_1_dw_conv")  # stride 1: 5, 3 and 1
    assert layer.branch_kernel_sizes == (5, 3, 1)
    assert branch_model.get_layer("stages_3_0_dw_conv").branch_kernel_sizes == (5, 3)
    assert branch_model.get_layer("stages_3_1_add")  # the stage-4 shortcut
    assert branch_model.get_layer("stages_2_0_se").gate == "sigmoid"


def test_prefolded_tensors_are_never_used():
    assert keras_path_v2("stages.2.0.dw_conv.weight") is None
    assert keras_path_v2("stages.2.0.dw_conv.bias") is None
    assert keras_path_v2("stages.2.0.dw_conv_list.1.bn._mean") == (
        "stages_2_0_dw_conv/list_1_bn/moving_mean", None
    )
    assert keras_path_v2("stem.1.dw_conv.conv.weight")[0] == "stem_1_dw_conv/kernel"


def _write_state(tmp_path, state) -> str:
    """A .pdparams holding `state`, written as Paddle does (a pickle of arrays)."""
    import pickle

    path = tmp_path / "edited.pdparams"
    path.write_bytes(pickle.dumps(dict(state), protocol=4))
    return str(path)


@pytest.mark.parametrize("deploy", [False, True])
def test_checkpoint_without_branches_is_refused(tmp_path, case, deploy):
    kwargs, _ = case
    state = {k: v for k, v in read_pdparams(CHECKPOINT).items() if "dw_conv_list" not in k}
    with pytest.raises(CheckpointError, match="stages_2_0_dw_conv/list_0") as info:
        keras_lcnet.PPLCNetV2(weights=_write_state(tmp_path, state), deploy=deploy, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("deploy", [False, True])
def test_checkpoint_of_another_variant_is_refused(tmp_path, case, deploy):
    kwargs = {**case[0], "scale": 0.5}
    with pytest.raises(CheckpointError, match="has shape") as info:
        keras_lcnet.PPLCNetV2(weights=CHECKPOINT, deploy=deploy, **kwargs)
    assert "\n" not in str(info.value)


def test_distillation_student_checkpoint_loads(tmp_path, case, branch_model):
    state = {f"Student.{k}": v for k, v in read_pdparams(CHECKPOINT).items()}
    model = keras_lcnet.PPLCNetV2(weights=_write_state(tmp_path, state), **case[0])
    assert all(
        np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(model.weights, branch_model.weights, strict=True)
    )


def test_v1_checkpoint_is_refused(case):
    with pytest.raises(CheckpointError):
        keras_lcnet.PPLCNetV2(weights=str(FIXTURES / "pplcnet_x0_25.pdparams"), **case[0])


def test_keras_weights_round_trip_in_both_forms(tmp_path, case, branch_model):
    kwargs, arrays = case
    pixels = arrays["pixels_1"].astype("float32")
    for deploy, model in ((False, branch_model), (True, keras_lcnet.reparameterize(branch_model))):
        path = str(tmp_path / f"v2_{deploy}.weights.h5")
        model.save_weights(path)
        loaded = keras_lcnet.PPLCNetV2(weights=path, deploy=deploy, **kwargs)
        np.testing.assert_allclose(
            loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-5
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depths": (2, 2, 6)}, "`depths` must hold 4"),
        ({"depths": (2, 0, 6, 2)}, "`depths` must hold 4"),
        ({"weights": "pretrained"}, "`weights` argument of PPLCNetV2"),
        ({"weights": "imagenet", "scale": 0.5}, "exists for PaddleClas' variants only"),
        ({"weights": "imagenet_ssld", "scale": 0.75, "depths": (2, 2, 4, 2)}, "publishes no"),
        ({"weights": "imagenet", "classes": 10}, "`classes` should be 1000"),
        ({"weights": "imagenet", "input_shape": (None, None, 1)}, "3 channels"),
        ({"weights": "/no/such/file.pdparams"}, "no such file"),
        ({"scale": 0}, "`scale` must be"),
        ({"dropout_rate": 1.0}, "`dropout_rate` must be"),
        ({"pooling": "sum", "include_top": False}, "`pooling` must be"),
    ],
)
def test_bad_arguments_get_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        keras_lcnet.PPLCNetV2(**{"weights": None, **kwargs})
    assert "\n" not in str(info.value)


def test_rep_layer_config_round_trip_and_validation():
    layer = keras_lcnet.RepDepthwiseConv2D(5, strides=2, name="rep")
    clone = keras_lcnet.RepDepthwiseConv2D.from_config(layer.get_config())
    assert (clone.kernel_size, clone.strides, clone.deploy) == (5, 2, False)
    assert clone.branch_kernel_sizes == (5, 3)
    with pytest.raises(ValueError, match="odd"):
        keras_lcnet.RepDepthwiseConv2D(4)
    with pytest.raises(ValueError, match="only a built branch-form"):
        keras_lcnet.RepDepthwiseConv2D(3, deploy=True).fused_weights()
    se = keras_lcnet.SqueezeExcite(gate="sigmoid")
    assert keras_lcnet.SqueezeExcite.from_config(se.get_config()).gate == "sigmoid"
    with pytest.raises(ValueError, match="`gate` must be"):
        keras_lcnet.SqueezeExcite(gate="tanh")


@pytest.mark.parametrize("size", [(32, 32), (65, 47)])
def test_rep_layer_output_shape_matches_paddle_padding(size):
    for strides in (1, 2):
        layer = keras_lcnet.RepDepthwiseConv2D(5, strides=strides)
        out = layer(np.zeros((1, *size, 4), "float32"))
        assert tuple(out.shape) == layer.compute_output_shape((1, *size, 4))
        assert tuple(out.shape[1:3]) == tuple((s - 1) // strides + 1 for s in size)


PARITY_SCRIPT = """
import json, keras, numpy as np, keras_lcnet
from helpers import load_case, relative_error
from test_v2 import CHECKPOINT, CASE, _kwargs
config, arrays = load_case(CASE)
results = {"backend": keras.backend.backend()}
branch = keras_lcnet.PPLCNetV2(weights=CHECKPOINT, **_kwargs(config))
models = {"branch": branch, "deploy": keras_lcnet.reparameterize(branch)}
for form, model in models.items():
    for i in (0, 1):
        logits = model.predict(arrays[f"pixels_{i}"].astype("float32"), verbose=0)
        results[f"{form}/{i}"] = relative_error(logits, arrays[f"logits_{i}"])
print("RESULT" + json.dumps(results))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.slow
@pytest.mark.backends
def test_logits_match_paddleclas_on_other_backends(backend):
    proc = run_python(PARITY_SCRIPT, backend=backend, PYTHONPATH="tests")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert results.pop("backend") == backend
    assert len(results) == 4
    worst = max(results, key=results.get)
    assert results[worst] <= TOLERANCE, f"{worst}: {results[worst]:.2e} on {backend}"


@pytest.mark.parametrize("deploy", [False, True])
def test_keras_archive_round_trip(tmp_path, branch_model, deploy):
    model = keras_lcnet.reparameterize(branch_model) if deploy else branch_model
    path = str(tmp_path / "v2.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(5).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    expected = model.predict(x, verbose=0)  # oneDNN's kernel choice varies in the last bits
    assert relative_error(loaded.predict(x, verbose=0), expected) <= FOLD_TOLERANCE
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]


@pytest.mark.parametrize("pooling, shape", [(None, (None, 3, 4, 256)), ("avg", (None, 256))])
def test_no_top_with_pooling(pooling, shape):
    model = keras_lcnet.PPLCNetV2(
        scale=0.25, depths=(1, 1, 1, 2), include_top=False, pooling=pooling,
        input_shape=(96, 128, 3), weights=None,
    )
    assert tuple(model.output.shape) == shape
    assert not any(layer.name in ("last_conv", "fc") for layer in model.layers)


def test_feature_extractor_gives_the_stage_outputs(branch_model):
    features = keras_lcnet.feature_extractor(branch_model)
    maps = features(np.zeros((1, 224, 160, 3), "float32"))
    assert list(maps) == ["stem", "stages_0", "stages_1", "stages_2", "stages_3"]
    channels = [16, 32, 64, 128, 256]  # make_divisible(c * 0.25) for c = 64 ... 1024
    for (stage, fmap), stride, c in zip(maps.items(), (2, 4, 8, 16, 32), channels, strict=True):
        assert tuple(fmap.shape) == (1, 224 // stride, 160 // stride, c), stage
    assert features.get_layer("stages_3_1_add") is branch_model.get_layer("stages_3_1_add")
    with pytest.raises(ValueError, match="choose from"):
        keras_lcnet.feature_extractor(branch_model, stages=["blocks6"])


def test_freeze_backbone_freezes_stages_and_every_batchnorm(case):
    model = keras_lcnet.PPLCNetV2(weights=CHECKPOINT, **case[0])
    keras_lcnet.freeze_backbone(model, up_to="stages_1")
    assert not model.get_layer("stem_0").trainable
    assert not model.get_layer("stages_1_1_pw_conv").trainable
    assert model.get_layer("stages_2_0_pw_conv_1").trainable
    rep = model.get_layer("stages_3_1_dw_conv")
    assert rep.trainable and not any(bn.trainable for bn in rep.bns)
    assert all(conv.trainable for conv in rep.convs)
    keras_lcnet.freeze_backbone(model)  # the whole backbone
    assert [layer.name for layer in model.layers if layer.trainable_weights] == [
        "last_conv", "fc"
    ]


def test_registry_lists_the_published_v2_checkpoints():
    pairs = {(p.variant, p.tag) for p in presets.V2_PRESETS}
    assert pairs == {("small", "imagenet"), ("base", "imagenet"), ("large", "imagenet"),
                     ("base", "imagenet_ssld")}
    assert set(architecture_v2.VARIANTS_V2) == {"small", "base", "large"}
    base = presets.find_preset_v2("base", "imagenet_ssld")
    assert base.file_name == "PPLCNetV2_base_ssld_pretrained.pdparams"
    assert all(m.source for p in presets.V2_PRESETS for m in p.metrics)
    with pytest.raises(ValueError, match="no 'imagenet_ssld' weights for PPLCNetV2_large"):
        presets.find_preset_v2("large", "imagenet_ssld")


@pytest.fixture
def tiny_preset(monkeypatch, keras_home):
    """A published 'imagenet' checkpoint for the fixture's architecture, in the test mirror."""
    monkeypatch.setitem(architecture_v2.VARIANTS_V2, "tiny", (0.25, (2, 2, 4, 2)))
    preset = presets.Preset(
        name="PPLCNetV2_tiny_imagenet", variant="tiny", tag="imagenet",
        url="https://example.invalid/models/PPLCNetV2_tiny_pretrained.pdparams",
    )
    monkeypatch.setattr(presets, "V2_PRESETS", (*presets.V2_PRESETS, preset))
    publish(keras_home.parent / "mirror", preset, CHECKPOINT)
    return preset


def test_published_weights_download_convert_and_cache(tiny_preset, keras_home):
    # The fixture has 10 classes, not 1000: without the top its head is not used.
    kwargs = {"scale": 0.25, "depths": (2, 2, 4, 2), "include_top": False}
    expected = keras_lcnet.PPLCNetV2(weights=CHECKPOINT, **kwargs)
    x = np.random.default_rng(6).uniform(0, 255, (1, 96, 64, 3)).astype("float32")
    reference = expected.predict(x, verbose=0)
    model = keras_lcnet.PPLCNetV2(weights="imagenet", **kwargs)
    assert all(np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(model.weights, expected.weights, strict=True))
    assert os.path.exists(converted_cache_path(tiny_preset))
    os.remove(cached_checkpoint_path(tiny_preset))  # the cached conversion suffices
    os.remove(keras_home.parent / "mirror" / tiny_preset.file_name)
    deployed = keras_lcnet.PPLCNetV2(weights="imagenet", deploy=True, **kwargs)
    assert all(layer.deploy for layer in deployed.layers
               if isinstance(layer, keras_lcnet.RepDepthwiseConv2D))
    assert relative_error(deployed.predict(x, verbose=0), reference) <= FOLD_TOLERANCE


def test_unavailable_published_weights_name_the_file(keras_home):
    with pytest.raises(WeightsUnavailableError, match=r"PPLCNetV2_small_pretrained\.pdparams"):
        keras_lcnet.PPLCNetV2_small(weights="imagenet")


def test_model_zoo_v2_table_matches_paddleclas_counts_and_the_registry():
    page = (FIXTURES.parents[1] / "docs" / "models.md").read_text(encoding="utf-8")
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in page.splitlines()
        if line.startswith("| `PPLCNetV2_")
    ]
    counts = _paddleclas_counts()
    assert [row[0] for row in rows] == [f"`PPLCNetV2_{v}`" for v in architecture_v2.VARIANTS_V2]

    def cell(value):
        return None if value == "\u2013" else float(value)  # an en dash: not published

    for name, scale, depths, params, deployed, *accuracy in rows:
        variant = name.strip("`").removeprefix("PPLCNetV2_")
        assert (float(scale), tuple(int(d) for d in depths.split(","))) == (
            architecture_v2.VARIANTS_V2[variant]
        )
        assert int(params.replace(",", "")) == counts[variant]["branch_form"]
        assert int(deployed.replace(",", "")) == counts[variant]["deploy_form"]
        published = []
        for tag in ("imagenet", "imagenet_ssld"):
            preset = next(
                (p for p in presets.V2_PRESETS if (p.variant, p.tag) == (variant, tag)), None
            )
            published += [preset and preset.top1, preset and preset.top5]
        assert [cell(value) for value in accuracy] == published, variant


def test_export_calibration_reaches_the_rep_branches_batch_norms():
    """The verification twin's BN calibration must set BNs held inside rep layers too.

    Calibration stores each BN's batch statistics outright (momentum 0), so a second
    pass on the same images changes nothing; a BN it misses drifts on every pass.
    """
    from keras_lcnet.deploy.verify import calibrate_batchnorm

    model = keras_lcnet.PPLCNetV2(weights=None, scale=0.25, depths=[1, 1, 2, 1], classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert any(layer.name.startswith("list_") for layer in norms)  # the rep branches' BNs

    def statistics():
        return [keras.ops.convert_to_numpy(layer.moving_mean).copy() for layer in norms]

    calibrate_batchnorm(model, images)
    first = statistics()
    calibrate_batchnorm(model, images)
    drifted = [layer.name for layer, a, b in zip(norms, first, statistics(), strict=True)
               if not np.allclose(a, b, rtol=1e-5, atol=1e-6)]
    assert not drifted, drifted
