"""Latency of PP-LCNet (V1 and V2) beside keras.applications' MobileNets, on this CPU.

Each model is exported once per format (LiteRT float32 and int8, ONNX float32,
OpenVINO IR f32, bf16 and NNCF int8) and timed at batch 1, 224x224:
LiteRT/XNNPACK float32 and int8, onnxruntime, and OpenVINO f32, bf16 (where
the CPU has bfloat16 arithmetic) and int8, each at 1 and 2 threads, and Keras
`predict_on_batch` (TensorFlow, 2 threads). The runs are interleaved: every
round times a short block of each configuration in turn, so a slow phase of a
noisy machine hits all of them alike and their ratios stay fair.

    python benchmarks/latency.py           # writes results.md and latency_vs_top1.png here
    python benchmarks/latency.py --quick   # x0_25, x1_0, MobileNetV3Large, 3 rounds; prints only
    python benchmarks/latency.py --quick --models x0_25,v2_small --output-dir /tmp/bench

Weights are random (`weights=None`): ImageNet weights cannot be downloaded on
the machines this runs on, and latency does not depend on weight values. Batch
norm statistics are recalibrated on the sample images first, so int8 models
get realistic activation ranges (see `keras_lcnet.deploy.verify.calibrate_batchnorm`).
PP-LCNetV2 is calibrated in branch form, then folded (`keras_lcnet.reparameterize`)
and timed in its deploy form.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import pathlib
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata

import keras
import numpy as np

import keras_lcnet
from keras_lcnet import PPLCNet, load_image
from keras_lcnet.architecture_v2 import VARIANTS_V2
from keras_lcnet.deploy import ExportReport, export_litert, export_onnx, export_openvino
from keras_lcnet.deploy.comparison import cpu_flags, describe_cpu_flags
from keras_lcnet.deploy.latency import cpu_model, interleave
from keras_lcnet.deploy.runtime import Runtime, openvino_config, openvino_supports_bf16, timed_ms
from keras_lcnet.deploy.verify import calibrate_batchnorm
from keras_lcnet.presets import (
    IMAGENET_ACCURACY_SOURCE,
    PRESETS,
    V2_ACCURACY_SOURCE,
    V2_PRESETS,
    VARIANTS,
)

HERE = pathlib.Path(__file__).parent
IMAGES = HERE.parent / "examples" / "images"
SIZE = 224
KERAS_THREADS = 2
PLOT_THREADS = 2
# Published top-1 of the float models in the plot. PP-LCNet and PP-LCNetV2: the
# registry (PaddleClas publishes V2 base only; small and large have none, so no
# point). MobileNetV3: the table in the keras.applications.MobileNetV3Large
# docstring (keras/src/applications/mobilenet_v3.py, Keras 3.15.1), checkpoints
# mobilenet_v3_{large,small}_1.0_224. Keras 3's MobileNetV2 docstring has no
# such table, so MobileNetV2 is timed but left out of the plot.
MOBILENET_TOP1 = {"MobileNetV3Large": 75.6, "MobileNetV3Small": 68.1}
MOBILENET_TOP1_SOURCE = "keras.applications.MobileNetV3Large docstring (Keras 3.15.1)"
MOBILENETS = ("MobileNetV3Small", "MobileNetV3Large", "MobileNetV2")
# `--models` names: PP-LCNet widths, PP-LCNetV2 variants (v2_*) and the baselines.
MODEL_KEYS = (*VARIANTS, *(f"v2_{v}" for v in VARIANTS_V2), *MOBILENETS)
QUICK_MODELS = ("x0_25", "x1_0", "MobileNetV3Large")
CONFIGS = (  # (column, export kind, threads)
    ("LiteRT fp32 1T", "fp32", 1),
    ("LiteRT fp32 2T", "fp32", 2),
    ("LiteRT int8 1T", "int8", 1),
    ("LiteRT int8 2T", "int8", 2),
    ("ORT fp32 1T", "onnx", 1),
    ("ORT fp32 2T", "onnx", 2),
    ("OpenVINO f32 1T", "ov_f32", 1),
    ("OpenVINO f32 2T", "ov_f32", 2),
    ("OpenVINO bf16 1T", "ov_bf16", 1),
    ("OpenVINO bf16 2T", "ov_bf16", 2),
    ("OpenVINO int8 1T", "ov_int8", 1),
    ("OpenVINO int8 2T", "ov_int8", 2),
    ("Keras TF 2T", "keras", KERAS_THREADS),
)
# Float32 configurations: those the plot picks each model's fastest from. bf16
# and int8 are left out: the published top-1 is the float32 model's.
FLOAT_RUNTIMES = {"fp32": "LiteRT", "onnx": "ORT", "ov_f32": "OpenVINO", "keras": "Keras TF"}
NO_BF16 = "no BF16 on this CPU"
FAMILY_COLORS = {"PP-LCNet": "C0", "PP-LCNetV2": "C1", "MobileNet": "C2"}


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclasses.dataclass
class Candidate:
    """A model to time and what it needs."""

    name: str
    model: keras.Model
    top1: float | None
    preprocess: Callable[[np.ndarray], np.ndarray] = _identity
    family: str = "PP-LCNet"
    reports: dict[str, ExportReport] = dataclasses.field(default_factory=dict)


class KerasRunner:
    """Times `model.predict_on_batch` like `keras_lcnet.deploy.runtime.Runtime` times a file."""

    runtime = "Keras predict_on_batch (TensorFlow)"

    def __init__(self, name: str, model: keras.Model, x: np.ndarray) -> None:
        import tensorflow as tf

        self.path, self.model, self.x = name, model, x
        self.version = f"tensorflow {tf.__version__}, keras {keras.__version__}"
        self.num_threads, self.input_shape, self.input_dtype = KERAS_THREADS, x.shape, x.dtype

    def run(self) -> float:
        return timed_ms(lambda: self.model.predict_on_batch(self.x))


def parse_models(spec: str) -> tuple[str, ...]:
    """The `--models` comma list, checked and in table order (V1, V2, baselines)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_KEYS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose a comma list "
            f"from: {', '.join(MODEL_KEYS)}")
    return tuple(k for k in MODEL_KEYS if k in names)


