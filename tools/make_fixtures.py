"""Generate PaddleClas PP-LCNet reference fixtures for the parity tests.

For every case this writes, under ``tests/fixtures/``:

* ``<name>.pdparams`` -- a real PaddleClas checkpoint (``paddle.save`` of the
  state dict);
* ``<name>.npz`` -- ``config`` (0-d JSON string: constructor kwargs plus library
  versions) and, per test input ``i``, ``pixels_<i>`` (uint8 NHWC RGB) and
  ``logits_<i>`` (float32 eval-mode Paddle logits for the ImageNet-normalised pixels).

The weights are random but made informative: BN affine parameters and all biases are
randomised (their init values would hide mapping bugs) and the BN running statistics are
calibrated on synthetic images, so the logits genuinely depend on the input.

The reference needs PaddlePaddle and PaddleClas, which stay out of the project's own
environment. Create a throwaway virtualenv::

    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install paddlepaddle
    /tmp/refenv/bin/pip install --no-deps paddleclas
    /tmp/refenv/bin/pip install scikit-learn six requests pyyaml \
        opencv-python-headless easydict prettytable tqdm

then, from the repository root::

    /tmp/refenv/bin/python tools/make_fixtures.py

Each case is built in its own subprocess (``--case NAME``) because
``PPLCNet.__init__`` writes ``stride_list`` into PaddleClas' module-global
``NET_CONFIG``, which would leak strides from one model into the next. The output is
deterministic for a given Paddle build.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
MAX_FIXTURES_BYTES = 15_000_000  # all of tests/fixtures; decimal MB: the stricter reading
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CALIBRATION_BATCH = 16
# Minimum logit difference, relative to max |logit|, to count as input-dependent.
MIN_RELATIVE_SPREAD = 0.05

Stride = int | tuple[int, int]
DEFAULT_STRIDES: tuple[Stride, ...] = (2, 2, 2, 2, 2)


@dataclass(frozen=True)
class Case:
    """One reference model and the inputs it is evaluated on."""

    name: str
    seed: int
    scale: float
    class_num: int
    inputs: tuple[tuple[int, int, int], ...]  # (batch, height, width)
    stride_list: tuple[Stride, ...] = DEFAULT_STRIDES
    use_last_conv: bool = True
    dropout_prob: float = 0.2
    class_expand: int = 1280

    def kwargs(self) -> dict[str, Any]:
        """PPLCNet constructor kwargs, with lists as PaddleClas YAML configs give."""
        return {
            "scale": self.scale,
            "class_num": self.class_num,
            "dropout_prob": self.dropout_prob,
            "class_expand": self.class_expand,
            "stride_list": [
                list(s) if isinstance(s, tuple) else s for s in self.stride_list
            ],
            "use_last_conv": self.use_last_conv,
        }


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case(
            "pplcnet_x0_35",
            seed=35,
            scale=0.35,
            class_num=10,
            inputs=((2, 224, 224), (1, 161, 227)),
        ),
        Case(
            "pplcnet_x0_25",
            seed=25,
            scale=0.25,
            class_num=8,
            inputs=((2, 224, 224), (1, 193, 255)),
        ),
        Case(
            "pplcnet_x0_25_textline",
            seed=2511,
            scale=0.25,
            class_num=2,
            inputs=((2, 80, 160), (1, 47, 191)),
            stride_list=(2, (2, 1), (2, 1), (2, 1), (2, 1)),
        ),
        Case(
            "pplcnet_x0_25_no_last_conv",
            seed=2504,
            scale=0.25,
            class_num=4,
            inputs=((1, 224, 224), (1, 97, 131)),
            use_last_conv=False,
        ),
    )
}


# --------------------------------------------------------------------------- images


def synthetic_images(
    rng: np.random.RandomState, batch: int, height: int, width: int
) -> np.ndarray:
    """Natural-ish uint8 RGB images (NHWC): gradients, waves, blobs, mild noise."""
    return np.stack([_synthetic_image(rng, height, width) for _ in range(batch)])


def _synthetic_image(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    yy, xx = np.meshgrid(
        np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
    )
    img = np.broadcast_to(rng.uniform(60, 190, size=3), (height, width, 3)).copy()
    ramp = xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)
    img += ramp[..., None] * rng.uniform(-50, 50, size=3)
    for _ in range(rng.randint(2, 6)):  # waves at several scales and orientations
        angle, cycles = rng.uniform(0, np.pi), rng.uniform(0.5, 8)
        along = xx * np.cos(angle) + yy * np.sin(angle)
        wave = np.sin(2 * np.pi * cycles * along + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.uniform(-25, 25, size=3)
    for _ in range(rng.randint(1, 5)):  # soft blobs, object-like
        cy, cx, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.04, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        img += blob[..., None] * rng.uniform(-70, 70, size=3)
    # Mild sensor-like noise: high frequencies expose misplaced kernel taps.
    img += rng.normal(0, 2, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def normalise_nchw(pixels: np.ndarray) -> np.ndarray:
    """PaddleClas eval normalisation: x/255, ImageNet mean/std, NHWC -> NCHW float32."""
    x = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


# --------------------------------------------------------------------------- reference


def import_ppcls() -> None:
    """Put ``ppcls`` on sys.path (``import paddleclas`` itself would need faiss)."""
    if importlib.util.find_spec("ppcls") is not None:
        return  # also keeps this idempotent: the inserted dir shadows ``paddleclas``
    spec = importlib.util.find_spec("paddleclas")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("paddleclas is not installed; see this script's docstring.")
    sys.path.insert(0, next(iter(spec.submodule_search_locations)))


def build_model(case: Case) -> paddle.nn.Layer:
    """Instantiate PaddleClas' own PPLCNet and confirm its strides."""
    import_ppcls()  # ppcls is importable only after this, hence the local import
    from ppcls.arch.backbone.legendary_models import pp_lcnet

    # A fresh process must still see the pristine config; otherwise strides leaked in.
    assert all(pp_lcnet.NET_CONFIG[f"blocks{i}"][0][3] == 2 for i in range(3, 7)), (
        pp_lcnet.NET_CONFIG
    )
    model = pp_lcnet.PPLCNet(**case.kwargs())
    check_strides(model, case.stride_list)
    return model


