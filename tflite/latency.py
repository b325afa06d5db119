"""One way to time a model: warm up by time, then timed runs; median and 90th percentile.

Used by `tflite.verify`, `mobilenet-keras bench` and the ONNX check, so that every latency this
package prints was measured the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Warm-up lasts at least this long and at least this many runs, whichever is longer: the first runs
# pay for allocation, caches and (XNNPACK) weight packing, and a CPU needs a moment to reach its clock.
WARMUP_SECONDS = 1.0
WARMUP_RUNS = 20


@dataclass(frozen=True)
class Latency:
    """Milliseconds per image: median and 90th percentile of the timed runs."""

    median_ms: float
    p90_ms: float
    runs: int
    warmup_runs: int

    def __str__(self) -> str:
        return f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms ({self.runs} runs)"


NOT_MEASURED = Latency(float("nan"), float("nan"), 0, 0)


def measure(run: Callable[[], object], runs: int = 30, per: int = 1, *, warmup_seconds: float = WARMUP_SECONDS,
            warmup_runs: int = WARMUP_RUNS) -> Latency:
    """Time `run()`: warm up for `warmup_seconds` and at least `warmup_runs` calls, then `runs` timed calls.

    Args:
        run: one inference (a batch of `per` images).
        runs: timed calls (at least 1).
        per: images per call; the figures are per image.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1; got {runs}.")
    warmed, start = 0, time.perf_counter()
    while warmed < warmup_runs or time.perf_counter() - start < warmup_seconds:
        run()
        warmed += 1
    times = np.empty(runs)
    for i in range(runs):
        begin = time.perf_counter()
        run()
        times[i] = time.perf_counter() - begin
    times *= 1000.0 / max(per, 1)
    return Latency(float(np.median(times)), float(np.percentile(times, 90)), runs, warmed)


def tflite_latency(path: str | os.PathLike, runs: int = 30, threads: int = 2, **warmup) -> Latency:
    """Latency of a .tflite file at its own batch (1 for this package's files), on zero input."""
    from tflite.runtime import TFLiteModel

    timed = TFLiteModel(path, num_threads=threads)
    batch = max(timed.input_shape[0], 1)
    sample = np.zeros((batch, *timed.input_shape[1:]), timed.input_dtype)
    return measure(lambda: timed.predict_raw(sample), runs, per=batch, **warmup)