def sample_images() -> np.ndarray:
    """The bundled photos, at three scales and mirrored: 18 RGB images in [0, 255]."""
    crops = [load_image(path, size=SIZE, resize_short=short)
             for path in sorted(IMAGES.glob("*.jpg")) for short in (SIZE, 256, 320)]
    images = np.concatenate(crops)
    return np.concatenate([images, images[:, :, ::-1]])


def candidate(key: str) -> Candidate:
    """The model `key` names (see `MODEL_KEYS`), random weights, logits out."""
    shape = (SIZE, SIZE, 3)
    if key in VARIANTS:
        top1 = {e.variant: e.top1 for e in PRESETS if e.tag == "imagenet"}[key]
        model = PPLCNet(scale=VARIANTS[key], weights=None, input_shape=shape,
                        classifier_activation=None)
        return Candidate(f"PPLCNet_{key}", model, top1)
    if key.startswith("v2_"):
        variant = key.removeprefix("v2_")
        top1 = {e.variant: e.top1 for e in V2_PRESETS if e.tag == "imagenet"}.get(variant)
        # Branch form here: `export_all` calibrates its batch norms, then folds it.
        model = getattr(keras_lcnet, f"PPLCNetV2_{variant}")(
            weights=None, input_shape=shape, classifier_activation=None)
        return Candidate(f"PPLCNetV2_{variant}", model, top1, family="PP-LCNetV2")
    apps = keras.applications
    model = getattr(apps, key)(weights=None, input_shape=shape, classifier_activation=None)
    # MobileNetV3 normalizes [0, 255] pixels itself; MobileNetV2 wants [-1, 1].
    preprocess = apps.mobilenet_v2.preprocess_input if key == "MobileNetV2" else _identity
    return Candidate(key, model, MOBILENET_TOP1.get(key), preprocess, family="MobileNet")


