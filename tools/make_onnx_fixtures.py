"""Generate paddle2onnx fixtures: the inference-model fixtures exported to ONNX, with outputs.

For each Paddle inference model ``tests/fixtures/inference_<case>/`` written by
``tools/make_inference_fixtures.py`` this writes, under ``tests/fixtures/onnx_<case>/``:

* ``inference.onnx`` -- paddle2onnx's export of that model with the command line's defaults
  (``paddle2onnx -m DIR -mf inference.json -pf inference.pdiparams -s inference.onnx``);
* ``onnxruntime.npz`` -- per test input ``i``, ``source_<i>`` (where its uint8 NHWC RGB
  pixels are: ``"<inference fixture>/<array>"``, not copied, to keep the fixtures small)
  and ``logits_<i>`` (float32 outputs of onnxruntime's CPU session on that graph, fed the
  ImageNet-normalised pixels): a 224x224 image and an odd, non-square one.

The export keeps a dynamic batch, height and width, so one file serves both sizes.
Before writing, onnxruntime's outputs are checked against the Paddle Inference outputs
recorded in the inference fixture's ``reference.npz``.

Made with paddle2onnx 2.1.0 (its default optimiser, polygraphy, folds the SE biases'
reshape into ``[1, C, 1, 1]`` initializers; batch norms stay BatchNormalization nodes),
PaddlePaddle 3.3.1, onnx 1.17.0 and onnxruntime 1.32.0. Run it with the throwaway
virtualenv of ``tools/make_fixtures.py`` plus ``pip install paddle2onnx onnxruntime``,
from the repository root::

    /tmp/refenv/bin/python tools/make_onnx_fixtures.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIXTURES_DIR, normalise_nchw  # a sibling script: its recipe

MAX_BYTES = 2_000_000  # these fixtures together
# Per case: where each test input's pixels come from, `(inference fixture, array)`.
INPUTS = {
    "x0_25": (("inference_x0_25", "pixels_0"), ("inference_x0_25", "pixels_1")),
    # The text-line model's own 47x191 input, and the 224x224 one of the x0_25 case.
    "x0_25_textline": (("inference_x0_25", "pixels_0"), ("inference_x0_25_textline", "pixels_1")),
}
TOLERANCE = 1e-4  # max |onnxruntime - paddle| / max |paddle|


def export(source: Path, target: Path) -> None:
    """Runs paddle2onnx's command line on an inference model, defaults only."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "inference.onnx"
        command = [
            str(Path(sys.executable).with_name("paddle2onnx")),
            "-m", str(source), "-mf", "inference.json", "-pf", "inference.pdiparams",
            "-s", str(out),
        ]
        subprocess.run(command, check=True)
        shutil.move(out, target)


def run(session: onnxruntime.InferenceSession, pixels: np.ndarray) -> np.ndarray:
    """onnxruntime's outputs for uint8 NHWC pixels."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: normalise_nchw(pixels)})[0].astype(np.float32)


def reference(case: str) -> dict[str, np.ndarray]:
    """The Paddle Inference fixture's pixels and logits."""
    with np.load(FIXTURES_DIR / case / "reference.npz") as data:
        return {key: data[key] for key in data.files}


def make_case(case: str) -> None:
    """Export, check against Paddle Inference, record onnxruntime's outputs."""
    out_dir = FIXTURES_DIR / f"onnx_{case}"
    out_dir.mkdir(exist_ok=True)
    export(FIXTURES_DIR / f"inference_{case}", out_dir / "inference.onnx")
    session = onnxruntime.InferenceSession(
        str(out_dir / "inference.onnx"), providers=["CPUExecutionProvider"]
    )
    paddle = reference(f"inference_{case}")
    for i in range(2):  # the graph computes what Paddle Inference computed
        got, expected = run(session, paddle[f"pixels_{i}"]), paddle[f"logits_{i}"]
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error <= TOLERANCE, (case, i, error)
    arrays = {}
    for i, (source, key) in enumerate(INPUTS[case]):
        pixels = reference(source)[key]
        arrays[f"source_{i}"], arrays[f"logits_{i}"] = f"{source}/{key}", run(session, pixels)
    np.savez_compressed(out_dir / "onnxruntime.npz", **arrays)
    print(case, {k: np.shape(v) for k, v in arrays.items()})


def main() -> None:
    """Make every case and check the size budget."""
    for case in INPUTS:
        make_case(case)
    total = sum(p.stat().st_size for c in INPUTS for p in (FIXTURES_DIR / f"onnx_{c}").iterdir())
    print(f"{total:,} bytes")
    assert total <= MAX_BYTES, total


if __name__ == "__main__":
    main()
