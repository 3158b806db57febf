"""Folder-scale prediction: `predict_files` streams image files through a model in batches.

```python
import keras_lcnet

for record in keras_lcnet.predict_files(["archive/"], "doc_ori.onnx",
                                        preset="PP-LCNet_x1_0_doc_ori"):
    print(record)  # {"path": ..., "labels": [...], "scores": [...]} or {"path", "error"}
```

Files are decoded by a bounded pool of threads (Pillow releases the GIL while
it decodes) with exactly `load_image`, so the pixels are those of a plain
`model.predict(load_image(path))`. At most `max(2 * batch_size, workers)`
decodes are queued ahead of the batch being classified, so memory stays
bounded whatever the number of files, and records come out in input order.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import glob
import os
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from keras_lcnet.decode import NUM_CLASSES, decode_outputs, decode_predictions
from keras_lcnet.preprocessing import CROP_SIZE, load_image
from keras_lcnet.presets import get_preset

if TYPE_CHECKING:
    import keras

    from keras_lcnet.deploy.runtime import Runtime

# The suffixes a folder's files are picked by (case-insensitive): formats Pillow decodes.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jfif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm",
                  ".ppm", ".tif", ".tiff", ".webp")
MODEL_SUFFIXES = (".keras", ".onnx", ".tflite")
DEFAULT_TOP = 5
_LABELLED_TASKS = ("single_label", "binary", "multi_label")

Sources = str | os.PathLike | Iterable[str | os.PathLike]


def find_images(sources: Sources) -> Iterator[str]:
    """The image files `sources` name, in a deterministic order.

    A folder stands for the files under it (recursively; hidden files and
    folders, whose names start with a dot, left out, and symbolic links to
    folders not followed) whose suffix is in `IMAGE_SUFFIXES`, in name
    order; a glob pattern (`"scans/**/*.png"`) for the files it matches,
    sorted; any other source is taken as a file. A pattern that matches
    nothing and a folder that cannot be listed are yielded as they are:
    `predict_files` records why.

    Args:
        sources: A path or pattern, or an iterable of them (read lazily).

    Yields:
        Paths, as strings.
    """
    for path, _ in _inputs(sources):
        yield path


def _inputs(sources: Sources) -> Iterator[tuple[str, str | None]]:
    """`(path, None)` for each file, or `(source, why it names no file)`."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    for source in sources:
        source = os.fspath(source)
        if os.path.isdir(source):
            yield from _walk(source)
        elif not os.path.exists(source) and glob.has_magic(source):
            matches = [m for m in sorted(glob.glob(source, recursive=True)) if os.path.isfile(m)]
            yield from ((m, None) for m in matches) if matches else [
                (source, "no file matches this pattern")]
        else:
            yield source, None


def _walk(folder: str) -> Iterator[tuple[str, str | None]]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as e:
        yield folder, f"cannot list the folder: {e.strerror or e}"
        return
    for entry in entries:
        if entry.name.startswith("."):  # hidden, e.g. macOS' "._photo.jpg" resource forks
            continue
        if entry.is_dir(follow_symlinks=False):  # links to folders may loop
            yield from _walk(entry.path)
        elif entry.name.lower().endswith(IMAGE_SUFFIXES):
            yield entry.path, None


def _failure(error: Exception) -> str:
    """Why a file could not be decoded, on one line."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    text = " ".join(str(error).split())
    return text if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {text}"


def _decoded(
    inputs: Iterable[tuple[str, str | None]], decode: Callable, workers: int, window: int
) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """`(path, image, None)` or `(path, None, error)` in input order, `window` decodes ahead."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="keras-lcnet-decode")
    pending: collections.deque[tuple[str, Future | None, str | None]] = collections.deque()

    def result(path: str, future: Future | None, error: str | None):
        if future is None:
            return path, None, error
        try:
            return path, future.result(), None
        except Exception as e:  # a corrupt file of any kind is a record, not the end of the run
            return path, None, _failure(e)

    try:
        for path, error in inputs:
            if len(pending) >= window:
                yield result(*pending.popleft())
            pending.append((path, None if error else pool.submit(decode, path), error))
        while pending:
            yield result(*pending.popleft())
    finally:  # stopped early (Ctrl-C, or the caller left): drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _imagenet_records(scores: np.ndarray, top: int) -> list[dict]:
    if scores.shape[-1] != NUM_CLASSES:
        raise ValueError(f"The model has {scores.shape[-1]} outputs, not the 1000 ImageNet "
                         "classes: pass the `preset` it was trained for.")
    return [
        {"labels": [name for _, name, _ in best], "wnids": [wnid for wnid, _, _ in best],
         "scores": [score for _, _, score in best]}
        for best in decode_predictions(scores, top=top)
    ]


