"""Checking a .tflite file against the float Keras model it came from: figures, thresholds, verdict."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobilenet_keras.files import write_bytes_atomic
from tflite.modes import MODES, Thresholds, get_mode
from tflite.representative import collect
from tflite.runtime import TFLiteModel


# Each mode's thresholds, from its row in tflite.modes (kept as a name for callers of tflite.verify).
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {name: mode.thresholds for name, mode in MODES.items()}


@dataclass
class VerificationReport:
    """Figures from comparing one .tflite file with the float model on the same images."""

    file: str
    mode: str
    samples: int
    top1_agreement: float
    top5_overlap: float
    mean_abs_diff: float
    max_abs_diff: float
    mean_cosine: float
    sqnr_db: float
    size_bytes: int
    float32_size_bytes: int
    size_ratio: float
    latency_ms: float
    float_accuracy: float | None = None
    tflite_accuracy: float | None = None
    thresholds: Thresholds | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_drop(self) -> float | None:
        if self.float_accuracy is None or self.tflite_accuracy is None:
            return None
        return self.float_accuracy - self.tflite_accuracy

    def to_dict(self) -> dict:
        out = asdict(self)
        out["passed"] = self.passed
        out["accuracy_drop"] = self.accuracy_drop
        return out

    def to_json(self, path: str | os.PathLike) -> Path:
        return write_bytes_atomic(path, json.dumps(self.to_dict(), indent=2).encode())

    def to_markdown(self) -> str:
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        rows = [
            ("file", f"`{Path(self.file).name}` ({self.mode})"),
            ("samples", str(self.samples)),
            ("top-1 agreement", f"{self.top1_agreement:.2%}"),
            ("top-5 overlap", f"{self.top5_overlap:.2%}"),
            ("mean / max abs diff", f"{self.mean_abs_diff:.2e} / {self.max_abs_diff:.2e}"),
            ("mean cosine", f"{self.mean_cosine:.5f}"),
            ("SQNR", f"{self.sqnr_db:.1f} dB"),
            ("size", f"{self.size_bytes / 1024:,.0f} KiB ({self.size_ratio:.2f}x of float32)"),
            ("latency (batch 1, 2 threads)", f"{self.latency_ms:.2f} ms"),
        ]
        if self.float_accuracy is not None:
            rows.append(("accuracy float / tflite", f"{self.float_accuracy:.2%} / {self.tflite_accuracy:.2%}"))
        rows.append(("verdict", verdict))
        return "\n".join(["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def _top5_overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean of |top5(reference) & top5(candidate)| / 5, where the candidate's top 5 includes classes
    tied with its 5th score: a quantized softmax rounds small probabilities to the same value, and
    the order among equal scores carries no information."""
    k = min(5, reference.shape[1])
    top_ref = np.argsort(-reference, axis=1)[:, :k]
    kth = -np.sort(-candidate, axis=1)[:, k - 1:k]
    overlaps = [min(int(np.sum(candidate[i, top_ref[i]] >= kth[i])), k) / k for i in range(len(reference))]
    return float(np.mean(overlaps))


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Agreement and error figures between two (samples, classes) score arrays."""
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    error = candidate - reference
    noise = float(np.mean(error**2))
    signal = float(np.mean(reference**2))
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)
    return {
        "top1_agreement": float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        "top5_overlap": _top5_overlap(reference, candidate),
        "mean_abs_diff": float(np.mean(np.abs(error))),
        "max_abs_diff": float(np.max(np.abs(error))),
        "mean_cosine": float(np.mean(cosine)),
        "sqnr_db": math.inf if noise == 0 else 10 * math.log10(signal / noise),
    }


def float32_size_estimate(model) -> int:
    """Bytes of a float32 file's weights: kernels and one bias per output channel (BatchNorm folds in)."""
    total = 0
    for layer in model.layers:
        for weight in layer.weights:
            name = weight.path if hasattr(weight, "path") else weight.name
            if any(key in name for key in ("kernel", "bias")) or name.endswith("beta"):
                total += int(np.prod(weight.shape))
    return 4 * total


