"""Deployment: export to LiteRT and ONNX with verification and graph audits, and timing.

```python
import keras_lcnet
from keras_lcnet.deploy import export_litert, export_onnx, measure

model = keras_lcnet.PPLCNet_x1_0(weights="imagenet")
print(export_litert(model, "lcnet.tflite").summary())
print(export_litert(model, "lcnet_int8.tflite", quantize="int8",
                    calibration="calibration_images/").summary())
print(export_onnx(model, "lcnet.onnx").summary())
print(measure("lcnet.tflite", num_threads=2).summary())
```

Modules: `litert` and `onnx` (one export each), `verify` (what they share:
input shapes, comparison with Keras, the report), `audit` (graph checks),
`runtime` (one wrapper that runs `.tflite` and `.onnx` files, for
verification and timing) and `latency` (timing). Exports need the TensorFlow
backend and the `export` extra (`pip install "keras-lcnet[export]"`).
"""

from keras_lcnet.deploy.audit import LiteRTAudit, OnnxAudit, audit_litert, audit_onnx
from keras_lcnet.deploy.latency import LatencyResult, Runner, interleave, measure
from keras_lcnet.deploy.litert import QUANTIZE_MODES, export_litert
from keras_lcnet.deploy.onnx import export_onnx
from keras_lcnet.deploy.runtime import Runtime
from keras_lcnet.deploy.verify import (
    Agreement,
    ExportReport,
    compare,
    load_calibration,
    static_input_shape,
)
from keras_lcnet.errors import ExportError

__all__ = [
    "QUANTIZE_MODES",
    "Agreement",
    "ExportError",
    "ExportReport",
    "LatencyResult",
    "LiteRTAudit",
    "OnnxAudit",
    "Runner",
    "Runtime",
    "audit_litert",
    "audit_onnx",
    "compare",
    "export_litert",
    "export_onnx",
    "interleave",
    "load_calibration",
    "measure",
    "static_input_shape",
]
