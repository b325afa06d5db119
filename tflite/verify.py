"""Checking a .tflite file against the float Keras model it came from: figures, thresholds, verdict."""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from mobilenet_keras.files import write_json_atomic
from tflite.batched import predict
from tflite.flatbuffer import op_counts
from tflite.latency import NOT_MEASURED, Latency, check_count, tflite_latency
from tflite.modes import MODES, Thresholds, get_mode
from tflite.representative import check_single_image_input, collect, distinct_labelled_images, warn_if_unit_range
from tflite.runtime import TFLiteModel


# Each mode's thresholds, from its row in tflite.modes (kept as a name for callers of tflite.verify).
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {name: mode.thresholds for name, mode in MODES.items()}

# A verdict needs at least this many images. Agreement is a count: on 50 images one disagreement moves
# it by 2 points, and 50 of 50 agreeing still leaves a 95% interval down to 93%. Below this, the
# figures are reported and the verdict is INCONCLUSIVE (unless a figure already fails: FAIL).
MIN_VERDICT_IMAGES = 200
# verify reads at most this many images of a dataset or iterable when max_samples is not given (an
# array or a folder is read whole): a `Dataset.repeat()` or an endless generator is not read forever.
DEFAULT_MAX_SAMPLES = 5000
# z for a two-sided 95% interval.
_Z95 = 1.959963984540054

VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")


