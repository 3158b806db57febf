"""Logit parity with the PaddleClas reference, on every Keras backend.

The fixtures were written by tools/make_fixtures.py running PaddleClas itself:
real .pdparams checkpoints, input pixels and the reference logits.
"""

from __future__ import annotations

import json

import pytest
from helpers import CASES, run_python

TOLERANCE = 1e-4  # max |keras - paddle| / max |paddle|

PARITY_SCRIPT = """
import json, keras, numpy as np, keras_lcnet
from helpers import CASES, load_case, model_kwargs, relative_error
results = {"backend": keras.backend.backend()}
for case in CASES:
    config, arrays = load_case(case)
    kwargs = model_kwargs(config)
    path = f"tests/fixtures/{case}.pdparams"
    raw = keras_lcnet.PPLCNet(weights=path, **kwargs)
    normalized = keras_lcnet.PPLCNet(weights=path, include_preprocessing=False, **kwargs)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for i in (0, 1):
        pixels, expected = arrays[f"pixels_{i}"].astype("float32"), arrays[f"logits_{i}"]
        results[f"{case}/{i}/pixels"] = relative_error(raw.predict(pixels, verbose=0), expected)
        x = ((pixels / 255.0 - mean) / std).astype("float32")
        results[f"{case}/{i}/normalized"] = relative_error(
            normalized.predict(x, verbose=0), expected)
print("RESULT" + json.dumps(results))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
@pytest.mark.slow
@pytest.mark.backends
def test_logits_match_paddleclas(backend):
    proc = run_python(PARITY_SCRIPT, backend=backend, PYTHONPATH="tests")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert results.pop("backend") == backend
    assert len(results) == len(CASES) * 4
    worst = max(results, key=results.get)
    assert results[worst] <= TOLERANCE, f"{worst}: {results[worst]:.2e} on {backend}"
