"""The library's own error classes, so callers can catch them by kind."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A weights file cannot be read or does not fit the model."""


class WeightsUnavailableError(OSError):
    """A published checkpoint is neither cached nor downloadable."""


class ExportError(ValueError):
    """An exported model was written but failed its verification or audit."""
