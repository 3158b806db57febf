"""benchmarks/latency.py's own logic: the --models filter, the targets and the plot's choice.

Nothing here times or exports a model: latencies are made-up medians, so
the tests check how the script reads them, never how fast anything runs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from types import SimpleNamespace

import pytest
from helpers import script_module

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "latency.py"


@pytest.fixture(scope="module")
def bench():
    with script_module(SCRIPT, "latency_benchmark") as module:
        yield module


def _results(medians: dict) -> dict:
    """`{(model, column): result}` with made-up medians in ms."""
    return {key: SimpleNamespace(median_ms=ms, p90_ms=ms) for key, ms in medians.items()}


def _models(bench, *names):
    family = {"PPLCNetV2": "PP-LCNetV2", "PPLCNet_": "PP-LCNet", "Mobile": "MobileNet"}
    return [bench.Candidate(n, None, None, family=next(f for p, f in family.items()
                                                       if n.startswith(p))) for n in names]


def test_models_filter_keeps_table_order_and_rejects_unknown_names(bench):
    assert bench.parse_models("MobileNetV3Large, v2_base,x0_25") == (
        "x0_25", "v2_base", "MobileNetV3Large")
    with pytest.raises(argparse.ArgumentTypeError, match=r"x9, v2_tiny.*x0_25.*v2_large"):
        bench.parse_models("x0_25,x9,v2_tiny")
    with pytest.raises(argparse.ArgumentTypeError, match="none given"):
        bench.parse_models(" , ")


def test_models_flag_errors_exit_2_and_quick_keeps_its_default(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["latency.py", "--models", "x1_0,nope"])
    with pytest.raises(SystemExit) as exit_:
        bench._arguments()
    assert exit_.value.code == 2 and "nope" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["latency.py", "--quick"])
    assert bench._arguments().models == ("x0_25", "x1_0", "MobileNetV3Large")
    monkeypatch.setattr(sys, "argv", ["latency.py", "--quick", "--models", "v2_small"])
    args = bench._arguments()
    assert args.models == ("v2_small",) and args.rounds == 3


def _verdicts(bench, models, results, bf16=True) -> dict[str, tuple]:
    return {label: (value, result)
            for label, value, _, result in bench.target_rows(models, results, bf16)}


def test_openvino_targets_are_ratios_to_litert_fp32_of_x1_0(bench):
    models = _models(bench, "PPLCNet_x1_0")
    results = _results({("PPLCNet_x1_0", col): ms for col, ms in {
        "LiteRT fp32 1T": 4.0, "LiteRT fp32 2T": 2.5, "OpenVINO bf16 1T": 1.9,
        "OpenVINO bf16 2T": 1.6, "OpenVINO int8 1T": 2.8}.items()})
    rows = _verdicts(bench, models, results)
    assert rows["x1_0 OpenVINO bf16 / LiteRT fp32, 1T"] == (pytest.approx(0.475), "pass")
    assert rows["x1_0 OpenVINO bf16 / LiteRT fp32, 2T"] == (pytest.approx(0.64), "FAIL")
    assert rows["x1_0 OpenVINO int8 / LiteRT fp32, 1T"] == (pytest.approx(0.7), "FAIL")
    # MobileNetV3Large was filtered out: its target is n/a and says why, not a KeyError.
    value, result = rows["x1_0 LiteRT fp32 / MobileNetV3Large LiteRT fp32, 2T"]
    assert value is None and result == "n/a (MobileNetV3Large not in this run)"


def test_targets_are_n_a_without_bf16_or_without_x1_0(bench):
    results = _results({("PPLCNet_x1_0", c): 2.0 for c in ("LiteRT fp32 1T", "OpenVINO int8 1T")})
    rows = _verdicts(bench, _models(bench, "PPLCNet_x1_0"), results, bf16=False)
    assert rows["x1_0 OpenVINO bf16 / LiteRT fp32, 1T"] == (None, "n/a (no BF16 on this CPU)")
    assert rows["x1_0 OpenVINO int8 / LiteRT fp32, 1T"] == (1.0, "FAIL")
    rows = _verdicts(bench, _models(bench, "PPLCNet_x0_25", "PPLCNetV2_base"), {}, bf16=True)
    assert rows["x1_0 OpenVINO int8 / LiteRT fp32, 1T"][1] == "n/a (PPLCNet_x1_0 not in this run)"
    assert all(result.startswith("n/a") for _, result in rows.values())


def test_same_width_targets_report_the_worst_v1_width_only(bench):
    medians = {("PPLCNet_x0_25", "LiteRT fp32 2T"): 1.0, ("PPLCNet_x0_25", "ORT fp32 2T"): 0.9,
               ("PPLCNet_x1_0", "LiteRT fp32 2T"): 2.0, ("PPLCNet_x1_0", "ORT fp32 2T"): 2.6,
               # A V2 model with a worse ratio is not a PP-LCNet width.
               ("PPLCNetV2_base", "LiteRT fp32 2T"): 1.0, ("PPLCNetV2_base", "ORT fp32 2T"): 5.0}
    results = _results(medians)
    models = _models(bench, "PPLCNet_x0_25", "PPLCNet_x1_0", "PPLCNetV2_base")
    rows = _verdicts(bench, models, results)
    assert rows["onnxruntime / LiteRT fp32, same width, 2T: worst, x1_0"] == (
        pytest.approx(1.3), "FAIL")


def test_plot_picks_the_fastest_float32_runtime_per_model(bench):
    models = _models(bench, "PPLCNet_x1_0", "MobileNetV3Large")
    medians = {
        # int8 and bf16 are faster still, but not the published float model.
        ("PPLCNet_x1_0", "LiteRT fp32 2T"): 2.5, ("PPLCNet_x1_0", "OpenVINO f32 2T"): 2.1,
        ("PPLCNet_x1_0", "OpenVINO bf16 2T"): 1.0, ("PPLCNet_x1_0", "LiteRT int8 2T"): 1.5,
        ("PPLCNet_x1_0", "ORT fp32 1T"): 0.5,  # another thread count
        ("MobileNetV3Large", "LiteRT fp32 2T"): 3.0, ("MobileNetV3Large", "ORT fp32 2T"): 2.9,
        ("MobileNetV3Large", "Keras TF 2T"): 9.0,
    }
    results = _results(medians)
    assert bench.best_float(models, results, 2) == {
        "PPLCNet_x1_0": ("OpenVINO", 2.1), "MobileNetV3Large": ("ORT", 2.9)}


def test_untimed_bf16_columns_say_why(bench):
    models = _models(bench, "PPLCNet_x1_0")
    results = {("PPLCNet_x1_0", "LiteRT fp32 1T"): SimpleNamespace(median_ms=4.0, p90_ms=5.0)}
    header, _, row, *_ = bench._latency_table(models, results)
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    cells = {k.strip(): v.strip() for k, v in cells.items()}
    assert cells["LiteRT fp32 1T"] == "4.00 (5.00)" and cells["OpenVINO bf16 2T"] == "n/a"
    args = SimpleNamespace(rounds=3, block=2)
    text = "\n".join(bench._header(args, [(1, 1, 1), (1, 1, 1)], "NUM_STREAMS=1", bf16=False))
    assert "OpenVINO bf16: n/a (no BF16 on this CPU)" in text
