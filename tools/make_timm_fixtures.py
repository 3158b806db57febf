"""Generate the timm LCNet parity fixtures (``tests/fixtures/timm_lcnet_*.npz``).

timm's ``lcnet_050`` and ``lcnet_100`` (``timm/models/mobilenetv3.py``, ``_gen_lcnet``)
are built with 10 classes and seeded weights, their BatchNorm statistics calibrated on
random batches in train mode (a net whose statistics stay at init barely depends on its
input), and timm's eval logits recorded for a 224x224 batch and an odd 97x131 batch.

Size: a float32 ``lcnet_100`` is ~12 MB, so no weights are committed. Every non-BN
tensor (conv kernels, SE convs and biases, ``conv_head``, ``classifier``) is drawn from
a seed by ``seeded_paddle_weights`` in ``tests/helpers.py`` (the one place the recipe
lives; its 2-D rule reads timm's ``[out, in]`` classifier as ``[in, out]``, which only
changes a scale); the tests regenerate the same arrays. Every tensor timm evaluates,
BN statistics included, is rounded to float16 first, so a checkpoint written in float16
or float32 holds exactly the values timm ran with. Per model the ``.npz`` holds:

* ``config``: 0-d JSON string: ``architecture``, ``num_classes``, ``seed``,
  ``param_shapes`` (the seeded tensors' timm names and shapes), ``bn_shapes`` (the
  same for the BN tensors), ``timm_config`` (the ``config.json`` timm's own
  ``save_config_for_hf`` writes for this model), ``other_model`` (names and shapes of
  timm's ``mobilenetv3_small_050`` state dict: a timm checkpoint that is not an
  LCNet), versions;
* ``weights_checksum``: per seeded tensor, its float64 sum (sorted keys);
* ``bn_state``: every BN weight, bias, running_mean and running_var (float16),
  flattened and concatenated in the key order of ``config["bn_shapes"]``;
* ``pixels_<i>`` (uint8 NHWC RGB) and ``logits_<i>`` (timm's eval logits for those
  pixels, normalized with the model's ``pretrained_cfg`` mean and std).

The throwaway virtualenv (timm does not belong in the project's)::

    python3.11 -m venv /tmp/timm-venv
    /tmp/timm-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm safetensors wrapt

(``wrapt``: ``tests/helpers.py`` imports ``keras_lcnet.presets``.)

Run from the repository root::

    /tmp/timm-venv/bin/python tools/make_timm_fixtures.py
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
from timm.models._hub import save_config_for_hf

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]  # helpers: keras_lcnet
from helpers import seeded_paddle_weights, weights_checksum  # noqa: E402
from torch_fixtures import calibrate_batchnorm  # noqa: E402

FIXTURES_DIR = ROOT / "tests" / "fixtures"
CLASSES = 10
CASES = {"lcnet_050": 50, "lcnet_100": 100}  # architecture -> seed
SIZES = ((224, 224), (97, 131))
_BN_SUFFIXES = ("running_mean", "running_var")


def _is_bn(model: torch.nn.Module, key: str) -> bool:
    module = model.get_submodule(key.rpartition(".")[0])
    return isinstance(module, torch.nn.BatchNorm2d)


def _f16(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float16).to(torch.float32)


def build(architecture: str, seed: int) -> tuple[torch.nn.Module, dict, dict]:
    """timm's model with seeded weights and calibrated, float16-exact BN tensors."""
    model = timm.create_model(architecture, num_classes=CLASSES)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    param_shapes = {k: list(v.shape) for k, v in state.items() if not _is_bn(model, k)}
    bn_shapes = {k: list(v.shape) for k, v in state.items() if _is_bn(model, k)}
    seeded = seeded_paddle_weights(param_shapes, seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in seeded.items():
            state[key].copy_(_f16(torch.from_numpy(value)))
        for key in bn_shapes:
            if key.endswith(".weight"):
                state[key].copy_(_f16(torch.rand(state[key].shape, generator=generator) + 0.5))
            elif key.endswith(".bias"):
                state[key].copy_(_f16(torch.randn(state[key].shape, generator=generator) * 0.1))
        calibrate_batchnorm(model, generator, batches=4, shape=(8, 3, 128, 128))
        for key in bn_shapes:
            if key.endswith(_BN_SUFFIXES):
                state[key].copy_(_f16(state[key]))
    # The seeded values the model holds are the float16-rounded ones.
    seeded = {k: _f16(torch.from_numpy(v)).numpy() for k, v in seeded.items()}
    return model, {"param_shapes": param_shapes, "bn_shapes": bn_shapes}, seeded


def timm_config(model: torch.nn.Module) -> dict:
    """The `config.json` timm's `save_for_hf` / `push_to_hf_hub` write for `model`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        save_config_for_hf(model, str(path))
        return json.loads(path.read_text())


def other_model_shapes() -> dict:
    model = timm.create_model("mobilenetv3_small_050", num_classes=CLASSES)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def logits(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    x = torch.from_numpy(pixels.transpose(0, 3, 1, 2).astype(np.float32)) / 255.0
    with torch.no_grad():
        return model((x - mean) / std).numpy()


def make_case(architecture: str, seed: int, other_model: bool = True) -> Path:
    """Builds, runs and records one case; `other_model`: also record mobilenetv3's shapes."""
    model, shapes, seeded = build(architecture, seed)
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (height, width) in enumerate(SIZES):
        pixels = rng.integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
        out = logits(model, pixels)
        spread = np.abs(out[0] - out[1]).max() / np.abs(out).max()
        assert spread > 1e-2, f"{architecture}: logits barely depend on the input ({spread})"
        arrays[f"pixels_{i}"], arrays[f"logits_{i}"] = pixels, out
    state = model.state_dict()
    config = {
        "architecture": architecture,
        "num_classes": CLASSES,
        "seed": seed,
        **shapes,
        "timm_config": timm_config(model),
        **({"other_model": other_model_shapes()} if other_model else {}),
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "numpy_version": importlib.metadata.version("numpy"),
    }
    bn_state = np.concatenate([state[k].numpy().ravel() for k in shapes["bn_shapes"]])
    assert np.array_equal(bn_state.astype(np.float16).astype(np.float32), bn_state)
    path = FIXTURES_DIR / f"timm_{architecture}.npz"
    np.savez_compressed(
        path,
        config=np.array(json.dumps(config)),
        weights_checksum=weights_checksum(seeded),
        bn_state=bn_state.astype(np.float16),
        **arrays,
    )
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return path


def main() -> None:
    for architecture, seed in CASES.items():
        make_case(architecture, seed)


if __name__ == "__main__":
    main()
