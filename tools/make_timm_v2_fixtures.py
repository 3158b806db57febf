"""Generate the timm PP-LCNetV2 parity fixture (``tests/fixtures/timm_lcnetv2_small.npz``).

timm's ``lcnetv2_small`` (``timm/models/lcnetv2.py``: PaddleClas' PPLCNetV2 with
``scale=0.75, depths=(2, 2, 4, 2)``, rep branches unfolded) is built with 10 classes,
seeded weights and calibrated, float16-exact BN statistics, exactly as
``tools/make_timm_fixtures.py`` does for ``lcnet_*`` (whose ``build``, ``timm_config``
and ``logits`` this reuses; see its docstring for the recipe and the ``.npz`` fields).
timm's eval logits are recorded for a 224x224 batch and an odd 97x131 batch. Only the
BN tensors (float16) and the logits are committed; the tests regenerate the seeded
tensors. ``other_model`` is left out (the V1 fixture has it).

Run from the repository root, in the throwaway virtualenv of make_timm_fixtures.py::

    /tmp/timm-venv/bin/python tools/make_timm_v2_fixtures.py
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_timm_fixtures import (
    CLASSES,
    FIXTURES_DIR,
    SIZES,
    build,
    logits,
    timm_config,
    weights_checksum,
)

ARCHITECTURE, SEED = "lcnetv2_small", 2
BUDGET = 800_000  # bytes


def main() -> None:
    model, shapes, seeded = build(ARCHITECTURE, SEED)
    rng = np.random.default_rng(SEED)
    arrays = {}
    for i, (height, width) in enumerate(SIZES):
        pixels = rng.integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
        out = logits(model, pixels)
        spread = np.abs(out[0] - out[1]).max() / np.abs(out).max()
        assert spread > 1e-2, f"{ARCHITECTURE}: logits barely depend on the input ({spread})"
        arrays[f"pixels_{i}"], arrays[f"logits_{i}"] = pixels, out
    state = model.state_dict()
    config = {
        "architecture": ARCHITECTURE,
        "num_classes": CLASSES,
        "seed": SEED,
        **shapes,
        "timm_config": timm_config(model),
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "numpy_version": importlib.metadata.version("numpy"),
    }
    bn_state = np.concatenate([state[k].numpy().ravel() for k in shapes["bn_shapes"]])
    assert np.array_equal(bn_state.astype(np.float16).astype(np.float32), bn_state)
    path = FIXTURES_DIR / f"timm_{ARCHITECTURE}.npz"
    np.savez_compressed(
        path,
        config=np.array(json.dumps(config)),
        weights_checksum=weights_checksum(seeded),
        bn_state=bn_state.astype(np.float16),
        **arrays,
    )
    size = path.stat().st_size
    assert size <= BUDGET, f"{path} is {size} bytes, over the {BUDGET} budget"
    print(f"wrote {path} ({size} bytes)")


if __name__ == "__main__":
    main()
