"""What the torch-side fixture tools share (run in the throwaway timm / transformers venv)."""

from __future__ import annotations

import torch


def calibrate_batchnorm(
    model: torch.nn.Module, generator: torch.Generator, batches: int, shape: tuple[int, ...]
) -> None:
    """Sets every BatchNorm's statistics to their average over random batches, then `eval()`.

    A random net whose statistics stay at their init collapses (its outputs barely
    depend on the input) and would hide mapping bugs.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(shape, generator=generator))
    model.eval()
