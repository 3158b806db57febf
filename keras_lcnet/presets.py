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


# Every published checkpoint; accuracy from IMAGENET_ACCURACY_SOURCE.
PRESETS: tuple[Preset, ...] = (
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


def find_preset(scale_or_variant: float | str, tag: str = "imagenet") -> Preset:
    """Looks up a published checkpoint by width and `weights=` tag.

    Args:
        scale_or_variant: Width multiplier (`1.0`) or suffix (`"x1_0"`).
        tag: `"imagenet"` or `"imagenet_ssld"`.

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
    published = ", ".join(f"{p.variant}/{p.tag}" for p in PRESETS)
    raise ValueError(
        f"PaddleClas publishes no '{tag}' weights for PP-LCNet {variant}. "
        f"Published (width/weights): {published}."
    )
