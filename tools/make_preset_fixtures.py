"""Generate the PP-LCNet x1_0 preset parity fixtures and the channel-order proof.

An x1_0 ``.pdparams`` is ~12 MB, too big to commit per preset architecture. So every
non-BN parameter (conv kernels, SE convs and biases, fc) is drawn from a seed by
``seeded_paddle_weights`` in ``tests/helpers.py`` (the one place the recipe lives; the
tests regenerate the same arrays), BN affine parameters are randomised and the BN
statistics calibrated in train mode (a net whose BN stats stay at init collapses), and
only the BN tensors are saved. Per case, ``tests/fixtures/<name>.npz`` holds:

* ``config``: 0-d JSON string: PPLCNet kwargs, ``seed``, ``param_shapes`` (the seeded
  parameters' names and shapes), ``bn_shapes`` (the same for the BN tensors), versions;
* ``weights_checksum``: per seeded tensor, its float64 sum (sorted keys);
* ``bn_state``: every BatchNorm weight, bias, ``_mean`` and ``_variance``, flattened and
  concatenated in the key order of ``config["bn_shapes"]`` (one array: a zip member per
  tensor would cost more than the data);
* ``pixels_<i>`` (uint8 NHWC RGB) and ``logits_<i>`` (PaddleClas eval logits) for a
  preset-sized input and an odd-sized one;
* ``deploy_logits`` (two cases only): PaddleClas' logits for its own deploy tensor below.

The channel-order proof writes ``tests/fixtures/channel_order.png`` (a colour gradient)
and ``tests/fixtures/channel_order.npz``: the network input (CHW float32) PaddleClas'
deploy pipeline makes of that file, read as ``deploy/python/predict_cls.py`` reads
(``cv2.imread``, then ``[:, :, ::-1]`` to RGB) and transformed by ``create_operators``
of ``deploy/python/preprocess.py`` with the ``PreProcess`` ops of two PULC deploy yamls:
``resize_short_crop`` (person_exists: resize short side 256, crop 224) and
``direct_resize`` (textline_orientation: resize to 80x160, h x w). The ``paddleclas``
wheel ships ``deploy/``; nothing of it is copied into this repository.

Run it with the throwaway PaddleClas virtualenv of ``tools/make_fixtures.py`` (see its
docstring), from the repository root::

    /tmp/paddle-venv/bin/python tools/make_preset_fixtures.py

Each step runs in its own subprocess (``--step NAME``): ``PPLCNet.__init__`` writes
``stride_list`` into PaddleClas' module-global ``NET_CONFIG``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import paddle
from make_fixtures import (
    FIXTURES_DIR,
    MEAN,
    STD,
    Case,
    build_model,
    calibrate_batchnorm,
    check_logits,
    predict,
    synthetic_images,
)

sys.path.insert(0, str(FIXTURES_DIR.parent))  # tests/: the shared weight recipe
from helpers import seeded_paddle_weights, weights_checksum

MAX_ADDED_BYTES = 1_000_000  # everything this tool writes
CHANNEL_ORDER = "channel_order"
IMAGE_SHAPE = (301, 419)  # (h, w): odd, landscape, bigger than both contracts
DEPLOY_YAMLS = {  # contract -> PULC deploy yaml whose PreProcess ops are run
    "resize_short_crop": "person_exists/inference_person_exists.yaml",
    "direct_resize": "textline_orientation/inference_textline_orientation.yaml",
}
# Minimum change, relative to max |logit|, that swapping R and B must cause.
MIN_CHANNEL_SWAP_EFFECT = 0.1
TEXTLINE = (2, (2, 1), (2, 1), (2, 1), (2, 1))

# The x1_0 preset architectures (issue 11); x0_25 textline is in tools/make_fixtures.py.
CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("preset_x1_0", 1002, 1.0, 2, ((1, 224, 224), (1, 61, 89))),
        Case(
            "preset_x1_0_no_last_conv",
            1004,
            1.0,
            4,
            ((1, 224, 224), (1, 71, 53)),
            use_last_conv=False,
        ),
        Case("preset_x1_0_textline", 1010, 1.0, 10, ((1, 80, 160), (1, 47, 191)), TEXTLINE),
        Case("preset_x1_0_attribute", 1026, 1.0, 26, ((1, 256, 192), (1, 83, 59))),
    )
}
# Cases that also get PaddleClas' logits for the deploy tensor of a contract.
DEPLOY_CASES = {
    "preset_x1_0_no_last_conv": "resize_short_crop",
    "preset_x1_0_textline": "direct_resize",
}


# --------------------------------------------------------------------------- channel order


def colour_image(height: int, width: int) -> np.ndarray:
    """A smooth uint8 RGB image whose R and B channels differ almost everywhere."""
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    hue = np.sin(2 * np.pi * (0.8 * xx + 0.6 * yy) + 0.7)
    red, blue = 0.5 + 0.45 * hue, 0.5 - 0.45 * hue  # |R - B| = 0.9 |hue|
    green = 0.5 + 0.4 * np.sin(2 * np.pi * (1.5 * yy - 0.5 * xx))
    return np.rint(255 * np.stack([red, green, blue], axis=-1)).astype(np.uint8)


def import_deploy_preprocess() -> types.ModuleType:
    """PaddleClas' ``deploy/python/preprocess.py`` from the wheel, without its package
    ``__init__`` (which imports the retrieval pipeline, hence faiss)."""
    spec = importlib.util.find_spec("paddleclas")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("paddleclas is not installed; see tools/make_fixtures.py.")
    package = types.ModuleType("paddleclas")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["paddleclas"] = package
    return importlib.import_module("paddleclas.deploy.python.preprocess")


def deploy_tensor(preprocess: types.ModuleType, yaml_path: Path, image_path: Path) -> np.ndarray:
    """What ``predict_cls.py`` feeds the network for one image, as CHW float32."""
    import cv2
    import yaml

    ops = preprocess.create_operators(
        yaml.safe_load(yaml_path.read_text())["PreProcess"]["transform_ops"]
    )
    img = cv2.imread(str(image_path))[:, :, ::-1]  # predict_cls.py: BGR -> RGB
    for op in ops:
        img = op(img)
    return np.ascontiguousarray(img, dtype=np.float32)


def unnormalise(tensor: np.ndarray) -> np.ndarray:
    """CHW normalised tensor -> HWC pixels in [0, 255] (float)."""
    return (tensor.transpose(1, 2, 0) * STD + MEAN) * 255.0


def swap_red_blue(tensor: np.ndarray) -> np.ndarray:
    """The tensor of the same image read without the BGR -> RGB flip."""
    pixels = unnormalise(tensor)[..., ::-1]
    return ((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def run_channel_order() -> None:
    """Write the colour image and PaddleClas' deploy tensors for it."""
    from PIL import Image

    image_path = FIXTURES_DIR / f"{CHANNEL_ORDER}.png"
    Image.fromarray(colour_image(*IMAGE_SHAPE)).save(image_path, optimize=True)
    preprocess = import_deploy_preprocess()
    configs = Path(preprocess.__file__).parents[1] / "configs" / "PULC"
    arrays, sources = {}, {}
    for contract, relative in DEPLOY_YAMLS.items():
        tensor = deploy_tensor(preprocess, configs / relative, image_path)
        swap = float(np.abs(unnormalise(tensor) - unnormalise(swap_red_blue(tensor))).mean())
        assert swap > 50, f"{contract}: swapping R and B moves pixels by only {swap:.1f}"
        arrays[contract], sources[contract] = tensor, f"deploy/configs/PULC/{relative}"
        print(f"{contract}: tensor {tensor.shape}, R<->B swap moves pixels by {swap:.1f} levels")
    arrays["config"] = np.array(json.dumps({"yamls": sources, **versions()}))
    np.savez_compressed(FIXTURES_DIR / f"{CHANNEL_ORDER}.npz", **arrays)


