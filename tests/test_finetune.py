"""keras_lcnet.finetune: image folder in, best .keras out; resume; 1 vs 2 JAX devices.

The data are scikit-learn's handwritten digits (they ship inside the package,
as in examples/transfer_learning.py), written as PNG files in one sub-folder
per class. The backbone is the committed x0_25 fixture checkpoint, at 64x64.
"""

from __future__ import annotations

import json
import os
import pathlib

import keras
import numpy as np
import pytest
from helpers import FIXTURES, run_python

from keras_lcnet.cli import main
from keras_lcnet.finetuning import (
    FolderDataset,
    list_image_folder,
    resolve_distribution,
    split_validation,
    training_scope,
)

WEIGHTS = str(FIXTURES / "pplcnet_x0_25.pdparams")
# Small and quick: 2 classes x 24 digits, 64x64, batch 8 (a multiple of 2 devices).
TINY = dict(variant="x0_25", weights=WEIGHTS, image_size=64, batch_size=8, augment=False,
            learning_rates=(3e-2, 1e-3))


def write_digits(root: pathlib.Path, per_class: int = 24, classes=(0, 1)) -> pathlib.Path:
    """scikit-learn's 8x8 digits as PNG files, one sub-folder per class."""
    from PIL import Image

    digits = pytest.importorskip("sklearn.datasets").load_digits()
    for digit in classes:
        folder = root / f"digit_{digit}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(digits.target == digit)[:per_class]:
            pixels = (digits.images[i] * (255 / 16)).astype("uint8")
            Image.fromarray(pixels).convert("RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> pathlib.Path:
    return write_digits(tmp_path_factory.mktemp("digits"))


# ------------------------------------------------------------------ input pipeline


def test_folder_lists_classes_sorted_and_refuses_a_bad_folder(digits, tmp_path):
    classes, files, labels = list_image_folder(digits)
    assert classes == tuple(sorted(os.listdir(digits)))
    assert len(files) == 48 and labels == [0] * 24 + [1] * 24
    with pytest.raises(ValueError, match="not a folder"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes((digits / classes[0]).iterdir().__next__()
                                              .read_bytes())
    with pytest.raises(ValueError, match="at least two"):
        list_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_image_folder(tmp_path)


def test_validation_split_is_stratified_and_seeded(digits):
    _, files, labels = list_image_folder(digits)
    train_files, train_labels, val_files, val_labels = split_validation(files, labels, 0.25, 3)
    assert sorted(train_files + val_files) == sorted(files)
    assert np.bincount(val_labels).tolist() == [6, 6]
    assert np.bincount(train_labels).tolist() == [18, 18]
    assert split_validation(files, labels, 0.25, 3)[2] == val_files
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_validation(files, labels, 1.0, 0)


def test_last_batch_is_full_with_zero_weight_padding(digits):
    _, files, labels = list_image_folder(digits)
    data = FolderDataset(files[:11], labels[:11], batch_size=8, image_size=32)
    images, batch_labels, weights = data[1]
    assert len(data) == 2 and images.shape == (8, 32, 32, 3)
    assert weights.tolist() == [1.0] * 3 + [0.0] * 5
    assert batch_labels[:3].tolist() == labels[8:11]
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 128


def test_augmentation_crops_and_flips_reproducibly(digits):
    _, files, labels = list_image_folder(digits)
    plain = FolderDataset(files[:8], labels[:8], 8, 64)[0][0]
    augmented = FolderDataset(files[:8], labels[:8], 8, 64, augment=True, seed=1)
    first = augmented[0][0]
    assert first.shape == plain.shape and not np.array_equal(first, plain)
    np.testing.assert_array_equal(first, augmented[0][0])


def test_distribution_and_mixed_precision_arguments():
    assert resolve_distribution("auto", 8) is None  # the TensorFlow backend: one device
    assert resolve_distribution(None, 8) is None
    with pytest.raises(ValueError, match="'auto', None"):
        resolve_distribution("data_parallel", 8)
    previous = keras.config.dtype_policy().name
    with training_scope(None, True):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == previous
    with pytest.raises(ValueError, match="mixed_precision"), training_scope(None, "float16"):
        pass


def test_bad_arguments_are_refused_before_training(digits, tmp_path):
    from keras_lcnet import finetune

    with pytest.raises(ValueError, match="epochs"):
        finetune(digits, tmp_path, epochs=(0, 0))
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "model.keras").write_bytes(b"a previous run's model")
    with pytest.raises(ValueError, match="mixed_precision"):
        finetune(digits, previous, mixed_precision="float16", resume=False)
    assert (previous / "model.keras").exists()  # refused before anything is deleted
    with pytest.raises(ValueError, match="learning_rates"):
        finetune(digits, tmp_path, learning_rates=(1e-3,))
    with pytest.raises(ValueError, match="same sub-folders"):
        finetune(digits, tmp_path, val_dir=write_digits(tmp_path / "val", 2, classes=(0, 7)))


# ------------------------------------------------------------------ training


class _Crash(keras.callbacks.Callback):
    """Stops the process's training after `epoch`, as a kill would."""

    def __init__(self, epoch: int):
        super().__init__()
        self.crash_after = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.crash_after:
            raise KeyboardInterrupt


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


@pytest.fixture(scope="module")
def resumed(digits, tmp_path_factory):
    """A run killed after its first epoch (of 2 frozen + 1 unfrozen), then rerun."""
    from keras_lcnet import finetune

    output = tmp_path_factory.mktemp("resumed")
    with pytest.raises(KeyboardInterrupt):
        finetune(digits, output, epochs=(2, 1), callbacks=[_Crash(0)], **TINY)
    interrupted = sorted(p.name for p in output.iterdir())
    epochs = _Epochs()
    result = finetune(digits, output, epochs=(2, 1), callbacks=[epochs], **TINY)
    return result, epochs.seen, interrupted


@pytest.mark.slow
def test_a_killed_run_resumes_from_the_next_epoch(resumed):
    result, seen, interrupted = resumed
    assert "backup" in interrupted and "model.keras" in interrupted
    assert seen == [1, 2]  # epoch 0 is not trained again
    assert [(h["epoch"], h["phase"]) for h in result.history] == [
        (0, "frozen"), (1, "frozen"), (2, "unfrozen")]
    assert not (pathlib.Path(result.model_path).parent / "backup").exists()


@pytest.mark.slow
def test_saved_model_is_the_best_epoch_and_labels_match_the_folders(resumed, digits):
    result, _, _ = resumed
    folders = sorted(os.listdir(digits))
    assert json.loads(pathlib.Path(result.labels_path).read_text())["labels"] == folders
    model = keras.saving.load_model(result.model_path)
    _, files, labels = list_image_folder(digits)
    _, _, val_files, val_labels = split_validation(files, labels, 0.2, 0)
    images = FolderDataset(val_files, val_labels, len(val_files), 64)[0][0]
    scores = model.predict(images, verbose=0)
    assert scores.shape == (len(val_files), len(folders))
    # The reloaded model scores what the best epoch's record says: padding is not counted.
    accuracy = np.mean(scores.argmax(-1) == np.asarray(val_labels))
    assert accuracy == pytest.approx(result.best_val_accuracy)
    assert result.best_val_accuracy == max(h["val_accuracy"] for h in result.history)


@pytest.mark.slow
def test_mixed_precision_keeps_the_output_layer_in_float32(digits, tmp_path):
    from keras_lcnet import finetune

    previous = keras.config.dtype_policy().name
    result = finetune(digits, tmp_path, epochs=(1, 0), mixed_precision=True, **TINY)
    assert keras.config.dtype_policy().name == previous  # restored
    model = keras.saving.load_model(result.model_path)
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    backbone = model.layers[1]
    assert backbone.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.predict(np.zeros((1, 64, 64, 3)), verbose=0).dtype == np.float32


@pytest.mark.slow
def test_cli_finetunes_and_refuses_bad_flags(digits, tmp_path, capsys):
    argv = ["finetune", str(digits), "--output", str(tmp_path), "--variant", "x0_25",
            "--weights", WEIGHTS, "--epochs", "1,0", "--batch-size", "8", "--image-size", "64",
            "--no-augment"]
    assert main(argv) == 0
    assert "best val_accuracy=" in capsys.readouterr().out
    assert {"model.keras", "labels.json", "history.json"} <= set(os.listdir(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-1], "--epochs", "0,0"])
    assert exit_info.value.code == 2
    assert "FROZEN,UNFROZEN" in capsys.readouterr().err
    assert main([*argv, "--preset", "PPLCNet_x0_25_imagenet"]) == 1
    assert capsys.readouterr().err.startswith("keras-lcnet: error: --preset")


