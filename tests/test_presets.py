"""The preset registry: every entry is complete, consistent, buildable and documented."""

from __future__ import annotations

import inspect
import json
import pathlib
import re
from importlib import resources

import pytest

import keras_lcnet
from keras_lcnet import presets
from keras_lcnet.architecture import MIN_INPUT_SIZE
from keras_lcnet.presets import PRESET_NAMES, PRESETS, TASKS, get_preset

ROOT = pathlib.Path(__file__).parent.parent
PACKAGE = ROOT / "keras_lcnet"
DOCS_PAGE = ROOT / "docs" / "presets.md"
TASK_PRESETS = [p for p in PRESETS if p.tag not in presets.PRETRAINED_TAGS]
# The one task preset without a bundled label list (upstream's has 232 sign codes).
UNLABELLED = {"pulc_traffic_sign"}
# `PPLCNet` arguments a preset sets through its other fields.
SET_ELSEWHERE = {"scale", "classes", "weights", "input_shape", "classifier_activation"}


def _by_name(values: list) -> list:
    return [pytest.param(v, id=v.name) for v in values]


def _label_document(preset) -> object:
    text = resources.files("keras_lcnet").joinpath("data", preset.labels).read_text("utf-8")
    return json.loads(text)


def test_names_are_unique_and_tags_resolve_to_one_preset():
    assert len(set(PRESET_NAMES)) == len(PRESETS)
    pairs = [(p.variant, p.tag) for p in PRESETS]
    assert len(set(pairs)) == len(pairs)
    for preset in TASK_PRESETS:
        assert preset.tag == preset.name
        assert presets.find_preset(preset.variant, preset.tag) is preset


@pytest.mark.parametrize("preset", _by_name(PRESETS))
def test_labels_file_holds_one_label_per_class(preset):
    if preset.labels is None:
        assert preset.name in UNLABELLED
        return
    document = _label_document(preset)
    if preset.tag in presets.PRETRAINED_TAGS:
        assert sorted(document, key=int) == [str(i) for i in range(preset.classes)]
        return
    assert isinstance(document["source"], str) and document["source"].strip()
    labels = document["labels"]
    assert len(labels) == preset.classes
    assert all(isinstance(label, str) and label.strip() for label in labels)
    assert len(set(labels)) == len(labels), "duplicate labels"


def test_every_label_file_is_used_and_shipped():
    label_files = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob("data/labels/*")}
    used = {f"data/{p.labels}" for p in PRESETS if p.labels and p.labels.startswith("labels/")}
    assert label_files == used
    # tomllib is Python 3.11+; the package supports 3.10, and this one line is a JSON list.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = re.search(r"^\[tool\.setuptools\.package-data\]\nkeras_lcnet = (.+)$", pyproject, re.M)
    patterns = json.loads(line.group(1))
    shipped = {p.relative_to(PACKAGE).as_posix() for pat in patterns for p in PACKAGE.glob(pat)}
    assert label_files <= shipped, "add the label files to [tool.setuptools.package-data]"


def _expected_file_name(preset) -> str:
    if preset.tag in presets.PRETRAINED_TAGS:
        ssld = "_ssld" if preset.tag == "imagenet_ssld" else ""
        return f"PPLCNet_{preset.variant}{ssld}_pretrained.pdparams"
    return f"{preset.name.removeprefix('pulc_')}_pretrained.pdparams"


@pytest.mark.parametrize("preset", _by_name(PRESETS))
def test_url_is_https_and_names_the_checkpoint(preset):
    assert preset.url.startswith("https://")
    assert preset.url.endswith("/" + _expected_file_name(preset))
    assert preset.file_name == _expected_file_name(preset)


@pytest.mark.parametrize("preset", _by_name(PRESETS))
def test_task_input_and_postprocess_are_valid(preset):
    assert preset.task in TASKS
    assert preset.variant in presets.VARIANTS
    contract = preset.input
    assert all(isinstance(s, int) and s >= MIN_INPUT_SIZE for s in contract.size)
    assert contract.resize_short is None or contract.resize_short >= max(contract.size)
    assert contract.channel_order in ("RGB", "BGR")
    assert len(contract.mean) == len(contract.std) == 3
    params = dict(preset.postprocess)
    if preset.task == "single_label":
        assert set(params) == {"top"} and params["top"] >= 1
    else:
        assert params and all(key.endswith("threshold") for key in params)
        assert all(0.0 < value < 1.0 for value in params.values())
    if preset.task in ("binary", "multi_label"):
        assert set(params) == {"threshold"}
    assert preset.activation == ("softmax" if preset.task in presets.SOFTMAX_TASKS else "sigmoid")


