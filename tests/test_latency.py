"""The runtime wrapper, the latency runner and `keras-lcnet bench`.

Covers running exported files (batches, layouts, quantized inputs, bad
files), statistics, JSON and budget exit codes. No test asserts a wall-clock
time: only how the statistics relate.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
from helpers import relative_error

from keras_lcnet.cli import main
from keras_lcnet.deploy import export_litert, export_onnx
from keras_lcnet.deploy.latency import LatencyResult, Runner, cpu_model, measure
from keras_lcnet.deploy.runtime import Runtime


@pytest.fixture(scope="module")
def tiny():
    """A tiny conv net and inputs for it: the runtime does not care what it runs."""
    for module in ("ai_edge_litert", "tf2onnx", "onnxruntime"):
        pytest.importorskip(module)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    pixels = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    return keras.Model(inputs, outputs), pixels


@pytest.fixture(scope="module")
def models(tiny, tmp_path_factory):
    """The tiny net exported both ways."""
    folder = tmp_path_factory.mktemp("bench")
    tflite = export_litert(tiny[0], folder / "tiny.tflite").path
    onnx = export_onnx(tiny[0], folder / "tiny.onnx").path
    return {"tflite": tflite, "onnx": onnx}


@pytest.mark.export
@pytest.mark.parametrize("kind", ["tflite", "onnx", "onnx_nchw"])
def test_runtime_runs_batches_in_either_layout_like_keras(tiny, kind, tmp_path):
    model, pixels = tiny
    # Batch 2 for 5 images: the last batch is padded, and the padding dropped.
    if kind == "tflite":
        path = export_litert(model, tmp_path / "b2.tflite", batch_size=2).path
    else:
        path = export_onnx(model, tmp_path / "b2.onnx", batch_size=2,
                           nchw_input=kind == "onnx_nchw").path
    runtime = Runtime(path)
    assert runtime.layout == ("NCHW" if kind == "onnx_nchw" else "NHWC")
    assert runtime.batch_size == 2 and runtime.image_shape == (32, 32, 3)
    outputs = runtime.predict(pixels)  # channels-last images whatever the model's layout
    assert outputs.shape == (5, 4) and outputs.dtype == np.float32
    assert relative_error(outputs, model.predict_on_batch(pixels)) <= 1e-4
    runtime.set_input(pixels[2:4])
    assert runtime.run() > 0
    np.testing.assert_allclose(runtime.output(), outputs[2:4], rtol=1e-6)


@pytest.mark.export
def test_runtime_quantizes_integer_inputs_and_dequantizes_outputs(tiny, tmp_path):
    import tensorflow as tf

    model, pixels = tiny
    path = str(tmp_path / "int8_io.tflite")
    # A full-integer file with int8 input *and* output, as converters can write.
    model.export(path, format="litert", verbose=False,
                 input_signature=[tf.TensorSpec((1, 32, 32, 3), tf.float32)],
                 optimizations=[tf.lite.Optimize.DEFAULT],
                 representative_dataset=lambda: ([x[None]] for x in pixels),
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                 inference_input_type=tf.int8, inference_output_type=tf.int8)
    runtime = Runtime(path)
    assert runtime.input_dtype == np.int8
    scale, zero_point = runtime.input_quantization
    assert scale > 0 and -128 <= zero_point <= 127
    outputs = runtime.predict(pixels)  # float pixels in, float scores out
    assert outputs.dtype == np.float32
    # int8 rounding costs ~0.5% here; skipping the input's zero point costs ~7%.
    assert relative_error(outputs, model.predict_on_batch(pixels)) <= 0.02


@pytest.mark.export
@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
@pytest.mark.parametrize("content", ["garbage", "truncated", "empty"])
def test_bad_model_files_raise_one_line_naming_the_file(models, suffix, content, tmp_path,
                                                        capsys):
    real = pathlib.Path(models[suffix[1:]]).read_bytes()
    data = {"garbage": np.random.default_rng(0).bytes(3000), "truncated": real[: len(real) // 2],
            "empty": b""}[content]
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="empty" if content == "empty" else "corrupt") as error:
        Runtime(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert main(["bench", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-lcnet: error: ") and err.count("\n") == 1 and str(path) in err


@pytest.mark.export
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


@pytest.mark.export
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


@pytest.mark.export
def test_bench_cli_prints_a_report(models, capsys):
    assert main(["bench", models["tflite"], "--threads", "1", "--runs", "5"]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "1 thread(s)" in out and "CPU:" in out


@pytest.mark.export
def test_bench_cli_json_is_one_object(models, capsys):
    assert main(["bench", models["onnx"], "--json", "--runs", "5", "--warmup", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"median_ms", "p90_ms", "num_threads", "runs"} <= set(data)
    assert data["runs"] == 5 and data["num_threads"] == 1


@pytest.mark.export
@pytest.mark.parametrize("budget, code", [("0.000001", 1), ("1000000", 0)])
def test_bench_budget_gate(models, budget, code, capsys):
    assert main(["bench", models["tflite"], "--runs", "5", "--budget-ms", budget]) == code
    captured = capsys.readouterr()
    assert ("over the budget" in captured.err) == (code == 1)


@pytest.mark.export
def test_bench_json_reports_the_budget(models, capsys):
    assert main(["bench", models["tflite"], "--runs", "3", "--json", "--budget-ms", "1e-6"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["budget_ms"] == 1e-6 and data["within_budget"] is False


@pytest.mark.export
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
