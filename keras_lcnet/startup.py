"""Importing Keras without TensorFlow's native start-up notes on stderr.

TensorFlow 2.21 writes its oneDNN and CPU-feature notes, and absl's
pre-initialization warning, to file descriptor 2 while it loads, whatever
`TF_CPP_MIN_LOG_LEVEL` says. The command line and the demo import Keras
through `import_keras_quietly`, which drops those lines and keeps the rest.
This module imports nothing heavy itself.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# Written to fd 2 by TensorFlow's native code while it loads, before absl's
# log level applies (TensorFlow 2.21): the oneDNN and CPU-feature notes.
_NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
)


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Drops the native start-up log lines written to file descriptor 2; keeps the rest."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture:
                text = line.decode(errors="replace")
                if not _NATIVE_NOISE.match(text):
                    sys.stderr.write(text)


def import_keras_quietly() -> None:
    """Imports Keras and its backend, without TensorFlow's start-up notes.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL` (then every line is theirs to
    see), it is set to 2 and the notes TensorFlow 2.21 prints regardless
    (oneDNN, absl's pre-initialization warning) are filtered out.
    """
    if "keras" in sys.modules:
        return
    if _TF_LOG_LEVEL in os.environ:
        importlib.import_module("keras")
        return
    os.environ[_TF_LOG_LEVEL] = "2"
    with _native_stderr_filtered():
        importlib.import_module("keras")
