"""Single-image latency of exported models: LiteRT (XNNPACK), onnxruntime and OpenVINO on CPU.

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

from keras_lcnet.deploy.runtime import Runtime

# `Runner` is the name this module gave the runtime wrapper before it served
# export verification too.
Runner = Runtime


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
    def from_times(cls, runner: Runtime, times_ms, warmup: int) -> LatencyResult:
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
    """Measures the single-inference latency of a `.tflite`, `.onnx` or OpenVINO `.xml` model.

    Args:
        path: The model file.
        num_threads: CPU threads given to the runtime.
        runs: Timed inferences.
        warmup: Untimed inferences first (allocations, caches, thread pools).

    Returns:
        A `LatencyResult`.

    Raises:
        ValueError: Bad arguments, or a file the runtime cannot open.
        FileNotFoundError: `path` does not exist.
    """
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"`runs` must be a positive int, got {runs!r}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be a non-negative int, got {warmup!r}.")
    runner = Runtime(path, num_threads)
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
        runners: `{key: runner}`; a runner is a `Runtime` or any object with
            the same `run()` and the attributes `LatencyResult` reads.
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
