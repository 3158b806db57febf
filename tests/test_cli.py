"""The keras-lcnet command line: predict, convert, info, argument checks and manners."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR, load_case, relative_error, run_python

import keras_lcnet
from keras_lcnet.cli import build_parser, main

X0_25 = FIXTURES / "pplcnet_x0_25.pdparams"
TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|, as in test_parity
CAT = str(IMAGES_DIR / "cat.jpg")


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _load_line(out: str) -> str:
    """The Python expression `convert` prints for loading what it wrote."""
    (line,) = [x.strip() for x in out.splitlines() if x.startswith("    ")]
    return line


def test_info_lists_the_registry(capsys, keras_home):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.count("imagenet_ssld") == 4
    assert "PPLCNet_x2_5" in out and "80.82" in out and "Apache-2.0" in out


def test_info_shows_cached_files(capsys, keras_home):
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(X0_25, keras_home / "models" / "PPLCNet_x0_25_pretrained.pdparams")
    main(["info"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "x0_25_pretrained" in x)
    assert " yes " in line


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
