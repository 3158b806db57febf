"""The latency runner and `keras-lcnet bench`: statistics, JSON and budget exit codes.

No test asserts a wall-clock time: only how the statistics relate.
"""

from __future__ import annotations

import json

import keras
import pytest

from keras_lcnet.cli import main
from keras_lcnet.deploy import export_litert, export_onnx
from keras_lcnet.deploy.latency import LatencyResult, Runner, cpu_model, measure


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny conv net exported both ways: the runner does not care what it runs."""
    folder = tmp_path_factory.mktemp("bench")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    tflite = export_litert(model, folder / "tiny.tflite").path
    onnx = export_onnx(model, folder / "tiny.onnx").path
    return {"tflite": tflite, "onnx": onnx}


@pytest.mark.parametrize("kind, runtime", [("tflite", "LiteRT"), ("onnx", "onnxruntime")])
def test_measure_reports_consistent_statistics(models, kind, runtime):
    result = measure(models[kind], num_threads=2, runs=15, warmup=2)
    assert isinstance(result, LatencyResult)
    assert result.runtime.startswith(runtime)
    assert result.version.split()[0] == {"LiteRT": "ai-edge-litert"}.get(runtime, runtime)
    assert (result.runs, result.warmup, result.num_threads) == (15, 2, 2)
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.std_ms >= 0 and result.input_shape == (1, 32, 32, 3)
    assert result.cpu == cpu_model() and "logical cores" in result.cpu
    assert json.loads(json.dumps(result.to_dict()))["median_ms"] == result.median_ms
    assert "median" in result.summary() and "p90" in result.summary()


def test_runner_and_measure_reject_bad_arguments(models, tmp_path):
    with pytest.raises(ValueError, match=r"\.tflite"):
        Runner(tmp_path / "model.pb")
    with pytest.raises(FileNotFoundError):
        Runner(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="num_threads"):
        Runner(models["tflite"], num_threads=0)
    with pytest.raises(ValueError, match="runs"):
        measure(models["tflite"], runs=0)
    with pytest.raises(ValueError, match="warmup"):
        measure(models["onnx"], warmup=-1)


def test_bench_cli_prints_a_report(models, capsys):
    assert main(["bench", models["tflite"], "--threads", "1", "--runs", "5"]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "1 thread(s)" in out and "CPU:" in out


def test_bench_cli_json_is_one_object(models, capsys):
    assert main(["bench", models["onnx"], "--json", "--runs", "5", "--warmup", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"median_ms", "p90_ms", "num_threads", "runs"} <= set(data)
    assert data["runs"] == 5 and data["num_threads"] == 1


@pytest.mark.parametrize("budget, code", [("0.000001", 1), ("1000000", 0)])
def test_bench_budget_gate(models, budget, code, capsys):
    assert main(["bench", models["tflite"], "--runs", "5", "--budget-ms", budget]) == code
    captured = capsys.readouterr()
    assert ("over the budget" in captured.err) == (code == 1)


def test_bench_json_reports_the_budget(models, capsys):
    assert main(["bench", models["tflite"], "--runs", "3", "--json", "--budget-ms", "1e-6"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["budget_ms"] == 1e-6 and data["within_budget"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.tflite"], "No model file"),
        (["model.txt"], "expected a .tflite"),
        (["{tflite}", "--runs", "0"], "`runs` must be"),
    ],
)
def test_bench_cli_errors_exit_1(models, args, message, capsys):
    args = [a.format(tflite=models["tflite"]) for a in args]
    assert main(["bench", *args]) == 1
    assert message in capsys.readouterr().err


class _CountingRunner:
    """Stands in for a Runner: counts runs and records the order of calls."""

    path, runtime, version, num_threads, input_shape, input_dtype = (
        "fake", "fake", "0", 1, (1, 8, 8, 3), "float32")

    def __init__(self, key, log):
        self.key, self.log, self.calls = key, log, 0

    def run(self) -> float:
        self.calls += 1
        self.log.append(self.key)
        return float(self.calls)


def test_interleave_times_every_model_in_turns():
    from keras_lcnet.deploy.latency import interleave

    log: list[str] = []
    runners = {key: _CountingRunner(key, log) for key in "abc"}
    lines: list[str] = []
    results = interleave(runners, rounds=3, block=2, warmup=4, progress=lines.append)
    for runner in runners.values():
        assert runner.calls == 4 + 3 * (1 + 2)  # warm-up, then re-warm + block per round
    assert all(result.runs == 6 and result.warmup == 4 for result in results.values())
    timed = log[12:]
    # Each round starts at another model, so no model always runs right after the same one.
    assert [timed[0], timed[9], timed[18]] == ["a", "b", "c"]
    assert len(lines) == 3 and lines[-1].startswith("round 3/3")
