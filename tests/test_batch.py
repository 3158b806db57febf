"""Folder-scale prediction: `predict_files`, the record files and `predict --output`.

Most tests use tiny seeded Keras models (built in milliseconds) or a stub decoder; the
CLI's own model is built only where the command line itself is under test.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import sys
import threading
import time

import keras
import numpy as np
import pytest
from helpers import FIXTURES, IMAGES_DIR, register_presets, small_preset

import keras_lcnet
from keras_lcnet import batch
from keras_lcnet.batch import find_images
from keras_lcnet.cli import main
from keras_lcnet.presets import InputContract

IMAGES = sorted(str(p) for p in IMAGES_DIR.glob("*.jpg"))  # cat, coffee, rocket
WNIDS = json.loads((IMAGES_DIR.parent.parent / "keras_lcnet" / "data"
                    / "imagenet_class_index.json").read_text())


def _conv_model(classes: int = 1000, seed: int = 0) -> keras.Model:
    """A small seeded convnet of any input size: its outputs follow the pixels closely."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(classes, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def conv_model() -> keras.Model:
    return _conv_model()


def _one_hot_model() -> keras.Model:
    """Scores = softmax of the flattened (10, 100, 1) image: a one-hot image at i gives class i."""
    return keras.Sequential([keras.Input((10, 100, 1)), keras.layers.Flatten(),
                             keras.layers.Softmax()])


def _one_hot(index: int) -> np.ndarray:
    image = np.zeros((1, 10, 100, 1), np.float32)
    image.flat[index % 1000] = 20.0
    return image


