"""decode_outputs: every task's rule against results worked out by hand from PaddleClas'
deploy post-processors (deploy/python/postprocess.py: Topk, ThreshOutput,
MultiLabelThreshOutput, PersonAttribute, VehicleAttribute, TableAttribute)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import keras_lcnet
from keras_lcnet import presets
from keras_lcnet.presets import PRESETS, Preset


def _preset(name, task, classes, labels=None, **postprocess) -> Preset:
    return Preset(
        name=name, variant="x1_0", tag=name, url=f"https://example.invalid/{name}.pdparams",
        classes=classes, task=task, labels=labels, postprocess=postprocess,
    )


def _labels_file(tmp_path, name, labels) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"source": "test", "labels": labels}), encoding="utf-8")
    return str(path)


@pytest.fixture
def task_presets(tmp_path, monkeypatch):
    """One preset per task kind, registered for the test only."""
    added = (
        _preset("t_single", "single_label", 4,
                _labels_file(tmp_path, "single", ["zero", "one", "two", "three"]), top=2),
        _preset("t_binary", "binary", 2,
                _labels_file(tmp_path, "binary", ["nobody", "someone"]), threshold=0.5),
        _preset("t_binary_09", "binary", 2,
                _labels_file(tmp_path, "binary", ["nobody", "someone"]), threshold=0.9),
        _preset("t_multi", "multi_label", 4, None, threshold=0.5),
        _preset("t_person", "person_attribute", 26, None,
                threshold=0.5, glasses_threshold=0.3, hold_threshold=0.6),
        _preset("t_vehicle", "vehicle_attribute", 19, None,
                color_threshold=0.5, type_threshold=0.5),
        _preset("t_table", "table_attribute", 6, None),
        _preset("t_table_07", "table_attribute", 6, None, obstruction_threshold=0.7),
        _preset("t_bad_key", "binary", 2, None, threshold=0.5, thresh=0.5),
        _preset("t_no_threshold", "binary", 2, None),
        _preset("t_short_labels", "single_label", 4, _labels_file(tmp_path, "short", ["a"])),
    )
    monkeypatch.setattr(presets, "PRESETS", (*presets.PRESETS, *added))


def test_single_label_is_top_k_best_first(task_presets):
    outputs = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.05, 0.05, 0.2]], np.float32)
    results = keras_lcnet.decode_outputs(outputs, "t_single")  # the preset's top=2
    assert results == [
        [("two", pytest.approx(0.6)), ("one", pytest.approx(0.2))],
        [("zero", pytest.approx(0.7)), ("three", pytest.approx(0.2))],
    ]
    [three] = keras_lcnet.decode_outputs(outputs[:1], "t_single", top=3)
    assert [label for label, _ in three] == ["two", "one", "zero"]  # 0.1 tie: lower index first
    [everything] = keras_lcnet.decode_outputs(outputs[:1], "t_single", top=10)
    assert len(everything) == 4


def test_imagenet_preset_decodes_to_class_names():
    outputs = np.zeros((1, 1000), np.float32)
    outputs[0, [1, 0, 3]] = [0.5, 0.3, 0.2]
    [top] = keras_lcnet.decode_outputs(outputs, "PPLCNet_x0_25_imagenet", top=3)
    assert top == [("goldfish", 0.5), ("tench", pytest.approx(0.3)),
                   ("tiger_shark", pytest.approx(0.2))]


def test_binary_takes_class_1_from_its_threshold_up(task_presets):
    outputs = np.array([[0.3, 0.7], [0.5, 0.5], [0.8, 0.2], [0.51, 0.49]])
    assert keras_lcnet.decode_outputs(outputs, "t_binary") == [
        ("someone", 0.7),
        ("someone", 0.5),  # exactly at the threshold: class 1
        ("nobody", pytest.approx(0.8)),  # class 0 scores 1 - p[1]
        ("nobody", pytest.approx(0.51)),
    ]
    assert keras_lcnet.decode_outputs(np.array([[0.2, 0.8], [0.1, 0.9]]), "t_binary_09") == [
        ("nobody", pytest.approx(0.2)),
        ("someone", 0.9),
    ]


def test_multi_label_keeps_every_class_at_or_above_the_threshold_in_index_order(task_presets):
    outputs = np.array([[0.9, 0.49, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert keras_lcnet.decode_outputs(outputs, "t_multi") == [[("0", 0.9), ("2", 0.5)], []]


def _person_a() -> np.ndarray:
    res = np.zeros(26)
    res[0] = 0.5  # hat: not above 0.5
    res[1] = 0.31  # glasses: above 0.3
    res[2:4] = [0.2, 0.7]  # long sleeve
    res[4:8] = [0.6, 0.5, 0.0, 0.9]  # UpperStride, UpperSplice
    res[8:14] = [0.1, 0.4, 0.2, 0.5, 0.3, 0.0]  # none above 0.5: the best, Trousers
    res[14] = 0.51  # boots
    res[15:18] = [0.2, 0.5, 0.4]  # best bag ShoulderBag at 0.5: not above, "No bag"
    res[18] = 0.6  # hold: not above 0.6
    res[19:22] = [0.1, 0.2, 0.7]  # AgeOver60
    res[22] = 0.5  # not above 0.5: Male
    res[23:26] = [0.2, 0.3, 0.1]  # Side
    return res


def _person_b() -> np.ndarray:
    res = np.full(26, 0.1)
    res[0] = 0.9  # hat
    res[1] = 0.3  # glasses: exactly 0.3, not above
    res[2:4] = [0.6, 0.6]  # long not above short: ShortSleeve
    res[8:14] = [0.7, 0.0, 0.0, 0.8, 0.0, 0.0]  # LowerStripe, Trousers
    res[14] = 0.5  # not above: No boots
    res[15:18] = [0.9, 0.1, 0.1]  # HandBag
    res[18] = 0.61  # hold
    res[19:22] = [0.5, 0.4, 0.1]  # AgeLess18
    res[22] = 0.51  # Female
    res[23:26] = [0.1, 0.1, 0.8]  # Back
    return res


def test_person_attributes(task_presets):
    results = keras_lcnet.decode_outputs(np.stack([_person_a(), _person_b()]), "t_person")
    assert results == [
        {
            "gender": "Male", "age": "AgeOver60", "direction": "Side", "glasses": True,
            "hat": False, "hold_objects_in_front": False, "bag": "No bag",
            "upper": ["LongSleeve", "UpperStride", "UpperSplice"], "lower": ["Trousers"],
            "shoe": "Boots",
        },
        {
            "gender": "Female", "age": "AgeLess18", "direction": "Back", "glasses": False,
            "hat": True, "hold_objects_in_front": True, "bag": "HandBag",
            "upper": ["ShortSleeve"], "lower": ["LowerStripe", "Trousers"], "shoe": "No boots",
        },
    ]


def test_float32_outputs_compare_as_upstream_does_after_tolist(task_presets):
    # float32(0.3) is 0.30000001192...; upstream compares `res.tolist()` values (float64).
    [result] = keras_lcnet.decode_outputs(_person_b()[None].astype(np.float32), "t_person")
    assert result["glasses"] is True


def test_vehicle_attributes(task_presets):
    a = np.full(19, 0.1)
    a[4] = 0.5  # red, exactly at the colour threshold: reported
    a[10:19] = 0.2
    a[16] = 0.49  # best type bus, below: unknown
    b = np.full(19, 0.2)
    b[9] = 0.3  # best colour black, below: unknown
    b[11] = 0.95  # suv
    assert keras_lcnet.decode_outputs(np.stack([a, b]), "t_vehicle") == [
        {"color": ("red", 0.5), "type": None},
        {"color": None, "type": ("suv", 0.95)},
    ]


def test_table_attributes_use_each_attributes_own_threshold(task_presets):
    outputs = np.array([[0.5, 0.51, 0.2, 0.9, 0.6, 0.5], [0.9, 0.1, 0.8, 0.1, 0.2, 0.7]])
    assert keras_lcnet.decode_outputs(outputs, "t_table") == [
        {"source": "Photo", "number": "Little", "color": "Multicolor", "clarity": "Clear",
         "obstruction": "Without-Obstacles", "angle": "Tilted"},
        {"source": "Scanned", "number": "Numerous", "color": "Black-and-White",
         "clarity": "Blurry", "obstruction": "With-Obstacles", "angle": "Horizontal"},
    ]
    # Upstream's labels would compare obstruction with number_threshold (0.5): "Without".
    [result] = keras_lcnet.decode_outputs(outputs[:1], "t_table_07")
    assert result["obstruction"] == "With-Obstacles"


def test_a_preset_object_and_a_backend_tensor_work():
    import keras

    preset = next(p for p in presets.PRESETS if p.name == "PPLCNet_x0_25_imagenet")
    outputs = keras.ops.one_hot(keras.ops.convert_to_tensor([2]), 1000)
    assert keras_lcnet.decode_outputs(outputs, preset, top=1) == [[("great_white_shark", 1.0)]]


@pytest.mark.parametrize(
    ("outputs", "preset", "kwargs", "message"),
    [
        (np.full(4, 0.25), "t_single", {}, r"shape \(samples, 4\) for preset 't_single'"),
        (np.full((1, 5), 0.2), "t_single", {}, r"\(samples, 4\).*\(1, 5\)"),
        (np.array([[-1.0, 3.0]]), "t_binary", {}, r"\[0, 1\].*'softmax'"),
        (np.array([[np.nan, 0.5, 0.5, 0.5]]), "t_multi", {}, r"\[0, 1\].*'sigmoid'"),
        (np.full((1, 2), 0.5), "t_binary", {"top": 1}, "single_label presets; 't_binary'"),
        (np.full((1, 4), 0.25), "t_single", {"top": 0}, "positive integer"),
        (np.full((1, 4), 0.25), "t_single", {"top": True}, "positive integer"),
        (np.full((1, 2), 0.5), "no_such_preset", {}, "Unknown preset 'no_such_preset'"),
        (np.full((1, 2), 0.5), "t_bad_key", {}, r"sets \['thresh'\].*takes \['threshold'\]"),
        (np.full((1, 2), 0.5), "t_no_threshold", {}, r"does not set \['threshold'\]"),
        (np.full((1, 4), 0.25), "t_short_labels", {}, "holds 1 labels .* has 4 classes"),
    ],
)
def test_bad_outputs_or_presets_are_one_line_errors(
    task_presets, outputs, preset, kwargs, message
):
    with pytest.raises(ValueError, match=message) as info:
        keras_lcnet.decode_outputs(outputs, preset, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_registered_preset_decodes_a_batch(preset):
    """The registry's post-processing parameters and label files fit the decoders."""
    scores = np.random.default_rng(0).uniform(0.0, 1.0, (2, preset.classes)).astype("float32")
    results = keras_lcnet.decode_outputs(scores, preset.name)
    assert len(results) == 2
    if preset.task == "single_label":
        top = preset.postprocess.get("top", 5)
        assert len(results[0]) == min(top, preset.classes)
        best = int(np.argmax(scores[0]))
        assert results[0][0][1] == pytest.approx(float(scores[0, best]))
