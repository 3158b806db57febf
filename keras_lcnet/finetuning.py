"""Fine-tuning PP-LCNet on a folder of images, on one CPU or on many devices.

`finetune(data_dir, output_dir)` reads an image folder (one sub-folder per
class), replaces the head, trains the new head on a frozen backbone, then the
whole network at a lower learning rate, and keeps the best model by
validation accuracy. Every epoch is backed up, so an interrupted run resumes
where it stopped when called again with the same `output_dir`.

The input pipeline is a `keras.utils.PyDataset` yielding NumPy batches, so
the same code runs on the TensorFlow, JAX and PyTorch backends. On JAX,
`keras.distribution.DataParallel` shards every batch over the visible devices
(GPUs, TPU cores, or virtual CPU devices); the TensorFlow and PyTorch
backends train on one device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil
from collections.abc import Iterator, Sequence

import keras
import numpy as np

from keras_lcnet.features import freeze_backbone
from keras_lcnet.layers import RepDepthwiseConv2D
from keras_lcnet.model import PPLCNet
from keras_lcnet.preprocessing import load_image
from keras_lcnet.presets import VARIANTS
from keras_lcnet.pretrained import from_preset

Distribution = keras.distribution.DataParallel | keras.distribution.ModelParallel

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
HISTORY_FILE = "history.json"
FROZEN_FILE = "frozen.weights.h5"  # the end of the frozen phase: resuming skips it
BACKUP_DIR = "backup"
LITERT_FILE = "model.tflite"
# Images are resized to this much more than the crop, as PaddleClas' 256 -> 224.
RESIZE_RATIO = 256 / 224
# Keras' distributions (it exports no base class).
_DISTRIBUTIONS = (keras.distribution.DataParallel, keras.distribution.ModelParallel)


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` wrote and how training went.

    Attributes:
        model_path: The best model by validation accuracy (`.keras`).
        labels_path: `{"labels": [...]}`, the class names by output index.
        labels: The class names (the sub-folder names, sorted).
        best_val_accuracy: Validation accuracy of the saved model.
        history: One dict per epoch: `epoch`, `phase` and Keras' logs.
        litert_path: The LiteRT file, when `export_litert=True`.
        devices: How many devices each batch was split over.
    """

    model_path: str
    labels_path: str
    labels: tuple[str, ...]
    best_val_accuracy: float
    history: tuple[dict, ...]
    litert_path: str | None
    devices: int


