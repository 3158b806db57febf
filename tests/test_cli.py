"""The keras-lcnet command line: predict, convert, info, argument checks and manners.

The `--preset` tests register small presets of each task kind whose checkpoints are
published in the `keras_home` fixture's file:// mirror (never the network).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import (
    FIXTURES,
    IMAGES_DIR,
    load_case,
    onnx_reference,
    publish,
    register_presets,
    relative_error,
    run_python,
    small_preset,
    transformers_folder,
)

import keras_lcnet
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.cli import build_parser, main
from keras_lcnet.presets import PRESETS, PRETRAINED_TAGS, InputContract, get_preset

X0_25 = FIXTURES / "pplcnet_x0_25.pdparams"
TEXTLINE = FIXTURES / "pplcnet_x0_25_textline.pdparams"
NO_LAST_CONV = FIXTURES / "pplcnet_x0_25_no_last_conv.pdparams"
TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|, as in test_parity
CAT = str(IMAGES_DIR / "cat.jpg")


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _load_line(out: str) -> str:
    """The Python expression `convert` prints for loading what it wrote."""
    (line,) = [x.strip() for x in out.splitlines() if x.startswith("    ")]
    return line


def _info_rows(out: str) -> dict[str, dict[str, list[str]]]:
    """`info`'s table rows (cells split at 2+ spaces) by group title, then preset name."""
    groups: dict[str, dict[str, list[str]]] = {}
    for line in out.split("\n\n")[0:2]:
        title, header, *rows = line.strip("\n").splitlines()
        assert header.split()[0] == "preset", header
        cells = [re.split(r" {2,}", row.strip()) for row in rows]
        groups[title] = {row[0]: row[1:] for row in cells}
    return groups


INFO_WITHOUT_KERAS = """
import sys
from keras_lcnet.cli import main
assert main(["info"]) == 0
print("----")
assert main(["info", "PP-LCNet_x1_0_pedestrian_attribute"]) == 0
heavy = sorted({"keras", "tensorflow", "numpy", "jax", "torch"} & set(sys.modules))
assert not heavy, heavy
"""


def test_info_lists_every_preset_without_importing_keras(keras_home):
    proc = _python("-c", INFO_WITHOUT_KERAS)  # keras_home: KERAS_HOME is an empty cache
    assert proc.returncode == 0, proc.stderr[-3000:]
    listing, described = proc.stdout.split("----\n")
    groups = _info_rows(listing)
    assert list(groups) == ["ImageNet-1k presets:", "Task presets:"]
    imagenet, tasks = groups.values()
    assert list(imagenet) == [p.name for p in PRESETS if p.tag in PRETRAINED_TAGS]
    assert list(tasks) == [p.name for p in PRESETS if p.tag not in PRETRAINED_TAGS]
    for name, cells in {**imagenet, **tasks}.items():
        preset = get_preset(name)
        height, width = preset.input.size
        short = preset.input.resize_short
        metric = preset.metrics[0]
        assert cells == [
            preset.task, str(preset.classes), f"{height}x{width}",
            "direct" if short is None else f"crop {short}", preset.input.channel_order,
            f"{metric.name} {metric.value:g}", "no",
        ], name
    assert described.startswith("PP-LCNet_x1_0_pedestrian_attribute\n")


def test_info_shows_cached_files(capsys, keras_home):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_25, keras_home / "models" / get_preset("PPLCNet_x0_25_imagenet").file_name)
    # Weights converted once load without the upstream file: cached too.
    (keras_home / "models" / "car_exists_pretrained.keras_lcnet.npz").write_bytes(b"")
    assert main(["info"]) == 0
    groups = _info_rows(capsys.readouterr().out)
    rows = {name: cells for group in groups.values() for name, cells in group.items()}
    cached = {name for name, cells in rows.items() if cells[-1] == "yes"}
    assert cached == {"PPLCNet_x0_25_imagenet", "pulc_car_exists"}


def _described(name: str, capsys) -> dict[str, str]:
    """The `key: value` lines `info NAME` prints."""
    assert main(["info", name]) == 0
    title, *lines = capsys.readouterr().out.splitlines()
    assert title == name
    return {key.strip(): value.strip() for key, value in (x.split(": ", 1) for x in lines)}