# --------------------------------------------------------------------------- seeded cases


def versions() -> dict[str, str]:
    """The library versions behind a reference."""
    return {
        "paddle_version": importlib.metadata.version("paddlepaddle"),
        "paddleclas_version": importlib.metadata.version("paddleclas"),
        "numpy_version": np.__version__,
    }


def batchnorm_keys(model: paddle.nn.Layer) -> set[str]:
    """State-dict keys of every BatchNorm tensor (affine and running statistics)."""
    return {
        f"{name}.{field}"
        for name, layer in model.named_sublayers()
        if isinstance(layer, paddle.nn.BatchNorm2D)
        for field in ("weight", "bias", "_mean", "_variance")
    }


def seed_model(model: paddle.nn.Layer, seed: int) -> dict[str, list[int]]:
    """Load the seeded weights and random BN affine parameters; return the seeded shapes."""
    state = model.state_dict()
    bn_keys = batchnorm_keys(model)
    shapes = {key: list(value.shape) for key, value in state.items() if key not in bn_keys}
    for key, value in seeded_paddle_weights(shapes, seed).items():
        state[key].set_value(value)
    rng = np.random.default_rng(seed + 1)  # BN affine: saved, so any draw will do
    for key in sorted(bn_keys):
        shape = state[key].shape
        if key.endswith(".weight"):
            state[key].set_value(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif key.endswith(".bias"):
            state[key].set_value(rng.normal(0.0, 0.1, shape).astype(np.float32))
    return shapes


def deploy_logits(model: paddle.nn.Layer, name: str) -> np.ndarray:
    """PaddleClas' logits for its deploy tensor; checks that swapping R and B matters."""
    with np.load(FIXTURES_DIR / f"{CHANNEL_ORDER}.npz", allow_pickle=False) as data:
        tensor = data[DEPLOY_CASES[name]]
    logits = predict_tensor(model, tensor)
    swapped_logits = predict_tensor(model, swap_red_blue(tensor))
    effect = float(np.abs(logits - swapped_logits).max() / np.abs(logits).max())
    assert effect > MIN_CHANNEL_SWAP_EFFECT, f"{name}: R<->B changes logits by {effect:.3f}"
    print(f"{name}: R<->B swap changes the deploy logits by {effect:.2f} (relative)")
    return logits


def predict_tensor(model: paddle.nn.Layer, tensor: np.ndarray) -> np.ndarray:
    """Eval-mode logits for one normalised CHW tensor, float32 `(1, class_num)`."""
    with paddle.no_grad():
        return model(paddle.to_tensor(tensor[None])).numpy().astype(np.float32)


def run_case(case: Case) -> None:
    """Seed, calibrate and run one model; write its .npz (BN tensors, pixels, logits)."""
    paddle.set_device("cpu")
    paddle.seed(case.seed)  # train-mode dropout during calibration
    model = build_model(case)
    shapes = seed_model(model, case.seed)
    rng = np.random.RandomState(case.seed)
    _, height, width = case.inputs[0]
    calibrate_batchnorm(model, synthetic_images(rng, 16, height, width))

    pixels = [synthetic_images(rng, *shape) for shape in case.inputs]
    logits = [predict(model, p) for p in pixels]
    check_logits(case, logits)

    state = model.state_dict()
    bn = {key: state[key].numpy() for key in sorted(batchnorm_keys(model))}
    checksum = weights_checksum({key: state[key].numpy() for key in shapes})
    # Calibration must leave the seeded weights alone, and they must have been loaded.
    assert np.array_equal(checksum, weights_checksum(seeded_paddle_weights(shapes, case.seed)))
    arrays = {
        "bn_state": np.concatenate([value.ravel() for value in bn.values()]),
        "weights_checksum": checksum,
    }
    bn_shapes = {key: list(value.shape) for key, value in bn.items()}
    config = {**case.kwargs(), "seed": case.seed, "param_shapes": shapes, "bn_shapes": bn_shapes}
    arrays["config"] = np.array(json.dumps({**config, **versions()}))
    for i, (pix, out) in enumerate(zip(pixels, logits, strict=True)):
        arrays[f"pixels_{i}"], arrays[f"logits_{i}"] = pix, out
    if case.name in DEPLOY_CASES:
        arrays["deploy_logits"] = deploy_logits(model, case.name)
    np.savez_compressed(FIXTURES_DIR / f"{case.name}.npz", **arrays)
    spread = float(np.abs(logits[0] - logits[1]).max() / max(np.abs(o).max() for o in logits))
    print(f"{case.name}: logits differ across inputs by {spread:.2f} (relative)")


# --------------------------------------------------------------------------- driver


def check_added_size() -> None:
    """Print the sizes of the files this tool writes and keep them under the budget."""
    names = [f"{CHANNEL_ORDER}.png", f"{CHANNEL_ORDER}.npz"] + [f"{n}.npz" for n in CASES]
    sizes = {name: (FIXTURES_DIR / name).stat().st_size for name in names}
    for name, size in sizes.items():
        print(f"  {size:>10,}  tests/fixtures/{name}")
    total = sum(sizes.values())
    print(f"  {total:>10,}  total")
    assert total <= MAX_ADDED_BYTES, f"preset fixtures take {total:,} bytes"


def main() -> None:
    """Run every step in its own subprocess, or one step in-process with ``--step``."""
    steps = [CHANNEL_ORDER, *CASES]  # the deploy cases read channel_order.npz
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=steps, help="run only this step")
    args = parser.parse_args()
    if args.step == CHANNEL_ORDER:
        run_channel_order()
    elif args.step:
        run_case(CASES[args.step])
    else:
        for step in steps:
            script = str(Path(__file__).resolve())
            subprocess.run([sys.executable, script, "--step", step], check=True)
        check_added_size()


if __name__ == "__main__":
    main()