def wilson_interval(successes: int, total: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion: (low, high); (0, 1) when `total` is 0."""
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class VerificationReport:
    """Figures from comparing one file with the float model on the same images, and the verdict.

    `verdict` is FAIL when a figure misses its threshold, INCONCLUSIVE when none does but fewer than
    `min_samples` images were compared, PASS otherwise; `passed` is `verdict == "PASS"`.
    """

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
    latency_p90_ms: float = float("nan")
    # "k of N disagree": images whose top-1 class differs between the two.
    disagreements: int = 0
    # 95% Wilson score intervals (low, high).
    top1_agreement_interval: tuple[float, float] = (0.0, 1.0)
    float_accuracy_interval: tuple[float, float] | None = None
    tflite_accuracy_interval: tuple[float, float] | None = None
    min_samples: int = MIN_VERDICT_IMAGES
    # Ops of the file that compute in float32 / with int16 activations (tflite.flatbuffer.op_counts;
    # an int8_float_io file's boundary QUANTIZE / DEQUANTIZE excluded); None when not read from a file.
    float_ops: int | None = None
    int16_ops: int | None = None
    # With labels: images the float model gets right and the file wrong, and the other way round (the drop is
    # their difference over `samples`; their sum says how sure it is).
    float_only_right: int | None = None
    file_only_right: int | None = None
    # Count figures (top-1 agreement, accuracy drop) that miss a threshold on fewer than `min_samples` images
    # while their 95% interval still reaches it: one disagreement in 18 images is 94%, yet the file may
    # well agree on 98% of images. Too few images to call it a FAIL: the verdict is INCONCLUSIVE.
    unsettled: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.failures:
            return "FAIL"
        if self.samples < self.min_samples:
            return "INCONCLUSIVE"
        return "PASS"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def verdict_reason(self) -> str:
        """One line: the failures, or why the verdict is inconclusive, or empty for PASS."""
        if self.failures:
            return "; ".join(self.failures)
        if self.samples < self.min_samples:
            return "; ".join(self.unsettled + [f"only {self.samples} images; a verdict needs at least "
                                               f"{self.min_samples} ({self.min_samples - self.samples} more)"])
        return ""

    @property
    def accuracy_drop(self) -> float | None:
        if self.float_accuracy is None or self.tflite_accuracy is None:
            return None
        return self.float_accuracy - self.tflite_accuracy

    def to_dict(self) -> dict:
        out = asdict(self)
        out["verdict"] = self.verdict
        out["verdict_reason"] = self.verdict_reason
        out["passed"] = self.passed
        out["accuracy_drop"] = self.accuracy_drop
        for key in ("top1_agreement_interval", "float_accuracy_interval", "tflite_accuracy_interval"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def to_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())

    def to_markdown(self) -> str:
        verdict = self.verdict + (f": {self.verdict_reason}" if self.verdict_reason else "")
        low, high = self.top1_agreement_interval
        rows = [
            ("file", f"`{Path(self.file).name}` ({self.mode})"),
            ("samples", str(self.samples)),
            ("top-1 agreement", f"{self.top1_agreement:.2%} ({self.disagreements} of {self.samples} disagree; "
                                f"95% interval {low:.2%} to {high:.2%})"),
            ("top-5 overlap", f"{self.top5_overlap:.2%}"),
            ("mean / max abs diff", f"{self.mean_abs_diff:.2e} / {self.max_abs_diff:.2e}"),
            ("mean cosine", f"{self.mean_cosine:.5f}"),
            ("SQNR", f"{self.sqnr_db:.1f} dB"),
            ("size", f"{self.size_bytes / 1024:,.0f} KiB ({self.size_ratio:.2f}x of float32)"),
            ("latency (per image at the file's batch, 2 threads)",
             f"median {self.latency_ms:.2f} ms, p90 {self.latency_p90_ms:.2f} ms" if math.isfinite(self.latency_ms)
             else "not measured"),
        ]
        if self.float_ops is not None:
            rows.append(("float / int16 ops", f"{self.float_ops} / {self.int16_ops or 0}"))
        if self.mode == "dynamic":
            rows.append(("note", DYNAMIC_NOTE))
        if self.float_accuracy is not None:
            text = f"{self.float_accuracy:.2%} / {self.tflite_accuracy:.2%}"
            if self.float_accuracy_interval and self.tflite_accuracy_interval:
                (float_low, float_high), (file_low, file_high) = (self.float_accuracy_interval,
                                                                  self.tflite_accuracy_interval)
                text += f" (95% intervals {float_low:.2%} to {float_high:.2%} / {file_low:.2%} to {file_high:.2%})"
            rows.append(("accuracy float / tflite", text))
        rows.append(("verdict", verdict))
        return "\n".join(["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) + "\n"


# Dynamic-range files keep float activations and quantize them on the fly at every layer. Measured
# (alpha 0.25, 96 px, batch 1, one thread, XNNPACK, Xeon with AVX-512 VNNI/BF16, no AMX): 1.19x the
# float32 latency (quartiles 1.10-1.29 over 15 paired rounds), and far worse tails with 2 threads on a
# busy CPU. A mode for size, not speed.
DYNAMIC_NOTE = "dynamic is for size, not speed: measured about 1.2x slower than float32 on x86 (see README)"


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
    """Median milliseconds per image at the file's batch (see `tflite.latency` for the method)."""
    path = tflite_file.path if isinstance(tflite_file, TFLiteModel) else tflite_file
    return tflite_latency(path, runs, threads).median_ms


def resolve_thresholds(mode: str, thresholds: Thresholds | dict | None = None) -> Thresholds:
    """The thresholds that apply: the mode's, replaced by a `Thresholds` or overridden by a dict.

    Raises:
        ValueError: an unknown mode (naming the modes there are), or a dict key that is not a threshold
            (naming the thresholds there are).
    """
    limits = get_mode(mode).thresholds
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, dict):
        allowed = [f.name for f in fields(Thresholds)]
        unknown = [key for key in thresholds if key not in allowed]
        if unknown:
            raise ValueError(f"unknown threshold(s) {', '.join(map(repr, unknown))}; "
                             f"choose from: {', '.join(allowed)}.")
        return Thresholds(**{**asdict(limits), **thresholds})
    if thresholds is not None:
        raise ValueError(f"thresholds must be a Thresholds, a dict or None; got {type(thresholds).__name__}.")
    return limits


