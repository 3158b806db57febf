"""onnxruntime latency of our PP-LCNet ONNX export beside paddle2onnx's graph of the same network.

paddle2onnx's graph takes NCHW images normalized outside it; ours takes NHWC
pixels in [0, 255] (the default export) or NCHW ones (`nchw_input=True`),
normalizing them inside. All are timed interleaved in one process (see
`keras_lcnet.deploy.latency.interleave`), batch 1, 224x224, with `Runtime`'s
onnxruntime settings (thread spinning off), at 1 and 2 threads. Every
measurement is repeated and printed with the load average, since a shared
machine's noise is larger than the differences measured.

The paddle2onnx file comes from PaddleClas' own `PPLCNet` (random weights;
latency does not depend on them), made in the throwaway virtualenv of
`tools/make_onnx_fixtures.py` (paddlepaddle, paddleclas, paddle2onnx), from
the repository root:

    /tmp/paddle-venv/bin/python - <<'EOF'
    import subprocess, sys; sys.path.insert(0, "tools")
    import paddle
    from make_fixtures import Case, build_model
    model = build_model(Case("x1_0", seed=0, scale=1.0, class_num=1000, inputs=()))
    model.eval()
    spec = paddle.static.InputSpec([None, 3, None, None], "float32", "x")
    paddle.jit.save(model, "/tmp/p2o/inference", input_spec=[spec])
    subprocess.run(["/tmp/paddle-venv/bin/paddle2onnx", "-m", "/tmp/p2o", "-mf", "inference.json",
                    "-pf", "inference.pdiparams", "-s", "/tmp/p2o/inference.onnx"], check=True)
    EOF
    python benchmarks/onnx_vs_paddle2onnx.py /tmp/p2o/inference.onnx --variant x1_0

`--extra NAME=PATH` adds other ONNX files (such as an export by an older
version) to the same interleaved runs. Each line gives every model's median
and its ratio to paddle2onnx's median (and of the minimums).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import numpy as np

from keras_lcnet import PPLCNet, load_image
from keras_lcnet.deploy import export_onnx
from keras_lcnet.deploy.latency import cpu_model, interleave
from keras_lcnet.deploy.runtime import Runtime
from keras_lcnet.deploy.verify import calibrate_batchnorm
from keras_lcnet.presets import VARIANTS

SIZE = 224
IMAGES = pathlib.Path(__file__).parents[1] / "examples" / "images"


def static_paddle2onnx(path: str, folder: pathlib.Path) -> str:
    """paddle2onnx's dynamic-shape graph with its input fixed to `(1, 3, SIZE, SIZE)`."""
    import onnx
    from onnx.tools import update_model_dims

    model = onnx.load(path)
    source, result = model.graph.input[0].name, model.graph.output[0]
    classes = result.type.tensor_type.shape.dim[1].dim_value
    model = update_model_dims.update_inputs_outputs_dims(
        model, {source: [1, 3, SIZE, SIZE]}, {result.name: [1, classes]})
    target = str(folder / "paddle2onnx_static.onnx")
    onnx.save(onnx.shape_inference.infer_shapes(model), target)
    return target


def export_ours(variant: str, folder: pathlib.Path) -> dict[str, str]:
    """Our NHWC (default) and NCHW exports of a BN-calibrated random-weight PP-LCNet."""
    model = PPLCNet(scale=VARIANTS[variant], weights=None, input_shape=(SIZE, SIZE, 3),
                    classifier_activation=None)  # logits, as paddle2onnx's graph
    images = np.concatenate([load_image(p, size=SIZE) for p in sorted(IMAGES.glob("*.jpg"))])
    calibrate_batchnorm(model, images)
    paths = {}
    for key, nchw in (("ours NHWC", False), ("ours NCHW", True)):
        paths[key] = str(folder / f"{key.replace(' ', '_')}.onnx")
        print(export_onnx(model, paths[key], nchw_input=nchw).summary())
    return paths


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paddle2onnx", help="paddle2onnx's .onnx file of the same variant")
    parser.add_argument("--variant", default="x1_0", choices=sorted(VARIANTS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        paths = {"paddle2onnx": static_paddle2onnx(args.paddle2onnx, folder)}
        paths.update(export_ours(args.variant, folder))
        paths.update(extra.split("=", 1) for extra in args.extra)
        print(f"CPU: {cpu_model()}")
        for threads in (int(t) for t in args.threads.split(",")):
            for repeat in range(args.repeats):
                before = load_average()
                runners = {key: Runtime(path, threads) for key, path in paths.items()}
                results = interleave(runners, args.rounds, block=5, warmup=10)
                base = results["paddle2onnx"]
                ratios = ", ".join(
                    f"{key} {r.median_ms:.3f} ms ({r.median_ms / base.median_ms:.3f}x, "
                    f"min {r.min_ms / base.min_ms:.3f}x)" for key, r in results.items())
                print(f"{threads}T #{repeat + 1} [load {before} -> {load_average()}]: {ratios}")


if __name__ == "__main__":
    main()
