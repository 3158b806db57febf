"""One wrapper for the runtimes that run exported models: LiteRT (XNNPACK), onnxruntime, OpenVINO.

Export verification, `keras-lcnet bench`, the latency benchmark and the demo
all open models through `Runtime`, so every one of them runs a file the same
way: the same threads, the same (de)quantization, the same timing.

```python
import keras_lcnet
from keras_lcnet.deploy.runtime import Runtime

runtime = Runtime("lcnet.tflite", num_threads=2)
scores = runtime.predict(keras_lcnet.load_image("cat.jpg"))  # float32 pixels in, float32 out
print(runtime.run())  # one timed inference on the current input, in ms
```
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator

import numpy as np

RUNTIMES = {".tflite": "LiteRT (XNNPACK)", ".onnx": "onnxruntime (CPU)", ".xml": "OpenVINO (CPU)"}
LAYOUTS = ("NHWC", "NCHW")
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def batches(data: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Fixed-size batches of `data`, the last one padded by repeating its first input.

    Yields:
        `(batch, pad)`: the batch and how many of its inputs are padding.
    """
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        pad = batch_size - len(batch)
        yield np.concatenate([batch, np.repeat(batch[:1], pad, axis=0)]) if pad else batch, pad


def timed_ms(call: Callable[[], object]) -> float:
    """Calls `call()` once; returns its wall time in milliseconds."""
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1e6


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _quantization(scale, zero_point, dtype) -> tuple[float, int] | None:
    return (float(scale), int(zero_point)) if np.issubdtype(dtype, np.integer) else None


class _LiteRT:
    """An `ai-edge-litert` interpreter; its default op resolver applies XNNPACK."""

    def __init__(self, path: str, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._source = self._interpreter.get_input_details()[0]
        self._result = self._interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._source["shape_signature"])
        self.input_dtype = np.dtype(self._source["dtype"])
        self.input_quantization = _quantization(*self._source["quantization"], self.input_dtype)
        self._output_quantization = _quantization(
            *self._result["quantization"], self._result["dtype"])
        self.version = f"ai-edge-litert {_package_version('ai-edge-litert')}"
        self.invoke = self._interpreter.invoke

    def set_input(self, array: np.ndarray) -> None:
        self._interpreter.set_tensor(self._source["index"], array)

    def output(self) -> np.ndarray:
        output = self._interpreter.get_tensor(self._result["index"]).astype(np.float32)
        if self._output_quantization:
            scale, zero_point = self._output_quantization
            output = (output - zero_point) * scale
        return output


