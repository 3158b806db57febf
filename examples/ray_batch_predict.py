"""Classify a folder of images on a Ray cluster (or this machine) into a record file.

    pip install "keras-lcnet[ray,export]"
    keras-lcnet export --variant x1_0 --weights imagenet --output lcnet.onnx
    python examples/ray_batch_predict.py photos/ --model lcnet.onnx --output photos.jsonl
    python examples/ray_batch_predict.py /shared/photos/ --model /shared/lcnet.onnx \\
        --output photos.parquet --address auto --concurrency 16

Without `--address` a local Ray instance starts (or `RAY_ADDRESS` is used);
with one, the driver joins that cluster. Each actor opens the model once and
classifies batches of files exactly as `keras-lcnet predict --output` does, so
the file holds the same records; a file that cannot be read gets an error
record. On a cluster, the model and the images must be at the same paths on
every node (a shared file system). `--resume` goes on with an unfinished file.
"""

from __future__ import annotations

import argparse
import sys

from keras_lcnet.ray_data import predict_with_ray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--model", required=True,
                        help="a .onnx, .tflite or .keras file, at this path on every node")
    parser.add_argument("--output", required=True, help="a .jsonl, .csv or .parquet file")
    parser.add_argument("--address", default=None,
                        help='the Ray cluster ("auto", "ray://head:10001"); default: local')
    parser.add_argument("--preset", default=None, help="the task preset the model is for")
    parser.add_argument("--batch-size", type=int, default=32, help="images per actor call")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="actors (default: as many as the cluster's CPUs allow)")
    parser.add_argument("--num-cpus-per-actor", type=int, default=1)
    parser.add_argument("--resume", action="store_true",
                        help="keep the output's records and classify only the rest")
    args = parser.parse_args(argv)
    try:
        written, failed = predict_with_ray(
            args.sources, args.model, args.output, preset=args.preset,
            batch_size=args.batch_size, concurrency=args.concurrency,
            num_cpus_per_actor=args.num_cpus_per_actor, resume=args.resume,
            address=args.address)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{written} records written to {args.output}, {failed} of them errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