def export_all(models: list[Candidate], images: np.ndarray, folder: pathlib.Path,
               bf16: bool) -> None:
    for c in models:
        start = time.time()
        inputs = c.preprocess(images.copy())
        calibrate_batchnorm(c.model, inputs)
        if c.family == "PP-LCNetV2":
            c.model = keras_lcnet.reparameterize(c.model)
        c.reports["fp32"] = export_litert(c.model, folder / f"{c.name}.tflite", strict=False)
        c.reports["int8"] = export_litert(c.model, folder / f"{c.name}_int8.tflite",
                                          quantize="int8", calibration=inputs, strict=False)
        c.reports["onnx"] = export_onnx(c.model, folder / f"{c.name}.onnx", strict=False)
        # int8: NNCF on the crops LiteRT int8 is calibrated on.
        for precision in ("f32", "bf16", "int8") if bf16 else ("f32", "int8"):
            c.reports[f"ov_{precision}"] = export_openvino(
                c.model, folder / f"{c.name}_{precision}.xml", precision=precision,
                calibration=inputs if precision == "int8" else None, strict=False)
        problems = [f"{kind}: {p}" for kind, r in c.reports.items() for p in r.failures]
        print(f"exported {c.name} in {time.time() - start:.0f} s"
              + "".join(f"\n  FAILED {p}" for p in problems), flush=True)


def _versions() -> str:
    names = ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "tf2onnx",
             "onnx", "openvino", "nncf", "numpy")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def openvino_settings(path: str | os.PathLike) -> str:
    """The CPU plugin settings an IR compiled the way `Runtime` compiles it actually got."""
    import openvino as ov

    names = ("NUM_STREAMS", "PERFORMANCE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING",
             "SCHEDULING_CORE_TYPE")
    found = []
    for threads in (1, 2):
        compiled = ov.Core().compile_model(os.fspath(path), "CPU",
                                           openvino_config("f32", threads))
        found.append(compiled.get_property("INFERENCE_NUM_THREADS"))
    settings = [f"{n}={compiled.get_property(n)}" for n in names]
    return ", ".join([*settings, f"INFERENCE_NUM_THREADS={found[0]} (1T) / {found[1]} (2T)"])


def _cell(result) -> str:
    return "n/a" if result is None else f"{result.median_ms:.2f} ({result.p90_ms:.2f})"


