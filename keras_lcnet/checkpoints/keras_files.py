"""Reading Keras weights files by content, whatever their name.

Keras' `model.load_weights` picks the format from the file name, assigns
layer by layer (a failure leaves the model half-loaded) and reports a shape
mismatch with the whole weight matrix. Here the tensors of a Keras file are
matched to the model's variables by Keras' own rules and handed to
`assign_arrays`, which checks every name and shape before assigning. (A
temporary link named `*.weights.h5` would fix the name only, not the
half-loading nor the errors.)

- `.weights.h5` (`model.save_weights`) and the `model.weights.h5` inside a
  `.keras` archive (`model.save`): a tensor's place in the file is given by
  Keras' traversal of the model (`layers/conv2d_3/vars/0`, ...), recorded
  here by running Keras' own saving traversal against a recording store.
- legacy `.h5` (`model.save("x.h5")`, Keras 2 `save_weights`): tensors are
  stored under their variable names, which are the model's variable paths.

This uses `keras.src.saving.saving_lib` internals (`_save_state`, the
`H5IOStore` type its traversal requires, and the link/bomb-checking dataset
getters); `tests/test_weights.py` round-trips every form so a change there
fails loudly.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Iterator

import h5py
import keras
from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group
from keras.src.saving import saving_lib

from keras_lcnet.checkpoints.mapping import HEAD_PATHS, Sources
from keras_lcnet.errors import CheckpointError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
_ARCHIVE_WEIGHTS = "model.weights.h5"  # where `model.save("x.keras")` puts the weights


class _LayoutRecorder(saving_lib.H5IOStore):
    """A write store that records which variable Keras saves at which path."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), mode="w")  # the traversal only accepts H5IOStores
        self.entries: dict[str, object] = {}
        self._entry = ""

    def make(self, path, metadata=None):
        self._entry = path
        return self

    def __setitem__(self, key, value) -> None:
        self.entries[f"{self._entry}/vars/{key}".lstrip("/")] = value


def _weights_layout(model: keras.Model) -> dict[str, str]:
    """Where a Keras weights file keeps each of the model's variables.

    Returns:
        `{dataset path in the file: variable path}`, e.g.
        `{"layers/conv2d/vars/0": "conv1/kernel", ...}`.

    Raises:
        CheckpointError: A variable is not saved as itself (LoRA or
            quantized layers), so the file cannot be matched to it.
    """
    recorder = _LayoutRecorder()
    try:
        saving_lib._save_state(model, recorder, None, "", visited_saveables=set())
    finally:
        recorder.close()
    paths = {id(v): v.path for v in model.weights}
    entries = recorder.entries.items()
    layout = {key: paths[id(value)] for key, value in entries if id(value) in paths}
    unmapped = set(paths.values()) - set(layout.values())
    if unmapped:
        raise CheckpointError(
            f"cannot match the model's variable '{sorted(unmapped)[0]}' to a Keras weights "
            "file: LoRA and quantized layers are not supported."
        )
    return layout


def _datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    found = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    group.visititems(visit)
    return found


def _match_layout(model: keras.Model, root: h5py.Group) -> tuple[dict, Sources]:
    """Tensors of a `.weights.h5` file by variable path, by Keras' traversal."""
    layout = _weights_layout(model)
    arrays = {}
    for key, path in layout.items():
        with contextlib.suppress(KeyError):  # a missing tensor is named by assign_arrays
            arrays[path] = saving_lib.safe_get_h5_dataset(root, key)
    # A headless model ignores the file's head, as Keras does; with a head,
    # any tensor left over means the file is of another architecture.
    sources = {}
    if any(v.path in HEAD_PATHS for v in model.weights) and "layers" in root:
        for name, dataset in _datasets(saving_lib.safe_get_h5_group(root, "layers")).items():
            key = f"layers/{name}"
            if key not in layout:
                arrays[key] = dataset
                layer = dataset.parent.attrs.get("name")  # written by Keras >= 3.x
                sources[key] = (key if layer is None else f"{key} of layer {layer}", None)
    return arrays, sources


def _match_names(root: h5py.Group) -> tuple[dict, Sources]:
    """Tensors of a legacy `.h5` file by variable path, from their stored names."""
    if "model_weights" in root:  # a whole model saved with `model.save("x.h5")`
        root = saving_lib.safe_get_h5_group(root, "model_weights")
    arrays = {}
    for layer in load_attributes_from_hdf5_group(root, "layer_names"):
        group = saving_lib.safe_get_h5_group(root, layer)
        for name in load_attributes_from_hdf5_group(group, "weight_names"):
            arrays[name.removesuffix(":0")] = saving_lib.safe_get_h5_dataset(group, name)
    return arrays, {}


def _open(stack: contextlib.ExitStack, path: str, archive: bool) -> h5py.File:
    if archive:
        zip_file = stack.enter_context(zipfile.ZipFile(path))
        if _ARCHIVE_WEIGHTS not in zip_file.namelist():
            raise CheckpointError(
                f"{path} is a zip archive without '{_ARCHIVE_WEIGHTS}': not a Keras "
                "`.keras` model file."
            )
        # h5py reads the member in place, as Keras does: only the tensors
        # whose shapes fit the model are ever read.
        member = stack.enter_context(zip_file.open(_ARCHIVE_WEIGHTS))
        return stack.enter_context(h5py.File(member, "r"))
    return stack.enter_context(h5py.File(path, "r"))


@contextlib.contextmanager
def read_keras_weights(
    model: keras.Model, path: str, archive: bool = False
) -> Iterator[tuple[dict, Sources]]:
    """Opens a Keras weights file and matches its tensors to the model's variables.

    Args:
        model: The model the file is for (Keras' layout depends on it).
        path: A `.weights.h5`, legacy `.h5` or (with `archive=True`) `.keras`
            file, whatever its name.
        archive: Whether `path` is a `.keras` zip archive.

    Yields:
        `(arrays, sources)` for `assign_arrays`: `h5py.Dataset`s by variable
        path (tensors the model lacks under their place in the file), read
        only when assigned, so use them inside the `with` block.

    Raises:
        CheckpointError: The file is not a readable Keras weights file, or
            uses HDF5 links or external data.
    """
    with contextlib.ExitStack() as stack:
        try:
            root = _open(stack, path, archive)
            legacy = "model_weights" in root or "layer_names" in root.attrs
            matched = _match_names(root) if legacy else _match_layout(model, root)
        except CheckpointError:
            raise
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise CheckpointError(
                f"{path} is not a readable Keras weights file ({type(e).__name__}: {e})."
            ) from None
        yield matched