def list_image_folder(data_dir: str | os.PathLike) -> tuple[tuple[str, ...], list[str], list[int]]:
    """The classes, image files and labels of a folder with one sub-folder per class.

    Args:
        data_dir: A folder whose sub-folders (the classes, sorted by name)
            hold the images; hidden entries and other file types are skipped.

    Returns:
        `(classes, files, labels)`, with `labels[i]` the class index of `files[i]`.

    Raises:
        ValueError: The folder is missing, has fewer than two classes, or a
            class without images.
    """
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: pass a folder with one sub-folder per class.")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != "."))
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(
            str(p) for p in (root / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not found:
            raise ValueError(f"{root / name} has no images ({', '.join(IMAGE_SUFFIXES)}).")
        files += found
        labels += [index] * len(found)
    if len(classes) < 2:
        raise ValueError(f"{root} has {len(classes)} class folder(s): it needs at least two.")
    return classes, files, labels


def split_validation(
    files: Sequence[str], labels: Sequence[int], fraction: float, seed: int
) -> tuple[list[str], list[int], list[str], list[int]]:
    """A seeded stratified split: `fraction` of each class (at least one image) for validation.

    Returns:
        `(train_files, train_labels, val_files, val_labels)`.

    Raises:
        ValueError: `fraction` is not in (0, 1), or a class has a single image.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split={fraction} must be between 0 and 1 (e.g. 0.2).")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise ValueError(f"{files[members[0]]} is alone in its class: a class needs "
                             "at least two images to be split (or pass val_dir).")
        count = min(max(1, round(len(members) * fraction)), len(members) - 1)
        val += members[:count].tolist()
        train += members[count:].tolist()
    train, val = sorted(train), sorted(val)
    return ([files[i] for i in train], labels[train].tolist(),
            [files[i] for i in val], labels[val].tolist())


class FolderDataset(keras.utils.PyDataset):
    """Batches of `(images, labels, sample_weights)` decoded from image files.

    Images are RGB pixels in `[0, 255]` (the models' input contract). With
    `augment`, each image is resized to `RESIZE_RATIO` times the size, then
    a random crop and a random horizontal flip are taken; without, the
    center crop (`keras_lcnet.load_image`). Every batch has `batch_size`
    images, so it splits evenly over the devices: the last one is padded
    with copies of its first image weighted 0, which leave the loss and the
    metrics unchanged. The order is reshuffled each epoch from `seed`.
    """

    def __init__(self, files, labels, batch_size: int, image_size: int, augment: bool = False,
                 shuffle: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.files, self.labels = list(files), np.asarray(labels, "int32")
        self.batch_size, self.image_size = batch_size, image_size
        self.augment, self.shuffle, self.seed = augment, shuffle, seed
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.files))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.files))

    def __len__(self) -> int:
        return math.ceil(len(self.files) / self.batch_size)

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images = np.stack([self._load(self.files[i], rng) for i in picked])
        labels, weights = self.labels[picked], np.ones(len(picked), "float32")
        missing = self.batch_size - len(picked)
        if missing:
            images = np.concatenate([images, np.repeat(images[:1], missing, axis=0)])
            labels = np.concatenate([labels, np.repeat(labels[:1], missing)])
            weights = np.concatenate([weights, np.zeros(missing, "float32")])
        return images, labels, weights

    def _load(self, path: str, rng: np.random.Generator) -> np.ndarray:
        size = self.image_size
        if not self.augment:
            return load_image(path, size=size, resize_short=size)[0]
        big = round(size * RESIZE_RATIO)
        image = load_image(path, size=big, resize_short=big)[0]
        top, left = rng.integers(0, big - size + 1, size=2)
        image = image[top : top + size, left : left + size]
        return image[:, ::-1] if rng.random() < 0.5 else image

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


def resolve_distribution(distribution, batch_size: int) -> Distribution | None:
    """The distribution `finetune` trains under: `"auto"`, `None` or a Distribution.

    `"auto"` is `keras.distribution.DataParallel` over every device when the
    JAX backend sees more than one, else `None` (one device).

    Raises:
        ValueError: A distribution on another backend than JAX, another
            value, or a batch size its devices do not divide.
    """
    backend = keras.backend.backend()
    if distribution is None or (distribution == "auto" and backend != "jax"):
        return None
    if isinstance(distribution, str) and distribution == "auto":
        devices = keras.distribution.list_devices()
        if len(devices) < 2:
            return None
        distribution = keras.distribution.DataParallel(devices=devices)
    elif not isinstance(distribution, _DISTRIBUTIONS):
        raise ValueError(f"distribution={distribution!r}: pass 'auto', None or a "
                         "keras.distribution.DataParallel or ModelParallel.")
    elif backend != "jax":
        raise ValueError(f"keras.distribution needs the JAX backend, not {backend}: set "
                         "KERAS_BACKEND=jax or pass distribution=None.")
    shards = batch_shards(distribution)
    if batch_size % shards:
        raise ValueError(f"batch_size={batch_size} does not split over {shards} devices: "
                         f"pass a multiple of {shards}.")
    return distribution


def mixed_policy(mixed_precision: bool | str) -> str | None:
    """The dtype policy `mixed_precision=` asks for: `True` is `"mixed_bfloat16"`.

    Raises:
        ValueError: Another value than a bool, "mixed_float16" or "mixed_bfloat16".
    """
    policy = {True: "mixed_bfloat16", False: None}.get(mixed_precision, mixed_precision)
    if policy not in (None, "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"mixed_precision={mixed_precision!r}: pass True, False, "
                         "'mixed_float16' or 'mixed_bfloat16'.")
    return policy


@contextlib.contextmanager
def training_scope(distribution, mixed_precision: bool | str) -> Iterator[None]:
    """Sets the distribution and dtype policy for the block, then restores the previous ones."""
    policy = mixed_policy(mixed_precision)
    previous = keras.config.dtype_policy()
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    try:
        if policy:
            keras.config.set_dtype_policy(policy)
        with scope:
            yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_classifier(classes: int, image_size: int, model: keras.Model | None = None,
                     variant: str = "x1_0", weights: str | None = "imagenet",
                     preset: str | None = None, dropout: float = 0.2):
    """A PP-LCNet backbone with a new head: pooling, dropout and a float32 softmax Dense.

    Args:
        classes: Number of classes of the new head.
        image_size: Side of the square input images.
        model: A backbone built by keras_lcnet with `include_top=False`
            (its width and weights are kept); else one is built from
            `preset`, or from `variant` and `weights`.
        variant: PP-LCNet width, e.g. `"x0_25"`.
        weights: What `keras_lcnet.PPLCNet(weights=...)` takes (`None`: random).
        preset: A preset name: its width and weights (not with `model`).
        dropout: Dropout rate before the new Dense layer.

    Returns:
        `(classifier, backbone)`.

    Raises:
        ValueError: An unknown variant or preset, or weights that cannot be loaded.
    """
    shape = (image_size, image_size, 3)
    if model is not None:
        backbone = model
    elif preset is not None:
        backbone = from_preset(preset, include_top=False, pooling="avg", input_shape=shape)
    elif variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {list(VARIANTS)}.")
    else:
        backbone = PPLCNet(scale=VARIANTS[variant], include_top=False, pooling="avg",
                           weights=weights, input_shape=shape)
    inputs = keras.Input(shape, name="images")
    x = backbone(inputs)
    if len(x.shape) == 4:  # a backbone without pooling
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # Softmax in float32 under mixed precision: float16 probabilities underflow.
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32",
                                 name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_finetuned"), backbone


def set_backbone_frozen(backbone: keras.Model, frozen: bool, keep_batchnorm: bool) -> None:
    """Freezes the whole backbone, or unfreezes it; `keep_batchnorm` keeps BN frozen.

    A frozen BatchNormalization runs in inference mode (Keras 3), so the
    pretrained statistics survive fine-tuning, as Keras' transfer-learning
    guide recommends.
    """
    if frozen:
        freeze_backbone(backbone, freeze_batchnorm=True)
        return
    for layer in backbone.layers:
        layer.trainable = not (keep_batchnorm and isinstance(layer,
                                                             keras.layers.BatchNormalization))
        if keep_batchnorm and isinstance(layer, RepDepthwiseConv2D):
            for bn in getattr(layer, "bns", ()):
                bn.trainable = False


def _write_atomic(path: pathlib.Path, write) -> None:
    """Calls `write(tmp)` then renames: a crash never leaves a half-written `path`."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Progress(keras.callbacks.Callback):
    """Records each epoch's logs in history.json and saves the best model atomically."""

    def __init__(self, output: pathlib.Path, phase: str, history: list[dict]):
        super().__init__()
        self.output, self.phase, self.history = output, phase, history

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if logs.get("val_accuracy", -1.0) > best_accuracy(self.history):
            _write_atomic(self.output / MODEL_FILE, self.model.save)
        # A rerun epoch (after a crash between here and the backup) replaces its record.
        self.history[:] = [h for h in self.history if h["epoch"] != epoch]
        self.history.append({"epoch": epoch, "phase": self.phase, **logs})
        text = json.dumps(self.history, indent=1)
        _write_atomic(self.output / HISTORY_FILE,
                      lambda p: pathlib.Path(p).write_text(text, encoding="utf-8"))


def best_accuracy(history: Sequence[dict]) -> float:
    """The best validation accuracy in `history` (-inf when there is none)."""
    return max((h["val_accuracy"] for h in history if "val_accuracy" in h), default=-math.inf)


def _read_history(output: pathlib.Path, resume: bool) -> list[dict]:
    """The epochs already trained, or none (and no leftovers) when not resuming."""
    if not resume:
        shutil.rmtree(output / BACKUP_DIR, ignore_errors=True)
        for name in (HISTORY_FILE, FROZEN_FILE, MODEL_FILE):
            (output / name).unlink(missing_ok=True)
        return []
    path = output / HISTORY_FILE
    if not (path.exists() and (output / MODEL_FILE).exists()):
        return []
    return json.loads(path.read_text(encoding="utf-8"))


def _fit_phase(model, data, phase: str, epochs: tuple[int, int], learning_rate: float,
               output: pathlib.Path, history: list[dict], callbacks: Sequence) -> None:
    """Compiles and fits one phase; its epochs are numbered after the frozen phase's."""
    start, stop = (0, epochs[0]) if phase == "frozen" else (epochs[0], sum(epochs))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    backup = keras.callbacks.BackupAndRestore(str(output / BACKUP_DIR))
    # BackupAndRestore's restored epoch outlives the fit it resumed (Keras 3.15): clear it,
    # or the unfrozen phase after a resumed frozen one would start from that epoch.
    model._initial_epoch = None
    model.fit(data[0], validation_data=data[1], epochs=stop, initial_epoch=start, verbose=2,
              callbacks=[_Progress(output, phase, history), backup, *callbacks])


def _load_data(data_dir, val_dir, validation_split, batch_size, image_size, augment, seed):
    """The training and validation datasets, and the class names."""
    classes, files, labels = list_image_folder(data_dir)
    if val_dir is None:
        files, labels, val_files, val_labels = split_validation(
            files, labels, validation_split, seed)
    else:
        val_classes, val_files, val_labels = list_image_folder(val_dir)
        if val_classes != classes:
            raise ValueError(f"{val_dir} has classes {list(val_classes)} but {data_dir} "
                             f"has {list(classes)}: give both the same sub-folders.")
    train = FolderDataset(files, labels, batch_size, image_size, augment, shuffle=True, seed=seed)
    val = FolderDataset(val_files, val_labels, batch_size, image_size)
    return classes, (train, val)


def _check_arguments(epochs, learning_rates, batch_size, image_size, export_litert,
                     mixed_precision) -> None:
    mixed_policy(mixed_precision)
    if len(epochs) != 2 or min(epochs) < 0 or sum(epochs) == 0:
        raise ValueError(f"epochs={epochs!r}: pass (frozen, unfrozen) epoch counts, e.g. (5, 10).")
    if len(learning_rates) != 2 or min(learning_rates) <= 0:
        raise ValueError(f"learning_rates={learning_rates!r}: pass two positive rates, "
                         "e.g. (1e-3, 1e-4).")
    if batch_size < 1 or image_size < 32:
        raise ValueError(f"batch_size={batch_size}, image_size={image_size}: the batch size "
                         "must be positive and the images at least 32 pixels.")
    if export_litert and keras.backend.backend() != "tensorflow":
        raise ValueError("export_litert=True needs the TensorFlow backend: set "
                         "KERAS_BACKEND=tensorflow, or export model.keras afterwards.")


def finetune(
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    model: keras.Model | None = None,
    variant: str = "x1_0",
    weights: str | None = "imagenet",
    preset: str | None = None,
    image_size: int = 224,
    batch_size: int = 32,
    epochs: tuple[int, int] = (5, 10),
    learning_rates: tuple[float, float] = (1e-3, 1e-4),
    augment: bool = True,
    dropout: float = 0.2,
    validation_split: float = 0.2,
    val_dir: str | os.PathLike | None = None,
    distribution="auto",
    mixed_precision: bool | str = False,
    export_litert: bool = False,
    resume: bool = True,
    seed: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FinetuneResult:
    """Fine-tunes PP-LCNet on a folder of images, one sub-folder per class.

    The backbone's head is replaced by dropout and a Dense layer for the
    class count. Training runs in two phases: `epochs[0]` epochs with the
    backbone frozen (only the new head learns, at `learning_rates[0]`),
    then `epochs[1]` epochs with the backbone unfrozen at
    `learning_rates[1]`. The BatchNormalization layers of a pretrained
    backbone stay frozen, in inference mode, throughout.

    `output_dir` receives `model.keras` (the best epoch by validation
    accuracy, saved whenever it improves), `labels.json`
    (`{"labels": [...]}`, the class names by output index) and
    `history.json`; with `export_litert`, `model.tflite`. Each epoch is
    backed up (`keras.callbacks.BackupAndRestore`): calling `finetune`
    again after an interruption continues from the next epoch.

    With `distribution="auto"` on the JAX backend and several devices
    visible (GPUs, TPU cores, or CPU devices made with
    `XLA_FLAGS=--xla_force_host_platform_device_count=N`), each batch is
    split over them with `keras.distribution.DataParallel`. The TensorFlow
    and PyTorch backends train on one device.

    Example:

    ```python
    result = keras_lcnet.finetune("flowers/", "out/", variant="x0_5", epochs=(3, 5))
    model = keras.saving.load_model(result.model_path)
    ```

    Args:
        data_dir: The training images, one sub-folder per class.
        output_dir: Where the model, labels, history and backups go.
        model: A backbone built by keras_lcnet with `include_top=False`
            (then `variant`, `weights` and `preset` are ignored).
        variant: PP-LCNet width, e.g. `"x0_25"` ... `"x2_5"`.
        weights: `"imagenet"`, `"imagenet_ssld"`, a checkpoint file, or
            `None` (random: pass `epochs=(0, n)`, since a frozen random
            backbone learns nothing, and its BatchNorm layers then train).
        preset: A preset name whose width and weights to start from.
        image_size: Side of the square images the model is trained on.
        batch_size: Images per step, over all devices.
        epochs: `(frozen, unfrozen)` epoch counts.
        learning_rates: Adam learning rates of the two phases.
        augment: Random crops and horizontal flips of the training images.
        dropout: Dropout rate before the new Dense layer.
        validation_split: Fraction of each class held out, when no `val_dir`.
        val_dir: Validation images, with the same sub-folders as `data_dir`.
        distribution: `"auto"`, `None` (one device), or a
            `keras.distribution.DataParallel` / `ModelParallel` (JAX backend).
        mixed_precision: `True` (`"mixed_bfloat16"`), `"mixed_float16"`
            (GPUs; loss scaling is added) or `False`.
        export_litert: Also export the best model to `model.tflite`
            (TensorFlow backend, [export] extra).
        resume: Continue an interrupted run in `output_dir`; `False` starts over.
        seed: Seeds the weights of the new head, the split and the shuffling.
        callbacks: Further Keras callbacks for both phases.

    Returns:
        A `FinetuneResult`.

    Raises:
        ValueError: A bad argument, an unusable image folder, or a batch
            size the devices do not divide.
    """
    _check_arguments(tuple(epochs), tuple(learning_rates), batch_size, image_size, export_litert,
                     mixed_precision)
    dist = resolve_distribution(distribution, batch_size)
    classes, data = _load_data(data_dir, val_dir, validation_split, batch_size, image_size,
                               augment, seed)
    output = pathlib.Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    history = _read_history(output, resume)
    keras.utils.set_random_seed(seed)
    with training_scope(dist, mixed_precision):
        _train(classes, data, output, history, tuple(epochs), tuple(learning_rates), callbacks,
               dict(model=model, variant=variant, weights=weights, preset=preset,
                    dropout=dropout, image_size=image_size))
    return _finish(output, classes, history, export_litert, batch_shards(dist))


def batch_shards(distribution: Distribution | None) -> int:
    """How many parts `distribution` splits each batch into (1 without one)."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def _train(classes, data, output, history, epochs, learning_rates, callbacks, build) -> None:
    """Both phases; the frozen one is skipped when a previous run finished it."""
    model, backbone = build_classifier(len(classes), **build)
    pretrained = build["model"] is not None or build["preset"] or build["weights"] is not None
    frozen_file = output / FROZEN_FILE
    if epochs[0] and not frozen_file.exists():
        set_backbone_frozen(backbone, True, keep_batchnorm=True)
        _fit_phase(model, data, "frozen", epochs, learning_rates[0], output, history, callbacks)
        _write_atomic(frozen_file, model.save_weights)
    elif epochs[0]:
        model.load_weights(str(frozen_file))
    if epochs[1]:
        set_backbone_frozen(backbone, False, keep_batchnorm=bool(pretrained))
        _fit_phase(model, data, "unfrozen", epochs, learning_rates[1], output, history,
                   callbacks)


def _finish(output, classes, history, export_litert, devices) -> FinetuneResult:
    """Writes the labels, exports the best model if asked, and sums up."""
    labels_text = json.dumps({"labels": list(classes)}, indent=1, ensure_ascii=False)
    _write_atomic(output / LABELS_FILE,
                  lambda p: pathlib.Path(p).write_text(labels_text, encoding="utf-8"))
    litert = None
    if export_litert:
        from keras_lcnet.deploy.litert import export_litert as export

        best = keras.saving.load_model(output / MODEL_FILE, compile=False)
        litert = str(output / LITERT_FILE)
        _write_atomic(pathlib.Path(litert), lambda path: export(best, path))
    return FinetuneResult(
        model_path=str(output / MODEL_FILE), labels_path=str(output / LABELS_FILE),
        labels=tuple(classes), best_val_accuracy=best_accuracy(history),
        history=tuple(history), litert_path=litert, devices=devices,
    )
