"""Seeded mutation (fuzz) tests of the `.pdparams` and transformers (safetensors + config.json)
readers.

Every corrupted file must end in the library's own error (`CheckpointError`, one line; or
the `ValueError` `load_transformers` documents for strides that are not the model's) or in a
correct load, never in another exception, a big allocation or a half-loaded model. Memory
is bounded twice: tracemalloc's peak in this process (Python and NumPy allocations), and a
subprocess under `RLIMIT_AS` (native allocations too: safetensors is Rust), where an
attempted multi-GB allocation fails and must not hide behind a caught `MemoryError`.

`mutations` (tests/helpers.py) makes the corruptions; a run prints how many cases ended how
(`pytest -rA` shows it).
"""

from __future__ import annotations

import collections
import json
import pathlib
import pickletools
import shutil
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest
from helpers import FIXTURES, json_mutations, mutations, run_python, transformers_folder

from keras_lcnet.checkpoints import huggingface as hf
from keras_lcnet.checkpoints.forms import describe_checkpoint
from keras_lcnet.checkpoints.pdparams import read_pdparams
from keras_lcnet.errors import CheckpointError

PDPARAMS = FIXTURES / "pplcnet_x0_25.pdparams"  # 8 classes, last conv 1280, default strides
QUICK, FULL = 100, 1000  # cases per form in the default run, and in the slow one
MEMORY_FACTOR = 8  # peak traced bytes per byte of the original file
PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "resize_short": 256,
                "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _check_error(error: Exception, case: str) -> None:
    """A library error: one line, and no swallowed `MemoryError` behind it."""
    assert "\n" not in str(error), case
    chain, seen = error, 0
    while chain is not None and seen < 10:
        assert not isinstance(chain, MemoryError), f"{case}: an allocation failed: {error}"
        chain, seen = chain.__context__, seen + 1


def _traced(function, *args, errors=(CheckpointError,)):
    """`(result or the error raised, peak traced bytes)`; other exceptions propagate."""
    tracemalloc.start()
    try:
        result = function(*args)
    except errors as e:
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


def _read(function, path, limit: int, case: str, errors=(CheckpointError,)):
    result, peak = _traced(function, path, errors=errors)
    assert peak < limit, f"{case}: {peak} bytes allocated"
    if isinstance(result, Exception):
        _check_error(result, case)
    return result


# --------------------------------------------------------------------------- cases


def pdparams_cases(folder: pathlib.Path, seed: int, count: int):
    """`(case name, path)` of `count` mutated copies of the reference `.pdparams` file."""
    data = PDPARAMS.read_bytes()
    opcodes = [pos for _, _, pos in pickletools.genops(data)]  # the pickle's structure
    path = folder / "mutated.pdparams"
    for i, mutated in enumerate(mutations(data, seed, count, opcodes)):
        path.write_bytes(mutated)
        yield f".pdparams seed {seed} case {i}", path


def _safetensors_header(data: bytes) -> range:
    return range(8 + struct.unpack("<Q", data[:8])[0])


def transformers_cases(folder: pathlib.Path, seed: int, count: int):
    """`(case name, folder)` of `count` transformers folders, each with one file corrupted.

    Half the cases corrupt `model.safetensors` (mostly its JSON header), a quarter the
    bytes of `config.json` or `preprocessor_config.json`, a quarter their values (a
    value of another type or range, or a key dropped).
    """
    base = folder / "base"
    transformers_folder(PDPARAMS, base)
    (base / hf.PREPROCESSOR_FILE).write_text(json.dumps(PREPROCESSOR))
    files = {name: (base / name).read_bytes() for name in
             (hf.WEIGHTS_FILE, hf.CONFIG_FILE, hf.PREPROCESSOR_FILE)}
    rng = np.random.default_rng(seed)
    weights = mutations(files[hf.WEIGHTS_FILE], seed, count,
                        _safetensors_header(files[hf.WEIGHTS_FILE]))
    mutated = folder / "mutated"
    for i in range(count):
        shutil.rmtree(mutated, ignore_errors=True)
        shutil.copytree(base, mutated)
        draw = rng.random()
        name = hf.CONFIG_FILE if rng.random() < 0.8 else hf.PREPROCESSOR_FILE
        if draw < 0.5:
            name, data = hf.WEIGHTS_FILE, next(weights)
        elif draw < 0.75:
            data = next(mutations(files[name], int(rng.integers(2**32)), 1))
        else:
            (document,) = json_mutations(json.loads(files[name]), int(rng.integers(2**32)), 1)
            data = json.dumps(document).encode()
        (mutated / name).write_bytes(data)
        yield f"transformers seed {seed} case {i} ({name})", mutated