@pytest.mark.parametrize(
    "name", ["PP-LCNet_x1_0_pedestrian_attribute", "pulc_textline_orientation",
             "PPLCNet_x0_5_imagenet_ssld", "pulc_traffic_sign"]
)
def test_info_name_describes_one_preset(name, capsys, keras_home):
    preset = get_preset(name)
    fields = _described(name, capsys)
    assert fields["url"] == preset.url and fields["license"] == preset.license
    assert fields["source"] == preset.source
    assert fields["cached"] == "no"
    assert fields["load"] == f"keras_lcnet.from_preset({name!r})"
    assert all(metric.source in fields["metrics"] for metric in preset.metrics)
    assert fields["postprocess"] == ", ".join(f"{k}={v!r}" for k, v in preset.postprocess.items())
    assert fields["input"].startswith("{}x{} (height x width)".format(*preset.input.size))
    assert f"classes={preset.classes}" in fields["architecture"]
    if "stride_list" in preset.architecture:
        assert "stride_list=(2, (2, 1), (2, 1), (2, 1), (2, 1))" in fields["architecture"]
    if preset.labels is None:
        assert fields["labels"].startswith("none bundled")
        return
    data = json.loads((IMAGES_DIR.parent.parent / "keras_lcnet" / "data" / preset.labels)
                      .read_text(encoding="utf-8"))
    labels = data["labels"] if "labels" in data else [data[str(i)][1] for i in range(len(data))]
    assert fields["labels"].startswith(", ".join(labels[:10]))
    assert f"({len(labels)} labels, " in fields["labels"]


def test_convert_then_load_matches_direct_pdparams(tmp_path, capsys):
    output = tmp_path / "x0_25.weights.h5"
    assert main(["convert", str(X0_25), "--variant", "x0_25", "--output", str(output)]) == 0
    assert "classes=8" in capsys.readouterr().out
    converted = keras_lcnet.PPLCNet_x0_25(weights=str(output), classes=8)
    direct = keras_lcnet.PPLCNet_x0_25(weights=str(X0_25), classes=8)
    x = np.random.RandomState(0).uniform(0, 255, (1, 96, 96, 3)).astype("float32")
    np.testing.assert_array_equal(converted(x, training=False), direct(x, training=False))


def _convert_and_reload(case: str, suffix: str, tmp_path, capsys, *flags: str):
    """Converts a reference checkpoint as a user would and loads it as `convert` says."""
    config, arrays = load_case(case)
    output = tmp_path / f"{case}{suffix}"
    stride_list = json.dumps(config["stride_list"])  # not recorded in a .pdparams file
    argv = ["convert", str(FIXTURES / f"{case}.pdparams"), "--output", str(output),
            "--stride-list", stride_list, *flags]
    assert main(argv) == 0
    model = eval(_load_line(capsys.readouterr().out), {"keras": keras, "keras_lcnet": keras_lcnet})
    return model, arrays


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
@pytest.mark.parametrize("case", ["pplcnet_x0_25_textline", "pplcnet_x0_25_no_last_conv"])
def test_converted_file_reproduces_paddleclas_logits(case, suffix, tmp_path, capsys):
    model, arrays = _convert_and_reload(case, suffix, tmp_path, capsys, "--logits")
    for i in (0, 1):
        actual = model(arrays[f"pixels_{i}"].astype("float32"), training=False)
        assert relative_error(actual, arrays[f"logits_{i}"]) <= TOLERANCE, (case, suffix, i)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_converted_file_outputs_softmax_scores_by_default(suffix, tmp_path, capsys):
    model, arrays = _convert_and_reload("pplcnet_x0_25_textline", suffix, tmp_path, capsys)
    actual = model(arrays["pixels_0"].astype("float32"), training=False)
    assert relative_error(actual, _softmax(arrays["logits_0"])) <= TOLERANCE


@pytest.mark.slow
def test_keras_file_loads_in_a_fresh_process_after_import_keras_lcnet(tmp_path, capsys):
    output = tmp_path / "textline.keras"
    assert main(["convert", str(FIXTURES / "pplcnet_x0_25_textline.pdparams"), "--output",
                 str(output), "--stride-list", "2,[2,1],[2,1],[2,1],[2,1]", "--logits"]) == 0
    proc = run_python(
        "import keras_lcnet\n"  # before Keras: the layers register when Keras loads
        "import keras\n"
        "from helpers import load_case, relative_error\n"
        f"model = {_load_line(capsys.readouterr().out)}\n"
        "_, arrays = load_case('pplcnet_x0_25_textline')\n"
        "y = model.predict(arrays['pixels_1'].astype('float32'), verbose=0)\n"
        "print('ERROR', relative_error(y, arrays['logits_1']))\n",
        PYTHONPATH="tests",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.split()[-1]) <= TOLERANCE