class _OnnxRuntime:
    """An onnxruntime CPU session with IO binding.

    The binding keeps input copies and output allocation out of `invoke()`,
    as LiteRT's `invoke()` does. Its threads do not spin-wait for work after
    a run: spinning threads would slow whatever runs next on the CPU.
    """

    def __init__(self, path: str, num_threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._source = session.get_inputs()[0]
        self.input_shape = tuple(self._source.shape)  # names or None where dynamic
        self.input_type = self._source.type
        known = _ONNX_TYPES.get(self.input_type)
        self.input_dtype = None if known is None else np.dtype(known)
        self.supported_types = list(_ONNX_TYPES)
        self.input_quantization = None  # ONNX inputs carry no quantization parameters
        self.version = f"onnxruntime {ort.__version__}"
        self._input = None  # the array bound as input, kept alive while bound
        self._binding = session.io_binding()
        for output in session.get_outputs():
            self._binding.bind_output(output.name)
        self.invoke = lambda: session.run_with_iobinding(self._binding)

    def set_input(self, array: np.ndarray) -> None:
        self._input = np.ascontiguousarray(array)
        self._binding.bind_cpu_input(self._source.name, self._input)

    def output(self) -> np.ndarray:
        return self._binding.copy_outputs_to_cpu()[0].astype(np.float32)


# Where `export_openvino` records an IR's precision ("f32", "bf16" or "int8") in its rt_info.
OPENVINO_PRECISION_KEY = ("keras_lcnet", "precision")
# OpenVINO's INFERENCE_PRECISION_HINT per precision: int8 IRs run their float ops in f32.
_OPENVINO_HINTS = {"f32": "f32", "bf16": "bf16", "int8": "f32"}


class RefusedModelError(ValueError):
    """A model file that opens but is refused: unknown precision, or bf16 without CPU support."""


def openvino_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can compute in bfloat16 here (AVX512_BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_openvino_precision(precision: str) -> None:
    """Raises `RefusedModelError` for `"bf16"` on a CPU without bfloat16 arithmetic.

    Elsewhere OpenVINO would quietly run such a model in float32.
    """
    if precision == "bf16" and not openvino_supports_bf16():
        raise RefusedModelError(
            "OpenVINO bf16 needs a CPU with AVX512_BF16 or AMX (OpenVINO's CPU "
            "OPTIMIZATION_CAPABILITIES lack BF16 here); use precision f32 or int8."
        )


def openvino_precision(model) -> str:
    """The precision `export_openvino` stored in an `openvino.Model`; "f32" for other IRs."""
    key = list(OPENVINO_PRECISION_KEY)
    precision = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "f32"
    if precision not in _OPENVINO_HINTS:
        raise RefusedModelError(f"Unknown keras_lcnet precision {precision!r} in the IR's "
                                f"rt_info; expected one of {list(_OPENVINO_HINTS)}.")
    return precision


def openvino_config(precision: str, num_threads: int) -> dict:
    """The CPU plugin properties `Runtime` compiles an IR of `precision` with.

    The precision hint is always explicit: OpenVINO's default is bf16 on CPUs
    that have it, whatever precision the model was exported for.
    """
    return {
        "INFERENCE_PRECISION_HINT": _OPENVINO_HINTS[precision],
        "INFERENCE_NUM_THREADS": num_threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }


class _OpenVINO:
    """An OpenVINO CPU infer request, compiled with `openvino_config`."""

    def __init__(self, path: str, num_threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path)
        self.precision = openvino_precision(model)
        check_openvino_precision(self.precision)
        compiled = core.compile_model(model, "CPU", openvino_config(self.precision, num_threads))
        self._request = compiled.create_infer_request()
        self._input = None  # the array shared with the request, kept alive while set
        source = compiled.input(0)
        shape = source.get_partial_shape()
        self.input_shape = tuple(shape.to_shape()) if shape.is_static else tuple(
            d.get_length() if d.is_static else None for d in shape)
        self.input_type = source.get_element_type().get_type_name()
        self.input_dtype = np.dtype(np.float32) if self.input_type == "f32" else None
        self.supported_types = ["f32"]
        self.input_quantization = None
        self.version = f"openvino {ov.__version__}"
        self.name = f"OpenVINO (CPU, {self.precision})"
        self.invoke = self._request.infer

    def set_input(self, array: np.ndarray) -> None:
        import openvino as ov

        self._input = np.ascontiguousarray(array)
        self._request.set_input_tensor(ov.Tensor(self._input, shared_memory=True))

    def output(self) -> np.ndarray:
        return np.array(self._request.get_output_tensor(0).data, np.float32)


def _reason(error: BaseException) -> str:
    """The runtime's own complaint, on one line and without its error-code prefix."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return re.sub(r"^Load model from .* failed: ?", "", text).rstrip(".")


class Runtime:
    """An exported model opened for inference: a `.tflite`, `.onnx` or OpenVINO `.xml` file.

    `.tflite` files run in `ai-edge-litert`'s interpreter with its default
    XNNPACK delegate, `.onnx` files in onnxruntime's CPU provider (sequential,
    `num_threads` intra-op threads), `.xml` files (OpenVINO IR) in OpenVINO's
    CPU plugin with one stream, the latency hint, `num_threads` threads and
    the precision `export_openvino` stored in the IR (see `openvino_config`:
    float32 unless the IR is bf16, even on CPUs where OpenVINO defaults to
    bf16). On opening, the model's input is filled with random data so that
    `invoke()` and `run()` can time it at once.

    Args:
        path: A `.tflite`, `.onnx` or `.xml` file with one static-shape 4D
            image input.
        num_threads: CPU threads for the runtime.
        layout: `"NHWC"` or `"NCHW"`: the model's input layout. Default:
            NHWC for LiteRT; for ONNX and OpenVINO, NCHW when the input shape
            looks like `(batch, channels <= 4, height, width)`.

    Attributes:
        path: The model file.
        runtime: Which runtime runs it, e.g. `"LiteRT (XNNPACK)"` or
            `"OpenVINO (CPU, bf16)"`.
        version: The runtime package and its version.
        num_threads: CPU threads given to the runtime.
        input_shape: The static input shape, batch included, in `layout`.
        input_dtype: The input's NumPy dtype.
        layout: `"NHWC"` or `"NCHW"`.
        input_quantization: `(scale, zero_point)` of an integer LiteRT input
            (pixels = (q - zero_point) * scale), else `None`.

    Raises:
        ValueError: `path` is not a `.tflite` / `.onnx` / `.xml` model the
            runtime can open (one line naming the file), its input is not
            supported, or it is a bf16 IR and the CPU has no bfloat16.
        FileNotFoundError: `path` does not exist.
    """

    def __init__(
        self, path: str | os.PathLike, num_threads: int = 1, layout: str | None = None
    ) -> None:
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in RUNTIMES:
            raise ValueError(f"Cannot run {path!r}: expected a .tflite (LiteRT), .onnx or .xml "
                             "(OpenVINO IR) file.")
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"`num_threads` must be a positive int, got {num_threads!r}.")
        if layout not in (None, *LAYOUTS):
            raise ValueError(f"`layout` must be None or one of {LAYOUTS}, got {layout!r}.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No model file at {path!r}.")
        if os.path.getsize(path) == 0:
            raise ValueError(f"Cannot open {path!r}: the file is empty (0 bytes).")
        self.path, self.num_threads, self.runtime = path, num_threads, RUNTIMES[suffix]
        opener = {".tflite": _LiteRT, ".onnx": _OnnxRuntime, ".xml": _OpenVINO}[suffix]
        try:
            self._backend = opener(path, num_threads)
        except (ImportError, RefusedModelError):
            raise
        # onnxruntime's errors derive from Exception only; LiteRT raises
        # ValueError (unreadable flatbuffer) or RuntimeError (allocation).
        except Exception as error:
            raise ValueError(
                f"Cannot open {path!r} with {self.runtime} ({_reason(error)}): the file is "
                f"corrupt, truncated or not a {suffix} model; export it again."
            ) from error
        self.version = self._backend.version
        self.runtime = getattr(self._backend, "name", self.runtime)
        self._read_input(opener is _LiteRT, layout)
        self.set_input(self._random_pixels())

    def _read_input(self, litert: bool, layout: str | None) -> None:
        """Sets the input attributes; raises ValueError for inputs `Runtime` cannot feed."""
        backend = self._backend
        shape = backend.input_shape
        if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(
                f"{self.path!r} has input shape {list(shape)}; expected a static 4D image "
                "input (keras-lcnet export fixes the batch and image size)."
            )
        if backend.input_dtype is None:
            raise ValueError(f"{self.path!r} takes {backend.input_type} input; supported: "
                             f"{backend.supported_types}.")
        if layout is None:
            channels_first = not litert and shape[1] <= 4 < shape[3]
            layout = "NCHW" if channels_first else "NHWC"
        self.input_shape, self.layout = shape, layout
        self.input_dtype, self.input_quantization = backend.input_dtype, backend.input_quantization

    @property
    def batch_size(self) -> int:
        """The static batch size."""
        return self.input_shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """`(height, width, channels)` of one input image."""
        shape = self.input_shape
        return tuple(shape[1:]) if self.layout == "NHWC" else (shape[2], shape[3], shape[1])

    def _random_pixels(self) -> np.ndarray:
        rng = np.random.default_rng(0)
        return rng.uniform(0, 255, (self.batch_size, *self.image_shape)).astype(np.float32)

    def set_input(self, images: np.ndarray) -> None:
        """Sets the input for `invoke()` / `run()`, converted outside their timing.

        Args:
            images: One batch of float RGB images `(batch_size, height,
                width, channels)`, channels last whatever the model's layout.
                Integer inputs are quantized with the model's input
                quantization (rounded and clipped).
        """
        images = np.asarray(images, np.float32)
        if images.shape != (self.batch_size, *self.image_shape):
            raise ValueError(f"{self.path!r} takes batches of shape "
                             f"{(self.batch_size, *self.image_shape)}, got {images.shape}.")
        if self.layout == "NCHW":
            images = images.transpose(0, 3, 1, 2)
        if np.issubdtype(self.input_dtype, np.integer):
            scale, zero_point = self.input_quantization or (1.0, 0)
            info = np.iinfo(self.input_dtype)
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max)
        self._backend.set_input(images.astype(self.input_dtype))

    def invoke(self) -> None:
        """Runs the model once on the current input (see `set_input`)."""
        self._backend.invoke()

    def output(self) -> np.ndarray:
        """The first output of the last `invoke()`, dequantized to float32."""
        return self._backend.output()

    def run(self) -> float:
        """Runs one inference on the current input; returns its wall time in milliseconds."""
        return timed_ms(self._backend.invoke)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """The model's first output for any number of images.

        Args:
            images: Float RGB images `(n, height, width, channels)` or one
                image `(height, width, channels)`, channels last. A short
                last batch is padded to the static batch size.

        Returns:
            A float32 array with one output per image.
        """
        images = np.asarray(images, np.float32)
        images = images[None] if images.ndim == 3 else images
        if images.ndim != 4 or not len(images):
            raise ValueError(f"{self.path!r} takes images of shape (n, *{self.image_shape}), "
                             f"got an array of shape {images.shape}.")
        outputs = []
        for batch, pad in batches(images, self.batch_size):
            self.set_input(batch)
            self.invoke()
            outputs.append(self.output()[: len(batch) - pad])
        return np.concatenate(outputs)
