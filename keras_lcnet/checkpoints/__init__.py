"""Checkpoint forms: each module reads one form into `{name: array}`.

- `pdparams`: PaddleClas `.pdparams` pickles, read by a NumPy-only unpickler.
- `mapping`: upstream names -> Keras variable paths and layouts, the
  dropout fold, all-or-nothing assignment with shape checks, and the
  architecture a checkpoint implies.
"""