def test_convert_infers_the_variant_and_rejects_a_wrong_one(tmp_path, capsys):
    output = tmp_path / "x.keras"
    assert main(["convert", str(X0_25), "--variant", "x1_0", "--output", str(output)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-lcnet: error: scale=1.0 (x1_0) does not match")
    assert "a PPLCNet_x0_25 checkpoint" in err
    assert "\n" not in err and not output.exists()


def test_convert_leaves_nothing_behind_when_saving_fails(tmp_path, capsys, monkeypatch):
    def failing_save(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n half")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save_weights", failing_save)
    output = tmp_path / "x.weights.h5"
    assert main(["convert", str(X0_25), "--output", str(output)]) == 1
    assert "disk full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# convert SOURCE and info SOURCE: every checkpoint form.

INFERENCE = FIXTURES / "inference_x0_25"  # 8 classes, last conv 512, dropout 0.2 in its program
TEXTLINE_STRIDES = [2, [2, 1], [2, 1], [2, 1], [2, 1]]


def _architecture_line(out: str) -> str:
    (line,) = [x for x in out.splitlines() if x.startswith("Architecture: ")]
    return line


def test_convert_an_inference_model_reproduces_paddle_inference(tmp_path, capsys):
    output = tmp_path / "inference.weights.h5"
    assert main(["convert", str(INFERENCE), "--logits", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert _architecture_line(out) == (
        "Architecture: PPLCNet_x0_25, 8 classes, last conv 512, dropout 0.2 (read from the "
        "Paddle inference model's tensor shapes and program; not in the file: stride_list "
        "(default))"
    )
    model = eval(_load_line(out), {"keras": keras, "keras_lcnet": keras_lcnet})
    with np.load(INFERENCE / "reference.npz") as reference:
        got = model.predict(reference["pixels_0"].astype("float32"), verbose=0)
        assert relative_error(got, reference["logits_0"]) <= TOLERANCE


ONNX_TEXTLINE = FIXTURES / "onnx_x0_25_textline" / "inference.onnx"


@pytest.mark.export
def test_convert_a_paddle2onnx_file_reproduces_onnxruntime(tmp_path, capsys):
    pytest.importorskip("onnx")
    output = tmp_path / "textline.keras"
    assert main(["convert", str(ONNX_TEXTLINE), "--logits", "--output", str(output)]) == 0
    line = _architecture_line(capsys.readouterr().out)
    assert "PPLCNet_x0_25" in line and "strides [2,[2,1],[2,1],[2,1],[2,1]]" in line
    model = keras.saving.load_model(output)
    reference = onnx_reference(ONNX_TEXTLINE)
    for i in (0, 1):
        got = model.predict(reference[f"pixels_{i}"].astype("float32"), verbose=0)
        assert relative_error(got, reference[f"logits_{i}"]) <= TOLERANCE


@pytest.mark.parametrize(
    ("source", "form", "strides"),
    [
        (INFERENCE / "inference.pdmodel", "paddle-inference", None),  # the legacy program
        (ONNX_TEXTLINE.parent, "paddle-onnx", TEXTLINE_STRIDES),  # PaddleX' ONNX folder
    ],
    ids=["pdmodel", "onnx-folder"],
)
def test_describe_checkpoint_reads_the_new_forms(source, form, strides):
    if form == "paddle-onnx":
        pytest.importorskip("onnx")
    described = keras_lcnet.describe_checkpoint(source)
    assert described["form"] == form
    built = keras_lcnet.from_checkpoint(source).get_config()
    layers = {layer["name"]: layer["config"] for layer in built["layers"]}
    architecture = described["architecture"]
    assert architecture["variant"] == "x0_25"
    assert architecture["classes"] == layers["fc"]["units"]
    assert architecture["class_expand"] == layers["last_conv"]["filters"]
    assert architecture["stride_list"] == strides


def test_bare_transformers_safetensors_converts(tmp_path, capsys):
    """A model.safetensors without its config.json: shapes give the model, the user strides."""
    folder = transformers_folder(TEXTLINE, tmp_path / "hf", TEXTLINE_STRIDES)
    output = tmp_path / "bare.keras"
    stride_flag = "2,[2,1],[2,1],[2,1],[2,1]"
    args = ["convert", str(folder / "model.safetensors"), "--stride-list", stride_flag]
    assert main([*args, "--logits", "--dropout-rate", "0.2", "--output", str(output)]) == 0
    _, arrays = load_case("pplcnet_x0_25_textline")
    model = keras.saving.load_model(output)
    got = model.predict(arrays["pixels_0"].astype("float32"), verbose=0)
    assert relative_error(got, arrays["logits_0"]) <= TOLERANCE


@pytest.fixture
def textline_transformers(tmp_path):
    """The text-line reference checkpoint as a transformers folder: strides in config.json."""
    return transformers_folder(TEXTLINE, tmp_path / "hf", TEXTLINE_STRIDES,
                               labels=["0_degree", "180_degree"])


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_convert_a_transformers_folder_needs_no_flags(suffix, textline_transformers, tmp_path,
                                                      capsys):
    output = tmp_path / f"textline{suffix}"
    argv = ["convert", str(textline_transformers), "--logits", "--output", str(output)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _architecture_line(out) == (
        "Architecture: PPLCNet_x0_25, 2 classes, strides [2,[2,1],[2,1],[2,1],[2,1]], last conv "
        "1280, dropout 0.2 (read from the transformers PP-LCNet checkpoint's config.json)"
    )
    model = eval(_load_line(out), {"keras": keras, "keras_lcnet": keras_lcnet})
    _, arrays = load_case("pplcnet_x0_25_textline")
    actual = model.predict(arrays["pixels_1"].astype("float32"), verbose=0)
    assert relative_error(actual, arrays["logits_1"]) <= TOLERANCE


def test_convert_prints_where_unrecorded_values_came_from(tmp_path, capsys):
    output = tmp_path / "textline.weights.h5"
    argv = ["convert", str(TEXTLINE), "--stride-list", json.dumps(TEXTLINE_STRIDES),
            "--output", str(output)]
    assert main(argv) == 0
    line = _architecture_line(capsys.readouterr().out)
    assert line.endswith("(read from the PaddleClas .pdparams checkpoint's tensor shapes; not in "
                         "the file: stride_list (--stride-list), dropout_rate (default))")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stride-list", "2,2,2,2,2"], "stride_list=[2, 2, 2, 2, 2] contradicts"),
        (["--classes", "3"], "classes=3 contradicts"),
        (["--dropout-rate", "0.5"], "dropout_rate=0.5 contradicts"),
        (["--variant", "x1_0"], "scale=1.0 contradicts"),
    ],
)
def test_convert_flags_must_agree_with_a_transformers_config(flags, message,
                                                             textline_transformers, tmp_path,
                                                             capsys):
    output = tmp_path / "x.keras"
    assert main(["convert", str(textline_transformers), *flags, "--output", str(output)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-lcnet: error:") and message in err and "\n" not in err
    assert list(tmp_path.glob("x*")) == []


def test_convert_refuses_a_keras_file_in_one_line(tmp_path, capsys):
    source = tmp_path / "m.weights.h5"
    keras_lcnet.PPLCNet_x0_25(weights=None).save_weights(source)
    assert main(["convert", str(source), "--output", str(tmp_path / "o.keras")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is a Keras file already" in err and "\n" not in err


def _info_json(source, capsys) -> dict:
    assert main(["info", str(source), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _expected_architecture(case: str, **recorded) -> dict:
    """What a reference checkpoint's PaddleClas config says, the unrecorded values as None."""
    config, _ = load_case(case)
    last_conv = config["use_last_conv"]
    return {
        "variant": "x0_25", "scale": config["scale"], "include_top": True,
        "classes": config["class_num"], "stride_list": None, "use_last_conv": last_conv,
        "class_expand": config["class_expand"] if last_conv else None, "dropout_rate": None,
        **recorded,
    }


@pytest.mark.parametrize("case", ["pplcnet_x0_25", "pplcnet_x0_25_no_last_conv"])
def test_info_json_describes_a_pdparams_file(case, capsys):
    described = _info_json(FIXTURES / f"{case}.pdparams", capsys)
    state = read_pdparams(FIXTURES / f"{case}.pdparams")
    assert described["form"] == "pdparams"
    assert described["architecture"] == _expected_architecture(case)
    assert described["tensors"] == len(state)
    assert described["parameters"] == sum(value.size for value in state.values())
    assert described["labels"] is None and described["input"] is None


def test_info_json_describes_an_inference_model(capsys):
    described = _info_json(INFERENCE, capsys)
    assert described["form"] == "paddle-inference"
    # The PaddleClas model tools/make_inference_fixtures.py saved.
    assert described["architecture"] == {
        "variant": "x0_25", "scale": 0.25, "include_top": True, "classes": 8,
        "stride_list": None, "use_last_conv": True, "class_expand": 512, "dropout_rate": 0.2,
    }
    assert described["tensors"] == 146


def test_info_json_describes_transformers_folders_and_bare_safetensors(textline_transformers,
                                                                       capsys):
    (textline_transformers / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 80, "width": 160}, "resize_short": None,
         "image_mean": [0.5, 0.5, 0.4], "image_std": [0.2, 0.3, 0.4]}
    ))
    folder = _info_json(textline_transformers, capsys)
    assert folder["form"] == "transformers"
    assert folder["architecture"] == _expected_architecture(
        "pplcnet_x0_25_textline", stride_list=TEXTLINE_STRIDES, dropout_rate=0.2
    )
    assert folder["labels"] == ["0_degree", "180_degree"]
    # The processor normalizes RGB, then flips: the network sees BGR, statistics reversed.
    assert folder["input"] == {
        "size": [80, 160], "resize_short": None, "interpolation": "bilinear",
        "channel_order": "BGR", "mean": [0.4, 0.5, 0.5], "std": [0.4, 0.3, 0.2],
    }
    state = read_pdparams(TEXTLINE)
    bn_layers = sum(key.endswith("._mean") for key in state)
    assert folder["tensors"] == len(state) + bn_layers  # + transformers' num_batches_tracked
    assert folder["parameters"] == sum(value.size for value in state.values()) + bn_layers
    bare = _info_json(textline_transformers / "model.safetensors", capsys)
    assert bare["form"] == "safetensors"
    assert bare["architecture"] == _expected_architecture("pplcnet_x0_25_textline")
    assert bare["labels"] is None


def test_info_json_describes_keras_files(tmp_path, capsys):
    model = keras_lcnet.PPLCNet_x0_25(weights=None, classes=2, stride_list=TEXTLINE_STRIDES,
                                      dropout_rate=0.3)
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    whole = _info_json(tmp_path / "m.keras", capsys)
    assert whole["form"] == "keras"
    assert whole["architecture"] == _expected_architecture(
        "pplcnet_x0_25_textline", stride_list=TEXTLINE_STRIDES, dropout_rate=0.3
    )
    assert whole["parameters"] == model.count_params()
    weights = _info_json(tmp_path / "m.weights.h5", capsys)
    assert weights["architecture"] is None and weights["tensors"] == len(model.weights)


def test_info_source_prints_one_field_per_line(textline_transformers, capsys):
    assert main(["info", str(textline_transformers)]) == 0
    title, *lines = capsys.readouterr().out.splitlines()
    fields = {key.strip(): value.strip() for key, value in (x.split(": ", 1) for x in lines)}
    assert title == str(textline_transformers)
    assert fields["form"] == "transformers (transformers PP-LCNet checkpoint)"
    assert fields["architecture"].startswith("PPLCNet_x0_25, 2 classes, strides [2,[2,1],")
    assert fields["labels"] == "0_degree, 180_degree (2 labels)"


def test_info_prefers_a_preset_to_a_file_of_the_same_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(X0_25, tmp_path / "pulc_car_exists")
    shutil.copy(X0_25, tmp_path / "mine.pdparams")
    assert main(["info", "pulc_car_exists"]) == 0
    assert capsys.readouterr().out.startswith("pulc_car_exists\n  task:")
    assert main(["info", "mine.pdparams"]) == 0
    assert "  form:         pdparams" in capsys.readouterr().out


def test_info_of_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(X0_25.read_bytes()[:5000])
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"keras-lcnet: error: {bad} is not a readable") and "\n" not in err


def test_describe_checkpoint_refuses_what_no_form_reads(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file or folder"):
        keras_lcnet.describe_checkpoint(tmp_path / "missing.pdparams")
    # A folder is meant as an inference model, unless it holds a transformers config.json.
    with pytest.raises(keras_lcnet.errors.CheckpointError, match=r"no \.pdiparams with an"):
        keras_lcnet.describe_checkpoint(tmp_path)


INFO_SOURCE_WITHOUT_KERAS = """
import sys
from keras_lcnet.cli import main
assert main(["info", sys.argv[1]]) == 0
heavy = sorted({"keras", "tensorflow", "jax", "torch"} & set(sys.modules))
assert not heavy, heavy
"""


def test_info_source_does_not_import_keras():
    proc = _python("-c", INFO_SOURCE_WITHOUT_KERAS, str(INFERENCE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paddle-inference" in proc.stdout


@pytest.fixture
def imagenet_shaped_weights(tmp_path) -> str:
    path = tmp_path / "imagenet_shaped.weights.h5"
    keras_lcnet.PPLCNet_x0_25(weights=None).save_weights(path)
    return str(path)


def test_predict_prints_top_k(imagenet_shaped_weights, capsys):
    images = sorted(str(p) for p in IMAGES_DIR.glob("*.jpg"))[:2]
    argv = ["predict", *images, "--variant", "0_25", "--weights", imagenet_shaped_weights]
    assert main([*argv, "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == images[0] and lines[4] == images[1]
    assert [line.strip()[:2] for line in lines[1:4]] == ["1.", "2.", "3."]


def test_predict_reports_bad_files_and_classifies_the_others(imagenet_shaped_weights, capsys):
    good = sorted(str(p) for p in IMAGES_DIR.glob("*.jpg"))[:2]
    missing, not_an_image = str(IMAGES_DIR / "missing.jpg"), str(IMAGES_DIR / "README.md")
    argv = ["predict", good[0], missing, not_an_image, good[1], "--variant", "x0_25",
            "--weights", imagenet_shaped_weights]
    assert main(argv) == 1
    captured = capsys.readouterr()
    printed = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert printed == good
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    for path, line in zip([missing, not_an_image], errors, strict=True):
        assert line.startswith(f"keras-lcnet: error: {path}: ")


def test_predict_says_random_weights_are_random(capsys):
    assert main(["predict", CAT, "--variant", "x0_25", "--weights", "none", "--top", "1"]) == 0
    err = capsys.readouterr().err.strip()
    assert "random weights" in err and "\n" not in err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["predict", CAT, "--top", "0"], "--top"),
        (["predict", CAT, "--top", "three"], "--top"),
        (["predict", CAT, "--variant", "x3_0"], "--variant"),
        (["export", "--output", "m.tflite", "--image-size", "16"], "--image-size"),
        (["export", "--output", "m.tflite", "--classes", "0"], "--classes"),
        (["convert", str(X0_25), "--output", "o.h5"], "--output"),
        (["convert", str(X0_25), "--output", "/no/such/folder/o.keras"], "--output"),
        (["export", "--output", "/no/such/folder/m.onnx"], "--output"),
        (["convert", str(X0_25), "--output", "o.keras", "--stride-list", "2,[2"], "--stride-list"),
        (["bench", "m.tflite", "--budget-ms", "0"], "--budget-ms"),
        (["predict", CAT, "--preset", "pulc_person_exist"], "--preset"),
        (["predict", CAT, "--preset", "pulc_person_exists", "--variant", "x1_0"], "--preset"),
        (["predict", CAT, "--variant", "x1_0", "--preset", "pulc_person_exists"], "--preset"),
        (["predict", CAT, "--weights", "imagenet", "--preset", "pulc_person_exists"], "--preset"),
        (["predict", CAT, "--preset", "pulc_person_exists", "--top", "1"], "--top"),
        (["convert", "--preset", "pulc_textline_orientation", "--output", "o.keras",
          "--stride-list", "2,2,2,2,2"], "--preset"),
        (["convert", str(X0_25), "--preset", "pulc_car_exists", "--classes", "2", "--output",
          "o.keras"], "--preset"),
        (["info", "pulc_person_exist"], "NAME|SOURCE"),
        (["info", "--json"], "--json"),
        (["info", "pulc_car_exists", "--json"], "--json"),
    ],
)
def test_bad_argument_values_exit_2_before_any_work(argv, flag, capsys, monkeypatch):
    def no_work():
        raise AssertionError("the command started before its arguments were checked")

    monkeypatch.setattr("keras_lcnet.cli._import_keras", no_work)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"keras-lcnet {argv[0]}: error: argument {flag}")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", CAT, "--preset", "pulc_person_exist"],
         "Unknown preset 'pulc_person_exist'. Did you mean 'pulc_person_exists'?"),
        (["predict", CAT, "--preset", "pulc_car_exists", "--weights", "none"],
         "argument --preset: not allowed with argument --weights"),
        (["info", "PP-LCNet_x1_0_textline"], "Did you mean 'PP-LCNet_x1_0_textline_ori'?"),
        (["info", "PP-LCNet_x1_0_textline"], "neither a preset nor an existing checkpoint file"),
        (["convert", "--output", "o.keras"], "give the CHECKPOINT to convert, or --preset NAME"),
    ],
)
def test_argument_errors_say_what_to_do(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "/no/such.pdparams", "--output", "o.weights.h5"], "No such file"),
        (["convert", str(X0_25), "--classes", "3", "--output", "o.keras"], "with 8 classes"),
        (["predict", CAT, "--weights", str(X0_25)], "8 classes"),
        (["predict", CAT, "--weights", "no_such.weights.h5"], "no such file"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-lcnet: error:") and message in err
    assert "\n" not in err


def test_offline_predict_fails_cleanly(keras_home, capsys):
    assert main(["predict", CAT, "--variant", "x0_25"]) == 1
    assert "keras-lcnet convert" in capsys.readouterr().err


# --preset: test presets of every task kind, published in the test mirror.

TEXTLINE_ARCHITECTURE = {"stride_list": (2, (2, 1), (2, 1), (2, 1), (2, 1)), "dropout_rate": 0.2}
NO_LAST_CONV_ARCHITECTURE = {"use_last_conv": False, "dropout_rate": 0.2}
LINES = InputContract(size=(80, 160), resize_short=None)


def _with_head(classes: int, path) -> str:
    """The x0_25 reference checkpoint with a seeded `classes`-way classifier."""
    state = read_pdparams(X0_25)
    rng = np.random.default_rng(classes)
    state["fc.weight"] = rng.normal(0, 0.05, (state["fc.weight"].shape[0], classes)).astype("f4")
    state["fc.bias"] = rng.normal(0, 0.5, classes).astype("f4")
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)
    return path


def _labels(tmp_path, name: str, labels: list[str]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"labels": labels}))
    return str(path)


