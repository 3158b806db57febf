"""Generate legacy Paddle inference-model fixtures (``inference.pdmodel``, Paddle 2.x).

PaddlePaddle 2.6's ``paddle.jit.save`` writes the program as a ``ProgramDesc``
protobuf (``inference.pdmodel``), the form of PaddleClas' PULC ``*_infer.tar``
downloads. This script rebuilds the cases of ``tools/make_inference_fixtures.py``
(same seeds, same ``calibrated_model()`` recipe), saves each with Paddle 2.6 and
runs the Paddle Inference predictor on the ``.pdmodel``. It writes, into that
case's existing folder ``tests/fixtures/<name>/``:

* ``inference.pdmodel`` -- the legacy program;
* ``reference_pdmodel.npz`` -- ``logits_<i>``: the predictor's float32 outputs on
  the folder's ``reference.npz`` ``pixels_<i>``.

The ``.pdiparams`` Paddle 2.6 writes must be byte-identical to the committed one
(the script fails otherwise), so the folder's file serves both programs and the
fixtures stay small. The logits come from Paddle 2.6 running the legacy program.

Paddle 3.3.1 cannot write these (see ``tools/make_inference_fixtures.py``), so
this needs a Python 3.11 throwaway virtualenv with Paddle 2.6::

    python3.11 -m venv /tmp/paddle26-venv
    /tmp/paddle26-venv/bin/pip install paddlepaddle==2.6.2 'numpy<2'
    /tmp/paddle26-venv/bin/pip install --no-deps paddleclas==2.6.0
    /tmp/paddle26-venv/bin/pip install scikit-learn six requests pyyaml \\
        opencv-python-headless easydict prettytable tqdm 'numpy<2'

then, from the repository root::

    /tmp/paddle26-venv/bin/python tools/make_pdmodel_fixtures.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import paddle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIXTURES_DIR, calibrated_model, check_logits, normalise_nchw, predict
from make_inference_fixtures import CASES, paddle_inference  # the PIR fixtures' models

MAX_BYTES = 1_200_000  # the files this script adds, together


def run_case(name: str) -> None:
    """Build, save with Paddle 2.6 as ``.pdmodel``, check the weights, run the predictor."""
    assert paddle.__version__.startswith("2."), f"needs Paddle 2.x, not {paddle.__version__}"
    case = CASES[name]
    model, pixels = calibrated_model(case)
    folder = FIXTURES_DIR / name
    with np.load(folder / "reference.npz", allow_pickle=False) as data:
        for i, pix in enumerate(pixels):  # the same inputs as the PIR fixture
            np.testing.assert_array_equal(pix, data[f"pixels_{i}"])

    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "inference"
        spec = paddle.static.InputSpec([None, 3, None, None], "float32", "x")
        paddle.jit.save(model, str(prefix), input_spec=[spec])
        params = prefix.with_suffix(".pdiparams")
        assert params.read_bytes() == (folder / "inference.pdiparams").read_bytes(), (
            f"{name}: Paddle {paddle.__version__} wrote other parameters than the fixture's"
        )
        program = prefix.with_suffix(".pdmodel")
        logits = [paddle_inference(program, params, normalise_nchw(p)) for p in pixels]
        check_logits(case, logits)
        for got, eager in zip(logits, (predict(model, p) for p in pixels), strict=True):
            np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4 * np.abs(eager).max())
        shutil.copyfile(program, folder / "inference.pdmodel")
    arrays = {f"logits_{i}": out for i, out in enumerate(logits)}
    np.savez_compressed(folder / "reference_pdmodel.npz", **arrays)
    print(name, paddle.__version__, [out.shape for out in logits])


def main() -> None:
    """Run every case in its own subprocess (``PPLCNet`` mutates ``NET_CONFIG``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    args = parser.parse_args()
    if args.case:
        run_case(args.case)
        return
    for name in CASES:
        subprocess.run([sys.executable, __file__, "--case", name], check=True)
    added = [FIXTURES_DIR / n / f for n in CASES for f in ("inference.pdmodel",
                                                         "reference_pdmodel.npz")]
    total = sum(p.stat().st_size for p in added)
    print(f"{total:,} bytes added")
    assert total <= MAX_BYTES, total


if __name__ == "__main__":
    main()
