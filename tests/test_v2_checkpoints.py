"""PP-LCNetV2 `.pdparams` through from_checkpoint and describe_checkpoint (shapes alone).

The fixture is tools/make_v2_fixtures.py's PaddleClas `PPLCNetV2(scale=0.25,
depths=[2, 2, 4, 2])` with 10 classes and its PaddleClas logits.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FIXTURES, load_case, relative_error

import keras_lcnet
from keras_lcnet.architecture_v2 import VARIANTS_V2
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.checkpoints.shapes_v2 import infer_architecture_v2
from keras_lcnet.errors import CheckpointError

CASE = "pplcnetv2_x0_25"
CHECKPOINT = FIXTURES / f"{CASE}.pdparams"
TOLERANCE = 1e-4


@pytest.mark.parametrize("deploy", [False, True])
def test_from_checkpoint_builds_the_v2_with_paddleclas_logits(deploy):
    config, arrays = load_case(CASE)
    model = keras_lcnet.from_checkpoint(CHECKPOINT, deploy=deploy, classifier_activation=None)
    assert model.output.shape[-1] == config["class_num"]
    for i in (0, 1):
        logits = model.predict(arrays[f"pixels_{i}"].astype(np.float32), verbose=0)
        assert relative_error(logits, arrays[f"logits_{i}"]) <= TOLERANCE, i


def test_describe_checkpoint_reads_scale_and_depths():
    config, _ = load_case(CASE)
    described = keras_lcnet.describe_checkpoint(CHECKPOINT)
    assert described["form"] == "pdparams"
    assert described["architecture"] == {
        "variant": None, "scale": config["scale"], "depths": config["depths"],
        "include_top": True, "classes": config["class_num"],
    }


@pytest.mark.parametrize("variant", ["small", "base", "large"])
def test_infer_architecture_names_the_published_variants(variant):
    model = getattr(keras_lcnet, f"PPLCNetV2_{variant}")(weights=None)
    scale, depths = VARIANTS_V2[variant]
    state = {"stem.0.conv.weight": np.zeros(model.get_layer("stem_0").kernel.shape[::-1])}
    for s, depth in enumerate(depths):
        for b in range(depth):
            layer = model.get_layer(f"stages_{s}_{b}_pw_conv" + ("_2" if s == 2 else ""))
            state[f"stages.{s}.{b}.pw_conv.conv.weight"] = np.zeros(layer.kernel.shape[::-1])
    found = infer_architecture_v2(state)
    assert (found["variant"], found["scale"], found["depths"]) == (variant, scale, list(depths))
    assert not found["include_top"] and found["classes"] is None


def test_checkpoint_without_a_stage_is_one_line():
    state = {k: v for k, v in read_pdparams(CHECKPOINT).items() if not k.startswith("stages.3")}
    with pytest.raises(CheckpointError, match=r"not in stages 0-3") as e:
        infer_architecture_v2(state, "x.pdparams")
    assert "\n" not in str(e.value)


def test_override_contradicting_the_checkpoint_is_one_line():
    with pytest.raises(ValueError, match=r"depths=\[2, 2, 6, 2\] contradicts .*leave depths out"):
        keras_lcnet.from_checkpoint(CHECKPOINT, depths=[2, 2, 6, 2])
