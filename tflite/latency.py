"""One way to time a model: warm up by time, then timed runs; median and 90th percentile.

Used by `tflite.verify`, `mobilenet-keras bench` and the ONNX check, so that every latency this
package prints was measured the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    return measure_side_by_side([run], runs, [per], warmup_seconds=warmup_seconds, warmup_runs=warmup_runs)[0]


def measure_side_by_side(calls: Sequence[Callable[[], object]], runs: int = 30, per: Sequence[int] | None = None, *,
                         warmup_seconds: float = WARMUP_SECONDS, warmup_runs: int = WARMUP_RUNS) -> list[Latency]:
    """Time several models in turns: each warms up as `measure` does, then timed runs go A, B, C, A, B, C...

    On a shared machine the clock and the neighbours change from one second to the next; timing the
    models in turns spreads that drift over all of them, so their ratio means something even when the
    absolute figures drift.

    Args:
        calls: one inference each (a batch of `per[i]` images).
        runs: timed calls per model (at least 1).
        per: images per call, per model (default 1 each); the figures are per image.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1; got {runs}.")
    per = list(per) if per is not None else [1] * len(calls)
    warmed = []
    for run in calls:
        count, start = 0, time.perf_counter()
        while count < warmup_runs or time.perf_counter() - start < warmup_seconds:
            run()
            count += 1
        warmed.append(count)
    times = np.empty((len(calls), runs))
    for i in range(runs):
        for j, run in enumerate(calls):
            begin = time.perf_counter()
            run()
            times[j, i] = time.perf_counter() - begin
    latencies = []
    for row, images, count in zip(times, per, warmed):
        row = row * 1000.0 / max(images, 1)
        latencies.append(Latency(float(np.median(row)), float(np.percentile(row, 90)), runs, count))
    return latencies


#: Interpreter threads a latency is measured with at most: LiteRT's thread pool crashes the process (SIGSEGV)
#: when it can't create the threads asked for (100,000), and past a thread per core none helps.
MAX_THREADS = 256


def check_count(name: str, value, low: int, high: int | None = None) -> None:
    """A ValueError naming `name` unless `value` is an integer from `low` to `high` (no upper bound: None)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{name} must be an integer {bound}; got {value!r}.")


def tflite_latency(path, runs: int = 30, threads: int = 2, **warmup) -> Latency:
    """Latency of a .tflite file (a path, or a loaded `TFLiteModel`: the bytes it holds) at its own batch
    (1 for this package's files), on zero input."""
    return tflite_latencies([path], runs, threads, **warmup)[0]


def tflite_latencies(paths: Sequence, runs: int = 30, threads: int = 2, **warmup) -> list[Latency]:
    """Latencies of several .tflite files (paths or loaded `TFLiteModel`s) timed in turns
    (`measure_side_by_side`), each at its own batch."""
    from tflite.runtime import TFLiteModel

    check_count("threads", threads, 1, MAX_THREADS)
    check_count("runs", runs, 1)
    calls, per = [], []
    for path in paths:
        loaded = isinstance(path, TFLiteModel)
        timed = TFLiteModel(path.path if loaded else path, num_threads=threads,
                            content=path.content if loaded else None)
        batch = max(timed.input_shape[0], 1)
        sample = np.zeros((batch, *timed.input_shape[1:]), timed.input_dtype)
        calls.append(lambda timed=timed, sample=sample: timed.predict_raw(sample))
        per.append(batch)
    return measure_side_by_side(calls, runs, per, **warmup)
