"""Single-image latency of exported models: LiteRT (XNNPACK) and onnxruntime on CPU.

```python
from keras_lcnet.deploy.latency import measure

result = measure("lcnet.tflite", num_threads=2)
print(result.summary())  # median, p90, min, std, threads, runtime, CPU
```
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable

import numpy as np

RUNTIMES = {".tflite": "LiteRT (XNNPACK)", ".onnx": "onnxruntime (CPU)"}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux) and logical core count."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _random_input(shape, dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    return rng.uniform(0, 255, shape).astype(dtype)


class Runner:
    """Runs one exported model on a fixed input; `run()` is one timed inference.

    Args:
        path: A `.tflite` or `.onnx` file.
        num_threads: CPU threads for the runtime.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1) -> None:
        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in RUNTIMES:
            raise ValueError(
                f"Cannot benchmark {path!r}: expected a .tflite (LiteRT) or .onnx file."
            )
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"`num_threads` must be a positive int, got {num_threads!r}.")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No model file at {path!r}.")
        self.path, self.num_threads, self.runtime = path, num_threads, RUNTIMES[suffix]
        if suffix == ".tflite":
            self._open_litert()
        else:
            self._open_onnx()

    def _open_litert(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        # The default op resolver applies XNNPACK with this many threads.
        interpreter = Interpreter(model_path=self.path, num_threads=self.num_threads)
        interpreter.allocate_tensors()
        source = interpreter.get_input_details()[0]
        self.input_shape, self.input_dtype = tuple(source["shape"]), np.dtype(source["dtype"])
        interpreter.set_tensor(source["index"], _random_input(self.input_shape, self.input_dtype))
        self.version = f"ai-edge-litert {_package_version('ai-edge-litert')}"
        self._invoke = interpreter.invoke

    def _open_onnx(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        source = session.get_inputs()[0]
        if any(not isinstance(d, int) for d in source.shape):
            raise ValueError(
                f"{self.path!r} has a dynamic input shape {source.shape}; benchmark a "
                "static-shape export (keras-lcnet export fixes the batch and image size)."
            )
        dtypes = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
        if source.type not in dtypes:
            raise ValueError(f"{self.path!r} takes {source.type} input; supported: {list(dtypes)}.")
        self.input_shape, self.input_dtype = tuple(source.shape), np.dtype(dtypes[source.type])
        # IO binding keeps input copies and output allocation out of the timing,
        # as LiteRT's invoke() does.
        binding = session.io_binding()
        binding.bind_cpu_input(source.name, _random_input(self.input_shape, self.input_dtype))
        for output in session.get_outputs():
            binding.bind_output(output.name)
        self.version = f"onnxruntime {ort.__version__}"
        self._invoke = lambda: session.run_with_iobinding(binding)

    def run(self) -> float:
        """Runs one inference; returns its wall time in milliseconds."""
        start = time.perf_counter_ns()
        self._invoke()
        return (time.perf_counter_ns() - start) / 1e6


@dataclasses.dataclass
class LatencyResult:
    """Latency statistics of one model, in milliseconds."""

    model: str
    runtime: str
    version: str
    num_threads: int
    input_shape: tuple[int, ...]
    input_dtype: str
    runs: int
    warmup: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    cpu: str

    @classmethod
    def from_times(cls, runner: Runner, times_ms, warmup: int) -> LatencyResult:
        times = np.asarray(times_ms, np.float64)
        return cls(
            model=runner.path,
            runtime=runner.runtime,
            version=runner.version,
            num_threads=runner.num_threads,
            input_shape=tuple(int(d) for d in runner.input_shape),
            input_dtype=str(runner.input_dtype),
            runs=len(times),
            warmup=warmup,
            median_ms=float(np.median(times)),
            p90_ms=float(np.percentile(times, 90)),
            min_ms=float(times.min()),
            mean_ms=float(times.mean()),
            std_ms=float(times.std()),
            cpu=cpu_model(),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"{self.model}: {self.runtime}, {self.version}, {self.num_threads} thread(s), "
            f"input {self.input_dtype}{list(self.input_shape)}\n"
            f"  median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, min "
            f"{self.min_ms:.3f} ms, std {self.std_ms:.3f} ms over {self.runs} runs "
            f"({self.warmup} warm-up)\n"
            f"  CPU: {self.cpu}"
        )


def measure(
    path: str | os.PathLike, num_threads: int = 1, runs: int = 100, warmup: int = 10
) -> LatencyResult:
    """Measures the single-inference latency of a `.tflite` or `.onnx` model.

    Args:
        path: The model file.
        num_threads: CPU threads given to the runtime.
        runs: Timed inferences.
        warmup: Untimed inferences first (allocations, caches, thread pools).

    Returns:
        A `LatencyResult`.
    """
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"`runs` must be a positive int, got {runs!r}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be a non-negative int, got {warmup!r}.")
    runner = Runner(path, num_threads)
    for _ in range(warmup):
        runner.run()
    return LatencyResult.from_times(runner, [runner.run() for _ in range(runs)], warmup)


def interleave(
    runners: dict,
    rounds: int,
    block: int = 1,
    warmup: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Times several models in turns, so that all of them share the machine's noise.

    Each runner first gets `warmup` untimed runs. Then every round runs each
    runner once untimed (to re-warm after the previous model) and `block`
    times timed; each round starts at a different runner.

    Args:
        runners: `{key: runner}`; a runner is a `Runner` or any object with
            the same `run()` and attributes.
        rounds: Number of rounds.
        block: Timed runs of each runner per round.
        warmup: Untimed runs of each runner before the first round.
        progress: Called with a line of text after every round.

    Returns:
        `{key: LatencyResult}` over `rounds * block` timed runs each.
    """
    for runner in runners.values():
        for _ in range(warmup):
            runner.run()
    times = {key: [] for key in runners}
    order = list(runners)
    start = time.time()
    for r in range(rounds):
        shift = r * len(order) // rounds
        for key in order[shift:] + order[:shift]:
            runner = runners[key]
            runner.run()
            times[key] += [runner.run() for _ in range(block)]
        if progress:
            progress(f"round {r + 1}/{rounds} done, {time.time() - start:.0f} s")
    return {key: LatencyResult.from_times(runners[key], t, warmup) for key, t in times.items()}
