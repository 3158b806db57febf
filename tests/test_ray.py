"""Cluster inference on Ray Data (`keras_lcnet.ray_data`) gives the single-machine records.

One local Ray instance (2 CPUs, no dashboard) serves the module. The model is a
PP-LCNet x0_25 with the PaddleClas fixture checkpoint's backbone and a seeded
1000-class head (the fixture has 8 classes, and `predict_files` without a
preset decodes ImageNet's 1000), exported to ONNX: its scores differ from
image to image, so a different decode or a shuffled order shows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR
from PIL import Image

import keras_lcnet
from keras_lcnet.cli import main
from keras_lcnet.ray_data import predict_with_ray, ray_records

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")

    def slow_first_file():  # nested: Ray ships it by value to each worker process
        import os
        import time

        from keras_lcnet import batch

        load_image = batch.load_image

        def slow(path, **kwargs):
            # The first file's batch finishes last: a later one would overtake it.
            if os.path.basename(path).startswith("a_"):
                time.sleep(2)
            return load_image(path, **kwargs)

        batch.load_image = slow

    # The workers import this checkout's keras_lcnet, whatever is installed.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": slow_first_file,
                          "env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> str:
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from keras_lcnet.deploy.onnx import export_onnx

    trained = keras_lcnet.from_checkpoint(FIXTURES / "pplcnet_x0_25.pdparams")
    model = keras_lcnet.PPLCNet_x0_25(weights=None)
    for layer, source in zip(model.layers, trained.layers, strict=True):
        if layer.name != "fc":
            layer.set_weights(source.get_weights())
    head = np.random.default_rng(0).normal(0, 0.01, (1280, 1000)).astype("float32")
    model.get_layer("fc").set_weights([head, np.zeros(1000, "float32")])
    path = tmp_path_factory.mktemp("model") / "lcnet.onnx"
    export_onnx(model, path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of good images (JPEG, PNG of several sizes, a subfolder) and bad ones."""
    folder = tmp_path_factory.mktemp("ray") / "scans"
    (folder / "sub").mkdir(parents=True)
    for image in sorted(IMAGES_DIR.glob("*.jpg")):
        shutil.copy(image, folder / image.name)
    rng = np.random.default_rng(1)
    for name, size in (("a_first.png", (240, 300)), ("noise_a.png", (97, 150)),
                       ("sub/noise_b.png", (300, 240)), ("sub/noise_c.png", (224, 224))):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    data = (folder / "noise_a.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.png").write_bytes(b"")
    return folder


def _assert_same_records(actual: list[dict], expected: list[dict]) -> None:
    assert [r["path"] for r in actual] == [r["path"] for r in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got.keys() == want.keys(), got["path"]
        if "error" in want:
            assert got == want
        else:
            assert (got["labels"], got["wnids"]) == (want["labels"], want["wnids"]), got["path"]
            np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.export
def test_ray_records_are_predict_files_records(ray_session, onnx_model, images, monkeypatch):
    # Relative paths: the actors, whose working folder is not the driver's, still find them.
    monkeypatch.chdir(images.parent)
    sources = ["scans", "scans/*.gif"]  # the pattern matches nothing: an error record
    expected = list(keras_lcnet.predict_files(sources, onnx_model, batch_size=3))
    actual = list(ray_records(sources, onnx_model, batch_size=3, concurrency=2))
    _assert_same_records(actual, expected)
    errors = {r["path"] for r in actual if "error" in r}
    assert errors == {"scans/empty.png", "scans/truncated.png", "scans/*.gif"}
    assert len(actual) - len(errors) == 7
    assert len({tuple(r["labels"]) for r in actual if "labels" in r}) > 1  # images tell apart


def _example():
    path = ROOT / "examples" / "ray_batch_predict.py"
    spec = importlib.util.spec_from_file_location("ray_batch_predict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.export
def test_example_resumes_the_cli_record_file(ray_session, onnx_model, images, tmp_path, capsys):
    """`predict_with_ray`, through the example, continues a file the CLI began."""
    cli_file, ray_file = tmp_path / "cli.jsonl", tmp_path / "ray.jsonl"
    assert main(["predict", str(images), "--model", onnx_model, "--output", str(cli_file)]) == 1
    assert main(["predict", str(images / "a_first.png"), "--model", onnx_model,
                 "--output", str(ray_file)]) == 0
    capsys.readouterr()
    assert _example().main([str(images), "--model", onnx_model, "--output", str(ray_file),
                            "--resume", "--batch-size", "4", "--concurrency", "2"]) == 1
    assert capsys.readouterr().out == f"8 records written to {ray_file}, 2 of them errors\n"
    expected = [json.loads(line) for line in cli_file.read_text().splitlines()]
    actual = [json.loads(line) for line in ray_file.read_text().splitlines()]
    _assert_same_records(actual, expected)


def test_without_ray_the_error_says_which_extra_and_the_output_is_left_alone(
        tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    model, output = tmp_path / "lcnet.onnx", tmp_path / "out.jsonl"
    model.write_bytes(b"")
    output.write_text("{}\n")
    with pytest.raises(ValueError, match=r'pip install "keras-lcnet\[ray\]"'):
        predict_with_ray([str(tmp_path)], model, output)
    assert output.read_text() == "{}\n"


@pytest.mark.parametrize(("model", "options", "error", "message"), [
    ("lcnet.h5", {}, ValueError, "expected a .keras, .tflite or .onnx file"),
    ("missing.onnx", {}, FileNotFoundError, "No model file at"),
    ("lcnet.onnx", {"batch_size": 0}, ValueError, "`batch_size` must be a positive integer"),
    ("lcnet.onnx", {"concurrency": 0}, ValueError, "`concurrency` must be a positive integer"),
])
def test_bad_arguments_fail_on_the_driver_and_leave_the_output_alone(
        tmp_path, model, options, error, message):
    (tmp_path / "lcnet.h5").write_bytes(b"")
    (tmp_path / "lcnet.onnx").write_bytes(b"")
    output = tmp_path / "out.jsonl"
    output.write_text('{"path": "kept.jpg", "error": "earlier run"}\n')
    with pytest.raises(error, match=message):
        predict_with_ray([str(tmp_path)], os.fspath(tmp_path / model), output, **options)
    assert output.read_text() == '{"path": "kept.jpg", "error": "earlier run"}\n'
