"""Generate the timm PP-LCNetV2 parity fixture (``tests/fixtures/timm_lcnetv2_small.npz``).

timm's ``lcnetv2_small`` (``timm/models/lcnetv2.py``: PaddleClas' PPLCNetV2 with
``scale=0.75, depths=(2, 2, 4, 2)``, rep branches unfolded) is built with 10 classes,
seeded weights and calibrated, float16-exact BN statistics, exactly as
``tools/make_timm_fixtures.py`` does for ``lcnet_*`` (whose ``build``, ``timm_config``
and ``logits`` its ``make_case`` uses; see its docstring for the recipe and the ``.npz`` fields).
timm's eval logits are recorded for a 224x224 batch and an odd 97x131 batch. Only the
BN tensors (float16) and the logits are committed; the tests regenerate the seeded
tensors. ``other_model`` is left out (the V1 fixture has it).

Run from the repository root, in the throwaway virtualenv of make_timm_fixtures.py::

    /tmp/timm-venv/bin/python tools/make_timm_v2_fixtures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_timm_fixtures import make_case

ARCHITECTURE, SEED = "lcnetv2_small", 2
BUDGET = 800_000  # bytes


def main() -> None:
    path = make_case(ARCHITECTURE, SEED, other_model=False)
    size = path.stat().st_size
    assert size <= BUDGET, f"{path} is {size} bytes, over the {BUDGET} budget"


if __name__ == "__main__":
    main()
