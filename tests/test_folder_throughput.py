"""benchmarks/folder_throughput.py's own logic: the JPEG generator and the targets.

Nothing here times a model: rates are made up, so the tests check how the
script reads them, never how fast anything runs.
"""

from __future__ import annotations

import pathlib
from types import SimpleNamespace

import pytest
from helpers import script_module
from PIL import Image

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "folder_throughput.py"


@pytest.fixture(scope="module")
def bench():
    with script_module(SCRIPT, "folder_throughput_benchmark") as module:
        yield module


def test_jpegs_are_the_same_every_run_and_of_mixed_sizes(bench, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    paths = bench.make_jpegs(first, 12)
    again = bench.make_jpegs(second, 12)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.append(image.size)
    low, high = bench.SIDES
    assert all(low <= side <= high for size in sizes for side in size)
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert len(set(sizes)) > 6  # mixed, not one size repeated


def _rates(**per_runtime) -> dict:
    """One thread count's per-round rates: `runtime=(e2e, bare, share in model)` per round."""
    rates = {"input side": [300.0, 100.0, 200.0]}
    for name, rounds in per_runtime.items():
        name = {"keras": "Keras TF", "litert": "LiteRT", "ort": "ORT"}[name]
        for kind, values in zip(("e2e", "bare", "in model"), zip(*rounds, strict=True),
                                strict=True):
            rates[f"x1_0|{name}|{kind}"] = list(values)
    return rates


def test_rows_take_medians_and_targets_compare_with_the_limits(bench):
    results = {2: _rates(keras=[(10, 20, 0.5), (12, 20, 0.5), (11, 20, 0.5)],
                         litert=[(33, 40, 0.9), (30, 40, 0.9), (40, 50, 0.9)],
                         ort=[(20, 30, 0.8), (20, 30, 0.8), (20, 30, 0.8)])}
    table = {r.runtime: r for r in bench.rows(results)}
    litert = table["LiteRT"]
    assert (litert.e2e, litert.bare, litert.input_side) == (33, 40, 200)
    assert bench.verdict(litert.e2e / litert.bare, bench.E2E_OVER_BARE) == "pass"  # 0.825
    assert bench.verdict(table["ORT"].e2e / table["ORT"].bare, bench.E2E_OVER_BARE) == "FAIL"
    speedups = {runtime: value for _, _, runtime, value in bench.speedups(list(table.values()))}
    assert speedups == {"LiteRT": pytest.approx(3.0), "ORT": pytest.approx(20 / 11)}
    text = "\n".join(bench._tables(list(table.values())))
    assert "| PPLCNet_x1_0 | 2 | LiteRT | 3.00x | pass |" in text
    assert "| PPLCNet_x1_0 | 2 | ORT | 1.82x | FAIL |" in text


def test_report_names_the_machine_and_holds_the_tables(bench, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports latency.py beside it
    results = {1: _rates(keras=[(10, 20, 0.5)], litert=[(33, 40, 0.9)], ort=[(20, 30, 0.8)])}
    args = SimpleNamespace(batch_size=32, rounds=1)
    text = bench.report(args, results, [(0.5, 0.5, 0.5), (0.6, 0.5, 0.5)], "12 JPEGs")
    assert "CPU flags (/proc/cpuinfo): " in text and "load average" in text
    assert "| PPLCNet_x1_0 | 1 | LiteRT |" in text