def _pair(stride: Stride) -> list[int]:
    return list(stride) if isinstance(stride, tuple) else [stride, stride]


def check_strides(model: paddle.nn.Layer, strides: tuple[Stride, ...]) -> None:
    """Assert the stem and each stage's first depthwise conv got the asked stride."""
    convs = [model.conv1.conv] + [
        getattr(model, f"blocks{i}")[0].dw_conv.conv for i in range(3, 7)
    ]
    actual = [list(conv._stride) for conv in convs]
    expected = [_pair(s) for s in strides]
    assert actual == expected, f"strides {actual} != requested {expected}"


def randomise_trivial_params(
    model: paddle.nn.Layer, rng: np.random.RandomState
) -> None:
    """Replace ones/zeros init (BN affine, biases): a swapped tensor must show up."""

    def set_random(param: paddle.Tensor, values: np.ndarray) -> None:
        param.set_value(values.astype(np.float32).reshape(param.shape))

    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            set_random(layer.weight, rng.uniform(0.5, 1.5, size=layer.weight.shape))
            set_random(layer.bias, rng.normal(0.0, 0.1, size=layer.bias.shape))
        elif (
            isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear))
            and layer.bias is not None
        ):
            set_random(layer.bias, rng.normal(0.0, 0.1, size=layer.bias.shape))


def calibrate_batchnorm(model: paddle.nn.Layer, pixels: np.ndarray) -> None:
    """Make one batch's statistics the BN running stats (momentum 0: no blending)."""
    bns = [m for m in model.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    for bn in bns:
        bn._momentum = 0.0  # read at forward time by Paddle 3's _BatchNormBase
    model.train()
    with paddle.no_grad():
        model(paddle.to_tensor(normalise_nchw(pixels)))
    model.eval()
    assert all(float(bn._mean.abs().max()) > 0 for bn in bns), (
        "BN running stats not updated"
    )


def predict(model: paddle.nn.Layer, pixels: np.ndarray) -> np.ndarray:
    """Eval-mode logits, float32 (batch, class_num)."""
    with paddle.no_grad():
        logits = model(paddle.to_tensor(normalise_nchw(pixels)))
    return logits.numpy().astype(np.float32)


def count_trainable(model: paddle.nn.Layer) -> int:
    """Count learnable values (Paddle keeps BN running stats as frozen parameters)."""
    return sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)


# --------------------------------------------------------------------------- checks


