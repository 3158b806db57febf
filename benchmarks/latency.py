"""Latency of PP-LCNet's eight widths beside keras.applications' MobileNets, on this CPU.

Each model is exported once (LiteRT float32 and int8, ONNX float32) and timed at
batch 1, 224x224: LiteRT/XNNPACK float32 and int8 at 1 and 2 threads,
onnxruntime at 1 and 2 threads, and Keras `predict_on_batch` (TensorFlow,
2 threads). The runs are interleaved: every round times a short block of each
configuration in turn, so a slow phase of a noisy machine hits all of them
alike and their ratios stay fair.

    python benchmarks/latency.py           # writes results.md and latency_vs_top1.png here
    python benchmarks/latency.py --quick   # x0_25, x1_0, MobileNetV3Large, 3 rounds; prints only

Weights are random (`weights=None`): ImageNet weights cannot be downloaded on
the machines this runs on, and latency does not depend on weight values. Batch
norm statistics are recalibrated on the sample images first, so int8 models
get realistic activation ranges (see `keras_lcnet.deploy.verify.calibrate_batchnorm`).
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

from keras_lcnet import PPLCNet, load_image
from keras_lcnet.deploy import ExportReport, export_litert, export_onnx
from keras_lcnet.deploy.latency import cpu_model, interleave
from keras_lcnet.deploy.runtime import Runtime, timed_ms
from keras_lcnet.deploy.verify import calibrate_batchnorm
from keras_lcnet.presets import IMAGENET_ACCURACY_SOURCE, PRESETS, VARIANTS

HERE = pathlib.Path(__file__).parent
IMAGES = HERE.parent / "examples" / "images"
SIZE = 224
KERAS_THREADS = 2
# Published top-1 of the float models in the plot. PP-LCNet: the registry.
# MobileNetV3: the table in the keras.applications.MobileNetV3Large docstring
# (keras/src/applications/mobilenet_v3.py, Keras 3.15.1), checkpoints
# mobilenet_v3_{large,small}_1.0_224. Keras 3's MobileNetV2 docstring has no
# such table, so MobileNetV2 is timed but left out of the plot.
MOBILENET_TOP1 = {"MobileNetV3Large": 75.6, "MobileNetV3Small": 68.1}
MOBILENET_TOP1_SOURCE = "keras.applications.MobileNetV3Large docstring (Keras 3.15.1)"
CONFIGS = (  # (column, export kind, threads)
    ("LiteRT fp32 1T", "fp32", 1),
    ("LiteRT fp32 2T", "fp32", 2),
    ("LiteRT int8 1T", "int8", 1),
    ("LiteRT int8 2T", "int8", 2),
    ("ORT fp32 1T", "onnx", 1),
    ("ORT fp32 2T", "onnx", 2),
    ("Keras TF 2T", "keras", KERAS_THREADS),
)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclasses.dataclass
class Candidate:
    """A model to time and what it needs."""

    name: str
    model: keras.Model
    top1: float | None
    preprocess: Callable[[np.ndarray], np.ndarray] = _identity
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


def sample_images() -> np.ndarray:
    """The bundled photos, at three scales and mirrored: 18 RGB images in [0, 255]."""
    crops = [load_image(path, size=SIZE, resize_short=short)
             for path in sorted(IMAGES.glob("*.jpg")) for short in (SIZE, 256, 320)]
    images = np.concatenate(crops)
    return np.concatenate([images, images[:, :, ::-1]])


def candidates(quick: bool) -> list[Candidate]:
    top1 = {e.variant: e.top1 for e in PRESETS if e.tag == "imagenet"}
    variants = ("x0_25", "x1_0") if quick else tuple(VARIANTS)
    shape = (SIZE, SIZE, 3)
    models = [
        Candidate(f"PPLCNet_{v}", PPLCNet(scale=VARIANTS[v], weights=None, input_shape=shape,
                                          classifier_activation=None), top1[v])
        for v in variants
    ]
    apps = keras.applications
    baselines = ["MobileNetV3Large"] if quick else ["MobileNetV3Small", "MobileNetV3Large",
                                                    "MobileNetV2"]
    for name in baselines:
        model = getattr(apps, name)(weights=None, input_shape=shape, classifier_activation=None)
        # MobileNetV3 normalizes [0, 255] pixels itself; MobileNetV2 wants [-1, 1].
        preprocess = apps.mobilenet_v2.preprocess_input if name == "MobileNetV2" else _identity
        models.append(Candidate(name, model, MOBILENET_TOP1.get(name), preprocess))
    return models


def export_all(models: list[Candidate], images: np.ndarray, folder: pathlib.Path) -> None:
    for c in models:
        start = time.time()
        inputs = c.preprocess(images.copy())
        calibrate_batchnorm(c.model, inputs)
        c.reports["fp32"] = export_litert(c.model, folder / f"{c.name}.tflite", strict=False)
        c.reports["int8"] = export_litert(c.model, folder / f"{c.name}_int8.tflite",
                                          quantize="int8", calibration=inputs, strict=False)
        c.reports["onnx"] = export_onnx(c.model, folder / f"{c.name}.onnx", strict=False)
        problems = [f"{kind}: {p}" for kind, r in c.reports.items() for p in r.failures]
        print(f"exported {c.name} in {time.time() - start:.0f} s"
              + "".join(f"\n  FAILED {p}" for p in problems), flush=True)


def _versions() -> str:
    names = ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "tf2onnx",
             "onnx", "numpy")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def _ratio_rows(models, results, threads: int):
    """Markdown rows for the three target ratios at `threads`, and the values checked."""
    def median(name, kind):
        return results[name, f"{kind} {threads}T"].median_ms

    pplcnet = [c.name for c in models if c.name.startswith("PPLCNet")]
    rows, checks = [], []
    if "PPLCNet_x1_0" in pplcnet and any(c.name == "MobileNetV3Large" for c in models):
        value = median("PPLCNet_x1_0", "LiteRT fp32") / median("MobileNetV3Large", "LiteRT fp32")
        checks.append((f"x1_0 LiteRT fp32 / MobileNetV3Large LiteRT fp32, {threads}T", value, 0.6))
    for label, top, bottom, limit in (
        ("onnxruntime / LiteRT fp32, same width", "ORT fp32", "LiteRT fp32", 1.2),
        ("LiteRT int8 / LiteRT fp32, same width", "LiteRT int8", "LiteRT fp32", 0.6),
    ):
        ratios = {n: median(n, top) / median(n, bottom) for n in pplcnet}
        worst = max(ratios, key=ratios.get)
        checks.append((f"{label}, {threads}T: worst, {worst.removeprefix('PPLCNet_')}",
                       ratios[worst], limit))
        per_width = ", ".join(f"{n.removeprefix('PPLCNet_')} {v:.2f}" for n, v in ratios.items())
        rows.append(f"- {label}, {threads}T, per width: {per_width}")
    return rows, checks


def write_results(models, results, args, folder: pathlib.Path, loads) -> str:
    columns = [c[0] for c in CONFIGS]
    lines = [
        "# Latency benchmark",
        "",
        f"Measured by `benchmarks/latency.py` on {datetime.date.today().isoformat()}: "
        f"{cpu_model()}, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; {_versions()}.",
        "",
        f"Batch 1, {SIZE}x{SIZE} RGB, random weights (`weights=None`, batch-norm statistics "
        "recalibrated on the 18 sample crops; latency does not depend on weight values). "
        f"Each cell is the median (p90) in ms of {args.rounds * args.block} runs: "
        f"{args.rounds} interleaved rounds in which every configuration ran {args.block} "
        "timed runs after one untimed run, so all configurations shared the machine's "
        "noise. 1T/2T: 1 or 2 CPU threads. LiteRT uses its default XNNPACK delegate; "
        "int8 is full-integer with float32 input and output, calibrated on the same crops; "
        "ORT is onnxruntime's CPU provider on the float32 ONNX export; Keras TF is "
        "`predict_on_batch` on the TensorFlow backend. Classifiers output logits.",
        "",
        "System load average (1, 5, 15 min) when the timing started: "
        + ", ".join(f"{v:.2f}" for v in loads[0]) + "; when it ended: "
        + ", ".join(f"{v:.2f}" for v in loads[1]) + f" ({os.cpu_count()} logical cores; "
        "the benchmark itself keeps one or two busy). Other processes on the machine slow "
        "the 2-thread configurations most.",
        "",
        "| model | top-1 % | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for c in models:
        cells = [f"{results[c.name, col].median_ms:.2f} ({results[c.name, col].p90_ms:.2f})"
                 for col in columns]
        top1 = "-" if c.top1 is None else f"{c.top1:.2f}"
        lines.append(f"| {c.name} | {top1} | " + " | ".join(cells) + " |")
    lines += ["", f"Top-1: PP-LCNet from {IMAGENET_ACCURACY_SOURCE}; MobileNetV3 from the "
              f"{MOBILENET_TOP1_SOURCE}; MobileNetV2: not cited here. All are the float "
              "models' published accuracy, not measured here.", ""]

    lines += [
        "## Targets (this run)", "",
        "The targets are set at 2 threads; the 1-thread ratios are given for reference, as "
        "they are less sensitive to other processes competing for the second core.", "",
        "| ratio of medians | measured | target | result |", "|---|---|---|---|",
    ]
    rows = []
    for threads in (2, 1):
        per_width, checks = _ratio_rows(models, results, threads)
        rows += per_width
        lines += [f"| {label} | {value:.2f}x | <= {limit}x | "
                  f"{'pass' if value <= limit else 'FAIL'} |" for label, value, limit in checks]
    lines += ["", *rows]
    lcnet = next(c for c in models if c.name.startswith("PPLCNet"))
    count = {k: sum(lcnet.reports[k].audit.ops.values()) for k in ("fp32", "int8")}
    ops = lcnet.reports["int8"].audit.ops
    lines += [
        "",
        f"The int8 PP-LCNet graphs have {count['int8']} ops against {count['fp32']} in float32: "
        "XNNPACK runs LiteRT's `HARD_SWISH` for float tensors only, so for int8 each h-swish "
        f"is exported as int8 `ADD` (with `RELU6`) and two `MUL`s ({ops.get('ADD', 0)} ADD, "
        f"{ops.get('MUL', 0)} MUL in all), elementwise passes that weigh most in the narrow "
        "widths.",
        "",
    ]

    lines += [
        "## Export checks", "",
        "Parity is on 4 random-pixel images (float32), or the 18 calibration crops (int8); "
        "with random weights the int8 agreement says little about accuracy with real weights.",
        "",
        "| model | LiteRT fp32 max rel. diff | ONNX max rel. diff | ONNX Transposes | "
        "LiteRT fp32 XNNPACK | LiteRT int8 XNNPACK | int8 cosine | problems |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in models:
        fp32, int8, onnx = (c.reports[k] for k in ("fp32", "int8", "onnx"))

        def delegation(report):
            audit = report.audit
            total = audit.delegated + len(audit.undelegated)
            return f"{audit.delegated}/{total} ops, {audit.partitions} partition(s)"

        problems = "; ".join(f"{k}: {p}" for k, r in c.reports.items() for p in r.failures)
        lines.append(
            f"| {c.name} | {fp32.agreement.max_relative_difference:.1e} | "
            f"{onnx.agreement.max_relative_difference:.1e} | {onnx.audit.ops.get('Transpose', 0)}"
            f" | {delegation(fp32)} | {delegation(int8)} | "
            f"{int8.agreement.cosine_similarity:.4f} | {problems or 'none'} |"
        )
    text = "\n".join(lines) + "\n"
    if folder is not None:
        (folder / "results.md").write_text(text)
    return text


def plot(models, results, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    lcnet = [c for c in models if c.name.startswith("PPLCNet")]
    for column, style in (("LiteRT fp32 2T", "o-"), ("ORT fp32 2T", "s--")):
        xs = [results[c.name, column].median_ms for c in lcnet]
        ax.plot(xs, [c.top1 for c in lcnet], style, label=f"PP-LCNet, {column}")
    for c in lcnet:
        ax.annotate(c.name.removeprefix("PPLCNet_"), (results[c.name, "LiteRT fp32 2T"].median_ms,
                    c.top1), textcoords="offset points", xytext=(5, -10), fontsize=8)
    for c in models:
        if c.name in MOBILENET_TOP1:
            x = results[c.name, "LiteRT fp32 2T"].median_ms
            ax.plot([x], [c.top1], "D", label=f"{c.name}, LiteRT fp32 2T")
    ax.set_xlabel("median latency, ms (batch 1, 224x224, 2 threads)")
    ax.set_ylabel("published ImageNet top-1, %")
    ax.set_title(f"Latency vs. accuracy on {cpu_model()}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, f"Top-1: PaddleClas model zoo; {MOBILENET_TOP1_SOURCE}.", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="x0_25, x1_0 and MobileNetV3Large, 3 rounds; prints the table only")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 25)")
    parser.add_argument("--block", type=int, default=6, help="timed runs per block (default 6)")
    parser.add_argument("--output-dir", type=pathlib.Path, default=None,
                        help="where to write results.md and the plot (default: this folder; "
                        "with --quick: nowhere)")
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        sys.exit("benchmarks/latency.py needs the TensorFlow backend: KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    # Keras' own timing uses 2 threads; set before TensorFlow starts its runtime.
    tf.config.threading.set_intra_op_parallelism_threads(KERAS_THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    args.rounds = args.rounds or (3 if args.quick else 25)
    folder = args.output_dir or (None if args.quick else HERE)

    models = candidates(args.quick)
    images = sample_images()
    with tempfile.TemporaryDirectory() as tmp:
        export_all(models, images, pathlib.Path(tmp))
        runners = {}
        x = images[:1]
        for c in models:
            for column, kind, threads in CONFIGS:
                runners[c.name, column] = (
                    KerasRunner(c.name, c.model, c.preprocess(x.copy())) if kind == "keras"
                    else Runtime(c.reports[kind].path, num_threads=threads))
        loads = [os.getloadavg()]
        results = interleave(runners, args.rounds, args.block, warmup=5,
                             progress=lambda line: print(line, flush=True))
        loads.append(os.getloadavg())
    print(write_results(models, results, args, folder, loads))
    if folder is not None:
        plot(models, results, folder / "latency_vs_top1.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