@pytest.fixture
def cli_presets(keras_home, tmp_path, monkeypatch):
    """One test preset per task kind; `t_lines` and `t_orient` are published only by tests."""
    labels = {"lines": ["upright", "flipped"], "orient": ["0", "90", "180", "270"],
              "binary": ["no", "yes"], "multi": ["a", "b", "c", "d"]}
    labels = {name: _labels(tmp_path, name, values) for name, values in labels.items()}
    person = {"threshold": 0.5, "glasses_threshold": 0.3, "hold_threshold": 0.6}
    added = [
        (small_preset("t_lines", 2, labels=labels["lines"], architecture=TEXTLINE_ARCHITECTURE,
                      input=LINES, postprocess={"top": 1}), None),
        (small_preset("t_orient", 4, labels=labels["orient"], postprocess={"top": 2},
                      architecture=NO_LAST_CONV_ARCHITECTURE), None),
        (small_preset("t_binary", 2, task="binary", labels=labels["binary"], input=LINES,
                      architecture=TEXTLINE_ARCHITECTURE, postprocess={"threshold": 0.5}),
         TEXTLINE),
        (small_preset("t_multi", 4, task="multi_label", labels=labels["multi"],
                      architecture=NO_LAST_CONV_ARCHITECTURE, postprocess={"threshold": 0.5}),
         NO_LAST_CONV),
        (small_preset("t_person", 26, task="person_attribute", labels=None, postprocess=person,
                      input=InputContract(size=(256, 192), resize_short=None)),
         _with_head(26, tmp_path / "person.pdparams")),
        (small_preset("t_vehicle", 19, task="vehicle_attribute", labels=None,
                      input=InputContract(size=(192, 256), resize_short=None),
                      postprocess={"color_threshold": 0.5, "type_threshold": 0.5}),
         _with_head(19, tmp_path / "vehicle.pdparams")),
    ]
    for preset, checkpoint in added:
        if checkpoint is not None:
            publish(tmp_path / "mirror", preset, checkpoint)
    return register_presets(monkeypatch, *(preset for preset, _ in added))