def _max_rel_diff(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    return float(np.abs(a - b).max() / scale)


def check_logits(case: Case, logits: list[np.ndarray]) -> None:
    """Fail loudly if the reference is degenerate (non-finite, input-independent)."""
    for i, (out, (batch, _, _)) in enumerate(zip(logits, case.inputs, strict=True)):
        assert out.shape == (batch, case.class_num), (i, out.shape)
        assert np.isfinite(out).all(), f"{case.name}: non-finite logits for input {i}"
    scale = max(float(np.abs(out).max()) for out in logits)
    assert scale > 0, f"{case.name}: all logits are zero"
    for i, out in enumerate(logits):
        if len(out) > 1:
            spread = _max_rel_diff(out[0], out[1], scale)
            assert spread > MIN_RELATIVE_SPREAD, (
                f"{case.name}: rows of input {i} differ by {spread:.3f}"
            )
    across = _max_rel_diff(logits[0][0], logits[1][0], scale)
    assert across > MIN_RELATIVE_SPREAD, (
        f"{case.name}: inputs 0 and 1 differ by only {across:.3f}"
    )


# --------------------------------------------------------------------------- driver


def config_json(case: Case) -> str:
    """Serialise the constructor kwargs plus the versions behind the reference."""
    return json.dumps(
        {
            **case.kwargs(),
            "paddle_version": importlib.metadata.version("paddlepaddle"),
            "paddleclas_version": importlib.metadata.version("paddleclas"),
        }
    )


def calibrated_model(case: Case, build: Callable[[Any], paddle.nn.Layer] = build_model):
    """The case's ppcls model with informative weights, and its seeded input pixels.

    Conv/linear weights keep PaddleClas' own (Kaiming) init from `case.seed`;
    parameters that init leaves trivial are randomised and BN statistics
    calibrated in train mode, so that outputs depend on the input. `build`
    makes the model from the case (tools/make_v2_fixtures.py builds PPLCNetV2).
    """
    paddle.set_device("cpu")
    paddle.seed(case.seed)
    rng = np.random.RandomState(case.seed)
    model = build(case)
    randomise_trivial_params(model, rng)
    _, height, width = case.inputs[0]
    calibrate_batchnorm(model, synthetic_images(rng, CALIBRATION_BATCH, height, width))
    return model, [synthetic_images(rng, *shape) for shape in case.inputs]


def run_case(case: Case) -> None:
    """Build, randomise, calibrate and run one model; write .pdparams and .npz."""
    model, pixels = calibrated_model(case)
    logits = [predict(model, p) for p in pixels]
    check_logits(case, logits)

    FIXTURES_DIR.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(FIXTURES_DIR / f"{case.name}.pdparams"))
    arrays = {"config": np.array(config_json(case))}
    for i, (pix, out) in enumerate(zip(pixels, logits, strict=True)):
        arrays[f"pixels_{i}"], arrays[f"logits_{i}"] = pix, out
    np.savez_compressed(FIXTURES_DIR / f"{case.name}.npz", **arrays)

    lo, hi = min(float(o.min()) for o in logits), max(float(o.max()) for o in logits)
    argmax = [o.argmax(axis=1).tolist() for o in logits]
    print(
        f"{case.name}: {count_trainable(model):,} trainable params, "
        f"logits in [{lo:.3f}, {hi:.3f}], argmax {argmax}"
    )


def verify_npz(case: Case) -> None:
    """Check that a fixture loads without pickle and holds exactly the listed arrays."""
    with np.load(FIXTURES_DIR / f"{case.name}.npz", allow_pickle=False) as data:
        per_input = {
            f"{k}_{i}" for i in range(len(case.inputs)) for k in ("pixels", "logits")
        }
        expected = {"config"} | per_input
        assert set(data.files) == expected, data.files
        assert json.loads(str(data["config"]))["class_num"] == case.class_num
        for i, (batch, height, width) in enumerate(case.inputs):
            assert data[f"pixels_{i}"].dtype == np.uint8
            assert data[f"pixels_{i}"].shape == (batch, height, width, 3)
            assert data[f"logits_{i}"].dtype == np.float32


def check_total_size() -> None:
    """Print per-file sizes and keep the committed fixtures small."""
    files = sorted(p for p in FIXTURES_DIR.iterdir() if p.is_file())
    for path in files:
        print(
            f"  {path.stat().st_size:>10,}  {path.relative_to(FIXTURES_DIR.parents[1])}"
        )
    total = sum(p.stat().st_size for p in files)
    print(f"  {total:>10,}  total")
    assert total <= MAX_FIXTURES_BYTES, (
        f"fixtures take {total:,} bytes > {MAX_FIXTURES_BYTES:,}"
    )


def main() -> None:
    """Run every case in its own subprocess, or one case in-process with ``--case``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="build only this case")
    args = parser.parse_args()
    if args.case:
        run_case(CASES[args.case])
        return
    # One process per case: PPLCNet.__init__ mutates the module-global NET_CONFIG.
    for name, case in CASES.items():
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--case", name], check=True
        )
        verify_npz(case)
    check_total_size()


if __name__ == "__main__":
    main()
