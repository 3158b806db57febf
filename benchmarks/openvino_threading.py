"""OpenVINO CPU threading settings for batch-1 latency, tried before `Runtime`'s are trusted.

`keras_lcnet.deploy.runtime.Runtime` compiles an IR with one stream, the
LATENCY hint and `num_threads` threads (`openvino_config`). This script times
that against variants (CPU pinning off, TBB's auto partitioner,
denormals flushed, the THROUGHPUT hint held to one stream) on PPLCNet x1_0's
f32 and int8 IRs, interleaved in one run, and writes `openvino_threading.md`:

    python benchmarks/openvino_threading.py            # writes openvino_threading.md here
    python benchmarks/openvino_threading.py --quick    # 3 rounds, prints only

Weights are random and batch-norm calibrated on the sample crops, as in latency.py.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import tempfile
from unittest import mock

from latency import sample_images  # benchmarks/latency.py, beside this script

from keras_lcnet import PPLCNet
from keras_lcnet.deploy import export_openvino, runtime
from keras_lcnet.deploy.comparison import cpu_flags, describe_cpu_flags
from keras_lcnet.deploy.latency import cpu_model, interleave
from keras_lcnet.deploy.verify import calibrate_batchnorm

HERE = pathlib.Path(__file__).parent
# Variants: (name, CPU plugin properties added to or replacing `openvino_config`'s).
VARIANTS = (
    ("Runtime default", {}),
    ("pinning off", {"ENABLE_CPU_PINNING": False}),
    ("TBB auto partitioner", {"TBB_PARTITIONER": "AUTO"}),
    ("denormals flushed", {"CPU_DENORMALS_OPTIMIZATION": True}),
    ("THROUGHPUT hint, 1 stream", {"PERFORMANCE_HINT": "THROUGHPUT"}),
)
READ_BACK = ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "ENABLE_CPU_PINNING", "TBB_PARTITIONER",
             "PERFORMANCE_HINT", "CPU_DENORMALS_OPTIMIZATION")


def open_variant(path: str, threads: int, extra: dict) -> runtime.Runtime:
    """A `Runtime` for the IR whose CPU plugin properties are `openvino_config`'s plus `extra`."""
    base = runtime.openvino_config

    def config(precision: str, num_threads: int) -> dict:
        return {**base(precision, num_threads), **extra}

    with mock.patch.object(runtime, "openvino_config", config):
        return runtime.Runtime(path, num_threads=threads)


def read_back(path: str, threads: int, extra: dict) -> dict[str, str]:
    """The `READ_BACK` properties a compiled model actually got."""
    import openvino as ov

    properties = {**runtime.openvino_config("f32", threads), **extra}
    compiled = ov.Core().compile_model(path, "CPU", properties)
    return {n: str(compiled.get_property(n)) for n in READ_BACK}


def _changed(settings: dict, threads: int, name: str) -> str:
    """What a variant compiled with that `Runtime`'s default did not."""
    default = settings[threads, VARIANTS[0][0]]
    changed = [f"{k}={v}" for k, v in settings[threads, name].items() if default[k] != v]
    return ", ".join(changed) or "-"


def export(folder: pathlib.Path) -> dict[str, str]:
    images = sample_images()
    model = PPLCNet(scale=1.0, weights=None, input_shape=(224, 224, 3),
                    classifier_activation=None)
    calibrate_batchnorm(model, images)
    return {precision: os.fspath(export_openvino(
        model, folder / f"x1_0_{precision}.xml", precision=precision,
        calibration=images if precision == "int8" else None).path)
        for precision in ("f32", "int8")}


def report(results: dict, settings: dict, rounds: int, block: int, loads) -> str:
    lines = [
        "# OpenVINO threading settings", "",
        f"Measured by `benchmarks/openvino_threading.py` on {datetime.date.today()}: "
        f"{cpu_model()}; CPU flags {describe_cpu_flags(cpu_flags())}.", "",
        f"PPLCNet x1_0, batch 1, 224x224, random BN-calibrated weights. Median (p90) ms of "
        f"{rounds * block} runs ({rounds} interleaved rounds of {block}); ratio: median over "
        "`Runtime`'s default at the same precision and threads. Load average (1, 5, 15 min) "
        f"at the start: {', '.join(f'{v:.2f}' for v in loads[0])}; at the end: "
        f"{', '.join(f'{v:.2f}' for v in loads[1])}.", "",
        *(f"`Runtime`'s default compiles, read back, at {t} thread(s): " + ", ".join(
            f"{k}={v}" for k, v in settings[t, VARIANTS[0][0]].items()) + "." for t in (1, 2)),
        "", "| precision | threads | variant | median (p90) ms | ratio | read back: changed |",
        "|---|---|---|---|---|---|",
    ]
    for (precision, threads, name), result in results.items():
        base = results[precision, threads, VARIANTS[0][0]].median_ms
        lines.append(
            f"| {precision} | {threads} | {name} | {result.median_ms:.2f} ({result.p90_ms:.2f}) "
            f"| {result.median_ms / base:.2f} | {_changed(settings, threads, name)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds; print only")
    parser.add_argument("--rounds", type=int, default=None, help="default 25 (3 with --quick)")
    parser.add_argument("--block", type=int, default=6, help="timed runs per round (default 6)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 25)
    with tempfile.TemporaryDirectory() as tmp:
        paths = export(pathlib.Path(tmp))
        runners, settings = {}, {}
        for threads in (1, 2):
            for name, extra in VARIANTS:
                settings[threads, name] = read_back(paths["f32"], threads, extra)
                for precision, path in paths.items():
                    runners[precision, threads, name] = open_variant(path, threads, extra)
        loads = [os.getloadavg()]
        results = interleave(runners, rounds, args.block, warmup=5,
                             progress=lambda line: print(line, flush=True))
        loads.append(os.getloadavg())
    text = report(results, settings, rounds, args.block, loads)
    print(text)
    if not args.quick:
        (HERE / "openvino_threading.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
