"""from_checkpoint: the architecture comes from the file, parity with PaddleClas holds."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import FIXTURES, load_case, relative_error

import keras_lcnet
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError
from keras_lcnet.pretrained import checkpoint_config

TEXTLINE = FIXTURES / "pplcnet_x0_25_textline.pdparams"
NO_LAST_CONV = FIXTURES / "pplcnet_x0_25_no_last_conv.pdparams"


@pytest.mark.parametrize("case", ["pplcnet_x0_25_textline", "pplcnet_x0_25_no_last_conv"])
def test_from_checkpoint_reproduces_paddleclas(case):
    config, arrays = load_case(case)
    model = keras_lcnet.from_checkpoint(
        FIXTURES / f"{case}.pdparams", stride_list=config["stride_list"],
        dropout_rate=config["dropout_prob"], classifier_activation=None,
    )
    assert model.output_shape[-1] == config["class_num"]
    assert model.get_layer("conv1").filters == 8  # x0_25, read off the file
    assert any(layer.name == "last_conv" for layer in model.layers) == config["use_last_conv"]
    pixels = arrays["pixels_0"].astype("float32")
    assert relative_error(model.predict(pixels, verbose=0), arrays["logits_0"]) <= 1e-4


def test_checkpoint_config_reads_the_head_and_refuses_contradictions():
    state = read_pdparams(NO_LAST_CONV)
    config = checkpoint_config(state, "f", stride_list=[2, 2, 2, 2, 2])
    assert config["use_last_conv"] is False and config["scale"] == 0.25
    assert config["stride_list"] == [2, 2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"classes=3 does not match f, a PPLCNet_x0_25"):
        checkpoint_config(state, "f", classes=3)
    with pytest.raises(ValueError, match=r"scale=1.0 \(x1_0\) does not match"):
        checkpoint_config(state, "f", scale=1.0)
    # None means "as the file says"; the output activation is not determined by it.
    assert checkpoint_config(state, "f", classes=None, classifier_activation=None)[
        "classifier_activation"] is None


def test_a_checkpoint_without_classifier_builds_a_backbone(tmp_path):
    state = read_pdparams(TEXTLINE)
    body = {k: v for k, v in state.items() if not k.startswith(("fc.", "last_conv."))}
    path = tmp_path / "body.pdparams"
    with open(path, "wb") as f:
        pickle.dump(body, f, protocol=4)
    with pytest.raises(ValueError, match="checkpoint with no classifier: leave classes out"):
        keras_lcnet.from_checkpoint(path, classes=5)
    model = keras_lcnet.from_checkpoint(path, classifier_activation=None)  # head args dropped
    assert model.output_shape[-1] == 128  # blocks6 channels of x0_25
    assert np.array_equal(model.get_layer("conv1").kernel.numpy(),
                          state["conv1.conv.weight"].transpose(2, 3, 1, 0))


def test_a_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": np.zeros((8, 3, 3, 3), np.float32)}, f, protocol=4)
    with pytest.raises(CheckpointError, match=r"no 4-D tensor 'conv1\.conv\.weight'"):
        keras_lcnet.from_checkpoint(path)