def _jsonable(value):
    """A decoded attribute as JSON data: each `(label, score)` pair becomes a dict."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return {"label": value[0], "score": value[1]}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _preset_records(scores: np.ndarray, preset: str, top: int | None) -> list[dict]:
    task = get_preset(preset).task
    results = decode_outputs(scores, preset, top=top)
    if task not in _LABELLED_TASKS:
        return [{"attributes": _jsonable(result)} for result in results]
    if task == "binary":  # one (label, score) pair: the label the threshold picks
        results = [[result] for result in results]
    return [{"labels": [label for label, _ in pairs], "scores": [score for _, score in pairs]}
            for pairs in results]


def _open_model(model, preset: str | None, num_threads: int | None) -> keras.Model | Runtime:
    """A Keras model or an opened `Runtime` from what `predict_files` was given."""
    if model is None:
        if preset is None:
            raise ValueError("Pass `model` (a Keras model, or a .keras, .tflite or .onnx file) "
                             "or a `preset` to build.")
        from keras_lcnet.pretrained import from_preset

        return from_preset(preset)
    if not isinstance(model, (str, os.PathLike)):
        return model
    path = os.fspath(model)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MODEL_SUFFIXES:
        raise ValueError(f"Cannot predict with {path!r}: expected a .keras, .tflite or .onnx "
                         "file, or a Keras model.")
    if suffix == ".keras":
        import keras

        if not os.path.isfile(path):
            raise FileNotFoundError(f"No model file at {path!r}.")
        return keras.saving.load_model(path)
    from keras_lcnet.deploy.runtime import Runtime

    return Runtime(path, num_threads=num_threads or os.cpu_count() or 1)


def _predictor(
    model, preset: str | None, num_threads: int | None
) -> tuple[Callable, str | None]:
    """`predict(images) -> scores` and the image layout the model takes (None: Keras')."""
    from keras_lcnet.deploy.runtime import Runtime

    model = _open_model(model, preset, num_threads)
    height, width = get_preset(preset).input.size if preset else (CROP_SIZE, CROP_SIZE)
    if isinstance(model, Runtime):
        if model.image_shape[:2] != (height, width):
            raise ValueError(
                f"{model.path!r} takes {model.image_shape[0]}x{model.image_shape[1]} images, "
                f"the input pipeline gives {height}x{width}: pass the `preset` it was exported "
                "for, or export it with that image size.")
        return model.predict, "channels_last"  # Runtime takes channels-last pixels
    if not hasattr(model, "predict_on_batch"):
        raise ValueError(f"`model` must be a Keras model, a Runtime or a model file, got "
                         f"{type(model).__name__}.")
    outputs = getattr(model, "output_shape", (None,))[-1]
    if preset is None and isinstance(outputs, int) and outputs != NUM_CLASSES:
        raise ValueError(f"The model has {outputs} outputs, not the 1000 ImageNet classes: "
                         "pass the `preset` it was trained for.")
    import keras

    return lambda images: keras.ops.convert_to_numpy(model.predict_on_batch(images)), None


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def predict_files(
    sources: Sources,
    model: keras.Model | Runtime | str | os.PathLike | None = None,
    *,
    preset: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    top: int | None = None,
    skip: Container[str] = (),
) -> Iterator[dict]:
    """Classifies image files, folders and glob patterns in batches; one record per input.

    Each file is loaded with `load_image` (with the preset's input pipeline,
    if any) by a pool of `workers` threads, classified in batches of
    `batch_size`, and decoded: `decode_predictions` without a preset,
    `decode_outputs` with one. Decoding runs at most `max(2 * batch_size,
    workers)` files ahead of the batch being classified, so memory stays
    bounded however many files there are. Records come in input order.

    A file that cannot be read (missing, empty, truncated, not an image)
    gives an error record and the run goes on.

    Example:

    ```python
    for record in keras_lcnet.predict_files("photos/", keras_lcnet.PPLCNet_x1_0()):
        print(record["path"], record.get("labels", record.get("error")))
    ```

    Args:
        sources: Image files, folders (searched recursively for
            `IMAGE_SUFFIXES`, in name order) or glob patterns, or one of
            them; see `find_images`. Read lazily.
        model: A Keras model, a `keras_lcnet.deploy.runtime.Runtime`, or
            a `.keras`, `.tflite` or `.onnx` file (exports run with
            `Runtime`, on all CPU cores). Default: `from_preset(preset)`.
        preset: The preset whose input pipeline and decoding apply (and
            whose model is built when `model` is `None`). Without one,
            images get PaddleClas' ImageNet evaluation transform and the
            model's 1000 outputs are decoded as ImageNet classes.
        batch_size: Images per model call.
        workers: Decoding threads. Default: the number of CPUs.
        top: How many classes each ImageNet record holds (default 5), or
            for a `single_label` preset, instead of the preset's own.
        skip: Paths to leave out, e.g. those a previous run recorded.

    Returns:
        An iterator of dicts, one per input: `{"path", "labels", "wnids",
        "scores"}` (best first) without a preset; `{"path", "labels",
        "scores"}` for `single_label`, `binary` and `multi_label` presets;
        `{"path", "attributes"}` for attribute presets (what
        `decode_outputs` returns, `(label, score)` pairs as `{"label",
        "score"}`); `{"path", "error"}` (one line) for an input that failed.

    Raises:
        ValueError: Invalid arguments, a model file that cannot be opened
            or whose input size or outputs do not fit the input pipeline.
        FileNotFoundError: The model file does not exist.
    """
    _positive("batch_size", batch_size)
    pipeline = _pipeline(model, preset=preset, workers=workers, top=top)
    inputs = (item for item in _inputs(sources) if item[0] not in skip)
    return pipeline.records(inputs, batch_size)


@dataclasses.dataclass(frozen=True)
class _Pipeline:
    """Turns `(path, error)` inputs into records; `predict_files` and the Ray actors share it."""

    decode: Callable  # path -> a batch of one image
    predict: Callable  # images -> scores
    to_records: Callable  # scores -> records without their "path"
    workers: int

    def records(self, inputs: Iterable[tuple[str, str | None]], batch_size: int
                ) -> Iterator[dict]:
        """One record per input, in input order; `error` inputs are not decoded."""
        window = max(2 * batch_size, self.workers)
        with contextlib.closing(_decoded(inputs, self.decode, self.workers, window)) as decoded:
            for batch in _batches(decoded, batch_size):
                images = [image for _, image, _ in batch if image is not None]
                results = iter(self.to_records(self.predict(np.concatenate(images)))
                               if images else ())
                for path, image, error in batch:
                    yield {"path": path, "error": error} if image is None else {
                        "path": path, **next(results)}


def _pipeline(model, *, preset: str | None, workers: int | None, top: int | None,
              num_threads: int | None = None) -> _Pipeline:
    """Checks `predict_files`' arguments and opens the model (a file with `num_threads`)."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    _positive("workers", workers)
    if preset is not None:
        preset = get_preset(preset).name
        if top is not None and get_preset(preset).task != "single_label":
            raise ValueError(f"`top` applies to single_label presets; '{preset}' is "
                             f"{get_preset(preset).task}.")
    elif top is not None:
        _positive("top", top)
    predict, data_format = _predictor(model, preset, num_threads)
    decode = functools.partial(load_image, preset=preset, data_format=data_format)
    if preset is None:
        to_records = functools.partial(_imagenet_records, top=top or DEFAULT_TOP)
    else:
        to_records = functools.partial(_preset_records, preset=preset, top=top)
    return _Pipeline(decode, predict, to_records, workers)
