"""Which runtime to ship on this CPU: export to every runtime and precision, time them together.

```python
import keras_lcnet
from keras_lcnet.deploy.comparison import compare_runtimes

model = keras_lcnet.PPLCNet_x1_0(weights="imagenet", classifier_activation=None)
report = compare_runtimes(model, threads=(1, 2), calibration="calibration_images/")
print(report.table())  # one row per runtime and thread count, the fastest marked
```

Every export is verified against Keras as `keras-lcnet export` does; an export
that cannot run here (missing package, bf16 on a CPU without it) or fails
verification becomes a row with the reason instead of a timing. The rest are
timed by `latency.interleave`, in turns within one run, so that the machine's
noise hits all of them alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import tempfile

import keras
import numpy as np

from keras_lcnet.deploy import runtime as runtime_module
from keras_lcnet.deploy.latency import LatencyResult, cpu_model, interleave
from keras_lcnet.deploy.litert import export_litert
from keras_lcnet.deploy.onnx import export_onnx
from keras_lcnet.deploy.openvino import export_openvino
from keras_lcnet.deploy.runtime import Runtime, _package_version
from keras_lcnet.deploy.verify import (
    ExportReport,
    check_backend,
    load_calibration,
    random_pixels,
    static_input_shape,
)

# target: (format, recipe given to its exporter, Python modules it needs).
_LITERT = ("tensorflow", "ai_edge_litert")
TARGETS = {
    "litert-f32": ("litert", None, _LITERT),
    "litert-f16": ("litert", "float16", _LITERT),
    "litert-int8": ("litert", "int8", _LITERT),
    "onnx-f32": ("onnx", None, ("tensorflow", "tf2onnx", "onnx", "onnxruntime")),
    "openvino-f32": ("openvino", "f32", ("tensorflow", "openvino")),
    "openvino-bf16": ("openvino", "bf16", ("tensorflow", "openvino")),
    "openvino-int8": ("openvino", "int8", ("tensorflow", "openvino", "nncf")),
}
DEFAULT_TARGETS = ("litert-f32", "litert-int8", "onnx-f32", "openvino-f32", "openvino-bf16",
                   "openvino-int8")
BASELINE = "litert-f32"
# The /proc/cpuinfo flags that decide which kernels the runtimes pick.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16", "amx_int8")
# Random-pixel calibration sets int8 ranges that mean nothing, but the int8
# graph (and so its speed) is the same as with real images.
RANDOM_CALIBRATION_SAMPLES = 16
_PACKAGES = {"ai_edge_litert": "ai-edge-litert", "tensorflow": "tensorflow-cpu"}
# Distributions whose versions the report names; TensorFlow is often installed as tensorflow-cpu.
_VERSIONS = {"keras": ("keras",), "tensorflow": ("tensorflow", "tensorflow-cpu"),
             "ai-edge-litert": ("ai-edge-litert",), "onnxruntime": ("onnxruntime",),
             "openvino": ("openvino",)}


def cpu_flags() -> list[str] | None:
    """The `CPU_FLAGS` this CPU has, from /proc/cpuinfo.

    Returns:
        The flags present, in `CPU_FLAGS` order; `None` where /proc/cpuinfo
        cannot be read or has no flags (not Linux, or not x86).
    """
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    if line is None:
        return None
    present = set(line.split(":", 1)[1].split())
    return [flag for flag in CPU_FLAGS if flag in present]


def describe_cpu_flags(flags: list[str] | None) -> str:
    """`flags` (from `cpu_flags`) for a report: those present, of all `CPU_FLAGS` looked for."""
    if flags is None:
        return "unknown (no flags in /proc/cpuinfo)"
    return f"{' '.join(flags) or 'none'} (of {', '.join(CPU_FLAGS)})"


@dataclasses.dataclass
class ComparisonRow:
    """One target at one thread count, or a target that was not timed.

    Attributes:
        target: E.g. `"openvino-int8"` (a key of `TARGETS`).
        runtime: The runtime that ran it, e.g. `"OpenVINO (CPU, int8)"`.
        threads: CPU threads; `None` for a target that was not timed.
        median_ms: Median latency; `None` when not timed.
        p90_ms: 90th-percentile latency; `None` when not timed.
        vs_baseline: `median_ms` over LiteRT float32's median at the same
            thread count in the same run (`None` without that baseline).
        verification: How the export compares with Keras (float32: max
            relative difference; reduced precisions: top-1 agreement).
        fastest: The lowest median at this thread count.
        skipped: Why the target was not timed (cannot run here, failed
            export or verification); `None` when timed.
    """

    target: str
    runtime: str = ""
    threads: int | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    vs_baseline: float | None = None
    verification: str = ""
    fastest: bool = False
    skipped: str | None = None


@dataclasses.dataclass
class ComparisonReport:
    """What `compare_runtimes` measured: the machine, and one row per target and thread count.

    Attributes:
        model: The Keras model's name.
        input_shape: The static input shape of every export.
        runs: Timed runs of each target per thread count.
        warmup: Untimed runs of each target first.
        calibration: What the int8 targets were calibrated and verified on.
        cpu: CPU model name and logical core count.
        cpu_flags: The `CPU_FLAGS` present, `None` where unknown.
        versions: `{package: version}` of the runtimes and converters.
        rows: Timed rows by thread count (fastest first), then skipped targets.
    """

    model: str
    input_shape: tuple[int, ...]
    runs: int
    warmup: int
    calibration: str
    cpu: str
    cpu_flags: list[str] | None
    versions: dict[str, str]
    rows: list[ComparisonRow]

    def fastest(self) -> dict[int, ComparisonRow]:
        """`{threads: the fastest row}` for every thread count timed."""
        return {row.threads: row for row in self.rows if row.fastest}

    def to_dict(self) -> dict:
        """The report as JSON-ready data (what `to_json` writes)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The report as one line of JSON."""
        return json.dumps(self.to_dict())

    def _header(self) -> list[str]:
        flags = describe_cpu_flags(self.cpu_flags)
        size = "x".join(str(d) for d in self.input_shape[1:3])
        return [
            f"{self.model}, input {list(self.input_shape)} ({size}), {self.runs} timed runs "
            f"per target ({self.warmup} warm-up), interleaved",
            f"CPU: {self.cpu}",
            f"CPU flags: {flags}",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
            f"int8 calibration: {self.calibration}",
        ]

    def table(self) -> str:
        """The report as plain text: header, one line per timed row, skipped targets, fastest."""
        columns = (f"{'threads':>7}  {'target':<15}{'median ms':>10}{'p90 ms':>9}"
                   f"{'vs ' + BASELINE:>15}  verification")
        lines = [*self._header(), "", columns]
        for row in self.rows:
            if row.skipped is None:
                ratio = "-" if row.vs_baseline is None else f"{row.vs_baseline:.2f}x"
                mark = " *" if row.fastest else "  "
                lines.append(f"{row.threads:>7}  {row.target + mark:<15}{row.median_ms:>10.3f}"
                             f"{row.p90_ms:>9.3f}{ratio:>15}  {row.verification}")
        skipped = [row for row in self.rows if row.skipped is not None]
        if skipped:
            lines += ["", "Not timed:"] + [f"  {r.target}: {r.skipped}" for r in skipped]
        fastest = self.fastest()
        if fastest:
            lines += ["", "* fastest: " + "; ".join(
                f"{t} thread{'s' * (t > 1)}: {r.target} ({r.median_ms:.3f} ms)"
                for t, r in fastest.items())]
        return "\n".join(lines)


def _unavailable(target: str) -> str | None:
    """Why `target` cannot run on this machine, or `None`."""
    for module in TARGETS[target][2]:
        try:
            importlib.import_module(module)
        except ImportError:
            package = _PACKAGES.get(module, module)
            return f"needs the Python package {package} (pip install \"keras-lcnet[export]\")"
    if target == "openvino-bf16" and not runtime_module.openvino_supports_bf16():
        return "this CPU has no bfloat16 arithmetic for OpenVINO (needs AVX512_BF16 or AMX)"
    return None


def _verification(report: ExportReport) -> str:
    """The export's agreement with Keras in a few words (its BN-calibrated twin's if weak)."""
    agreement, note = report.agreement, ""
    if not agreement.informative and report.twin is not None:
        agreement, note = report.twin, " (BN-calibrated twin)"
    if report.quantize is None or agreement.top1_agreement is None:
        text = f"max rel diff {agreement.max_relative_difference:.1e}"
    else:
        text = f"top-1 {agreement.top1_agreement:.0%}, cos {agreement.cosine_similarity:.4f}"
    return text + note


def _export(model: keras.Model, target: str, folder: str, data: np.ndarray, image_size):
    """Exports `target` into `folder`; returns `(path, verification summary, failure)`."""
    fmt, recipe, _ = TARGETS[target]
    path = os.path.join(folder, target + {"litert": ".tflite", "onnx": ".onnx"}.get(fmt, ".xml"))
    common = {"image_size": image_size, "verification": data, "strict": False}
    int8 = recipe == "int8"
    try:
        if fmt == "litert":
            report = export_litert(model, path, quantize=recipe,
                                   calibration=data if int8 else None, **common)
        elif fmt == "onnx":
            report = export_onnx(model, path, **common)
        else:
            report = export_openvino(model, path, precision=recipe,
                                     calibration=data if int8 else None, **common)
    except Exception as error:  # one target's failure must not stop the others
        return None, "", f"export failed: {' '.join(str(error).split()) or type(error).__name__}"
    summary = _verification(report)
    if not report.ok:
        return None, summary, "failed verification: " + "; ".join(report.failures)
    return path, summary, None


def _export_all(model, targets: list, folder: str, data, image_size) -> tuple[dict, dict, dict]:
    """Exports every target that can run here.

    Returns:
        `({target: file}, {target: verification summary}, {target: why it is not timed})`.
    """
    paths, notes, skipped = {}, {}, {}
    for target in targets:
        reason = _unavailable(target)
        if reason is None:
            path, notes[target], reason = _export(model, target, folder, data, image_size)
        if reason is None:
            paths[target] = path
        else:
            skipped[target] = reason
    return paths, notes, skipped


def _time(paths: dict, threads: int, runs: int, warmup: int) -> tuple[dict, dict]:
    """Opens every exported file with `threads` threads and times them interleaved.

    Returns:
        `({target: LatencyResult}, {target: why it could not be opened})`.
    """
    runners, refused = {}, {}
    for target, path in paths.items():
        try:
            runners[target] = Runtime(path, threads)
        except (ValueError, ImportError) as error:
            refused[target] = f"cannot run with {threads} thread(s): {error}"
    return (interleave(runners, rounds=runs, warmup=warmup) if runners else {}), refused


def _rows(results: dict[str, LatencyResult], threads: int, notes: dict) -> list[ComparisonRow]:
    """Rows of one thread count, fastest first, the fastest marked."""
    baseline = results.get(BASELINE)
    rows = [ComparisonRow(
        target=target, runtime=result.runtime, threads=threads, median_ms=result.median_ms,
        p90_ms=result.p90_ms, verification=notes[target],
        vs_baseline=None if baseline is None else result.median_ms / baseline.median_ms,
    ) for target, result in results.items()]
    rows.sort(key=lambda row: row.median_ms)
    if rows:
        rows[0].fastest = True
    return rows


def _check_arguments(targets, threads, runs: int, warmup: int) -> tuple[list, list]:
    targets, threads = list(targets), list(threads)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise ValueError(f"`precisions` must be distinct names from {list(TARGETS)}, got "
                         f"{targets!r}.")
    if not threads or any(not isinstance(t, int) or isinstance(t, bool) or t < 1
                          for t in threads):
        raise ValueError(f"`threads` must be positive ints, got {threads!r}.")
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"`runs` must be a positive int, got {runs!r}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be a non-negative int, got {warmup!r}.")
    return targets, list(dict.fromkeys(threads))


def _inputs(calibration, input_shape) -> tuple[np.ndarray, str]:
    """Calibration and verification inputs, and what they are."""
    if calibration is None:
        data = random_pixels(input_shape, RANDOM_CALIBRATION_SAMPLES)
        return data, (f"{len(data)} random-pixel images (int8 speed is representative; its "
                      "accuracy is not: pass calibration images for that)")
    data = load_calibration(calibration, input_shape)
    source = calibration if isinstance(calibration, (str, os.PathLike)) else "the given inputs"
    return data, f"{len(data)} images from {source}"


def compare_runtimes(
    model: keras.Model,
    *,
    image_size: int | tuple[int, int] | None = None,
    threads=(1,),
    runs: int = 100,
    warmup: int = 10,
    precisions=DEFAULT_TARGETS,
    calibration=None,
    workdir: str | os.PathLike | None = None,
) -> ComparisonReport:
    """Exports `model` to every runtime and precision that runs here and times them together.

    Each target in `precisions` is exported at batch size 1 and verified
    against Keras (see `export_litert`, `export_onnx`, `export_openvino`).
    Targets that cannot run here (a missing package, `"openvino-bf16"` on a
    CPU without bfloat16) or whose export fails or fails verification get a
    row with the reason. The others are timed per thread count by
    `latency.interleave`: `runs` rounds, each running every target once in
    turn, so the machine's noise hits all alike.

    Args:
        model: A Keras model with one image input, on the TensorFlow
            backend. Give it logits outputs (`classifier_activation=None`):
            XNNPACK has no int8 softmax, so an int8 model ending in one is
            split (and slowed) there.
        image_size: Input height and width where the model leaves them open
            (default 224).
        threads: Thread counts to time each target with.
        runs: Timed runs of each target per thread count.
        warmup: Untimed runs of each target before timing.
        precisions: Targets, keys of `TARGETS` (default `DEFAULT_TARGETS`).
        calibration: int8 calibration and verification inputs: a folder of
            images or an array (see `load_calibration`). Default:
            `RANDOM_CALIBRATION_SAMPLES` random-pixel images, which time int8
            truthfully but say nothing of its accuracy.
        workdir: An existing folder to keep the exported files in; default:
            a temporary folder, deleted afterwards.

    Returns:
        A `ComparisonReport` (`.table()` to print, `.to_json()`).

    Raises:
        ValueError: Invalid arguments, a model that cannot be exported, or
            a Keras backend other than TensorFlow.
    """
    check_backend()
    targets, threads = _check_arguments(precisions, threads, runs, warmup)
    input_shape = static_input_shape(model, 1, image_size)
    data, described = _inputs(calibration, input_shape)
    if workdir is not None and not os.path.isdir(workdir):
        raise ValueError(f"`workdir` {os.fspath(workdir)!r} is not an existing folder.")
    with contextlib.ExitStack() as stack:
        folder = os.fspath(workdir) if workdir is not None else stack.enter_context(
            tempfile.TemporaryDirectory(prefix="keras-lcnet-compare-"))
        paths, notes, skipped = _export_all(model, targets, folder, data, input_shape[1:3])
        rows = []
        for count in threads:
            results, refused = _time(paths, count, runs, warmup)
            skipped.update(refused)
            rows += _rows(results, count, notes)
    rows += [ComparisonRow(target=t, skipped=r) for t, r in skipped.items()]
    versions = {name: next((v for v in map(_package_version, dists) if v != "unknown"),
                           "not installed") for name, dists in _VERSIONS.items()}
    return ComparisonReport(model=model.name, input_shape=input_shape, runs=runs, warmup=warmup,
                            calibration=described, cpu=cpu_model(),
                            cpu_flags=cpu_flags(),
                            versions=versions, rows=rows)
