"""Images per second classifying a folder of JPEGs with `predict_files`, and where the time goes.

Generates `--count` JPEGs (seeded: mixed sizes, sides 160 to 1024 px,
portrait and landscape), exports PP-LCNet (random weights, batch-norm
statistics calibrated on the sample photos; throughput does not depend on
weight values) to LiteRT and ONNX at the batch size, then times, for Keras
TF, LiteRT and onnxruntime at 1 and 2 threads (with as many decoding workers):

- end to end: `predict_files(folder, model, batch_size, workers)` written to
  JSON Lines by `write_records`, as `keras-lcnet predict --output` does
  (listing, decoding, inference, records, fsync per batch), with the time the
  pipeline spent inside the model's calls;
- bare inference: the same model call on pre-decoded images, batch by batch;
- input side: `predict_files` with a model that returns zeros at once, i.e.
  everything of the end-to-end run except inference (decoding, records, file).

Each thread count runs in its own process, since TensorFlow fixes its thread
pools when it starts; within it the configurations are interleaved round by
round, so a slow phase of a shared machine hits all of them alike.

    python benchmarks/folder_throughput.py            # writes throughput.md here
    python benchmarks/folder_throughput.py --quick    # 200 JPEGs, 2 rounds; prints only
    python benchmarks/folder_throughput.py --models x1_0,x0_25 --output-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

BATCH_SIZE = 32
THREADS = (1, 2)
SIDES = (160, 1024)  # smallest and largest image side, px
RUNTIMES = {"Keras TF": ".keras", "LiteRT": ".tflite", "ORT": ".onnx"}
MODEL_KEYS = ("x0_25", "x1_0")
BARE_IMAGES = 256  # pre-decoded images for bare inference (float32: 0.6 MB each)
E2E_OVER_BARE = 0.8  # target: end to end at least this share of bare inference
SPEEDUP_OVER_KERAS = 3.0  # target: LiteRT and ORT end to end at least this many times Keras'
NUM_CLASSES = 1000


def jpeg_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """`(width, height)` of each generated image: uniform in `SIDES`, so both orientations."""
    rng = np.random.default_rng(seed)
    return [tuple(int(s) for s in rng.integers(SIDES[0], SIDES[1] + 1, 2)) for _ in range(count)]


def make_jpegs(folder: pathlib.Path, count: int, seed: int = 0) -> list[pathlib.Path]:
    """Writes `count` JPEGs (quality 90) of `jpeg_sizes(count, seed)` into `folder`.

    Each is a colour gradient with a few blurred blobs and mild noise: enough
    detail that decoding costs about what it costs for a photo of that size.
    """
    rng = np.random.default_rng(seed + 1)
    paths = []
    for i, (width, height) in enumerate(jpeg_sizes(count, seed)):
        # The smooth part is drawn at 1/8 size and enlarged: much faster, same look.
        small = (max(height // 8, 1), max(width // 8, 1))
        y, x = np.mgrid[0:small[0], 0:small[1]].astype(np.float32)
        pixels = (x / small[1])[..., None] * rng.uniform(60, 255, 3)
        for _ in range(3):
            cy, cx = rng.uniform(0, small[0]), rng.uniform(0, small[1])
            blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(3, 25) ** 2))
            pixels += blob[..., None] * rng.uniform(-120, 120, 3)
        smooth = Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BILINEAR)
        noise = rng.integers(-8, 9, (height, width, 3), dtype=np.int16)
        pixels = (np.asarray(smooth, np.int16) + noise).clip(0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def export_models(keys: tuple[str, ...], folder: pathlib.Path, batch_size: int) -> dict:
    """`{key: {runtime: file}}`: each model saved as .keras and exported at `batch_size`."""
    from latency import sample_images  # benchmarks/latency.py, beside this script

    import keras_lcnet
    from keras_lcnet.deploy import export_litert, export_onnx
    from keras_lcnet.deploy.verify import calibrate_batchnorm
    from keras_lcnet.presets import VARIANTS

    images, files = sample_images(), {}
    for key in keys:
        model = keras_lcnet.PPLCNet(scale=VARIANTS[key], weights=None)
        calibrate_batchnorm(model, images)
        paths = {name: folder / f"PPLCNet_{key}{suffix}" for name, suffix in RUNTIMES.items()}
        model.save(paths["Keras TF"])
        export_litert(model, paths["LiteRT"], batch_size=batch_size)
        export_onnx(model, paths["ORT"], batch_size=batch_size)
        files[key] = {name: str(path) for name, path in paths.items()}
        print(f"exported PPLCNet_{key}", flush=True)
    return files


# The measuring process: one per thread count.


class _NoModel:
    """A Keras-like model that returns zeros at once: `predict_files` without inference."""

    output_shape = (None, NUM_CLASSES)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        return np.zeros((len(images), NUM_CLASSES), np.float32)


class _TimedKeras:
    """A Keras model whose `predict_on_batch` adds its wall time to `seconds`."""

    def __init__(self, model) -> None:
        self.model, self.output_shape, self.seconds = model, model.output_shape, 0.0

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        import keras

        start = time.perf_counter()
        scores = keras.ops.convert_to_numpy(self.model.predict_on_batch(images))
        self.seconds += time.perf_counter() - start
        return scores

    predict = predict_on_batch


def _timed_runtime(path: str, threads: int):
    """A `Runtime` whose `predict` adds its wall time to `seconds`."""
    from keras_lcnet.deploy.runtime import Runtime

    class TimedRuntime(Runtime):
        seconds = 0.0

        def predict(self, images: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            scores = super().predict(images)
            self.seconds += time.perf_counter() - start
            return scores

    return TimedRuntime(path, num_threads=threads)


def _open(path: str, threads: int):
    if path.endswith(".keras"):
        import keras

        return _TimedKeras(keras.saving.load_model(path))
    return _timed_runtime(path, threads)


def end_to_end(sources, model, workers: int, batch_size: int, output: str) -> tuple[float, int]:
    """`(seconds, records)` of `predict_files` written to `output` as the CLI writes it."""
    import keras_lcnet
    from keras_lcnet.record_files import open_records, write_records

    start = time.perf_counter()
    with open_records(output) as file:
        records = keras_lcnet.predict_files(sources, model, batch_size=batch_size,
                                            workers=workers)
        errors = [r["error"] for r in write_records(records, file, batch_size) if "error" in r]
    seconds = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} files failed, e.g. {errors[0]}")
    return seconds, sum(1 for _ in open(output))


def bare(model, images: np.ndarray, batch_size: int) -> float:
    """Seconds the model's call takes on `images`, batch by batch, as `predict_files` calls it."""
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        model.predict(images[first:first + batch_size])
    return time.perf_counter() - start


