"""Data: the PP-LCNet widths and every published checkpoint (a preset), with sources.

This module holds tables and the lookups on them, nothing else, and imports
nothing from the rest of the package: `model` builds from it, `weights`
downloads and loads what it names, the CLI and the docs list it.

A preset says what a checkpoint is (architecture, classes, labels, task),
where it comes from (URL, license), what its network must be fed (input
contract, channel order included), and how good it is (published metrics,
each with its source).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping

# Width multipliers with PaddleClas checkpoints, keyed by the suffix of their
# names (`PPLCNet_x1_0`).
VARIANTS: dict[str, float] = {
    "x0_25": 0.25,
    "x0_35": 0.35,
    "x0_5": 0.5,
    "x0_75": 0.75,
    "x1_0": 1.0,
    "x1_5": 1.5,
    "x2_0": 2.0,
    "x2_5": 2.5,
}

# The `weights=` tags of the ImageNet-1k checkpoints.
PRETRAINED_TAGS = ("imagenet", "imagenet_ssld")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PADDLECLAS_LICENSE = "Apache-2.0 (PaddleClas, PaddlePaddle Authors)"
IMAGENET_URL = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
IMAGENET_ACCURACY_SOURCE = (
    "PaddleClas model zoo, docs/en/models/ImageNet1k/PP-LCNet.md "
    "(ImageNet-1k val, 224x224 center crop of 256)"
)
# The dropout_prob PaddleClas' ImageNet checkpoints were trained with.
PADDLECLAS_DROPOUT = 0.2


def variant_name(scale: float) -> str:
    """Returns the PaddleClas suffix of a width, e.g. `1.0 -> "x1_0"`."""
    return "x" + str(float(scale)).replace(".", "_")


# Task kinds, how a preset's outputs are decoded (PaddleClas' deploy post-processors):
# - "single_label": softmax, top-k labels (`Topk`);
# - "binary": softmax over 2 classes, class 1 when its score >= `threshold` (`ThreshOutput`);
# - "multi_label": sigmoid, every label whose score >= `threshold` (`MultiLabelThreshOutput`);
# - "person_attribute", "vehicle_attribute", "table_attribute": sigmoid, grouped
#   attributes (`PersonAttribute`, `VehicleAttribute`, `TableAttribute`).
TASKS = (
    "single_label",
    "binary",
    "multi_label",
    "person_attribute",
    "vehicle_attribute",
    "table_attribute",
)
SOFTMAX_TASKS = ("single_label", "binary")


@dataclasses.dataclass(frozen=True)
class InputContract:
    """The pixels a checkpoint's own inference pipeline feeds its network.

    Attributes:
        size: `(height, width)` of the network input.
        resize_short: Short side the image is resized to before the center
            crop to `size`; `None` resizes straight to `size` (no crop).
        interpolation: Resize filter (`"bilinear"`: OpenCV's INTER_LINEAR).
        channel_order: `"RGB"` or `"BGR"`: the order of the channels the
            network sees after normalization.
        mean: Per-channel mean of `x / 255`, in `channel_order`.
        std: Per-channel standard deviation, in `channel_order`.
    """

    size: tuple[int, int] = (224, 224)
    resize_short: int | None = 256
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class Metric:
    """A published score of a checkpoint.

    Attributes:
        name: What was measured, e.g. `"top-1"` (percent).
        value: The published value.
        source: Where it was published.
    """

    name: str
    value: float
    source: str


@dataclasses.dataclass(frozen=True)
class Preset:
    """One published PP-LCNet checkpoint and everything needed to use it.

    Attributes:
        name: Preset name, e.g. `"PPLCNet_x1_0_imagenet"`.
        variant: Width suffix, e.g. `"x1_0"`.
        tag: The `weights=` value that loads it into `PPLCNet_<variant>`.
        url: Upstream download address; its last part is the file name.
        classes: Number of classes of the head.
        task: One of `TASKS`: how the outputs are activated and decoded.
        labels: File in `keras_lcnet/data` with the class names, `None`
            where no list is bundled (outputs decode to class indices).
        architecture: `PPLCNet` arguments beyond `scale` and `classes`
            (`stride_list`, `use_last_conv`, `class_expand`, `dropout_rate`).
        input: The input contract of the upstream pipeline.
        postprocess: Parameters of the task's decoder (`top`, `threshold`,
            per-attribute thresholds), as upstream's deploy config sets them.
        metrics: Published scores with their sources.
        source: Where the preset's facts (architecture, input, labels,
            post-processing) were read.
        license: License of the weights.
    """

    name: str
    variant: str
    tag: str
    url: str
    classes: int = 1000
    task: str = "single_label"
    labels: str | None = "imagenet_class_index.json"
    architecture: Mapping = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({"dropout_rate": PADDLECLAS_DROPOUT})
    )
    input: InputContract = InputContract()
    postprocess: Mapping = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({"top": 5})
    )
    metrics: tuple[Metric, ...] = ()
    source: str = "PaddleClas ppcls/arch/backbone/legendary_models/pp_lcnet.py (MODEL_URLS)"
    license: str = PADDLECLAS_LICENSE

    @property
    def activation(self) -> str:
        """The output activation of the task: `"softmax"` or `"sigmoid"`."""
        return "softmax" if self.task in SOFTMAX_TASKS else "sigmoid"

    @property
    def scale(self) -> float:
        return VARIANTS[self.variant]

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def metric(self, name: str) -> float | None:
        """The published value of metric `name`, or `None` where unpublished."""
        return next((m.value for m in self.metrics if m.name == name), None)

    @property
    def top1(self) -> float | None:
        return self.metric("top-1")

    @property
    def top5(self) -> float | None:
        return self.metric("top-5")


def _imagenet(variant: str, tag: str, top1: float, top5: float | None) -> Preset:
    ssld = "_ssld" if tag == "imagenet_ssld" else ""
    metrics = [Metric("top-1", top1, IMAGENET_ACCURACY_SOURCE)]
    if top5 is not None:
        metrics.append(Metric("top-5", top5, IMAGENET_ACCURACY_SOURCE))
    return Preset(
        name=f"PPLCNet_{variant}_{tag}",
        variant=variant,
        tag=tag,
        url=f"{IMAGENET_URL}PPLCNet_{variant}{ssld}_pretrained.pdparams",
        metrics=tuple(metrics),
    )


# PaddleClas' ImageNet-1k checkpoints; accuracy from IMAGENET_ACCURACY_SOURCE.
IMAGENET_PRESETS: tuple[Preset, ...] = (
    _imagenet("x0_25", "imagenet", 51.86, 75.65),
    _imagenet("x0_35", "imagenet", 58.09, 80.83),
    _imagenet("x0_5", "imagenet", 63.14, 84.66),
    _imagenet("x0_75", "imagenet", 68.18, 88.30),
    _imagenet("x1_0", "imagenet", 71.32, 90.03),
    _imagenet("x1_5", "imagenet", 73.71, 91.53),
    _imagenet("x2_0", "imagenet", 75.18, 92.27),
    _imagenet("x2_5", "imagenet", 76.60, 93.00),
    _imagenet("x0_25", "imagenet_ssld", 53.43, None),
    _imagenet("x0_5", "imagenet_ssld", 66.10, 86.46),
    _imagenet("x1_0", "imagenet_ssld", 74.39, 92.09),
    _imagenet("x2_5", "imagenet_ssld", 80.82, 95.33),
)


# Task presets: the PP-LCNet models PaddleClas (PULC) and PaddleX publish for
# one task each. Facts come from the project's fact sheet for issue 11, which
# read upstream at the commits named here; each preset's `source` names the
# files. Unverified for every task checkpoint: whether its keys carry the
# `Student.` prefix of PaddleClas' distillation models (loaders accept both).
PADDLECLAS_COMMIT = "d178931"  # PaddleClas `develop`, 2024-10-18
PULC_URL = "https://paddleclas.bj.bcebos.com/models/PULC/pretrained/"
PULC_METRIC_SOURCE = f"PaddleClas docs/zh_CN/models/PULC/model_list.md @{PADDLECLAS_COMMIT}"
PADDLEX_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/"
PADDLEX_LICENSE = "Apache-2.0 (PaddleX, PaddlePaddle Authors)"
PADDLEX_CONFIGS = "PaddleX paddlex/repo_apis/PaddleClas_api/configs/"

# PaddleClas' `stride_list` for text lines: from blocks3 on, halve the height only.
TEXTLINE_STRIDES = (2, (2, 1), (2, 1), (2, 1), (2, 1))
_HEAD = {"dropout_rate": PADDLECLAS_DROPOUT}
_NO_LAST_CONV = {**_HEAD, "use_last_conv": False}
_TEXTLINE = {**_HEAD, "stride_list": TEXTLINE_STRIDES}

# Upstream `ResizeImage size=[w, h]`: a direct resize to (h, w), no crop.
TEXTLINE_INPUT = InputContract(size=(80, 160), resize_short=None)
PERSON_ATTRIBUTE_INPUT = InputContract(size=(256, 192), resize_short=None)
VEHICLE_ATTRIBUTE_INPUT = InputContract(size=(192, 256), resize_short=None)
TABLE_ATTRIBUTE_INPUT = InputContract(size=(224, 224), resize_short=None)


def _pulc_metric(name: str, value: float, note: str = "") -> Metric:
    return Metric(name, value, f"{PULC_METRIC_SOURCE} ({note})" if note else PULC_METRIC_SOURCE)


def _pulc(
    task: str,
    classes: int,
    kind: str,
    postprocess: dict,
    metric: Metric,
    labels: str | None,
    architecture: dict = _HEAD,
    **fields,
) -> Preset:
    # Every PULC model is PPLCNet_x1_0; its input and labels are those of the
    # task's deploy config, as PaddleClas' `paddleclas` package runs it.
    source = (
        f"PaddleClas ppcls/configs/PULC/{task}/PPLCNet_x1_0.yaml, "
        f"deploy/configs/PULC/{task}/inference_{task}.yaml @{PADDLECLAS_COMMIT}"
    )
    return Preset(
        name=f"pulc_{task}",
        variant="x1_0",
        tag=f"pulc_{task}",
        url=f"{PULC_URL}{task}_pretrained.pdparams",
        classes=classes,
        task=kind,
        labels=labels,
        architecture=types.MappingProxyType(architecture),
        postprocess=types.MappingProxyType(postprocess),
        metrics=(metric,),
        source=fields.pop("source", source),
        **fields,
    )


def _paddlex(
    name: str,
    config_commit: str,
    classes: int,
    kind: str,
    postprocess: dict,
    metric: Metric,
    labels: str,
    architecture: dict = _HEAD,
    **fields,
) -> Preset:
    # PaddleX keeps a model's architecture, transforms and post-processing in
    # its repo_apis config, named after the model.
    return Preset(
        name=name,
        variant="_".join(name.split("_")[1:3]),  # PP-LCNet_x1_0_... -> x1_0
        tag=name,
        url=f"{PADDLEX_URL}{name}_pretrained.pdparams",
        classes=classes,
        task=kind,
        labels=labels,
        architecture=types.MappingProxyType(architecture),
        postprocess=types.MappingProxyType(postprocess),
        metrics=(metric,),
        source=f"{PADDLEX_CONFIGS}{name}.yaml @{config_commit}",
        license=PADDLEX_LICENSE,
        **fields,
    )


TASK_PRESETS: tuple[Preset, ...] = (
    # PULC, in PaddleClas' model-list order. Binary tasks take the deploy
    # config's threshold; person_exists' and car_exists' training configs say 0.9.
    _pulc(
        "person_exists", 2, "binary", {"threshold": 0.5},
        _pulc_metric("TprAtFpr", 96.23, "Tpr in %, eval config sets no max_fpr"),
        "labels/pulc_person_exists.json",
    ),
    _pulc(
        "car_exists", 2, "binary", {"threshold": 0.5},
        _pulc_metric("TprAtFpr", 95.92, "Tpr in % at max_fpr 0.01"),
        "labels/pulc_car_exists.json",
    ),
    _pulc(
        "code_exists", 2, "binary", {"threshold": 0.5},
        _pulc_metric("top-1", 94.9, "the task page gives 94.94"),
        "labels/pulc_code_exists.json",
    ),
    _pulc(
        "safety_helmet", 2, "binary", {"threshold": 0.5},
        _pulc_metric("TprAtFpr", 99.38, "Tpr in % at max_fpr 0.0001"),
        "labels/pulc_safety_helmet.json",
    ),
    # Label 1 is "blur" in the deploy config, "blured" in the task page's
    # example output; the training config decodes with Topk 1, not ThreshOutput.
    _pulc(
        "clarity_assessment", 2, "binary", {"threshold": 0.5},
        _pulc_metric("top-1", 95.3),
        "labels/pulc_clarity_assessment.json",
        architecture=_NO_LAST_CONV,
    ),
    # No deploy config upstream (the docs name one that does not exist): input
    # and top-1 decoding are the training config's Infer section.
    _pulc(
        "image_orientation", 4, "single_label", {"top": 1},
        _pulc_metric("top-1", 89.99),
        "labels/image_orientation.json",
        architecture=_NO_LAST_CONV,
        source=f"PaddleClas ppcls/configs/PULC/image_orientation/PPLCNet_x1_0.yaml "
        f"@{PADDLECLAS_COMMIT} (no deploy config)",
    ),
    _pulc(
        "text_image_orientation", 4, "single_label", {"top": 2},
        _pulc_metric("top-1", 99.06),
        "labels/text_image_orientation.json",
    ),
    _pulc(
        "textline_orientation", 2, "single_label", {"top": 1},
        _pulc_metric("top-1", 96.01),
        "labels/textline_orientation.json",
        architecture=_TEXTLINE,
        input=TEXTLINE_INPUT,
    ),
    _pulc(
        "language_classification", 10, "single_label", {"top": 2},
        _pulc_metric("top-1", 99.26),
        "labels/language_classification.json",
        architecture=_TEXTLINE,
        input=TEXTLINE_INPUT,
    ),
    # 232 sign codes, not bundled: PaddleClas keeps them in
    # ppcls/utils/PULC_label_list/traffic_sign_label_list.txt.
    _pulc(
        "traffic_sign", 232, "single_label", {"top": 5},
        _pulc_metric("top-1", 98.35),
        None,
    ),
    _pulc(
        "person_attribute", 26, "person_attribute",
        {"threshold": 0.5, "glasses_threshold": 0.3, "hold_threshold": 0.6},
        _pulc_metric("mA", 78.59, "PA100k"),
        "labels/pulc_person_attribute.json",
        input=PERSON_ATTRIBUTE_INPUT,
    ),
    _pulc(
        "vehicle_attribute", 19, "vehicle_attribute",
        {"color_threshold": 0.5, "type_threshold": 0.5},
        _pulc_metric("mA", 90.81, "VeRi"),
        "labels/pulc_vehicle_attribute.json",
        input=VEHICLE_ATTRIBUTE_INPUT,
    ),
    # Upstream's decoder compares attributes 4 and 5 with number_threshold, not
    # with their own; all six are 0.5 here, so the two readings agree.
    _pulc(
        "table_attribute", 6, "table_attribute",
        {
            f"{attribute}_threshold": 0.5
            for attribute in ("source", "number", "color", "clarity", "obstruction", "angle")
        },
        _pulc_metric("mA", 88.1),
        "labels/pulc_table_attribute.json",
        input=TABLE_ATTRIBUTE_INPUT,
    ),
    # PaddleX (PaddleOCR 3 runs the same modules). Resize interpolation and
    # channel order as PaddleClas' deploy pipeline (bilinear, RGB): PaddleX'
    # runner reads RGB; its resize filter is not in the fact sheet.
    # Not registered: PP-LCNet_x1_0_ML, whose head is an ML-Decoder (80 COCO
    # labels at 448x448), not PP-LCNet's; PaddleX' ImageNet copies
    # (PP-LCNet_x0_25 ... x2_5), which publish the same top-1 as the
    # PaddleClas `imagenet` weights above.
    #
    # The config says use_last_conv False; Hugging Face's port of the same
    # model builds the 1280-channel last conv. Which one the published weights
    # have is unverified (a checkpoint's shapes tell).
    _paddlex(
        "PP-LCNet_x1_0_doc_ori", "1637774f", 4, "single_label", {"top": 1},
        Metric(
            "top-1", 99.06,
            "PaddleX docs, doc_text_orientation module @0aab068d (own set of 1000 images)",
        ),
        "labels/text_image_orientation.json",
        architecture=_NO_LAST_CONV,
    ),
    _paddlex(
        "PP-LCNet_x0_25_textline_ori", "d3d6cb35", 2, "single_label", {"top": 1},
        Metric("top-1", 98.85, "PaddleX docs, textline_orientation module @054f6944"),
        "labels/textline_orientation.json",
        architecture=_TEXTLINE,
        input=TEXTLINE_INPUT,
    ),
    _paddlex(
        "PP-LCNet_x1_0_textline_ori", "241555ef", 2, "single_label", {"top": 1},
        Metric("top-1", 99.42, "PaddleX docs, textline_orientation module @054f6944"),
        "labels/textline_orientation.json",
        architecture=_TEXTLINE,
        input=TEXTLINE_INPUT,
    ),
    # Upstream asks Topk for 5 of its 2 classes, so it returns both.
    _paddlex(
        "PP-LCNet_x1_0_table_cls", "282b62b3", 2, "single_label", {"top": 5},
        Metric("top-1", 94.2, "PaddleX docs, table_classification module @0597672d"),
        "labels/table_classification.json",
    ),
    # Same architecture and input as pulc_person_attribute, other weights file
    # and metric; whether the weights differ is unverified. The module page
    # gives the threshold as 0.5 in its table and 0.7 in one sentence.
    _paddlex(
        "PP-LCNet_x1_0_pedestrian_attribute", "5029b505", 26, "multi_label", {"threshold": 0.5},
        Metric("mA", 92.2, "PaddleX docs, pedestrian attribute module (PaddleX' own data set)"),
        "labels/pedestrian_attribute.json",
        input=PERSON_ATTRIBUTE_INPUT,
    ),
    _paddlex(
        "PP-LCNet_x1_0_vehicle_attribute", "5029b505", 19, "multi_label", {"threshold": 0.5},
        Metric("mA", 91.7, "PaddleX docs, vehicle attribute module (VeRi)"),
        "labels/vehicle_attribute.json",
        input=VEHICLE_ATTRIBUTE_INPUT,
    ),
)

# Every published checkpoint.
PRESETS: tuple[Preset, ...] = IMAGENET_PRESETS + TASK_PRESETS
PRESET_NAMES: tuple[str, ...] = tuple(preset.name for preset in PRESETS)


def preset_named(name: object) -> Preset | None:
    """The preset called `name`, or `None` (for anything else, strings or not)."""
    if not isinstance(name, str):
        return None
    # PRESETS is read at call time, so a registry extended at run time is seen.
    return next((preset for preset in PRESETS if preset.name == name), None)


def get_preset(name: str | Preset) -> Preset:
    """Looks up a published checkpoint by preset name.

    Args:
        name: A name in `PRESET_NAMES`, e.g. `"pulc_person_exists"` or
            `"PPLCNet_x1_0_imagenet"`; a `Preset` is returned as it is.

    Returns:
        The `Preset`.

    Raises:
        ValueError: No preset has that name; the message suggests the
            closest name and lists them all.
    """
    if isinstance(name, Preset):
        return name
    found = preset_named(name)
    if found is not None:
        return found
    names = [preset.name for preset in PRESETS]
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), lowered, n=1)
    hint = f" Did you mean '{lowered[close[0]]}'?" if close else ""
    raise ValueError(f"Unknown preset {name!r}.{hint} Valid presets: {', '.join(names)}.")


def find_preset(scale_or_variant: float | str, tag: str = "imagenet") -> Preset:
    """Looks up a published checkpoint by width and `weights=` tag.

    Args:
        scale_or_variant: Width multiplier (`1.0`) or suffix (`"x1_0"`).
        tag: `"imagenet"`, `"imagenet_ssld"`, or a task preset's name
            (its `tag`), e.g. `"pulc_person_exists"`.

    Returns:
        The `Preset`.

    Raises:
        ValueError: No such checkpoint was published; the message lists
            those that were.
    """
    variant = scale_or_variant
    if not isinstance(variant, str):
        variant = variant_name(variant)
    elif not variant.startswith("x"):
        variant = f"x{variant}"
    for preset in PRESETS:
        if (preset.variant, preset.tag) == (variant, tag):
            return preset
    published = ", ".join(
        f"{p.variant}/{p.tag}" for p in PRESETS if p.tag in (*PRETRAINED_TAGS, tag)
    )
    raise ValueError(
        f"PaddleClas publishes no '{tag}' weights for PP-LCNet {variant}. "
        f"Published (width/weights): {published}."
    )


# PP-LCNetV2's ImageNet-1k checkpoints, for `PPLCNetV2_{small,base,large}(weights=...)`.
# Kept apart from PRESETS: those are PP-LCNet (V1) widths (`Preset.scale`), which
# `from_preset`, the CLI and the docs tables build; a V2 preset's `variant` is
# "small", "base" or "large". URLs: ppcls' MODEL_URLS for the plain weights; the
# SSLD file and both accuracies: the model page (V2_ACCURACY_SOURCE), which
# publishes PPLCNetV2_base and PPLCNetV2_base_ssld only. No accuracy is
# published for small and large, so none is recorded.
V2_SOURCE = "PaddleClas ppcls/arch/backbone/legendary_models/pp_lcnet_v2.py (MODEL_URLS)"
V2_ACCURACY_SOURCE = (
    "PaddleClas docs/en/models/PP-LCNetV2_en.md (ImageNet-1k val, 224x224 center crop of 256)"
)


def _imagenet_v2(
    variant: str, tag: str, top1: float | None = None, top5: float | None = None
) -> Preset:
    ssld = "_ssld" if tag == "imagenet_ssld" else ""
    metrics = tuple(
        Metric(name, value, V2_ACCURACY_SOURCE)
        for name, value in (("top-1", top1), ("top-5", top5))
        if value is not None
    )
    return Preset(
        name=f"PPLCNetV2_{variant}_{tag}",
        variant=variant,
        tag=tag,
        url=f"{IMAGENET_URL}PPLCNetV2_{variant}{ssld}_pretrained.pdparams",
        metrics=metrics,
        source=V2_ACCURACY_SOURCE if ssld else V2_SOURCE,
    )


V2_PRESETS: tuple[Preset, ...] = (
    _imagenet_v2("small", "imagenet"),
    _imagenet_v2("base", "imagenet", 77.04, 93.27),
    _imagenet_v2("large", "imagenet"),
    _imagenet_v2("base", "imagenet_ssld", 80.07, 94.87),
)


def find_preset_v2(variant: str, tag: str = "imagenet") -> Preset:
    """Looks up a published PP-LCNetV2 checkpoint by variant and `weights=` tag.

    Args:
        variant: `"small"`, `"base"` or `"large"`.
        tag: `"imagenet"` or `"imagenet_ssld"`.

    Returns:
        The `Preset`.

    Raises:
        ValueError: No such checkpoint was published; the message lists
            those that were.
    """
    for preset in V2_PRESETS:
        if (preset.variant, preset.tag) == (variant, tag):
            return preset
    published = ", ".join(f"{p.variant}/{p.tag}" for p in V2_PRESETS)
    raise ValueError(
        f"PaddleClas publishes no '{tag}' weights for PPLCNetV2_{variant}. "
        f"Published (variant/weights): {published}."
    )