def _header(args, loads, settings: str, bf16: bool) -> list[str]:
    bf16_note = ("OpenVINO bf16 runs bfloat16 compute on the f32 IR (INFERENCE_PRECISION_HINT "
                 "bf16)" if bf16 else f"OpenVINO bf16: n/a ({NO_BF16}): OpenVINO's CPU "
                 "OPTIMIZATION_CAPABILITIES lack BF16, so its columns are not timed")
    return [
        "# Latency benchmark", "",
        f"Measured by `benchmarks/latency.py` on {datetime.date.today().isoformat()}: "
        f"{cpu_model()}, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; {_versions()}.", "",
        f"CPU flags (/proc/cpuinfo): {describe_cpu_flags(cpu_flags())}.", "",
        f"Batch 1, {SIZE}x{SIZE} RGB, random weights (`weights=None`, batch-norm statistics "
        "recalibrated on the 18 sample crops; latency does not depend on weight values). "
        f"Each cell is the median (p90) in ms of {args.rounds * args.block} runs: "
        f"{args.rounds} interleaved rounds in which every configuration ran {args.block} "
        "timed runs after one untimed run, so all configurations shared the machine's "
        "noise. 1T/2T: 1 or 2 CPU threads. LiteRT uses its default XNNPACK delegate; "
        "int8 is full-integer with float32 input and output, calibrated on the same crops; "
        "ORT is onnxruntime's CPU provider on the float32 ONNX export, with intra-op "
        "spinning off (`session.intra_op.allow_spinning = 0`, set by "
        "`keras_lcnet.deploy.runtime.Runtime`); OpenVINO is its CPU plugin on the IR "
        "written by `export_openvino`, compiled by `Runtime` for latency, as read back "
        f"from the compiled model: {settings}. OpenVINO f32 forces "
        f"INFERENCE_PRECISION_HINT f32; {bf16_note}; OpenVINO int8 is NNCF post-training "
        "quantization on the same crops as LiteRT int8, its remaining float ops in f32. "
        "Keras TF is `predict_on_batch` on the TensorFlow backend. Classifiers output "
        "logits. PP-LCNetV2 runs in its deploy form: calibrated in branch form, then "
        "folded by `keras_lcnet.reparameterize` (one biased depthwise conv per block).", "",
        "System load average (1, 5, 15 min) when the timing started: "
        + ", ".join(f"{v:.2f}" for v in loads[0]) + "; when it ended: "
        + ", ".join(f"{v:.2f}" for v in loads[1]) + f" ({os.cpu_count()} logical cores; "
        "the benchmark itself keeps one or two busy). Other processes on the machine slow "
        "the 2-thread configurations most.", "",
    ]