def _bad_folder(tmp_path):
    """A folder of good and bad images; returns it and its files in name order."""
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(IMAGES[0], folder / "a_good.jpg")
    (folder / "b_empty.jpg").write_bytes(b"")
    data = (IMAGES_DIR / "rocket.jpg").read_bytes()
    (folder / "c_truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "d_text.jpg").write_text("not an image\n")
    shutil.copy(IMAGES[2], folder / "e_good.jpg")
    return folder, [str(folder / n) for n in
                    ("a_good.jpg", "b_empty.jpg", "c_truncated.jpg", "d_text.jpg", "e_good.jpg")]


def test_records_come_in_input_order_with_several_workers(monkeypatch):
    """Decodes finish in a random order; every record is still its own input's, in order."""
    def slow_decode(path, **kwargs):
        time.sleep(random.Random(path).uniform(0, 0.004))
        return _one_hot(int(path.split("/")[-1].split(".")[0]))

    monkeypatch.setattr(batch, "load_image", slow_decode)
    paths = [f"fake/{i}.jpg" for i in range(200)]
    records = list(keras_lcnet.predict_files(paths, _one_hot_model(), batch_size=8, workers=4))
    assert [r["path"] for r in records] == paths
    assert [r["wnids"][0] for r in records] == [WNIDS[str(i)][0] for i in range(200)]


def test_bad_files_are_recorded_and_the_run_goes_on(tmp_path, conv_model):
    folder, files = _bad_folder(tmp_path)
    missing = str(tmp_path / "missing.jpg")
    records = list(keras_lcnet.predict_files([folder, missing], conv_model, batch_size=2,
                                             workers=2, top=3))
    assert [r["path"] for r in records] == [*files, missing]
    failed = {r["path"]: r["error"] for r in records if "error" in r}
    assert sorted(failed) == sorted([*files[1:4], missing])
    assert all(message and "\n" not in message for message in failed.values())
    assert failed[missing] == "no such file"
    assert "truncated" in failed[files[2]]
    for record in (records[0], records[4]):
        assert set(record) == {"path", "labels", "wnids", "scores"}
        assert len(record["labels"]) == 3


def test_folders_are_walked_in_name_order_and_patterns_expand(tmp_path):
    for name in ("b/z.png", "b/sub/y.JPEG", "b/a.jpg", "b/notes.txt", "b/sub/deeper/x.webp",
                 "c/only.bmp", "b/._a.jpg", "b/.thumbnails/t.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    root = str(tmp_path)
    assert list(find_images(f"{root}/b")) == [
        f"{root}/b/a.jpg", f"{root}/b/sub/deeper/x.webp", f"{root}/b/sub/y.JPEG",
        f"{root}/b/z.png"]
    assert list(find_images([f"{root}/**/*.bmp", f"{root}/b/*.png", f"{root}/b/notes.txt"])) == [
        f"{root}/c/only.bmp", f"{root}/b/z.png", f"{root}/b/notes.txt"]  # files: as given
    assert list(find_images(f"{root}/*.gif")) == [f"{root}/*.gif"]  # matches nothing


def test_a_pattern_that_matches_nothing_is_an_error_record(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "load_image", lambda path, **kwargs: _one_hot(0))
    pattern = str(tmp_path / "*.png")
    (record,) = keras_lcnet.predict_files([pattern], _one_hot_model())
    assert record == {"path": pattern, "error": "no file matches this pattern"}


def test_records_hold_what_model_predict_on_load_image_gives(conv_model):
    pixels = np.concatenate([keras_lcnet.load_image(p) for p in IMAGES])
    expected = keras_lcnet.decode_predictions(conv_model.predict(pixels, verbose=0), top=4)
    # One batch, as model.predict's: other batch sizes may round differently on some CPUs.
    records = list(keras_lcnet.predict_files(IMAGES, conv_model, batch_size=3, workers=2,
                                             top=4))
    assert [r["path"] for r in records] == IMAGES
    for record, best in zip(records, expected, strict=True):
        assert list(zip(record["wnids"], record["labels"], record["scores"], strict=True)) == best


def test_preset_records_follow_the_preset_pipeline_and_decoding(tmp_path, monkeypatch):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": [f"class_{i}" for i in range(8)]}))
    lines = InputContract(size=(80, 160), resize_short=None)
    register_presets(monkeypatch,
                     small_preset("t_lines8", 8, labels=str(labels), input=lines,
                                  postprocess={"top": 2}),
                     small_preset("t_multi8", 8, task="multi_label", labels=str(labels),
                                  input=lines, postprocess={"threshold": 0.1}))
    model = _conv_model(classes=8)
    for name in ("t_lines8", "t_multi8"):
        pixels = np.concatenate([keras_lcnet.load_image(p, preset=name) for p in IMAGES])
        expected = keras_lcnet.decode_outputs(model.predict(pixels, verbose=0), name)
        records = list(keras_lcnet.predict_files(IMAGES, model, preset=name, batch_size=3))
        assert [list(zip(r["labels"], r["scores"], strict=True)) for r in records] == expected


def test_decoding_stays_a_bounded_window_ahead(monkeypatch):
    """10,000 inputs from a generator: a few batches are read and decoded ahead, not all."""
    size, lock = 16, threading.Lock()
    counts = {"pulled": 0, "decoded": 0, "out": 0, "max_pulled": 0, "max_decoded": 0}

    def paths():
        for i in range(10_000):
            counts["pulled"] += 1
            counts["max_pulled"] = max(counts["max_pulled"], counts["pulled"] - counts["out"])
            yield f"fake/{i}.jpg"

    def decode(path, **kwargs):
        with lock:
            counts["decoded"] += 1
            ahead = counts["decoded"] - counts["out"]
            counts["max_decoded"] = max(counts["max_decoded"], ahead)
        return np.zeros((1, 10, 100, 1), np.float32)

    monkeypatch.setattr(batch, "load_image", decode)
    for _ in keras_lcnet.predict_files(paths(), _one_hot_model(), batch_size=size, workers=4):
        counts["out"] += 1
    assert counts["out"] == 10_000
    assert counts["max_decoded"] <= 3 * size
    assert counts["max_pulled"] <= 3 * size


def test_invalid_arguments_fail_at_once(conv_model):
    with pytest.raises(ValueError, match="batch_size"):
        keras_lcnet.predict_files(IMAGES, conv_model, batch_size=0)
    with pytest.raises(ValueError, match="model"):
        keras_lcnet.predict_files(IMAGES)
    with pytest.raises(ValueError, match=r"\.keras, \.tflite or \.onnx"):
        keras_lcnet.predict_files(IMAGES, "model.h5")
    with pytest.raises(ValueError, match="8 outputs"):
        keras_lcnet.predict_files(IMAGES, _conv_model(classes=8))


# The command line.


@pytest.fixture
def tiny_keras_file(tmp_path) -> str:
    path = tmp_path / "tiny.keras"
    _conv_model().save(path)
    return str(path)


def _read(path) -> list[dict]:
    """A record file's records, CSV cells parsed back, empty cells left out."""
    path = str(path)
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in open(path, encoding="utf-8")]
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: v if k in ("path", "error") else json.loads(v) for k, v in row.items()
                     if v} for row in csv.DictReader(f)]
    pq = pytest.importorskip("pyarrow.parquet")
    return [{k: v for k, v in row.items() if v is not None}
            for row in pq.read_table(path).to_pylist()]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_resume_after_an_interrupted_run_records_each_input_once(
        suffix, tmp_path, tiny_keras_file, monkeypatch, capsys):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    folder, files = _bad_folder(tmp_path)
    for i in range(7):  # 12 inputs, batches of 3
        shutil.copy(IMAGES[1], folder / f"f_{i}.jpg")
    files += [str(folder / f"f_{i}.jpg") for i in range(7)]
    output = str(tmp_path / f"records{suffix}")
    argv = ["predict", str(folder), "--model", tiny_keras_file, "--output", output,
            "--batch-size", "3", "--workers", "2"]
    load_image = batch.load_image

    def interrupted(path, **kwargs):  # Ctrl-C while the third batch is decoded
        if path.endswith("f_2.jpg"):
            raise KeyboardInterrupt
        return load_image(path, **kwargs)

    monkeypatch.setattr(batch, "load_image", interrupted)
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    first = _read(output)
    assert [r["path"] for r in first] == files[:6]
    if suffix != ".parquet":  # a hard kill tears the line being written
        with open(output, "a", encoding="utf-8") as f:
            f.write('{"path": "' + files[6] if suffix == ".jsonl" else files[6] + ',["tab')

    monkeypatch.setattr(batch, "load_image", load_image)
    assert main([*argv, "--resume"]) == 1  # the bad files
    records = _read(output)
    assert [r["path"] for r in records] == files
    assert records[:6] == first
    uninterrupted = list(keras_lcnet.predict_files(folder, keras.saving.load_model(
        tiny_keras_file), batch_size=3))
    for record, expected in zip(records, uninterrupted, strict=True):
        assert {**record, "scores": None} == {**expected, "scores": None}
        np.testing.assert_allclose(record.get("scores", []), expected.get("scores", []),
                                   rtol=1e-6)
    err = capsys.readouterr().err
    assert "3 of 12 inputs failed" in err and "written" in err