def _decoded_sample(files: list[str], count: int) -> np.ndarray:
    from keras_lcnet import load_image

    return np.concatenate([load_image(f, data_format="channels_last") for f in files[:count]])


def measure(spec: dict) -> dict:
    """Rates (images/s) of every configuration at `spec["threads"]`, per round."""
    threads, batch_size, folder = spec["threads"], spec["batch_size"], spec["folder"]
    files = sorted(str(p) for p in pathlib.Path(folder).iterdir())
    images = _decoded_sample(files, min(len(files), BARE_IMAGES))
    models = {(key, name): _open(path, threads)
              for key, paths in spec["models"].items() for name, path in paths.items()}
    warmup = files[:batch_size + (len(files) % batch_size or batch_size)]  # last batch's shape too
    out = os.path.join(spec["scratch"], f"records_{threads}.jsonl")
    for model in [*models.values(), _NoModel()]:
        end_to_end(warmup, model, threads, batch_size, out)
    rates: dict[str, list] = {"input side": []}
    for _ in range(spec["rounds"]):
        seconds, n = end_to_end(folder, _NoModel(), threads, batch_size, out)
        rates["input side"].append(n / seconds)
        for (key, name), model in models.items():
            model.seconds = 0.0
            seconds, n = end_to_end(folder, model, threads, batch_size, out)
            inference = model.seconds
            rates.setdefault(f"{key}|{name}|e2e", []).append(n / seconds)
            rates.setdefault(f"{key}|{name}|in model", []).append(inference / seconds)
            rates.setdefault(f"{key}|{name}|bare", []).append(
                len(images) / bare(model, images, batch_size))
        print(f"{threads}T round done", file=sys.stderr, flush=True)
    return rates