# ------------------------------------------------------------------ 1 vs 2 devices

_JAX_RUN = """
import json, sys
import keras
import keras.src.backend.jax.trainer as jax_trainer
from keras_lcnet import finetune
from keras_lcnet.finetuning import resolve_distribution

shards = []
real = jax_trainer._distribute_data

def spy(data, layouts=None):  # records how each training batch was placed on the devices
    placed = real(data, layouts)
    images = placed[0]
    shards.append([tuple(s.data.shape) for s in images.addressable_shards])
    return placed

jax_trainer._distribute_data = spy
dist = resolve_distribution("auto", 8)
result = finetune(sys.argv[1], sys.argv[2], epochs=(1, 2), distribution="auto", **TINY)
print(json.dumps({"history": result.history, "devices": result.devices,
                  "distribution": type(dist).__name__, "shards": shards[:2],
                  "restored": keras.distribution.distribution() is None}))
"""


def _jax_run(digits: pathlib.Path, output: pathlib.Path, devices: int) -> dict:
    code = f"TINY = {TINY!r}\n" + _JAX_RUN.replace("sys.argv[1], sys.argv[2]",
                                                     f"{str(digits)!r}, {str(output)!r}")
    done = run_python(code, backend="jax", XLA_FLAGS=(
        f"--xla_force_host_platform_device_count={devices}"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.backends
def test_two_jax_devices_shard_the_batch_and_match_one_device(digits, tmp_path):
    pytest.importorskip("jax")
    one = _jax_run(digits, tmp_path / "one", 1)
    two = _jax_run(digits, tmp_path / "two", 2)
    assert (one["devices"], one["distribution"]) == (1, "NoneType")
    assert (two["devices"], two["distribution"]) == (2, "DataParallel")
    assert two["shards"][0] == [[4, 64, 64, 3], [4, 64, 64, 3]]  # half of each batch per device
    assert two["restored"] and one["restored"]
    # Same seed, same batches: the same model, up to the order of float sums (the
    # gradient is summed over two halves). Those differences grow with training
    # (~1e-3 relative in the loss after the unfrozen epochs), far below what it takes
    # to flip one of the 10 validation images: the accuracy must be exactly equal.
    accuracy = [[h["val_accuracy"] for h in run["history"]] for run in (one, two)]
    assert accuracy[0] == accuracy[1]
    assert max(accuracy[0]) > 0.5  # it learned something (2 classes): the match means something
    loss = [[h["val_loss"] for h in run["history"]] for run in (one, two)]
    np.testing.assert_allclose(loss[0], loss[1], rtol=1e-2)


@pytest.mark.slow
@pytest.mark.export
def test_best_model_is_exported_to_litert(digits, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from keras_lcnet import finetune

    result = finetune(digits, tmp_path, epochs=(1, 0), export_litert=True, **TINY)
    assert result.litert_path == str(tmp_path / "model.tflite")
    assert pathlib.Path(result.litert_path).read_bytes()[4:8] == b"TFL3"  # the FlatBuffer id
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
@pytest.mark.backends
def test_torch_backend_trains_on_one_device(digits, tmp_path):
    pytest.importorskip("torch")
    code = (f"TINY = {TINY!r}\nfrom keras_lcnet import finetune\n"
            f"result = finetune({str(digits)!r}, {str(tmp_path)!r}, epochs=(0, 1), **TINY)\n"
            "print(result.devices, len(result.history))")
    done = run_python(code, backend="torch")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["1", "1"]
    assert (tmp_path / "model.keras").exists()


def test_cli_help_does_not_import_keras():
    code = ("import sys\nfrom keras_lcnet.cli import main\ntry:\n    main(['finetune', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print(sorted({'keras', 'tensorflow', 'numpy', 'jax', 'torch'} & set(sys.modules)))")
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--epochs F,U" in done.stdout and done.stdout.strip().endswith("[]")
