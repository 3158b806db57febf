"""Where published checkpoints are cached: paths only, without Keras.

`keras.utils.get_file` downloads into these folders (`keras_lcnet.weights`);
`keras-lcnet info` reports what is cached without importing Keras.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from keras_lcnet.presets import Preset

CACHE_SUBDIR = "models"


def cache_dir() -> str:
    """The Keras cache folder: `$KERAS_HOME` or `~/.keras`, as `get_file` uses it.

    Returns:
        The folder; like `get_file`, a temporary one when the usual one is
        not writable.
    """
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    with contextlib.suppress(OSError):
        os.makedirs(base, exist_ok=True)
    if not os.access(base, os.W_OK):  # get_file's own fallback
        base = os.path.join(tempfile.gettempdir(), ".keras")
    return base


def cached_checkpoint_path(preset: Preset) -> str:
    """Where `get_file` keeps (and looks for) the upstream file of `preset`.

    Args:
        preset: A `keras_lcnet.presets.Preset`.

    Returns:
        The path, whether or not the file is there.
    """
    return os.path.join(cache_dir(), CACHE_SUBDIR, preset.file_name)


def converted_cache_path(preset: Preset) -> str:
    """Where the converted Keras weights of `preset`'s checkpoint are cached.

    Args:
        preset: A `keras_lcnet.presets.Preset`.

    Returns:
        The path, whether or not the file is there.
    """
    return cached_checkpoint_path(preset).removesuffix(".pdparams") + ".keras_lcnet.npz"


def is_cached(preset: Preset) -> bool:
    """Whether `preset`'s weights load without a download (upstream file or conversion cached).

    Args:
        preset: A `keras_lcnet.presets.Preset`.

    Returns:
        `True` when either file is in the cache.
    """
    return any(os.path.exists(p) for p in (cached_checkpoint_path(preset),
                                           converted_cache_path(preset)))
