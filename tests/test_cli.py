"""The keras-lcnet command line: predict, convert, info."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR

import keras_lcnet
from keras_lcnet.cli import build_parser, main

X0_25 = FIXTURES / "pplcnet_x0_25.pdparams"


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
    np.testing.assert_array_equal(converted.predict(x, verbose=0), direct.predict(x, verbose=0))


def test_predict_prints_top_k(tmp_path, capsys):
    weights = tmp_path / "imagenet_shaped.weights.h5"
    keras_lcnet.PPLCNet_x0_25(weights=None).save_weights(weights)
    images = sorted(str(p) for p in IMAGES_DIR.glob("*.jpg"))[:2]
    code = main(["predict", *images, "--variant", "0_25", "--weights", str(weights), "--top", "3"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == images[0] and lines[4] == images[1]
    assert [line.strip()[:2] for line in lines[1:4]] == ["1.", "2.", "3."]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "/no/such.pdparams", "--variant", "x1_0", "--output", "o.weights.h5"],
         "No such file"),
        (["convert", str(X0_25), "--variant", "x1_0", "--output", "o.weights.h5"],
         "conv1.conv.weight"),
        (["convert", str(X0_25), "--variant", "x0_25", "--output", "o.h5"], "weights.h5"),
        (["predict", "cat.jpg", "--weights", str(X0_25), "--variant", "x0_25"], "8 classes"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-lcnet: error:") and message in err
    assert "\n" not in err


def test_offline_predict_fails_cleanly(keras_home, capsys):
    assert main(["predict", str(IMAGES_DIR / "cat.jpg"), "--variant", "x0_25"]) == 1
    assert "keras-lcnet convert" in capsys.readouterr().err


def test_console_script_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "keras_lcnet.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "predict" in proc.stdout
    assert shutil.which("keras-lcnet", path=str(__import__("pathlib").Path(sys.executable).parent))


@pytest.mark.parametrize(
    "text", ["2,[2,1],[2,1],[2,1],[2,1]", "[2, [2, 1], [2, 1], [2, 1], [2, 1]]"]
)
def test_stride_list_flag_parses_paddleclas_notation(text):
    args = build_parser().parse_args(
        ["convert", "f.pdparams", "--variant", "x0_25", "--output", "o.weights.h5",
         "--stride-list", text]
    )
    assert args.stride_list == [2, [2, 1], [2, 1], [2, 1], [2, 1]]