@pytest.mark.parametrize("preset", _by_name(PRESETS))
def test_architecture_keys_are_pplcnet_arguments(preset):
    arguments = set(inspect.signature(keras_lcnet.PPLCNet).parameters) - SET_ELSEWHERE
    assert set(preset.architecture) <= arguments


@pytest.mark.parametrize("preset", _by_name(PRESETS))
def test_metrics_are_published_with_a_source(preset):
    assert preset.metrics
    for metric in preset.metrics:
        assert metric.name.strip() and metric.source.strip()
        assert 0.0 < metric.value <= 100.0


def _build_config(preset) -> tuple:
    """What decides a preset's graph apart from its width."""
    architecture = tuple(sorted((k, repr(v)) for k, v in preset.architecture.items()))
    return preset.classes, preset.input.size, preset.activation, architecture


def _distinct_builds() -> list:
    configs = {}
    for preset in PRESETS:
        configs.setdefault(_build_config(preset), preset)
    return [pytest.param(p, id=p.name) for p in configs.values()]


@pytest.mark.parametrize("preset", _distinct_builds())
def test_every_preset_builds(preset):
    # Width does not interact with the head, strides or input size: x1_0 stands
    # for every width with the same configuration.
    model = keras_lcnet.PPLCNet(
        scale=1.0,
        classes=preset.classes,
        weights=None,
        input_shape=(*preset.input.size, 3),
        classifier_activation=preset.activation,
        **preset.architecture,
    )
    assert model.output_shape == (None, preset.classes)
    assert model.layers[-1].get_config()["activation"] == preset.activation


def test_get_preset_finds_every_name():
    assert [get_preset(name) for name in PRESET_NAMES] == list(PRESETS)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("person_exists", "pulc_person_exists"), ("pp-lcnet_x1_0_doc_ori", "PP-LCNet_x1_0_doc_ori")],
)
def test_get_preset_suggests_the_closest_name(name, suggestion):
    with pytest.raises(ValueError, match=f"Unknown preset '{name}'. Did you mean '{suggestion}'"):
        get_preset(name)


@pytest.mark.parametrize("name", ["", "resnet50", None, 3])
def test_get_preset_error_lists_the_valid_names_on_one_line(name):
    with pytest.raises(ValueError, match="Valid presets: ") as error:
        get_preset(name)
    message = str(error.value)
    assert "\n" not in message
    assert all(valid in message for valid in PRESET_NAMES)


def test_find_preset_error_lists_only_the_relevant_weights():
    with pytest.raises(ValueError, match="x1_0/pulc_person_exists") as error:
        presets.find_preset(0.5, "pulc_person_exists")
    assert "x1_0/imagenet_ssld" in str(error.value)
    assert "pulc_car_exists" not in str(error.value)


# docs/presets.md: one row per preset in the table of its "Registry" section.
_INPUT_CELL = re.compile(r"(\d+)x(\d+), (?:center crop of short side (\d+)|direct resize)")


def _documented_rows() -> dict[str, list[str]]:
    page = DOCS_PAGE.read_text(encoding="utf-8")
    section = re.search(r"^## Registry$(.*?)(?=^## |\Z)", page, flags=re.MULTILINE | re.DOTALL)
    assert section, "docs/presets.md has no '## Registry' section"
    rows = {}
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            assert cells[0].strip("`") not in rows, f"{cells[0]} twice in docs/presets.md"
            rows[cells[0].strip("`")] = cells
    return rows


def test_docs_table_lists_every_preset():
    assert sorted(_documented_rows()) == sorted(PRESET_NAMES)


@pytest.mark.parametrize("preset", _by_name(PRESETS))
def test_docs_table_matches_the_registry(preset):
    row = _documented_rows().get(preset.name)
    assert row is not None, f"add {preset.name} to docs/presets.md"
    _, task, classes, input_cell, channels, metric, _source = row
    assert task == preset.task
    assert int(classes.replace(",", "")) == preset.classes
    height, width, short = _INPUT_CELL.fullmatch(input_cell).groups()
    assert (int(height), int(width)) == preset.input.size
    assert (int(short) if short else None) == preset.input.resize_short
    assert channels == preset.input.channel_order
    name, value = metric.rsplit(" ", 1)
    assert (name, float(value)) == (preset.metrics[0].name, preset.metrics[0].value)
