"""`compare_runtimes` and `keras-lcnet bench --compare`: every target timed or skipped with a
reason, one fastest per thread count, ratios to LiteRT float32.

Timings are never asserted, nor which runtime wins: only the report's structure.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from helpers import FIXTURES

import keras_lcnet
from keras_lcnet.cli import COMPARE_TARGETS, main
from keras_lcnet.deploy import comparison
from keras_lcnet.deploy import runtime as runtime_module
from keras_lcnet.deploy.comparison import BASELINE, DEFAULT_TARGETS, TARGETS, compare_runtimes

CHECKPOINT = FIXTURES / "pplcnet_x0_25.pdparams"
SMALL = {"image_size": 64, "runs": 3, "warmup": 1}


def _model():
    return keras_lcnet.from_checkpoint(CHECKPOINT, classifier_activation=None)


def _check_structure(report, targets, threads) -> None:
    """Each target timed at every thread count or skipped with a reason; one fastest each."""
    timed = [row for row in report.rows if row.skipped is None]
    for target in targets:
        counts = {row.threads for row in timed if row.target == target}
        reasons = [row.skipped for row in report.rows if row.target == target and row.skipped]
        assert counts == set(threads) or reasons, f"{target}: neither timed nor skipped"
        assert all(reason.strip() for reason in reasons)
    for count in threads:
        rows = [row for row in timed if row.threads == count]
        fastest = [row for row in rows if row.fastest]
        assert len(fastest) == 1, f"{count} thread(s): {len(fastest)} marked fastest"
        assert fastest[0].median_ms == min(row.median_ms for row in rows)
        assert report.fastest()[count] is fastest[0]
        baseline = next(row for row in rows if row.target == BASELINE)
        for row in rows:
            assert row.vs_baseline == pytest.approx(row.median_ms / baseline.median_ms)
            assert row.p90_ms >= row.median_ms > 0 and row.verification
        assert baseline.vs_baseline == 1.0


def test_deploy_compare_is_still_the_agreement_function():
    # A submodule named `compare` would replace `keras_lcnet.deploy.compare` once imported.
    from keras_lcnet.deploy import compare

    assert callable(compare) and keras_lcnet.deploy.compare_runtimes is compare_runtimes


def test_cli_target_names_are_the_library_targets():
    assert tuple(TARGETS) == COMPARE_TARGETS
    assert set(DEFAULT_TARGETS) <= set(TARGETS)


@pytest.mark.parametrize("argv, flag", [
    (["bench"], "MODEL"),
    (["bench", "m.tflite", "--compare"], "MODEL"),
    (["bench", "--compare", "--budget-ms", "5"], "--budget-ms"),
    (["bench", "m.tflite", "--variant", "x0_25"], "--variant"),
    (["bench", "m.tflite", "--image-size", "64"], "--image-size"),
    (["bench", "m.tflite", "--threads", "1,2"], "--threads"),
    (["bench", "--compare", "--threads", "1,0"], "--threads"),
    (["bench", "--compare", "--precisions", "litert-f64"], "--precisions"),
    (["bench", "--compare", "--preset", "PPLCNet_x0_25_imagenet", "--variant", "x0_25"],
     "--preset"),
])
def test_bench_flag_errors_exit_2(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_cpu_flags_reads_proc_cpuinfo(monkeypatch):
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_tile avx512_bf16\n"
    monkeypatch.setattr(comparison, "open", lambda *a, **k: io.StringIO(cpuinfo),
                        raising=False)
    assert comparison.cpu_flags() == ["avx2", "avx512f", "avx512_bf16", "amx_tile"]

    def unreadable(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(comparison, "open", unreadable, raising=False)
    assert comparison.cpu_flags() is None


def test_describe_cpu_flags_names_what_was_looked_for():
    text = comparison.describe_cpu_flags(["avx2", "amx_tile"])
    assert text.startswith("avx2 amx_tile (of avx2, avx512f,") and "amx_int8)" in text
    assert comparison.describe_cpu_flags([]).startswith("none (of avx2")
    assert comparison.describe_cpu_flags(None).startswith("unknown")


@pytest.mark.parametrize("arguments", [
    {"precisions": ("litert-f64",)},
    {"precisions": ()},
    {"threads": (1, 0)},
    {"threads": ()},
    {"runs": 0},
    {"warmup": -1},
])
def test_bad_arguments_are_one_line_value_errors(arguments):
    model = keras_lcnet.PPLCNet_x0_25(weights=None)
    with pytest.raises(ValueError) as error:
        compare_runtimes(model, **arguments)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def report():
    for module in ("ai_edge_litert", "onnxruntime", "openvino"):
        pytest.importorskip(module)
    return compare_runtimes(_model(), threads=(1, 2), **SMALL)


@pytest.mark.export
@pytest.mark.slow
def test_every_default_target_is_timed_or_skipped_with_a_reason(report):
    assert report.input_shape == (1, 64, 64, 3) and report.runs == 3
    _check_structure(report, DEFAULT_TARGETS, (1, 2))
    assert {row.target for row in report.rows} == set(DEFAULT_TARGETS)
    assert "random-pixel" in report.calibration
    assert set(report.versions) >= {"tensorflow", "ai-edge-litert", "onnxruntime", "openvino"}


@pytest.mark.export
@pytest.mark.slow
def test_table_and_json_name_the_fastest(report):
    table = report.table()
    assert report.cpu in table and "CPU flags:" in table
    for count, row in report.fastest().items():
        assert f"{count} thread{'s' * (count > 1)}: {row.target} (" in table.splitlines()[-1]
        assert f"{row.target} *" in table
    data = json.loads(report.to_json())
    assert [r["target"] for r in data["rows"]] == [r.target for r in report.rows]
    assert [r["fastest"] for r in data["rows"]] == [r.fastest for r in report.rows]


@pytest.mark.export
@pytest.mark.slow
def test_unavailable_and_failing_targets_get_rows_with_reasons(monkeypatch, tmp_path):
    pytest.importorskip("ai_edge_litert")
    monkeypatch.setattr(runtime_module, "openvino_supports_bf16", lambda: False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails

    def broken_export(*args, **kwargs):
        raise ValueError("converter\nexploded")

    monkeypatch.setattr(comparison, "export_openvino", broken_export)
    targets = ("litert-f32", "onnx-f32", "openvino-bf16", "openvino-f32")
    result = compare_runtimes(_model(), precisions=targets, workdir=tmp_path, **SMALL)
    _check_structure(result, targets, (1,))
    skipped = {row.target: row.skipped for row in result.rows if row.skipped}
    assert set(skipped) == {"onnx-f32", "openvino-bf16", "openvino-f32"}
    assert "onnxruntime" in skipped["onnx-f32"]
    assert "bfloat16" in skipped["openvino-bf16"]
    assert skipped["openvino-f32"] == "export failed: converter exploded"
    assert result.fastest()[1].target == "litert-f32"  # the only one timed
    assert "onnx-f32: needs the Python package onnxruntime" in result.table()
    assert (tmp_path / "litert-f32.tflite").is_file()  # kept in the given workdir


@pytest.mark.export
@pytest.mark.slow
def test_cli_compare_json_and_table(capfd):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnxruntime")
    common = ["bench", "--compare", "--weights", str(CHECKPOINT), "--image-size", "64",
              "--runs", "3", "--warmup", "1"]
    assert main([*common, "--precisions", "litert-f32,onnx-f32", "--json"]) == 0
    data = json.loads(capfd.readouterr().out)  # stdout holds the JSON alone
    assert data["input_shape"] == [1, 64, 64, 3]
    assert {row["target"] for row in data["rows"]} == {"litert-f32", "onnx-f32"}
    assert sum(row["fastest"] for row in data["rows"]) == 1

    assert main([*common, "--precisions", "litert-f32", "--threads", "2"]) == 0
    table = capfd.readouterr().out
    assert "litert-f32 *" in table and "* fastest: 2 threads: litert-f32 (" in table