def _printed(out: str) -> dict[str, list[str]]:
    """The indented lines printed under each image path, spaces collapsed."""
    blocks: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("  "):
            blocks[next(reversed(blocks))].append(" ".join(line.split()))
        else:
            blocks[line] = []
    return blocks


def _as_text(value) -> str:
    """An attribute value as docs/cli.md says `predict` prints it."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    if isinstance(value, tuple):
        return f"{value[0]} ({value[1]:.4f})"
    return value


def _expected_lines(result, task: str) -> list[str]:
    if task == "single_label":
        return [f"{rank}. {label} {score:.4f}" for rank, (label, score) in enumerate(result, 1)]
    if task == "binary":
        return [f"{result[0]} {result[1]:.4f}"]
    if task == "multi_label":
        return [f"{label} {score:.4f}" for label, score in result] or [
            "(no label reaches its threshold)"]
    return [f"{key}: {_as_text(value)}" for key, value in result.items()]


def _pairs(value):
    """JSON results back as `decode_outputs` returns them: {label, score} -> (label, score)."""
    if isinstance(value, dict) and set(value) == {"label", "score"}:
        return value["label"], value["score"]
    if isinstance(value, dict):
        return {key: _pairs(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_pairs(item) for item in value]
    return value


IMAGES = [str(IMAGES_DIR / "cat.jpg"), str(IMAGES_DIR / "rocket.jpg")]


@pytest.mark.parametrize(
    ("name", "flags"),
    [("t_binary", []), ("t_multi", []), ("t_person", []), ("t_vehicle", []),
     ("t_orient", []), ("t_orient", ["--top", "3"])],
)
def test_predict_preset_prints_what_decode_outputs_says(name, flags, cli_presets, tmp_path,
                                                        capsys):
    if name == "t_orient":
        publish(tmp_path / "mirror", cli_presets[name], NO_LAST_CONV)
    # First use: the checkpoint is downloaded (from the mirror), its progress kept off stdout.
    assert main(["predict", *IMAGES, "--preset", name, "--json", *flags]) == 0
    parsed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", *IMAGES, "--preset", name, *flags]) == 0
    printed = _printed(capsys.readouterr().out)

    model = keras_lcnet.from_preset(name)
    pixels = np.concatenate([keras_lcnet.load_image(p, preset=name) for p in IMAGES])
    top = int(flags[1]) if flags else None
    expected = keras_lcnet.decode_outputs(model.predict(pixels, verbose=0), name, top=top)
    assert [line["path"] for line in parsed] == IMAGES
    assert [_pairs(line["result"]) for line in parsed] == expected
    task = cli_presets[name].task
    assert printed == {p: _expected_lines(r, task) for p, r in zip(IMAGES, expected, strict=True)}


def test_predict_json_without_a_preset_decodes_imagenet(imagenet_shaped_weights, capsys):
    model = keras_lcnet.PPLCNet_x0_25(weights=imagenet_shaped_weights)
    pixels = np.concatenate([keras_lcnet.load_image(p) for p in IMAGES])
    expected = keras_lcnet.decode_predictions(model.predict(pixels, verbose=0), top=2)
    argv = ["predict", *IMAGES, "--variant", "x0_25", "--weights", imagenet_shaped_weights]
    assert main([*argv, "--top", "2", "--json"]) == 0
    parsed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in parsed] == IMAGES
    assert [[(c["wnid"], c["label"], c["score"]) for c in line["result"]] for line in parsed] == [
        [tuple(c) for c in top] for top in expected
    ]


def test_predict_preset_reports_bad_files_and_classifies_the_others(cli_presets, capsys):
    missing = str(IMAGES_DIR / "missing.jpg")
    argv = ["predict", IMAGES[0], missing, IMAGES[1], "--preset", "t_binary"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert list(_printed(captured.out)) == IMAGES
    errors = [line for line in captured.err.splitlines() if line.startswith("keras-lcnet")]
    assert errors == [f"keras-lcnet: error: {missing}: no such file"]  # and download progress


def test_predict_preset_offline_fails_cleanly(cli_presets, keras_home, capsys):
    assert main(["predict", CAT, "--preset", "t_lines"]) == 1
    *_, err = capsys.readouterr().err.strip().splitlines()  # after Keras' "Downloading ..."
    assert err.startswith("keras-lcnet: error: Could not download")
    assert str(keras_home / "models" / cli_presets["t_lines"].file_name) in err


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_convert_preset_fetches_and_round_trips(suffix, cli_presets, tmp_path, capsys):
    publish(tmp_path / "mirror", cli_presets["t_lines"], TEXTLINE)
    output = tmp_path / f"lines{suffix}"
    assert main(["convert", "--preset", "t_lines", "--output", str(output)]) == 0
    model = eval(_load_line(capsys.readouterr().out), {"keras": keras, "keras_lcnet": keras_lcnet})
    pixels = keras_lcnet.load_image(CAT, preset="t_lines")
    np.testing.assert_array_equal(model.predict(pixels, verbose=0),
                                  keras_lcnet.from_preset("t_lines").predict(pixels, verbose=0))


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_convert_a_local_checkpoint_of_a_preset(suffix, cli_presets, tmp_path, capsys):
    # The preset supplies the strides a .pdparams file does not record; nothing is downloaded.
    output = tmp_path / f"lines{suffix}"
    argv = ["convert", str(TEXTLINE), "--preset", "t_lines", "--logits", "--output", str(output)]
    assert main(argv) == 0
    model = eval(_load_line(capsys.readouterr().out), {"keras": keras, "keras_lcnet": keras_lcnet})
    _, arrays = load_case("pplcnet_x0_25_textline")
    actual = model.predict(arrays["pixels_0"].astype("float32"), verbose=0)
    assert relative_error(actual, arrays["logits_0"]) <= TOLERANCE


def test_convert_preset_errors_are_one_line(cli_presets, tmp_path, capsys):
    output = tmp_path / "x.weights.h5"
    assert main(["convert", "--preset", "t_lines", "--output", str(output)]) == 1  # offline
    assert "Could not download" in capsys.readouterr().err
    # A checkpoint of another architecture than the preset's.
    assert main(["convert", str(TEXTLINE), "--preset", "t_orient", "--output", str(output)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-lcnet: error: Not a checkpoint of preset 't_orient': ")
    assert "last_conv" in err and "\n" not in err
    assert list(tmp_path.glob("*.h5")) == []


def _python(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          env={**environment, **env}, cwd=IMAGES_DIR.parent.parent)


HELP_WITHOUT_KERAS = """
import sys
from keras_lcnet.cli import main
for argv in (["--help"], ["--version"], *([c, "--help"] for c in
             ("predict", "convert", "info", "export", "bench"))):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, argv