def _child_main(spec_path: str) -> int:
    spec = json.loads(pathlib.Path(spec_path).read_text())
    import tensorflow as tf

    # Before TensorFlow starts its runtime: Keras gets the same threads as the others.
    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    pathlib.Path(spec["result"]).write_text(json.dumps(measure(spec)))
    return 0


# The report.


@dataclasses.dataclass
class Row:
    """Median rates of one model, runtime and thread count."""

    model: str
    runtime: str
    threads: int
    e2e: float  # images/s end to end
    bare: float  # images/s of the model's calls alone
    in_model: float  # share of the end-to-end wall time spent in the model's calls
    input_side: float  # images/s of predict_files with no inference, same workers


def rows(results: dict[int, dict[str, list]]) -> list[Row]:
    """Table rows from each thread count's per-round rates (medians)."""
    table = []
    for threads, rates in sorted(results.items()):
        for label in rates:
            key, _, rest = label.partition("|")
            name, _, kind = rest.partition("|")
            if kind == "e2e":
                med = {k: statistics.median(rates[f"{key}|{name}|{k}"])
                       for k in ("e2e", "bare", "in model")}
                table.append(Row(key, name, threads, med["e2e"], med["bare"], med["in model"],
                                 statistics.median(rates["input side"])))
    return table


def verdict(value: float, limit: float) -> str:
    """`pass` when `value` reaches `limit`, else `FAIL`."""
    return "pass" if value >= limit else "FAIL"


def speedups(table: list[Row]) -> list[tuple[str, int, str, float]]:
    """`(model, threads, runtime, e2e / Keras TF e2e)` for LiteRT and ORT."""
    keras_e2e = {(r.model, r.threads): r.e2e for r in table if r.runtime == "Keras TF"}
    return [(r.model, r.threads, r.runtime, r.e2e / keras_e2e[r.model, r.threads])
            for r in table if r.runtime != "Keras TF" and (r.model, r.threads) in keras_e2e]