def judge_outputs(
    expected: np.ndarray,
    got: np.ndarray,
    *,
    file: str | os.PathLike,
    mode: str,
    size_bytes: int,
    float32_size_bytes: int,
    labels=None,
    thresholds: Thresholds | dict | None = None,
    latency: Latency = NOT_MEASURED,
    min_samples: int = MIN_VERDICT_IMAGES,
) -> VerificationReport:
    """The one judge: figures, 95% intervals and the verdict from the two models' outputs on the same images.

    `tflite.verify` and `mobilenet_keras.deploy.onnx_file.verify_onnx` both end here.

    Args:
        expected: (N, classes) outputs of the reference (float Keras) model.
        got: (N, classes) outputs of the file, in float.
        file: the file judged (for the report).
        mode: a mode of `tflite.MODES` whose thresholds apply, or any label (such as "onnx") when
            `thresholds` is a complete `Thresholds`.
        size_bytes, float32_size_bytes: the file's size and the float32 reference size.
        labels: true classes, for both accuracies (optional).
        thresholds: a `Thresholds`, or a dict overriding some of the mode's.
        latency: the file's `tflite.latency.Latency` (not measured by default).
        min_samples: fewer images than this give INCONCLUSIVE instead of PASS.
    """
    limits = thresholds if isinstance(thresholds, Thresholds) else resolve_thresholds(mode, thresholds)
    expected = np.asarray(expected, dtype=np.float32)
    got = np.asarray(got, dtype=np.float32)
    if expected.ndim != 2 or got.ndim != 2 or len(expected) != len(got):
        raise ValueError(f"expected and got must be (images, classes) arrays of the same length; got "
                         f"{expected.shape} and {got.shape}.")
    if expected.shape[1] != got.shape[1]:
        raise ValueError(f"the model gives {expected.shape[1]} classes but {Path(file).name} gives {got.shape[1]}; "
                         "verify a file against the model it was converted from.")
    if len(expected) == 0:
        raise ValueError("no images to judge on.")
    figures = compare(expected, got)
    if not np.isfinite(got).all():
        figures["sqnr_db"] = -math.inf
    samples = len(expected)
    agree = int(np.sum(expected.argmax(1) == got.argmax(1)))
    report = VerificationReport(
        file=str(file), mode=mode, samples=samples, size_bytes=int(size_bytes),
        float32_size_bytes=int(float32_size_bytes), size_ratio=size_bytes / float32_size_bytes,
        latency_ms=latency.median_ms, latency_p90_ms=latency.p90_ms, thresholds=limits,
        disagreements=samples - agree, top1_agreement_interval=wilson_interval(agree, samples),
        min_samples=min_samples, **figures,
    )
    if labels is not None:
        labels = class_numbers(labels, samples, expected.shape[1])
        float_right = int(np.sum(expected.argmax(1) == labels))
        file_right = int(np.sum(got.argmax(1) == labels))
        report.float_accuracy = float_right / samples
        report.tflite_accuracy = file_right / samples
        report.float_accuracy_interval = wilson_interval(float_right, samples)
        report.tflite_accuracy_interval = wilson_interval(file_right, samples)
        float_hit, file_hit = expected.argmax(1) == labels, got.argmax(1) == labels
        report.float_only_right = int(np.sum(float_hit & ~file_hit))
        report.file_only_right = int(np.sum(file_hit & ~float_hit))
    report.failures, report.unsettled = judge(report, limits)
    return report


def class_numbers(labels, samples: int, classes: int) -> np.ndarray:
    """`labels` as (samples,) class numbers: integers in [0, classes), or one-hot (or probability) rows
    (samples, classes), which give their largest column. A ValueError says what is wrong otherwise."""
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"labels must be class numbers; could not read them ({exc}).") from None
    if array.ndim == 2 and array.shape == (samples, classes) and classes > 1:
        array = array.argmax(1)
    array = array.reshape(-1) if array.ndim else array.reshape(1)
    if len(array) != samples:
        raise ValueError(f"{len(array)} labels for {samples} images; give one label per image (a class number, "
                         f"or a one-hot row of {classes}).")
    if array.dtype.kind not in "iub":
        finite = array.dtype.kind == "f" and bool(np.all(np.isfinite(array)))
        if not (finite and bool(np.all(array == np.round(array)))):
            raise ValueError(f"labels must be class numbers 0 to {classes - 1} (or one-hot rows); got {array.dtype} "
                             f"values such as {array[0]!r}. Map class names to their numbers first.")
    array = array.astype(np.int64)
    if len(array) and (array.min() < 0 or array.max() >= classes):
        raise ValueError(f"labels must be class numbers 0 to {classes - 1} (the model has {classes} classes); got "
                         f"values from {array.min()} to {array.max()}.")
    return array