heavy = sorted({"keras", "tensorflow", "numpy", "jax", "torch"} & set(sys.modules))
assert not heavy, heavy
"""


def test_help_and_version_do_not_import_keras():
    proc = _python("-c", HELP_WITHOUT_KERAS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: keras-lcnet bench" in proc.stdout


def test_python_dash_m_runs_the_cli_and_prints_its_version():
    proc = _python("-m", "keras_lcnet", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"keras-lcnet {importlib.metadata.version('keras-lcnet')}"
    proc = _python("-m", "keras_lcnet", "predict", "--help")
    assert proc.returncode == 0 and "--top" in proc.stdout
    assert shutil.which("keras-lcnet", path=os.path.dirname(sys.executable))


@pytest.mark.slow
def test_tensorflow_start_up_notes_are_silenced():
    proc = _python("-m", "keras_lcnet", "predict", CAT, "--variant", "x0_25", "--weights", "none",
                   KERAS_BACKEND="tensorflow")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "random weights" in lines[0], proc.stderr[-3000:]


@pytest.mark.parametrize(
    "text", ["2,[2,1],[2,1],[2,1],[2,1]", "[2, [2, 1], [2, 1], [2, 1], [2, 1]]"]
)
def test_stride_list_flag_parses_paddleclas_notation(text):
    args = build_parser().parse_args(
        ["convert", "f.pdparams", "--output", "o.weights.h5", "--stride-list", text]
    )
    assert args.stride_list == [2, [2, 1], [2, 1], [2, 1], [2, 1]]


def test_a_reader_that_leaves_early_gets_no_error_message():
    """`keras-lcnet info | head -1`: a closed pipe ends the command quietly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_lcnet", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the command has written anything
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Broken pipe" not in stderr and "Traceback" not in stderr, stderr
