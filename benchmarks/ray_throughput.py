"""Images per second: `predict_files` on this machine against Ray Data actors (`ray_data`).

Generates `--more` JPEGs (640x480, seeded), exports PP-LCNet x1_0 to ONNX
(random weights: throughput does not depend on them), then times, in
interleaved rounds, the whole run of each (listing, decoding, inference,
records; Ray's actor start-up included, since every Ray run starts its pool):

- `predict_files(folder, "lcnet.onnx")`: one process, onnxruntime on all
  cores, a decoding thread per core;
- `ray_records(folder, "lcnet.onnx", concurrency=N)` on a local Ray instance:
  N actors of one CPU each (one onnxruntime thread, one decoding thread).

    python benchmarks/ray_throughput.py --images 200 --more 400 --rounds 3 --actors 2

Each is run on the first `--images` files and on all `--more`: the table gives
images/s of the first run (start-up included) and the rate between the two
(`(more - images) / (t_more - t_images)`: start-up, mostly Ray's actors
importing Keras and opening the model, left out), the median of the rounds
and every round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image


def _images(folder: pathlib.Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):  # smooth gradients and noise: JPEG decoding costs what a photo's does
        ramp = np.linspace(0, 255, 640)[None, :, None] * rng.uniform(0.2, 1, (1, 1, 3))
        pixels = ramp + rng.normal(0, 20, (480, 640, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg")


def _model(folder: pathlib.Path) -> str:
    import keras_lcnet
    from keras_lcnet.deploy.onnx import export_onnx

    path = folder / "lcnet.onnx"
    export_onnx(keras_lcnet.PPLCNet_x1_0(weights=None), path)
    return str(path)


def _seconds(run, expected: int) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in run())
    assert count == expected, (count, expected)
    return time.perf_counter() - start


def _cpu() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--more", type=int, default=400,
                        help="a second, larger run: the rate between the two leaves out start-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was

    import ray

    import keras_lcnet
    from keras_lcnet.ray_data import ray_records

    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "images"
        folder.mkdir()
        _images(folder, args.more)
        files = sorted(str(path) for path in folder.iterdir())
        model = _model(pathlib.Path(tmp))
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        runs = {
            "`predict_files`, 1 process": lambda sources: keras_lcnet.predict_files(
                sources, model, batch_size=args.batch_size),
            f"Ray Data, {args.actors} actors x 1 CPU": lambda sources: ray_records(
                sources, model, batch_size=args.batch_size, concurrency=args.actors),
        }
        rates = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                few = _seconds(lambda run=run: run(files[: args.images]), args.images)
                many = _seconds(lambda run=run: run(files), args.more)
                rates[name].append((args.images / few, (args.more - args.images) / (many - few)))
        ray.shutdown()
    print(f"{args.images} and {args.more} images 640x480 JPEG, PP-LCNet x1_0 ONNX, batch "
          f"{args.batch_size}; {_cpu()}, {os.cpu_count()} CPUs, load average {load:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after")
    print(f"| run | images/s, {args.images} images | images/s, start-up left out | rounds |\n"
          "|---|---|---|---|")
    for name, values in rates.items():
        whole, steady = (statistics.median(v[i] for v in values) for i in (0, 1))
        shown = ", ".join(f"{a:.1f} / {b:.1f}" for a, b in values)
        print(f"| {name} | {whole:.1f} | {steady:.1f} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