def _tables(table: list[Row]) -> list[str]:
    lines = [
        "| model | runtime | threads = workers | end to end, img/s | bare inference, img/s "
        "| e2e / bare | >= 0.8 | in model calls, % of e2e | model calls in the run, img/s "
        "| input side, img/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        ratio = r.e2e / r.bare
        lines.append(f"| PPLCNet_{r.model} | {r.runtime} | {r.threads} | {r.e2e:.1f} | "
                     f"{r.bare:.1f} | {ratio:.2f} | {verdict(ratio, E2E_OVER_BARE)} | "
                     f"{100 * r.in_model:.0f} | {r.e2e / r.in_model:.1f} | {r.input_side:.1f} |")
    lines += ["", "| model | threads = workers | runtime | end to end / Keras TF end to end "
              "| >= 3x |", "|---|---|---|---|---|"]
    for model, threads, runtime, value in speedups(table):
        lines.append(f"| PPLCNet_{model} | {threads} | {runtime} | {value:.2f}x | "
                     f"{verdict(value, SPEEDUP_OVER_KERAS)} |")
    return lines


def _environment(args, loads, images: str) -> list[str]:
    import PIL.features
    from latency import _versions

    import keras_lcnet
    from keras_lcnet.deploy.comparison import cpu_flags, describe_cpu_flags
    from keras_lcnet.deploy.latency import cpu_model

    turbo = PIL.features.version("libjpeg_turbo") or "no"
    return [
        f"Measured by `benchmarks/folder_throughput.py` on {datetime.date.today().isoformat()}: "
        f"{cpu_model()}, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}; keras-lcnet from {pathlib.Path(keras_lcnet.__file__).parent}"
        f"; {_versions()}, Pillow {Image.__version__} "
        f"(libjpeg-turbo {turbo}).", "",
        f"CPU flags (/proc/cpuinfo): {describe_cpu_flags(cpu_flags())}.", "",
        f"System load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in loads[0])}; "
        f"after: {', '.join(f'{v:.2f}' for v in loads[1])}.", "",
        f"{images}; batch {args.batch_size}; median of {args.rounds} interleaved rounds.", "",
    ]


def report(args, results, loads, images: str) -> str:
    """The markdown page: set-up, the two tables, and how to read them."""
    lines = [
        "# Folder throughput", "", *_environment(args, loads, images),
        "End to end: `keras_lcnet.predict_files(folder, model, batch_size, workers)` written to "
        "JSON Lines by `record_files.write_records` (what `keras-lcnet predict SOURCE --output "
        "FILE.jsonl` runs): listing, decoding with `load_image`, inference, `decode_predictions`, "
        "an fsync per batch. LiteRT and ORT models are `keras_lcnet.deploy.runtime.Runtime` "
        "objects with that many threads; Keras TF is `predict_on_batch` with TensorFlow's "
        "intra-op threads set to that many. Bare inference: the same model call on "
        f"{BARE_IMAGES} pre-decoded images, batch by batch. In model calls: the share of the "
        "end-to-end wall time the pipeline spent inside the model call (the rest: waiting for "
        "decoding, records, writing); model calls in the run: the images/s of those calls, "
        "to set against bare inference (lower: decoding took CPU time from inference; a "
        "high share in model calls with a low e2e / bare means decoding competed for the "
        "cores rather than stalled the pipeline). Input side: `predict_files` with a model "
        "that returns zeros at once, i.e. all of the end-to-end work except inference, with "
        "the same decoding workers. Random weights (`weights=None`, batch-norm statistics "
        "calibrated on the sample photos).", "",
        *_tables(rows(results)), "",
    ]
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 JPEGs (unless --count), 2 rounds; prints only (unless "
                        "--output-dir)")
    parser.add_argument("--count", type=int, default=None, help="JPEGs (default 2000)")
    parser.add_argument("--models", default="x1_0",
                        help=f"comma list from {', '.join(MODEL_KEYS)} (default x1_0)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (--quick: 2)")
    parser.add_argument("--output-dir", type=pathlib.Path, default=None,
                        help="where to write throughput.md (default: this folder; with "
                        "--quick: nowhere)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the per-thread-count process
    args = parser.parse_args()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models or set(models) - set(MODEL_KEYS):
        parser.error(f"--models: choose from {', '.join(MODEL_KEYS)}, got {args.models!r}")
    if (args.count is not None and args.count < 1) or args.batch_size < 1:
        parser.error("--count and --batch-size must be positive")
    args.models = tuple(k for k in MODEL_KEYS if k in models)
    args.count = args.count or (200 if args.quick else 2000)
    args.rounds = args.rounds or (2 if args.quick else 3)
    return args


def _describe(paths: list[pathlib.Path]) -> str:
    sizes = jpeg_sizes(len(paths))
    portrait = sum(h > w for w, h in sizes)
    megapixels = statistics.mean(w * h for w, h in sizes) / 1e6
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    return (f"{len(paths)} generated JPEGs (seeded; sides {SIDES[0]} to {SIDES[1]} px, "
            f"{portrait} portrait; mean {megapixels:.2f} Mpx, {megabytes:.0f} MB in all)")


def main() -> int:
    args = _arguments()
    if args.measure:
        return _child_main(args.measure)
    folder_out = args.output_dir or (None if args.quick else pathlib.Path(__file__).parent)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "images").mkdir()
        images = _describe(make_jpegs(tmp / "images", args.count))
        models = export_models(args.models, tmp, args.batch_size)
        loads = [os.getloadavg()]
        for threads in THREADS:
            spec = {"threads": threads, "batch_size": args.batch_size, "rounds": args.rounds,
                    "folder": str(tmp / "images"), "models": models, "scratch": str(tmp),
                    "result": str(tmp / f"rates_{threads}.json")}
            (tmp / "spec.json").write_text(json.dumps(spec))
            subprocess.run([sys.executable, __file__, "--measure", str(tmp / "spec.json")],
                           check=True)
            results[threads] = json.loads((tmp / f"rates_{threads}.json").read_text())
        loads.append(os.getloadavg())
    text = report(args, results, loads, images)
    print(text)
    if folder_out is not None:
        folder_out.mkdir(parents=True, exist_ok=True)
        (folder_out / "throughput.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