def check_model_outputs(float_model) -> int:
    """Classes of a single-output model; a ValueError for a model with several outputs."""
    outputs = getattr(float_model, "outputs", None) or []
    if len(outputs) > 1:
        names = ", ".join(getattr(t, "name", "?") for t in outputs)
        raise ValueError(f"verify needs a model with one output (class scores); this model has {len(outputs)} "
                         f"({names}). Verify a model with one output per file.")
    shape = getattr(float_model, "output_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    return int(shape[-1]) if shape and shape[-1] is not None else -1


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
    min_samples: int = MIN_VERDICT_IMAGES,
    allow_float_ops: bool = False,
    class_names: list[str] | None = None,
    verbose: bool = False,
) -> VerificationReport:
    """Run the float model and the .tflite file on the same images and judge the file.

    Args:
        float_model: the Keras model the file was converted from (or any callable Keras model taking
            the same input convention), with one output.
        tflite_file: the file, or a loaded `TFLiteModel`.
        data: images in any form `tflite.representative.collect` takes (array, dataset, batches,
            folder); float arrays in the model's convention, uint8 arrays and folders as raw pixels.
        labels: true classes, for accuracy of both models (taken from a folder's class subfolders or a
            labelled dataset when not given). With `max_samples`, the labels of the images kept (the first
            ones of an array or dataset).
        thresholds: a `Thresholds`, or a dict overriding some of the mode's defaults
            (`DEFAULT_THRESHOLDS`); unknown keys are a ValueError.
        mode: the mode whose thresholds apply; detected from the file's tensor types when not given.
        float32_size: size of the float32 file for the size ratio; estimated from the model's weights
            when not given.
        max_samples: verify on at most this many images; by default all of an array or folder, and at
            most `DEFAULT_MAX_SAMPLES` (5,000) of a dataset or iterable, which may be endless.
        latency_runs: timed runs for the latency (0 skips timing); see `tflite.latency`.
        min_samples: a verdict needs at least this many images (`MIN_VERDICT_IMAGES`, 200).
        allow_float_ops: False (the default) fails an integer mode's file that computes any op in float
            inside (layers kept in float by a conversion's denylist, e.g. `denylist="auto"`): such a
            file does not run on integer-only accelerators. True accepts them; the report counts them
            either way.
        class_names: the model's class names in the order of its outputs (a run's labels.txt), to read a
            folder's labels by its subfolders' names. Without them a folder's subfolders, sorted by name,
            are taken as the model's classes in order, and a folder with another number of them is refused
            (its labels would be wrong).
        verbose: print a progress line while running large sets.

    Returns:
        A `VerificationReport`; `report.verdict` is PASS, FAIL (`report.failures` says which figure
        missed which threshold) or INCONCLUSIVE (too few images); `report.passed` is PASS.

    Raises:
        ValueError: an unknown mode or threshold, a model with several outputs, a model and file with
            different numbers of classes, or unusable data.
    """
    if mode is not None:
        get_mode(mode)
    if thresholds is not None:
        resolve_thresholds(mode or "float32", thresholds)  # unknown keys fail before any work
    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 0:
        raise ValueError(f"min_samples must be a number of images (0 or more); got {min_samples!r}.")
    # before any image is run: each was found only after the inference, or not at all
    check_count("latency_runs", latency_runs, 0)
    if max_samples is not None:
        check_count("max_samples", max_samples, 1)
    if float32_size is not None:
        check_count("float32_size", float32_size, 1)
    check_single_image_input(float_model, "verify")
    classes = check_model_outputs(float_model)
    model_file = tflite_file if isinstance(tflite_file, TFLiteModel) else TFLiteModel(tflite_file)
    if mode is not None and mode != model_file.mode and {mode, model_file.mode} not in _LOOK_ALIKE:
        warnings.warn(f"mode {mode!r} given, but {model_file.path.name} looks like a {model_file.mode} file (by "
                      f"its tensors): judged with {mode}'s thresholds.", stacklevel=2)
    mode = mode or model_file.mode
    file_classes = int(model_file.output_shape[-1])
    if classes > 0 and file_classes != classes:
        raise ValueError(f"the model gives {classes} classes but {model_file.path.name} gives {file_classes}; "
                         "verify a file against the model it was converted from.")
    images, labels = judged_images(float_model, data, labels, max_samples, class_names, classes, stacklevel=3)
    expected = predict(float_model, images)
    got = _predict_tflite(model_file, images, verbose)
    latency = tflite_latency(model_file, latency_runs) if latency_runs else NOT_MEASURED
    report = judge_outputs(expected, got, file=model_file.path, mode=mode, size_bytes=model_file.size_bytes,
                           float32_size_bytes=float32_size or float32_size_estimate(float_model), labels=labels,
                           thresholds=thresholds, latency=latency, min_samples=min_samples)
    counts = op_counts(model_file.flatbuffer)  # the bytes that were run, not the file as it is now
    report.float_ops, report.int16_ops = counts["float"], counts["int16"]
    if not allow_float_ops and mode in MODES and (MODES[mode].integer or MODES[mode].takes_qat_model) \
            and report.float_ops:
        report.failures.append(f"{report.float_ops} float op(s) inside an integer file (a conversion's denylist "
                               "kept layers in float; such a file needs a CPU or GPU delegate: pass "
                               "allow_float_ops=True to accept it)")
    return report


