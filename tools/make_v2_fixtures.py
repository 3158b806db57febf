"""Generate PaddleClas PP-LCNetV2 reference fixtures for tests/test_v2.py.

Writes, under ``tests/fixtures/``:

* ``pplcnetv2_x0_25.pdparams`` -- a real PaddleClas checkpoint (``paddle.save`` of the
  state dict) of ``PPLCNetV2(scale=0.25, depths=[2, 2, 4, 2], class_num=10)``;
* ``pplcnetv2_x0_25.npz`` -- ``config`` (0-d JSON string: constructor kwargs plus
  library versions) and, per test input ``i``, ``pixels_<i>`` (uint8 NHWC RGB) and
  ``logits_<i>`` (float32 eval-mode Paddle logits of the branch form for the
  ImageNet-normalised pixels);
* ``pplcnetv2_params.json`` -- PaddleClas' parameter counts of ``PPLCNetV2_small``,
  ``_base`` and ``_large`` with 1000 classes, counted by ppcls' own modules.

Why scale 0.25: ``PPLCNetV2_small`` (scale 0.75) takes 12 MB even with 10 classes, far
over the 3 MB this fixture may add. Scale 0.25 with small's depths keeps every
structural feature that parity depends on (rep branches 5/3/1 at stride 1 and 5/3 at
stride 2, split pointwise, SE, the stage-4 shortcut, symmetric stride-2 padding) in
2.4 MB. The parameter counts, which need no tensors, cover the published sizes.

The weights are random but informative (see ``make_fixtures.calibrated_model``: BN
affine parameters and biases randomised, BN statistics calibrated in train mode). The
pre-folded ``dw_conv`` tensors of the rep blocks are left at their random init, so a
loader that trusted them instead of folding the branches would fail the parity tests.

Run with the reference virtualenv of tools/make_fixtures.py, from the repository root::

    /tmp/refenv/bin/python tools/make_v2_fixtures.py
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import paddle
from make_fixtures import (
    FIXTURES_DIR,
    calibrated_model,
    check_logits,
    check_total_size,
    count_trainable,
    import_ppcls,
    predict,
)

NAME = "pplcnetv2_x0_25"
PARAMS_FILE = "pplcnetv2_params.json"
MAX_ADDED_BYTES = 3_000_000
# ppcls re_parameterize() must agree with its own branch form at least this well.
FOLD_TOLERANCE = 1e-4


@dataclass(frozen=True)
class V2Case:
    """One reference PPLCNetV2 and the inputs it is evaluated on."""

    name: str
    seed: int
    scale: float
    depths: tuple[int, ...]
    class_num: int
    inputs: tuple[tuple[int, int, int], ...]  # (batch, height, width)
    dropout_prob: float = 0.2

    def kwargs(self) -> dict[str, Any]:
        """ppcls `PPLCNetV2` constructor kwargs."""
        return {
            "scale": self.scale,
            "depths": list(self.depths),
            "class_num": self.class_num,
            "dropout_prob": self.dropout_prob,
        }


CASE = V2Case(
    NAME, seed=2022, scale=0.25, depths=(2, 2, 4, 2), class_num=10,
    inputs=((2, 224, 224), (1, 161, 227)),
)


def build_v2(case: V2Case) -> paddle.nn.Layer:
    """PaddleClas' own PPLCNetV2 for the case."""
    import_ppcls()
    from ppcls.arch.backbone.legendary_models import pp_lcnet_v2

    return pp_lcnet_v2.PPLCNetV2(**case.kwargs())


def _numel(params) -> int:
    return sum(int(np.prod(p.shape)) for p in params if p.trainable)


def parameter_counts(model: paddle.nn.Layer) -> dict[str, int]:
    """Learnable values as ppcls holds them, and in each of the two forms.

    ppcls keeps both the branches (`dw_conv_list`) and the fused `dw_conv` of every
    rep block; the branch form uses only the former, the re-parameterized form only
    the latter.
    """
    from ppcls.arch.backbone.legendary_models.pp_lcnet_v2 import RepDepthwiseSeparable

    rep = [m for m in model.sublayers() if isinstance(m, RepDepthwiseSeparable) and m.use_rep]
    total = count_trainable(model)
    return {
        "paddleclas": total,
        "branch_form": total - sum(_numel(m.dw_conv.parameters()) for m in rep),
        "deploy_form": total - sum(_numel(m.dw_conv_list.parameters()) for m in rep),
    }


def variant_counts() -> dict[str, dict[str, int]]:
    """Parameter counts of the published variants with their 1000-class heads."""
    import_ppcls()
    from ppcls.arch.backbone.legendary_models import pp_lcnet_v2

    return {
        variant: parameter_counts(getattr(pp_lcnet_v2, f"PPLCNetV2_{variant}")())
        for variant in ("small", "base", "large")
    }


def check_fold(model: paddle.nn.Layer, pixels: list[np.ndarray], logits: list[np.ndarray]):
    """ppcls' own re_parameterize() reproduces the branch logits (sanity of the reference)."""
    from ppcls.arch.backbone.legendary_models.pp_lcnet_v2 import RepDepthwiseSeparable

    for module in model.sublayers():
        if isinstance(module, RepDepthwiseSeparable):
            module.re_parameterize()
    for pix, expected in zip(pixels, logits, strict=True):
        error = float(np.abs(predict(model, pix) - expected).max() / np.abs(expected).max())
        assert error <= FOLD_TOLERANCE, f"ppcls' folded form differs by {error:.2e}"


def main() -> None:
    """Build, calibrate and run the reference; write the fixtures and the counts."""
    model, pixels = calibrated_model(CASE, build=build_v2)
    logits = [predict(model, p) for p in pixels]
    check_logits(CASE, logits)
    paddle.save(model.state_dict(), str(FIXTURES_DIR / f"{NAME}.pdparams"))
    config = {
        **CASE.kwargs(),
        "paddle_version": importlib.metadata.version("paddlepaddle"),
        "paddleclas_version": importlib.metadata.version("paddleclas"),
    }
    arrays = {"config": np.array(json.dumps(config))}
    for i, (pix, out) in enumerate(zip(pixels, logits, strict=True)):
        arrays[f"pixels_{i}"], arrays[f"logits_{i}"] = pix, out
    np.savez_compressed(FIXTURES_DIR / f"{NAME}.npz", **arrays)
    check_fold(model, pixels, logits)  # after saving: it overwrites the dw_conv tensors

    counts = {
        "source": "ppcls PPLCNetV2_{small,base,large}() with 1000 classes",
        "paddleclas_version": config["paddleclas_version"],
        "variants": variant_counts(),
    }
    (FIXTURES_DIR / PARAMS_FILE).write_text(json.dumps(counts, indent=2) + "\n")
    print(json.dumps(counts["variants"], indent=2))
    check_total_size()
    files = (f"{NAME}.pdparams", f"{NAME}.npz", PARAMS_FILE)
    added = sum((FIXTURES_DIR / name).stat().st_size for name in files)
    assert added <= MAX_ADDED_BYTES, f"the V2 fixtures take {added:,} bytes"


if __name__ == "__main__":
    main()
