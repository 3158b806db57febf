"""Deployment: export to LiteRT, ONNX and OpenVINO with verification and graph audits, and timing.

```python
import keras_lcnet
from keras_lcnet.deploy import export_litert, export_onnx, export_openvino, measure

model = keras_lcnet.PPLCNet_x1_0(weights="imagenet")
print(export_litert(model, "lcnet.tflite").summary())
print(export_litert(model, "lcnet_int8.tflite", quantize="int8",
                    calibration="calibration_images/").summary())
print(export_onnx(model, "lcnet.onnx").summary())
print(export_openvino(model, "lcnet.xml", precision="f32").summary())
print(measure("lcnet.tflite", num_threads=2).summary())
```

Modules: `litert`, `onnx` and `openvino` (one export each), `verify` (what
they share: input shapes, comparison with Keras, the report), `audit` (graph
checks), `runtime` (one wrapper that runs `.tflite`, `.onnx` and OpenVINO
`.xml` files, for verification and timing), `latency` (timing) and
`comparison` (`compare_runtimes`: every runtime and precision timed together). Exports
need the TensorFlow backend and the `export` extra
(`pip install "keras-lcnet[export]"`).
"""

from keras_lcnet.deploy.audit import (
    LiteRTAudit,
    OnnxAudit,
    OpenVINOAudit,
    audit_litert,
    audit_onnx,
    audit_openvino,
)
from keras_lcnet.deploy.comparison import ComparisonReport, compare_runtimes
from keras_lcnet.deploy.latency import LatencyResult, Runner, interleave, measure
from keras_lcnet.deploy.litert import QUANTIZE_MODES, export_litert
from keras_lcnet.deploy.onnx import export_onnx
from keras_lcnet.deploy.openvino import PRECISIONS, export_openvino
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
    "PRECISIONS",
    "QUANTIZE_MODES",
    "Agreement",
    "ComparisonReport",
    "ExportError",
    "ExportReport",
    "LatencyResult",
    "LiteRTAudit",
    "OnnxAudit",
    "OpenVINOAudit",
    "Runner",
    "Runtime",
    "audit_litert",
    "audit_onnx",
    "audit_openvino",
    "compare",
    "compare_runtimes",
    "export_litert",
    "export_onnx",
    "export_openvino",
    "interleave",
    "load_calibration",
    "measure",
    "static_input_shape",
]
