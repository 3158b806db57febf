"""Checkpoint forms: each module reads one form into `{name: array}`.

- `pdparams`: PaddleClas `.pdparams` pickles, read by a NumPy-only unpickler.
- `keras_files`: Keras `.weights.h5`, `.keras` and legacy `.h5` files, matched
  to a model's variables by Keras' own rules, whatever the file's name.
- `pdiparams`: Paddle inference models (`inference.json` + `.pdiparams`),
  read with NumPy alone, tensors named by creation order.
- `paddle_onnx`: paddle2onnx's ONNX exports (`inference.onnx`), parsed with
  the `onnx` package, weights named as in `.pdiparams`, strides and dropout
  read off the graph.
- `huggingface`: transformers' PP-LCNet (`config.json` + `model.safetensors`,
  a folder or `hf://owner/repo`), read with safetensors' NumPy API.
- `timm`: timm's `lcnet_*` (`model.safetensors`, alone or beside timm's
  `config.json`, or `hf://timm/...`), under timm's own tensor names.
- `forms`: the table of forms (detector, describer) behind
  `describe_checkpoint` and `keras-lcnet info SOURCE`.
- `mapping`: upstream names -> Keras variable paths and layouts, the
  dropout fold, all-or-nothing assignment with shape checks, and the
  architecture a checkpoint implies.
"""