@pytest.mark.slow
def test_predict_output_end_to_end_with_random_weights(tmp_path, capsys):
    folder, files = _bad_folder(tmp_path)
    outputs = [tmp_path / "out.jsonl", tmp_path / "out.csv"]
    for output in outputs:
        argv = ["predict", str(folder), "--variant", "x0_25", "--weights", "none", "--top", "2",
                "--output", str(output)]
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "3 of 5 inputs failed" in captured.err
    jsonl, table = (_read(output) for output in outputs)
    assert jsonl == table
    assert [r["path"] for r in jsonl] == files
    assert [sorted(r) for r in jsonl] == [["labels", "path", "scores", "wnids"]] + [
        ["error", "path"]] * 3 + [["labels", "path", "scores", "wnids"]]
    assert all(len(r["labels"]) == 2 for r in (jsonl[0], jsonl[4]))


@pytest.mark.slow
@pytest.mark.export
def test_predict_with_an_onnx_model_matches_keras(tmp_path, monkeypatch):
    """An exported checkpoint with informative weights gives Keras' labels, through --model."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from keras_lcnet.deploy import export_onnx

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": [f"class_{i}" for i in range(8)]}))
    register_presets(monkeypatch, small_preset("t_eight", 8, labels=str(labels),
                                               postprocess={"top": 3}))
    model = keras_lcnet.from_checkpoint(FIXTURES / "pplcnet_x0_25.pdparams")
    path = str(tmp_path / "lcnet.onnx")
    export_onnx(model, path, batch_size=2, strict=False)
    keras_records = list(keras_lcnet.predict_files(IMAGES, model, preset="t_eight"))
    onnx_records = list(keras_lcnet.predict_files(IMAGES, path, preset="t_eight"))
    assert [r["path"] for r in onnx_records] == IMAGES
    for ours, theirs in zip(onnx_records, keras_records, strict=True):
        assert ours["labels"] == theirs["labels"]
        np.testing.assert_allclose(ours["scores"], theirs["scores"], rtol=1e-4, atol=1e-6)


def test_progress_bar_shows_on_a_terminal_only(tmp_path, tiny_keras_file, monkeypatch, capsys):
    folder, _ = _bad_folder(tmp_path)
    argv = ["predict", str(folder), "--model", tiny_keras_file, "--batch-size", "2"]
    assert main([*argv, "--output", str(tmp_path / "quiet.jsonl")]) == 1
    assert "img/s" not in capsys.readouterr().err  # stderr is not a terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*argv, "--output", str(tmp_path / "shown.jsonl")]) == 1
    assert re.search(r"5/5 \[.*img/s\]", capsys.readouterr().err)


@pytest.mark.parametrize("model", ["missing.onnx", "missing.keras"])
def test_a_missing_model_file_leaves_the_output_alone(model, tmp_path, capsys):
    output = tmp_path / "records.jsonl"
    output.write_text('{"path": "earlier.jpg", "labels": [], "scores": []}\n')
    argv = ["predict", IMAGES[0], "--model", str(tmp_path / model), "--output", str(output)]
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("keras-lcnet: error: No model file at")
    assert output.read_text() == '{"path": "earlier.jpg", "labels": [], "scores": []}\n'


def test_parquet_without_pyarrow_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["predict", IMAGES[0], "--output", str(tmp_path / "x.parquet")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("keras-lcnet: error:") and "keras-lcnet[parquet]" in line


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [(["--resume"], "argument --resume: needs --output"),
     (["--output", "out.txt"], "argument --output: 'out.txt' must end with .jsonl, .csv or"),
     (["--model", "m.tflite", "--weights", "none"], "argument --model: not allowed with"),
     (["--model", "m.h5"], "argument --model: 'm.h5' must be a .keras, .tflite or .onnx"),
     (["--output", "o.jsonl", "--json"], "argument --json: not allowed with argument --output"),
     (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
     (["--workers", "0"], "argument --workers: must be a positive integer")],
)
def test_predict_flag_mistakes_exit_2(flags, complaint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", IMAGES[0], *flags])
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err