def measure_latency(tflite_file: TFLiteModel | str | os.PathLike, runs: int = 30, threads: int = 2) -> float:
    """Median milliseconds per image at batch 1 (per batch / batch for a static larger batch)."""
    path = tflite_file.path if isinstance(tflite_file, TFLiteModel) else tflite_file
    timed = TFLiteModel(path, num_threads=threads)
    batch = max(timed.input_shape[0], 1)
    sample = np.zeros((batch, *timed.input_shape[1:]), timed.input_dtype)
    for _ in range(3):
        timed.predict_raw(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        timed.predict_raw(sample)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def verify(
    float_model,
    tflite_file: str | os.PathLike | TFLiteModel,
    data,
    labels=None,
    thresholds: Thresholds | dict | None = None,
    *,
    mode: str | None = None,
    float32_size: int | None = None,
    max_samples: int | None = None,
    latency_runs: int = 30,
    verbose: bool = False,
) -> VerificationReport:
    """Run the float model and the .tflite file on the same images and judge the file.

    Args:
        float_model: the Keras model the file was converted from (or any callable Keras model taking
            the same input convention).
        tflite_file: the file, or a loaded `TFLiteModel`.
        data: images in any form `tflite.representative.collect` takes (array, dataset, batches,
            folder); float arrays in the model's convention, uint8 arrays and folders as raw pixels.
        labels: true classes, for accuracy of both models (taken from a folder's class subfolders or a
            labelled dataset when not given).
        thresholds: a `Thresholds`, or a dict overriding some of the mode's defaults
            (`DEFAULT_THRESHOLDS`).
        mode: the mode whose thresholds apply; detected from the file's tensor types when not given.
        float32_size: size of the float32 file for the size ratio; estimated from the model's weights
            when not given.
        max_samples: verify on at most this many images.
        latency_runs: timed runs for the latency median (0 skips timing).
        verbose: print a progress line while running large sets.

    Returns:
        A `VerificationReport`; `report.passed` is the verdict, `report.failures` says which
        figure missed which threshold.
    """
    model_file = tflite_file if isinstance(tflite_file, TFLiteModel) else TFLiteModel(tflite_file)
    mode = mode or model_file.mode
    found_labels: list = []
    images = collect(data, tuple(float_model.input_shape[1:]), limit=max_samples, labels_out=found_labels)
    if labels is None and len(found_labels) == len(images):
        labels = found_labels
    expected = _predict_float(float_model, images)
    got = _predict_tflite(model_file, images, verbose)
    figures = compare(expected, got)
    if not np.isfinite(got).all():
        figures["sqnr_db"] = -math.inf

    limits = get_mode(mode).thresholds
    if isinstance(thresholds, Thresholds):
        limits = thresholds
    elif isinstance(thresholds, dict):
        limits = Thresholds(**{**asdict(limits), **thresholds})

    reference_size = float32_size or float32_size_estimate(float_model)
    report = VerificationReport(
        file=str(model_file.path), mode=mode, samples=len(images), size_bytes=model_file.size_bytes,
        float32_size_bytes=reference_size, size_ratio=model_file.size_bytes / reference_size,
        latency_ms=measure_latency(model_file, latency_runs) if latency_runs else float("nan"),
        thresholds=limits, **figures,
    )
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images; give one label per image.")
        report.float_accuracy = float(np.mean(expected.argmax(1) == labels))
        report.tflite_accuracy = float(np.mean(got.argmax(1) == labels))
    report.failures = judge(report, limits)
    return report


def judge(report: VerificationReport, limits: Thresholds) -> list[str]:
    failures = []
    if report.top1_agreement < limits.min_top1_agreement:
        failures.append(f"top-1 agreement {report.top1_agreement:.2%} < {limits.min_top1_agreement:.0%}")
    if report.top5_overlap < limits.min_top5_overlap:
        failures.append(f"top-5 overlap {report.top5_overlap:.2%} < {limits.min_top5_overlap:.0%}")
    if not report.sqnr_db >= limits.min_sqnr_db:
        failures.append(f"SQNR {report.sqnr_db:.1f} dB < {limits.min_sqnr_db:.0f} dB")
    drop = report.accuracy_drop
    if drop is not None and drop > limits.max_accuracy_drop:
        failures.append(f"accuracy drop {drop * 100:.2f} points > {limits.max_accuracy_drop * 100:.1f}")
    return failures


def _predict_float(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(images, batch_size=32, verbose=0), dtype=np.float32)


def _predict_tflite(model_file: TFLiteModel, images: np.ndarray, verbose: bool) -> np.ndarray:
    chunk = 100
    outputs = []
    for start in range(0, len(images), chunk):
        outputs.append(model_file.predict(images[start:start + chunk]))
        if verbose and len(images) > chunk:
            done = min(start + chunk, len(images))
            print(f"\r  verifying {model_file.path.name}: {done}/{len(images)}", end="\n" if done == len(images) else "",
                  file=sys.stderr, flush=True)
    return np.concatenate(outputs)
