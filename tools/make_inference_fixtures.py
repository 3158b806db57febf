"""Generate Paddle inference-model fixtures (``paddle.jit.save`` + Paddle Inference outputs).

For each case this writes, under ``tests/fixtures/<name>/``:

* ``inference.json`` -- the Paddle 3 PIR program (names and shapes of the parameters);
* ``inference.pdiparams`` -- the combined parameters, as ``paddle.jit.save`` writes them;
* ``reference.npz`` -- per test input ``i``, ``pixels_<i>`` (uint8 NHWC RGB) and
  ``logits_<i>`` (float32 outputs of the Paddle Inference predictor on CPU, fed the
  ImageNet-normalised pixels).

The network is PaddleClas' own ``PPLCNet`` with the informative random weights of
``tools/make_fixtures.py`` (randomised BN affine/biases, BN statistics calibrated).
Run it with the same throwaway virtualenv, from the repository root::

    /tmp/refenv/bin/python tools/make_inference_fixtures.py

Each case runs in its own subprocess (``PPLCNet.__init__`` mutates ``NET_CONFIG``).

The legacy ``inference.pdmodel`` programs come from Paddle 2.6
(``tools/make_pdmodel_fixtures.py``): with ``FLAGS_enable_pir_api=0`` PaddlePaddle
3.3.1's ``paddle.jit.save`` fails on PPLCNet's SE block ("multiply(): argument
(position 1) must be Value, but got Variable").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # a sibling script: its recipe, not a copy
    FIXTURES_DIR,
    Case,
    calibrated_model,
    check_logits,
    normalise_nchw,
    predict,
)

MAX_BYTES = 2_000_000  # these fixtures together
# class_expand=512 (not 1280) keeps the two cases under MAX_BYTES; the head's width
# is read off the shapes like any other.
CASES = {
    case.name: case
    for case in (
        Case("inference_x0_25", seed=250, scale=0.25, class_num=8,
             inputs=((1, 224, 224), (1, 161, 227)), class_expand=512),
        Case("inference_x0_25_textline", seed=2512, scale=0.25, class_num=2,
             inputs=((1, 80, 160), (1, 47, 191)),
             stride_list=(2, (2, 1), (2, 1), (2, 1), (2, 1)), class_expand=512),
    )
}


def paddle_inference(program: Path, params: Path, x: np.ndarray) -> np.ndarray:
    """Runs a saved program (`.json` or legacy `.pdmodel`) with the Paddle Inference predictor."""
    from paddle import inference

    config = inference.Config(str(program), str(params))
    config.disable_gpu()
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    out = predictor.get_output_handle(predictor.get_output_names()[0])
    return out.copy_to_cpu().astype(np.float32)


def run_case(case: Case) -> None:
    """Build, randomise, calibrate, save as an inference model, run Paddle Inference."""
    model, pixels = calibrated_model(case)

    out_dir = FIXTURES_DIR / case.name
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = paddle.static.InputSpec([None, 3, None, None], "float32", "x")
    paddle.jit.save(model, str(out_dir / "inference"), input_spec=[spec])
    program, params = out_dir / "inference.json", out_dir / "inference.pdiparams"
    logits = [paddle_inference(program, params, normalise_nchw(p)) for p in pixels]
    check_logits(case, logits)
    eager = [predict(model, p) for p in pixels]
    for a, b in zip(logits, eager, strict=True):  # the predictor agrees with eager Paddle
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    arrays = {}
    for i, (pix, out) in enumerate(zip(pixels, logits, strict=True)):
        arrays[f"pixels_{i}"], arrays[f"logits_{i}"] = pix, out
    np.savez_compressed(out_dir / "reference.npz", **arrays)
    print(case.name, sorted(p.name for p in out_dir.iterdir()))


def main() -> None:
    """Run every case in its own subprocess, or one with ``--case``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    args = parser.parse_args()
    if args.case:
        run_case(CASES[args.case])
        return
    for name in CASES:
        subprocess.run([sys.executable, __file__, "--case", name], check=True)
    total = sum(p.stat().st_size for n in CASES for p in (FIXTURES_DIR / n).iterdir())
    print(f"{total:,} bytes")
    assert total <= MAX_BYTES, total


if __name__ == "__main__":
    main()
