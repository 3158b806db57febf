"""PP-LCNetV2 in the command line: `--variant v2_*`, V2 checkpoints in convert and info."""

from __future__ import annotations

import json

import keras
import pytest
from helpers import FIXTURES, IMAGES_DIR, load_case, relative_error

import keras_lcnet
from keras_lcnet.cli import main
from keras_lcnet.presets import V2_PRESETS

V2_CHECKPOINT = FIXTURES / "pplcnetv2_x0_25.pdparams"
V1_CHECKPOINT = FIXTURES / "pplcnet_x0_25.pdparams"
CAT = str(IMAGES_DIR / "cat.jpg")
TOLERANCE = 1e-4


def _load_line(out: str) -> str:
    (line,) = [x.strip() for x in out.splitlines() if x.startswith("    ")]
    return line


def test_info_lists_the_v2_weights(capsys, keras_home):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    title = next(block for block in out.split("\n\n") if block.startswith("PP-LCNetV2"))
    names = [row.split()[0] for row in title.splitlines()[2:]]
    assert names == [preset.name for preset in V2_PRESETS]
    assert "--variant v2_small|v2_base|v2_large" in title.splitlines()[0]


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_convert_a_v2_checkpoint_reproduces_paddleclas(suffix, tmp_path, capsys):
    _, arrays = load_case("pplcnetv2_x0_25")
    output = tmp_path / f"v2{suffix}"
    assert main(["convert", str(V2_CHECKPOINT), "--logits", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "Architecture: PPLCNetV2, scale 0.25, depths [2,2,4,2], 10 classes" in out
    model = eval(_load_line(out), {"keras": keras, "keras_lcnet": keras_lcnet})
    for i in (0, 1):
        logits = model(arrays[f"pixels_{i}"].astype("float32"), training=False)
        assert relative_error(logits, arrays[f"logits_{i}"]) <= TOLERANCE, i


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", str(V2_CHECKPOINT), "--variant", "v2_base"],
         "is a PPLCNetV2, scale 0.25, depths [2,2,4,2], 10 classes checkpoint, not v2_base"),
        (["convert", str(V1_CHECKPOINT), "--variant", "v2_small"],
         "is not a PP-LCNetV2 checkpoint: leave --variant v2_small out"),
        (["convert", str(V2_CHECKPOINT), "--stride-list", "2,2,2,2,2"],
         "--stride-list applies to PP-LCNet"),
    ],
)
def test_convert_refuses_a_wrong_variant_in_one_line(argv, message, tmp_path, capsys):
    output = tmp_path / "x.keras"
    assert main([*argv, "--output", str(output)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-lcnet: error:") and message in err
    assert "\n" not in err and not output.exists()


def test_info_source_describes_a_v2_checkpoint(capsys):
    assert main(["info", str(V2_CHECKPOINT)]) == 0
    out = capsys.readouterr().out
    assert "architecture: PPLCNetV2, scale 0.25, depths [2,2,4,2], 10 classes (read from" in out


def test_predict_builds_the_v2_variant(capsys):
    assert main(["predict", CAT, "--variant", "v2_small", "--weights", "none", "--top", "2",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert "random weights" in captured.err
    assert len(json.loads(captured.out.splitlines()[0])["result"]) == 2


def test_v2_variant_with_a_v1_checkpoint_or_strides_is_one_line(capsys):
    for extra, message in [
        (["--weights", str(V1_CHECKPOINT)], "is not a PPLCNetV2_small checkpoint"),
        (["--weights", "none", "--stride-list", "2,2,2,2,2"], "--stride-list applies"),
    ]:
        assert main(["export", "--variant", "v2_small", *extra, "--output", "m.onnx"]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_unknown_v2_variant_exits_2_listing_the_v2_ones(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", CAT, "--variant", "v2_tiny"])
    assert e.value.code == 2
    assert "v2_small, v2_base, v2_large" in capsys.readouterr().err
