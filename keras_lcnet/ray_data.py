"""Cluster inference on Ray Data: `predict_files`' records from a pool of Ray actors.

```python
from keras_lcnet.ray_data import predict_with_ray

# ray.init() on a laptop; ray.init(address="auto") or address="ray://head:10001" on a cluster
predict_with_ray(["archive/"], "lcnet.onnx", "archive.jsonl", concurrency=8)
```

The driver lists the files (with `find_images`' rules) into a Ray Dataset of
paths; `map_batches` sends batches of them to `Predictor` actors, each of
which opens the model file once and classifies its batches with exactly the
pipeline `predict_files` runs: the bytes are decoded in the actor with
`load_image` (so the pixels, and the records, are those of the single-machine
CLI; `ray.data.read_images` decodes and resizes differently), and a file that
cannot be read becomes an error record. Records come back to the driver in
input order and are written there with `keras_lcnet.record_files`, so the
output is the file `keras-lcnet predict --output` writes (and can be resumed).

The model file and the images must be readable at the same absolute paths on
every node (a shared file system); relative paths are resolved on the driver.
Needs the `[ray]` extra: `pip install "keras-lcnet[ray]"`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Container, Iterator

import numpy as np

from keras_lcnet.batch import MODEL_SUFFIXES, Sources, _inputs, _pipeline, _positive
from keras_lcnet.record_files import check_format, open_records, write_records


class Predictor:
    """A Ray Data `map_batches` class that classifies image files with one model per actor.

    The model file is opened once, when the actor starts. Each batch is a
    dict of columns: `"path"` (the file, as it is reported), optionally
    `"file"` (the path to open instead, e.g. an absolute one) and `"error"`
    (a reason the input names no file; empty for none). The batch comes back
    with a `"record"` column added: each input's `predict_files` record as
    JSON text (JSON keeps the scores' float values exactly).

    ```python
    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(Predictor, fn_constructor_kwargs={"model": "/shared/lcnet.onnx"},
                        batch_size=32, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=4))
    ```

    Args:
        model: A `.keras`, `.tflite` or `.onnx` file.
        preset: The preset whose input pipeline and decoding apply, as in
            `predict_files`.
        top: How many classes each record holds, as in `predict_files`.
        workers: Decoding threads per actor.
        num_threads: Threads the runtime of a `.tflite` / `.onnx` file uses.

    Raises:
        ValueError: The arguments or the model do not fit, as in `predict_files`.
        FileNotFoundError: The model file does not exist.
    """

    def __init__(self, model: str, *, preset: str | None = None, top: int | None = None,
                 workers: int = 1, num_threads: int = 1) -> None:
        self._pipeline = _pipeline(model, preset=preset, workers=workers, top=top,
                                   num_threads=num_threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classifies one batch; returns its columns and the `"record"` column."""
        shown = [str(path) for path in batch["path"]]
        files = [str(file) for file in batch.get("file", shown)]
        errors = [str(e) if e else None for e in batch.get("error", [None] * len(shown))]
        records = self._pipeline.records(zip(files, errors, strict=True), max(len(shown), 1))
        text = [json.dumps(_shown(record, file, path), ensure_ascii=False)
                for record, file, path in zip(records, files, shown, strict=True)]
        return {**batch, "record": np.array(text, dtype=object)}


def _shown(record: dict, file: str, path: str) -> dict:
    """`record` of `file` as `predict_files` gives it for `path`: its error names `path` too."""
    if record.get("error") and file != path:
        return {"path": path, "error": record["error"].replace(file, path)}
    return {**record, "path": path}


def _model_file(model: str | os.PathLike) -> str:
    """`model` as an absolute path, checked on the driver before any actor starts."""
    path = os.path.abspath(os.fspath(model))
    if os.path.splitext(path)[1].lower() not in MODEL_SUFFIXES:
        raise ValueError(f"Cannot predict on Ray with {os.fspath(model)!r}: expected a .keras, "
                         ".tflite or .onnx file (actors open the file, so export the model).")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model file at {path!r}.")
    return path


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError('Ray inference needs Ray Data: pip install "keras-lcnet[ray]".') from None
    return ray


def _connect(address: str | None):
    ray = _ray()
    if not ray.is_initialized():  # a session the caller started (any address) is kept
        ray.init(address=address)
    return ray


def _checked(model, preset, top, batch_size: int, concurrency: int | None,
             num_cpus_per_actor: int) -> dict:
    """`Predictor`'s arguments, checked (and the model opened once) on the driver."""
    for name, value in (("batch_size", batch_size), ("num_cpus_per_actor", num_cpus_per_actor)):
        _positive(name, value)
    if concurrency is not None:
        _positive("concurrency", concurrency)
    _ray()  # installed? (before the output file is touched)
    options = {"model": _model_file(model), "preset": preset, "top": top,
               "workers": num_cpus_per_actor, "num_threads": num_cpus_per_actor}
    Predictor(**options)  # fails here, on the driver, rather than in every actor
    return options


def _records(sources: Sources, options: dict, skip: Container[str], batch_size: int,
             concurrency: int | None, address: str | None) -> Iterator[dict]:
    ray = _connect(address)
    # The driver holds the list of paths (~100 bytes a file), not the images.
    items = [{"path": path, "file": os.path.abspath(path), "error": error or ""}
             for path, error in _inputs(sources) if path not in skip]
    if not items:
        return iter(())
    pool = ray.data.ActorPoolStrategy(size=concurrency) if concurrency else None
    dataset = ray.data.from_items(items).map_batches(
        Predictor, fn_constructor_kwargs=options, batch_size=batch_size, batch_format="numpy",
        num_cpus=options["num_threads"], compute=pool, udf_modifying_row_count=False)
    dataset.context.execution_options.preserve_order = True  # records in input order
    return (json.loads(row["record"]) for row in dataset.iter_rows())


def ray_records(
    sources: Sources,
    model: str | os.PathLike,
    *,
    preset: str | None = None,
    batch_size: int = 32,
    concurrency: int | None = None,
    num_cpus_per_actor: int = 1,
    top: int | None = None,
    skip: Container[str] = (),
    address: str | None = None,
) -> Iterator[dict]:
    """Classifies image files on Ray; yields `predict_files`' records, in input order.

    The arguments are checked, and the model opened once, on the driver
    first, so a mistake fails at once with `predict_files`' message. Ray is
    started with `ray.init(address=address)` unless it already is (it is
    left running). Each actor reserves `num_cpus_per_actor` CPUs and runs
    that many runtime and decoding threads.

    Args:
        sources: Image files, folders or glob patterns, as in `predict_files`.
        model: A `.keras`, `.tflite` or `.onnx` file, at the same path on
            every node.
        preset: The preset whose input pipeline and decoding apply.
        batch_size: Images per actor call (and per model call).
        concurrency: How many actors; default: Ray's autoscaling pool, from
            1 to as many as the cluster's CPUs allow.
        num_cpus_per_actor: CPUs each actor reserves.
        top: How many classes each record holds, as in `predict_files`.
        skip: Paths to leave out, e.g. those a previous run recorded.
        address: The Ray cluster to connect to (`"auto"`, `"ray://host:10001"`);
            default: `RAY_ADDRESS`, or a new local Ray instance.

    Returns:
        An iterator of records, as `predict_files` gives them.

    Raises:
        ValueError: Invalid arguments, a model that does not fit, or Ray
            not installed.
        FileNotFoundError: The model file does not exist.
    """
    options = _checked(model, preset, top, batch_size, concurrency, num_cpus_per_actor)
    return _records(sources, options, skip, batch_size, concurrency, address)


def predict_with_ray(
    sources: Sources,
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    preset: str | None = None,
    batch_size: int = 32,
    concurrency: int | None = None,
    num_cpus_per_actor: int = 1,
    top: int | None = None,
    resume: bool = False,
    address: str | None = None,
) -> tuple[int, int]:
    """Classifies image files on Ray and writes the records to a file, as `predict --output`.

    The records (see `ray_records`) are written on the driver, batch by
    batch, to a `.jsonl`, `.csv` or `.parquet` file by
    `keras_lcnet.record_files.open_records`: the file the CLI writes. The
    arguments and the model are checked before the file is touched.

    Args:
        sources: Image files, folders or glob patterns.
        model: A `.keras`, `.tflite` or `.onnx` file, at the same path on
            every node.
        output: The record file; its suffix names the format.
        preset: The preset whose input pipeline and decoding apply.
        batch_size: Images per actor call, and records per write.
        concurrency: How many actors (default: Ray's autoscaling pool).
        num_cpus_per_actor: CPUs each actor reserves.
        top: How many classes each record holds, as in `predict_files`.
        resume: Keep the file's records and classify only the inputs it
            does not hold yet.
        address: The Ray cluster to connect to, as in `ray_records`.

    Returns:
        `(written, failed)`: how many records this run wrote, and how many
        of them are errors.

    Raises:
        ValueError: As `ray_records`, or an output file that cannot be written
            or resumed.
        FileNotFoundError: The model file does not exist.
    """
    check_format(output)
    options = _checked(model, preset, top, batch_size, concurrency, num_cpus_per_actor)
    written = failed = 0
    with open_records(output, resume=resume) as file:
        records = _records(sources, options, file.done, batch_size, concurrency, address)
        for record in write_records(records, file, batch_size):
            written += 1
            failed += "error" in record
    return written, failed