def judged_images(float_model, data, labels=None, max_samples: int | None = None,
                  class_names: list[str] | None = None, classes: int = 0,
                  stacklevel: int = 2) -> tuple[np.ndarray, np.ndarray | None]:
    """The images a file is judged on and their true classes (None when unknown), as `verify` reads `data`,
    `labels`, `max_samples` and `class_names` (`classes`: the model's number of classes, 0 when unknown): a
    folder's class folders mapped to the model's classes, each distinct image once, an image filed under two
    classes left out, a warning for pixels outside the model's range. For every file format's check."""
    folder = isinstance(data, (str, os.PathLike))
    if labels is not None and folder and max_samples is not None:
        raise ValueError("labels were given with a folder and max_samples: the folder is sampled across its "
                         "classes, so the labels can't follow; leave out labels (the subfolders give them) or "
                         "max_samples.")
    if class_names is not None and (not folder or labels is not None):
        raise ValueError("class_names= maps a folder's class folders to the model's classes; "
                         + ("with labels= given, the labels are the classes: leave out class_names."
                            if folder else "these images are not a folder: give labels= as the model's class numbers."))
    if class_names is not None and classes > 0 and len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for a model with {classes} classes.")
    found_labels: list = []
    folder_classes: list = []
    images = collect(data, tuple(float_model.input_shape[1:]), limit=max_samples, labels_out=found_labels,
                     cap=DEFAULT_MAX_SAMPLES, class_names_out=folder_classes)
    if labels is None and len(found_labels) == len(images):
        labels = found_labels
        if folder:
            labels = _model_classes(labels, Path(data), folder_classes, class_names, classes)
    elif labels is not None and max_samples is not None and len(labels) > len(images):
        labels = np.asarray(labels)[:len(images)]  # collect kept the first max_samples
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images; give one label per image.")
    if labels is not None and classes > 0:  # checked and made class numbers before copies are compared
        labels = class_numbers(labels, len(images), classes)
    keep, distinct, conflicting = distinct_labelled_images(images, labels)
    if conflicting:
        what = "the class folders" if folder else "labels"
        if not len(keep):
            raise ValueError(f"every image appears under two classes or more in {what}: their true class is "
                             "unknown, so no accuracy can be measured; give images filed under one class each.")
        warnings.warn(f"{conflicting} image(s) appear under two classes or more in {what} (the same pixels "
                      "filed twice): their true class is unknown, so they are left out; clean the data to "
                      "judge on them.", stacklevel=stacklevel)
    if distinct < len(images):
        # a repeated image is no new evidence: counted again, it would narrow the interval and lift a
        # handful of images past the verdict's minimum
        warnings.warn(f"{len(images) - distinct} of the {len(images)} images repeat others; judged on the "
                      f"{len(keep)} distinct ones{' of one class each' if conflicting else ''}.",
                      stacklevel=stacklevel)
    images = images[keep]
    labels = None if labels is None else np.asarray(labels)[keep]
    from tflite.equalization import is_mobilenet

    if is_mobilenet(float_model):
        low, high = float(images.min()), float(images.max())
        if low < -1.001 or high > 1.001:
            warnings.warn(f"the images reach [{low:.4g}, {high:.4g}], but the model takes pixels on [-1, 1]: give "
                          "uint8 pixels or preprocess_input's output.", stacklevel=stacklevel)
        else:
            warn_if_unit_range(images, "the images", stacklevel=stacklevel + 1)
    return images, labels