def _latency_table(models, results) -> list[str]:
    columns = [c[0] for c in CONFIGS]
    lines = ["| model | top-1 % | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for c in models:
        cells = [_cell(results.get((c.name, col))) for col in columns]
        top1 = "-" if c.top1 is None else f"{c.top1:.2f}"
        lines.append(f"| {c.name} | {top1} | " + " | ".join(cells) + " |")
    return [
        *lines, "", f"Top-1: PP-LCNet from {IMAGENET_ACCURACY_SOURCE}; PPLCNetV2_base from "
        f"{V2_ACCURACY_SOURCE}, which publishes none for small and large; MobileNetV3 from "
        f"the {MOBILENET_TOP1_SOURCE}; MobileNetV2: not cited here. All are the float "
        "models' published accuracy, not measured here.", ""]


def best_float(models, results, threads: int) -> dict[str, tuple[str, float]]:
    """Per model: the fastest float32 configuration at `threads`, `(runtime, median ms)`."""
    best = {}
    for c in models:
        timed = [(FLOAT_RUNTIMES[kind], results[c.name, column].median_ms)
                 for column, kind, t in CONFIGS
                 if kind in FLOAT_RUNTIMES and t == threads and (c.name, column) in results]
        if timed:
            best[c.name] = min(timed, key=lambda item: item[1])
    return best


# Pairwise targets on one model pair: (label, (model, column), (model, column), limit).
# The OpenVINO ones are issue 13's, against LiteRT fp32 of the same run.
PAIR_TARGETS = (
    *((f"x1_0 LiteRT fp32 / MobileNetV3Large LiteRT fp32, {t}T",
       ("PPLCNet_x1_0", f"LiteRT fp32 {t}T"), ("MobileNetV3Large", f"LiteRT fp32 {t}T"), 0.6)
      for t in (2, 1)),
    *((f"x1_0 OpenVINO {p} / LiteRT fp32, {t}T", ("PPLCNet_x1_0", f"OpenVINO {p} {t}T"),
       ("PPLCNet_x1_0", f"LiteRT fp32 {t}T"), limit)
      for p, t, limit in (("bf16", 1, 0.5), ("bf16", 2, 0.6), ("int8", 1, 0.6))),
)
# Worst over the PP-LCNet (V1) widths of the run: (label, column kind, limit).
WIDTH_TARGETS = (("onnxruntime / LiteRT fp32, same width", "ORT fp32", 1.2),
                 ("LiteRT int8 / LiteRT fp32, same width", "LiteRT int8", 0.6))


def verdict(value: float | None, limit: float, missing: str = "") -> str:
    """`pass` / `FAIL` for a measured ratio, `n/a (why)` when it was not measured."""
    if value is None:
        return f"n/a ({missing or 'not measured'})"
    return "pass" if value <= limit else "FAIL"


def _ratio(results, top, bottom) -> float | None:
    if top not in results or bottom not in results:
        return None
    return results[top].median_ms / results[bottom].median_ms


def target_rows(models, results, bf16: bool) -> list[tuple[str, float | None, float, str]]:
    """`(label, ratio or None, limit, verdict)` for every target, in table order."""
    names = {c.name for c in models}
    v1 = [c.name for c in models if c.family == "PP-LCNet"]
    rows = []
    for threads in (2, 1):
        for label, kind, limit in WIDTH_TARGETS:
            ratios = {n: _ratio(results, (n, f"{kind} {threads}T"),
                                (n, f"LiteRT fp32 {threads}T")) for n in v1}
            ratios = {n: v for n, v in ratios.items() if v is not None}
            worst = max(ratios, key=ratios.get) if ratios else None
            label = f"{label}, {threads}T: worst" + (
                f", {worst.removeprefix('PPLCNet_')}" if worst else "")
            value = ratios.get(worst)
            rows.append((label, value, limit, verdict(value, limit, "no PP-LCNet width run")))
    for label, top, bottom, limit in PAIR_TARGETS:
        absent = sorted({top[0], bottom[0]} - names)
        missing = (NO_BF16 if "bf16" in top[1] and not bf16 else
                   f"{', '.join(absent)} not in this run" if absent else "")
        value = _ratio(results, top, bottom)
        rows.append((label, value, limit, verdict(value, limit, missing)))
    return rows


def _ratio_lines(models, results) -> list[str]:
    """Per-model ratios to LiteRT fp32 (same model, same threads), for reference."""
    lines = []
    for threads in (2, 1):
        for kind in ("ORT fp32", "LiteRT int8", "OpenVINO f32", "OpenVINO bf16",
                     "OpenVINO int8"):
            ratios = [(c.name.removeprefix("PPLCNet_"),
                       _ratio(results, (c.name, f"{kind} {threads}T"),
                              (c.name, f"LiteRT fp32 {threads}T"))) for c in models]
            measured = ", ".join(f"{n} {v:.2f}" for n, v in ratios if v is not None)
            if measured:
                lines.append(f"- {kind} / LiteRT fp32, same model, {threads}T: {measured}")
    return lines


def _targets_section(models, results, bf16: bool) -> list[str]:
    lines = [
        "## Targets (this run)", "",
        "The PP-LCNet-to-MobileNet and same-width targets are set at 2 threads; their "
        "1-thread ratios are given for reference, as they are less sensitive to other "
        "processes competing for the second core. The OpenVINO targets compare x1_0 at "
        "batch 1 with LiteRT fp32 of the same run. n/a: not measured in this run, and why.",
        "", "| ratio of medians | measured | target | result |", "|---|---|---|---|",
    ]
    for label, value, limit, result in target_rows(models, results, bf16):
        shown = "-" if value is None else f"{value:.2f}x"
        lines.append(f"| {label} | {shown} | <= {limit}x | {result} |")
    lines += ["", *_ratio_lines(models, results)]
    best = best_float(models, results, PLOT_THREADS)
    if best:
        lines += ["", f"Fastest float32 runtime per model at {PLOT_THREADS} threads (the plot's "
                  "points): " + ", ".join(f"{n} {r} {ms:.2f} ms" for n, (r, ms) in best.items())
                  + "."]
    return lines


def _int8_note(models) -> list[str]:
    lcnet = next((c for c in models if c.family == "PP-LCNet"), None)
    if lcnet is None:
        return []
    count = {k: sum(lcnet.reports[k].audit.ops.values()) for k in ("fp32", "int8")}
    ops = lcnet.reports["int8"].audit.ops
    return [
        "",
        f"The int8 PP-LCNet graphs have {count['int8']} ops against {count['fp32']} in float32: "
        "XNNPACK runs LiteRT's `HARD_SWISH` for float tensors only, so for int8 each h-swish "
        f"is exported as int8 `ADD` (with `RELU6`) and two `MUL`s ({ops.get('ADD', 0)} ADD, "
        f"{ops.get('MUL', 0)} MUL in all), elementwise passes that weigh most in the narrow "
        "widths.",
        "",
    ]


def depthwise_counts(c: Candidate) -> tuple[int, int]:
    """`(DEPTHWISE_CONV_2D ops in the LiteRT fp32 file, depthwise layers in the Keras model)`.

    Equal when every depthwise layer became one op: for PP-LCNetV2, when no
    re-parameterization branch is left in the exported graph.
    """
    kinds = (keras.layers.DepthwiseConv2D, keras_lcnet.layers.RepDepthwiseConv2D)
    layers = sum(isinstance(layer, kinds) for layer in c.model.layers)
    return c.reports["fp32"].audit.ops.get("DEPTHWISE_CONV_2D", 0), layers


def _delegation(report: ExportReport) -> str:
    audit = report.audit
    total = audit.delegated + len(audit.undelegated)
    return f"{audit.delegated}/{total} ops, {audit.partitions} partition(s)"


def _export_checks(models) -> list[str]:
    lines = [
        "## Export checks", "",
        "Parity is on 4 random-pixel images (float32), or the 18 calibration crops (int8); "
        "with random weights the int8 agreement says little about accuracy with real weights. "
        "Depthwise convs: `DEPTHWISE_CONV_2D` ops in the LiteRT fp32 file / depthwise layers "
        "of the Keras model; equal means no re-parameterization branch is left (PP-LCNetV2).",
        "",
        "| model | LiteRT fp32 max rel. diff | ONNX max rel. diff | OpenVINO f32 max rel. diff "
        "| ONNX Transposes | LiteRT fp32 XNNPACK | LiteRT int8 XNNPACK | depthwise convs | "
        "LiteRT int8 cosine | OpenVINO int8 cosine | problems |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in models:
        fp32, int8, onnx, ov, ov_int8 = (c.reports[k] for k in
                                         ("fp32", "int8", "onnx", "ov_f32", "ov_int8"))
        graph, layers = depthwise_counts(c)
        problems = [f"{k}: {p}" for k, r in c.reports.items() for p in r.failures]
        if graph != layers:
            problems.append(f"{graph} depthwise ops for {layers} depthwise layers: branches left")
        lines.append(
            f"| {c.name} | {fp32.agreement.max_relative_difference:.1e} | "
            f"{onnx.agreement.max_relative_difference:.1e} | "
            f"{ov.agreement.max_relative_difference:.1e} | {onnx.audit.ops.get('Transpose', 0)}"
            f" | {_delegation(fp32)} | {_delegation(int8)} | {graph}/{layers} | "
            f"{int8.agreement.cosine_similarity:.4f} | "
            f"{ov_int8.agreement.cosine_similarity:.4f} | {'; '.join(problems) or 'none'} |"
        )
    return lines


def write_results(models, results, args, folder, loads, settings: str, bf16: bool) -> str:
    lines = [*_header(args, loads, settings, bf16), *_latency_table(models, results),
             *_targets_section(models, results, bf16), *(_int8_note(models) or [""]),
             *_export_checks(models)]
    text = "\n".join(lines) + "\n"
    if folder is not None:
        (folder / "results.md").write_text(text)
    return text


def plot(models, results, path: pathlib.Path) -> None:
    """Published top-1 against the fastest float32 runtime's median, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_float(models, results, PLOT_THREADS)
    shown = [c for c in models if c.top1 is not None and c.name in best]
    markers = dict(zip(FLOAT_RUNTIMES.values(), "osD^", strict=True))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for family, color in FAMILY_COLORS.items():
        points = [c for c in shown if c.family == family]
        if len(points) > 1:
            ax.plot([best[c.name][1] for c in points], [c.top1 for c in points], "-",
                    color=color, alpha=0.4)
        for c in points:
            runtime, ms = best[c.name]
            ax.plot([ms], [c.top1], markers[runtime], color=color)
            ax.annotate(f"{c.name.removeprefix('PPLCNet_')} ({runtime})", (ms, c.top1),
                        textcoords="offset points", xytext=(5, -10), fontsize=7)
    # Legend: the families and runtimes that have a point.
    for family, color in FAMILY_COLORS.items():
        if any(c.family == family for c in shown):
            ax.plot([], [], "-", color=color, label=family)
    for runtime, marker in markers.items():
        if any(best[c.name][0] == runtime for c in shown):
            ax.plot([], [], marker, color="gray", label=f"fastest: {runtime}")
    ax.set_xlabel(f"median latency of the fastest float32 runtime, ms "
                  f"(batch 1, {SIZE}x{SIZE}, {PLOT_THREADS} threads)")
    ax.set_ylabel("published ImageNet top-1, %")
    ax.set_title(f"Latency vs. accuracy on {cpu_model()}", fontsize=10)
    ax.margins(x=0.15, y=0.08)  # room for the labels right of the outermost points
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.text(0.01, 0.01, "Top-1: PaddleClas model zoo (PP-LCNet; PP-LCNetV2 base only); "
             f"{MOBILENET_TOP1_SOURCE}.", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _runners(models, images: np.ndarray, bf16: bool) -> dict:
    runners = {}
    x = images[:1]
    for c in models:
        for column, kind, threads in CONFIGS:
            if kind == "keras":
                runners[c.name, column] = KerasRunner(c.name, c.model, c.preprocess(x.copy()))
            elif kind != "ov_bf16" or bf16:
                runners[c.name, column] = Runtime(c.reports[kind].path, num_threads=threads)
    return runners


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{', '.join(QUICK_MODELS)} (unless --models), 3 rounds; prints "
                        "the results only (unless --output-dir)")
    parser.add_argument("--models", type=parse_models, default=None,
                        help=f"comma list of models to time, from: {', '.join(MODEL_KEYS)} "
                        "(default: all; with --quick: " + ",".join(QUICK_MODELS) + ")")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 25)")
    parser.add_argument("--block", type=int, default=6, help="timed runs per block (default 6)")
    parser.add_argument("--output-dir", type=pathlib.Path, default=None,
                        help="where to write results.md and the plot (default: this folder; "
                        "with --quick: nowhere)")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 25)
    args.models = args.models or (QUICK_MODELS if args.quick else MODEL_KEYS)
    return args


def main() -> int:
    args = _arguments()
    if keras.backend.backend() != "tensorflow":
        sys.exit("benchmarks/latency.py needs the TensorFlow backend: KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    # Keras' own timing uses 2 threads; set before TensorFlow starts its runtime.
    tf.config.threading.set_intra_op_parallelism_threads(KERAS_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    folder = args.output_dir or (None if args.quick else HERE)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    bf16 = openvino_supports_bf16()
    models = [candidate(key) for key in args.models]
    images = sample_images()
    with tempfile.TemporaryDirectory() as tmp:
        export_all(models, images, pathlib.Path(tmp), bf16)
        settings = openvino_settings(models[0].reports["ov_f32"].path)
        runners = _runners(models, images, bf16)
        loads = [os.getloadavg()]
        results = interleave(runners, args.rounds, args.block, warmup=5,
                             progress=lambda line: print(line, flush=True))
        loads.append(os.getloadavg())
    print(write_results(models, results, args, folder, loads, settings, bf16))
    if folder is not None:
        plot(models, results, folder / "latency_vs_top1.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