def read_transformers(folder: pathlib.Path) -> dict:
    """Everything the readers make of a folder, without Keras: config, contract, tensors."""
    config = hf.read_config(str(folder))
    found = hf.architecture_from_config(config, str(folder / hf.CONFIG_FILE))
    hf.read_input_contract(str(folder))
    path = str(folder / hf.WEIGHTS_FILE)
    arrays, _ = hf.convert_transformers(hf.read_safetensors(path), found["dropout_rate"], path)
    return arrays


def fuzz_readers(seed: int, count: int) -> dict[str, int]:
    """Runs both forms' readers on `count` mutated files each; returns how the cases ended."""
    outcomes = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        limit = MEMORY_FACTOR * PDPARAMS.stat().st_size
        for case, path in pdparams_cases(folder, seed, count):
            result = _read(read_pdparams, path, limit, case)
            outcomes[f"pdparams {'error' if isinstance(result, Exception) else 'read'}"] += 1
        for case, path in transformers_cases(folder, seed, count):
            for function in (read_transformers, describe_checkpoint):
                result = _read(function, path, limit, case)
                ended = "error" if isinstance(result, Exception) else "read"
                outcomes[f"transformers {function.__name__} {ended}"] += 1
    return dict(outcomes)


# --------------------------------------------------------------------------- tests


class _LoadedModel:
    """A built model and its weights, to check that every load is all or nothing."""

    def __init__(self, model) -> None:
        self.model = model
        self.weights = model.get_weights()

    def load(self, load, *args, errors=(CheckpointError,)) -> Exception | None:
        try:
            load(self.model, *args)
        except errors as e:
            after = self.model.get_weights()
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in
                       zip(after, self.weights, strict=True)), "half-loaded"
            return e
        self.weights = self.model.get_weights()
        return None


@pytest.fixture(scope="module")
def x0_25():
    import keras_lcnet

    return _LoadedModel(keras_lcnet.PPLCNet_x0_25(weights=None, classes=8))


def _fuzz_pdparams(tmp_path, model: _LoadedModel, seed: int, count: int) -> None:
    from keras_lcnet.weights import load_pdparams

    outcomes = collections.Counter()
    limit = MEMORY_FACTOR * PDPARAMS.stat().st_size
    for case, path in pdparams_cases(tmp_path, seed, count):
        state = _read(read_pdparams, path, limit, case)
        if isinstance(state, Exception):
            outcomes["read error"] += 1
            continue
        error = model.load(load_pdparams, path, state)
        outcomes["load error" if error else "loaded"] += 1
        if error:
            _check_error(error, case)
    print(f"{count} mutated .pdparams files: {dict(outcomes)}")
    assert sum(outcomes.values()) == count
    assert outcomes["read error"] > count // 4  # the mutations do reach the structure


def _fuzz_transformers(tmp_path, model: _LoadedModel, seed: int, count: int) -> None:
    from keras_lcnet.weights import load_transformers

    outcomes, built = collections.Counter(), {}
    limit = MEMORY_FACTOR * PDPARAMS.stat().st_size
    for case, folder in transformers_cases(tmp_path, seed, count):
        described = _read(describe_checkpoint, folder, limit, case)
        if not isinstance(described, Exception):  # each architecture a config gives builds
            architecture = json.dumps(described["architecture"])
            if architecture not in built:
                built[architecture] = _build(folder, case)
        # A model built with other strides than the config's: the documented ValueError.
        error = model.load(load_transformers, folder, errors=(ValueError,))
        if error:
            _check_error(error, case)
        if not isinstance(described, Exception) and error is None:
            assert described["architecture"]["classes"] == 8, case
        outcomes[f"describe {'error' if isinstance(described, Exception) else 'ok'}, "
                 f"load {'error' if error else 'ok'}"] += 1
    print(f"{count} mutated transformers folders: {dict(outcomes)}; {len(built)} architectures "
          f"built: {collections.Counter(built.values())}")
    assert sum(outcomes.values()) == count
    assert sum(n for key, n in outcomes.items() if "load error" in key) > count // 4


def _build(folder, case: str) -> str:
    """How `from_checkpoint` ends for a folder: "built" or the library's error."""
    import keras_lcnet

    try:
        keras_lcnet.from_checkpoint(folder, include_preprocessing=False)
    except CheckpointError as e:
        _check_error(e, case)
        return "refused"
    return "built"


def test_mutated_pdparams_fail_cleanly(tmp_path, x0_25):
    _fuzz_pdparams(tmp_path, x0_25, seed=0, count=QUICK)