def _model_classes(labels: list, folder: Path, names: list[str], class_names: list[str] | None,
                   classes: int) -> np.ndarray:
    """A folder's labels (indices of its sorted subfolders `names`) as the model's class numbers."""
    if class_names is None:
        if classes > 0 and len(names) != classes:
            raise ValueError(f"{folder} has {len(names)} class folder(s) ({', '.join(names[:5])}"
                             f"{' ...' if len(names) > 5 else ''}) but the model has {classes} classes, so its labels "
                             "can't be read from the folders' order: pass class_names=[the model's classes in "
                             "order] (a run's labels.txt), or labels=.")
        return np.asarray(labels)
    position = {name: index for index, name in enumerate(class_names)}
    unknown = [name for name in names if name not in position]
    if unknown:
        raise ValueError(f"class folder(s) {', '.join(unknown[:5])} of {folder} are not among the model's classes "
                         f"({', '.join(map(str, class_names[:10]))}{' ...' if len(class_names) > 10 else ''}).")
    return np.asarray([position[names[label]] for label in labels])


# Modes a file's tensors can't tell apart (a QAT file is an int8 or uint8 file by its tensors).
_LOOK_ALIKE = ({"qat", "int8"}, {"qat_uint8", "uint8"})


def judge(report: VerificationReport, limits: Thresholds) -> tuple[list[str], list[str]]:
    """The figures of `report` that miss `limits`, one line each: (failures, unsettled).

    A count figure (top-1 agreement, accuracy drop) that misses its threshold on fewer than
    `report.min_samples` images, while its 95% interval still reaches the threshold, is unsettled, not a
    failure. Averages over every output (top-5 overlap, SQNR) fail as measured.
    """
    failures, unsettled = [], []
    few = report.samples < report.min_samples
    if report.top1_agreement < limits.min_top1_agreement:
        low, high = report.top1_agreement_interval
        text = (f"top-1 agreement {report.top1_agreement:.2%} < {limits.min_top1_agreement:.0%} "
                f"({report.disagreements} of {report.samples} disagree")
        if few and high >= limits.min_top1_agreement:
            unsettled.append(f"{text}; its 95% interval {low:.1%} to {high:.1%} reaches "
                             f"{limits.min_top1_agreement:.0%})")
        else:
            failures.append(text + ")")
    if report.top5_overlap < limits.min_top5_overlap:
        failures.append(f"top-5 overlap {report.top5_overlap:.2%} < {limits.min_top5_overlap:.0%}")
    if not report.sqnr_db >= limits.min_sqnr_db:
        failures.append(f"SQNR {report.sqnr_db:.1f} dB < {limits.min_sqnr_db:.0f} dB")
    drop = report.accuracy_drop
    if drop is not None and drop > limits.max_accuracy_drop:
        text = f"accuracy drop {drop * 100:.2f} points > {limits.max_accuracy_drop * 100:.1f}"
        if few and _drop_could_pass(report.float_only_right, report.file_only_right, report.samples,
                                   limits.max_accuracy_drop):
            unsettled.append(f"{text} (on {report.samples} images, within its 95% interval)")
        else:
            failures.append(text)
    return failures, unsettled


def _drop_could_pass(float_only_right: int, file_only_right: int, samples: int, limit: float,
                    z: float = _Z95) -> bool:
    """Whether an accuracy drop measured on `samples` images could still be within `limit`: the low end of its
    95% interval reaches it. Both accuracies come from the same images, so only the images where one of the
    two is right and the other wrong carry the difference (a paired difference of proportions, normal
    approximation): 17 such images of 199, all the float model's, is a drop of 8.5 points known to +-3.9."""
    drop = (float_only_right - file_only_right) / samples
    spread = math.sqrt(max((float_only_right + file_only_right) / samples - drop * drop, 0.0) / samples)
    return drop - z * spread <= limit


def _predict_tflite(model_file: TFLiteModel, images: np.ndarray, verbose: bool) -> np.ndarray:
    chunk = 100
    outputs = []
    for start in range(0, len(images), chunk):
        outputs.append(model_file.predict(images[start:start + chunk]))
        if verbose and len(images) > chunk:
            done = min(start + chunk, len(images))
            print(f"\r  verifying {model_file.path.name}: {done}/{len(images)}",
                  end="\n" if done == len(images) else "", file=sys.stderr, flush=True)
    return np.concatenate(outputs)
