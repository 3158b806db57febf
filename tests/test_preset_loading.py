"""Every task preset loads a checkpoint of its own architecture by name and decodes to its labels.

Each preset's file is published in the test mirror (never the network): PaddleClas-named
tensors of the preset's architecture, from the seeded recipe of tests/test_preset_parity.py
with the preset's class count. Parity itself is that module's job; this one proves that the
registry, the download/cache path, the checkpoint mapping, `load_image(preset=)` and
`decode_outputs` fit together for every registered preset.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR, load_case, seeded_paddle_weights

import keras_lcnet
from keras_lcnet.decode import preset_labels
from keras_lcnet.presets import TASK_PRESETS, Preset

IMAGE = IMAGES_DIR / "cat.jpg"


def _case(preset: Preset) -> str:
    """The seeded fixture whose architecture the preset has (only the class count may differ)."""
    architecture = preset.architecture
    if architecture.get("stride_list") is not None:
        return "preset_x1_0_textline"
    if architecture.get("use_last_conv") is False:
        return "preset_x1_0_no_last_conv"
    return "preset_x1_0"


def _publish(preset: Preset, mirror) -> None:
    """Writes a checkpoint of the preset's architecture into the mirror, under its file name."""
    if preset.variant == "x0_25":  # a real PaddleClas text-line checkpoint, 2 classes
        shutil.copy(FIXTURES / "pplcnet_x0_25_textline.pdparams", mirror / preset.file_name)
        return
    assert preset.variant == "x1_0", preset.name
    config, arrays = load_case(_case(preset))
    shapes = dict(config["param_shapes"])
    shapes["fc.weight"] = [shapes["fc.weight"][0], preset.classes]
    shapes["fc.bias"] = [preset.classes]
    state = seeded_paddle_weights(shapes, seed=config["seed"])
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in config["bn_shapes"].values()])
    for key, start, stop in zip(config["bn_shapes"], offsets[:-1], offsets[1:], strict=True):
        state[key] = arrays["bn_state"][start:stop].reshape(config["bn_shapes"][key])
    with open(mirror / preset.file_name, "wb") as f:
        pickle.dump(state, f, protocol=4)


@pytest.mark.slow
@pytest.mark.parametrize("preset", TASK_PRESETS, ids=lambda p: p.name)
def test_every_task_preset_loads_by_name_and_decodes(preset, keras_home, tmp_path):
    _publish(preset, tmp_path / "mirror")
    model = keras_lcnet.from_preset(preset.name)
    image = keras_lcnet.load_image(IMAGE, preset=preset.name)
    assert image.shape == (1, *preset.input.size, 3)
    scores = model.predict(image, verbose=0)
    assert scores.shape == (1, preset.classes)
    if preset.activation == "softmax":
        assert scores.sum() == pytest.approx(1.0, abs=1e-4)
    (result,) = keras_lcnet.decode_outputs(scores, preset.name)
    labels = preset_labels(preset)
    names = {name for name, _ in (result if isinstance(result, list) else [])}
    if preset.task == "binary":
        assert result[0] in labels
    elif isinstance(result, list):
        assert names <= set(labels)
    else:  # the attribute tasks: one entry per attribute group
        assert result and all(isinstance(key, str) for key in result)
    # The converted weights were cached: the mirror is not needed a second time.
    (tmp_path / "mirror" / preset.file_name).unlink()
    again = keras_lcnet.from_preset(preset.name).predict(image, verbose=0)
    np.testing.assert_array_equal(again, scores)


def test_label_files_are_the_ones_decoding_uses():
    """`preset_labels` reads the bundled JSON the registry names (guards the path join)."""
    preset = next(p for p in TASK_PRESETS if p.labels is not None)
    bundled = json.loads(
        (FIXTURES.parent.parent / "keras_lcnet" / "data" / preset.labels).read_text()
    )
    assert list(preset_labels(preset)) == bundled["labels"]