def test_mutated_transformers_folders_fail_cleanly(tmp_path, x0_25):
    _fuzz_transformers(tmp_path, x0_25, seed=0, count=QUICK)


@pytest.mark.slow
@pytest.mark.full
def test_mutated_pdparams_fail_cleanly_many(tmp_path, x0_25):
    _fuzz_pdparams(tmp_path, x0_25, seed=1, count=FULL)


@pytest.mark.slow
@pytest.mark.full
def test_mutated_transformers_folders_fail_cleanly_many(tmp_path, x0_25):
    _fuzz_transformers(tmp_path, x0_25, seed=1, count=FULL)


UNDER_RLIMIT = """
import resource, sys
sys.path.insert(0, "tests")
from test_mutations import fuzz_readers
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
# 1 GiB above what the interpreter and NumPy reserve: a multi-GB allocation fails.
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
print(fuzz_readers({seed}, {count}))
"""


def _fuzz_under_rlimit(seed: int, count: int) -> None:
    proc = run_python(UNDER_RLIMIT.format(seed=seed, count=count), OPENBLAS_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = eval(proc.stdout.strip().splitlines()[-1])  # the dict fuzz_readers printed
    print(f"under RLIMIT_AS: {outcomes}")
    assert outcomes["pdparams error"] + outcomes.get("pdparams read", 0) == count
    assert sum(n for key, n in outcomes.items() if "describe_checkpoint" in key) == count


def test_mutated_files_never_allocate_much_native_memory():
    _fuzz_under_rlimit(seed=2, count=QUICK)


@pytest.mark.slow
@pytest.mark.full
def test_mutated_files_never_allocate_much_native_memory_many():
    _fuzz_under_rlimit(seed=3, count=FULL)


def test_a_huge_memo_index_is_refused_before_the_unpickler_allocates(tmp_path):
    """Found by the mutations: `r` (LONG_BINPUT) for `R` made CPython's unpickler grow its
    memo to twice the index named, 350 MB here, up to 64 GB for an index of 2**32 - 1."""
    data = bytearray(PDPARAMS.read_bytes())
    at = data.index(b"R\x94(K\x01")  # the first array's REDUCE, then MEMOIZE and its state
    data[at : at + 1] = b"r"  # LONG_BINPUT: 4 bytes of index follow
    data[at + 1 : at + 5] = struct.pack("<I", 2**32 - 1)
    path = tmp_path / "memo.pdparams"
    path.write_bytes(bytes(data))
    error, peak = _traced(read_pdparams, path)
    assert isinstance(error, CheckpointError) and "memo index 4294967295" in str(error)
    assert peak < MEMORY_FACTOR * len(data)


@pytest.mark.parametrize(
    "change, message",
    [
        # Found by the mutations: a class_expand the weights do not have was built first
        # (a 4 TB kernel: TensorFlow's ResourceExhaustedError), ...
        ({"class_expand": 2**40}, "class_expand means 1099511627776 rows in"),
        ({"id2label": {"0": "a", "1": "b", "2": "c"}}, "id2label means 3 rows in 'head.weight'"),
        # ... a stride no input survives built a model, and values of another type
        # escaped as TypeError or a bare ValueError.
        ({"stem_stride": 2**62}, "the stride list is [4611686018427387904, 2, 2, 2, 2]"),
        ({"hidden_dropout_prob": [0.2]}, "hidden_dropout_prob is [0.2]"),
        ({"hidden_dropout_prob": "0.2"}, "hidden_dropout_prob is '0.2'"),
        ({"scale": "0.25"}, "scale is '0.25'"),
        ({"class_expand": 0.5}, "class_expand is 0.5"),
        ({"id2label": 5}, "id2label is 5, not a mapping"),
    ],
)
def test_config_values_are_checked_before_a_model_is_built(change, message, tmp_path):
    import keras_lcnet

    folder = transformers_folder(PDPARAMS, tmp_path / "hf")
    config = json.loads((folder / hf.CONFIG_FILE).read_text())
    (folder / hf.CONFIG_FILE).write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError) as info:
        keras_lcnet.from_checkpoint(folder)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):
        describe_checkpoint(folder)


@pytest.mark.parametrize(
    "change",
    [{"image_mean": ["a", "b", "c"]}, {"image_std": [0.2, 0.2]}, {"crop_size": {"height": -1,
     "width": 2}}, {"resize_short": "256"}, {"crop_size": "224"}],
)
def test_preprocessor_values_are_checked(change, tmp_path):
    folder = transformers_folder(PDPARAMS, tmp_path / "hf")
    (folder / hf.PREPROCESSOR_FILE).write_text(json.dumps({**PREPROCESSOR, **change}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json"):
        describe_checkpoint(folder)
