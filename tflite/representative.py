"""Representative (calibration and verification) data in every form a user has it, as one float array.

Conventions, in one place:
- float arrays, tensors and datasets are taken to be in the model's own input convention
  (for MobileNet, pixels already scaled to [-1, 1] by `preprocess_input`);
- uint8 arrays are raw RGB pixels and are scaled with `preprocess_input` here;
- a folder of images (class subfolders or flat) is read with `mobilenet_keras.images.load_images`
  (TensorFlow's decoders and the package's one resize, the pixels training, predict and the
  SavedModel see), resized to the model's input size and scaled with `preprocess_input`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mobilenet_keras.images import load_images, scan_folder
from mobilenet_keras.preprocessing import preprocess_input


# When no limit is given, a dataset or iterable (which may be endless: `Dataset.repeat()`, a
# generator) is read up to this many images, with a warning if there were more.
DEFAULT_CAP = 10_000
# How many images calibrate a file by default (converter, per-layer debugger, QAT ranges, the pipeline):
# 50, 200 and 500 gave the same int8 files here, and 200 keeps a class-folder sample balanced.
CALIBRATION_IMAGES = 200


def is_labelled_pair(batch) -> bool:
    """True for an `(images, labels)` pair: two items, the second of fewer dimensions than the first
    (labels (N,), (N, 1) or one-hot (N, classes) beside images (N, H, W, C); a scalar label beside one
    (H, W, C) image). Two images (`[img, img]`) have equal dimensions and are images, not a pair."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        return False
    first, second = np.ndim(batch[0]), np.ndim(batch[1])
    return first in (3, 4) and second < first and second <= 2


def check_single_image_input(model, what: str) -> None:
    """Refuse a model that does not take one batch of images (N, H, W, C): `what` names the caller."""
    if isinstance(model, (str, os.PathLike)):
        raise TypeError(f"{what} takes a Keras model, not a path ({model}); load it first: "
                        "keras.models.load_model(path).")
    if not (hasattr(model, "layers") and hasattr(model, "predict")):
        raise TypeError(f"{what} takes a Keras model (keras.Model); got {type(model).__name__}.")
    if not hasattr(model, "input_shape"):  # a Sequential or subclassed model not yet built on an input
        raise ValueError(f"{what} takes a model built on an input of known shape; this {type(model).__name__} has "
                         "none yet: start it with keras.Input((height, width, 3)).")
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) > 1:
        names = ", ".join(getattr(t, "name", "?") for t in inputs)
        raise ValueError(f"{what} takes a model with one image input; this one has {len(inputs)} ({names}). Wrap "
                         "the part that takes the images in a model of its own.")
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    if shape is not None and len(shape) != 4:
        raise ValueError(f"{what} takes a model whose input is a batch of images (batch, height, width, "
                         f"channels); this one takes {tuple(shape)}.")


# Fewer distinct calibration images than this get a warning: int8 ranges from a handful of images
# clip the inputs unlike them (the converter's default draws CALIBRATION_IMAGES).
FEW_DISTINCT_IMAGES = 50


def _image_keys(images: np.ndarray) -> list[bytes]:
    import hashlib

    return [hashlib.blake2b(memoryview(np.ascontiguousarray(image)).cast("B"), digest_size=16).digest()
            for image in images]


def distinct_labelled_images(images: np.ndarray, labels=None) -> tuple[np.ndarray, int, int]:
    """(indices of the first of each distinct image of `images` whose copies all carry one label, in order; the
    number of distinct images; how many of them carry two labels or more). An image filed under two classes
    has no known class: keeping its first copy would count the answer for that copy's class right."""
    first: dict[bytes, int] = {}
    seen_labels: dict[bytes, set] = {}
    labels = None if labels is None else np.asarray(labels)
    for i, key in enumerate(_image_keys(images)):
        first.setdefault(key, i)
        if labels is not None:
            seen_labels.setdefault(key, set()).add(labels[i].tobytes())
    conflicting = {key for key, found in seen_labels.items() if len(found) > 1}
    keep = sorted(i for key, i in first.items() if key not in conflicting)
    return np.asarray(keep, dtype=np.int64), len(first), len(conflicting)


def warn_if_few_distinct(calibration: np.ndarray) -> None:
    """A warning when a calibration set holds fewer than FEW_DISTINCT_IMAGES different images."""
    count = distinct_labelled_images(calibration)[1]
    if count < FEW_DISTINCT_IMAGES:
        repeats = f" ({len(calibration)} with repeats)" if count < len(calibration) else ""
        warnings.warn(f"calibrating on {count} distinct image(s){repeats}: a file calibrated on so few fits them "
                      f"and clips or misjudges inputs unlike them; give {CALIBRATION_IMAGES} or so images like the "
                      "real ones.", stacklevel=3)


def warn_if_unit_range(images: np.ndarray, what: str, stacklevel: int = 3) -> None:
    """A warning when images meant to be in MobileNet's [-1, 1] all lie in [0, 1] (scaled by 1/255, not by
    preprocess_input): the model, its file and the verdict then see the wrong pixels."""
    if len(images) and float(images.min()) >= 0.0 and float(images.max()) <= 1.0 and float(images.max()) > 0.0:
        warnings.warn(f"{what} all lie in [0, 1], but the model takes pixels on [-1, 1]: they look divided by 255 "
                      "rather than passed through preprocess_input (x / 127.5 - 1); give uint8 pixels or "
                      "preprocess_input's output.", stacklevel=stacklevel)


def _as_float_images(batch, where: str) -> np.ndarray:
    if isinstance(batch, (str, os.PathLike)) or (isinstance(batch, (list, tuple)) and batch
                                                 and all(isinstance(x, (str, os.PathLike)) for x in batch)):
        raise ValueError(f"{where}: got file names, not images; pass the folder that holds them (or load them with "
                         "mobilenet_keras.images.load_image).")
    if isinstance(batch, dict):
        raise ValueError(f"{where}: got a dict ({', '.join(map(str, batch))}), not images; map the dataset to the "
                         "images, or to (images, labels) pairs, e.g. dataset.map(lambda d: (d['image'], d['label'])).")
    if is_labelled_pair(batch):
        batch = batch[0]
    elif isinstance(batch, tuple) and len(batch) == 1 and np.ndim(batch[0]) in (3, 4):
        batch = batch[0]  # (images,) from a dataset of 1-tuples
    array = np.asarray(batch)
    if array.dtype == np.uint8:
        array = preprocess_input(array)
    elif array.dtype.kind in "US" or array.dtype == object and all(isinstance(x, (str, os.PathLike)) for x in batch):
        raise ValueError(f"{where}: got file names, not images; pass the folder that holds them (or load them with "
                         "mobilenet_keras.images.load_image).")
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: images must be float (model convention) or uint8 (raw pixels); got {array.dtype}.")
    array = array.astype(np.float32, copy=False)
    if array.ndim == 3:
        array = array[None]
    return array


def collect(data, input_shape: tuple, limit: int | None = None, seed: int = 0,
            labels_out: list | None = None, cap: int = DEFAULT_CAP,
            class_names_out: list | None = None) -> np.ndarray:
    """Turn `data` into a float32 array of shape (N, H, W, C) in the model's input convention.

    Args:
        data: a numpy array, a `tf.data.Dataset`, an iterable of batches (or of `(images, labels)`
            pairs), or the path to a folder of images. A list of images (`[img, img]`) is images.
        input_shape: the model's input shape without the batch, e.g. `(224, 224, 3)`; `None`
            sides accept any size (arrays) or 224 (folders).
        limit: keep at most this many images (a folder is sampled evenly across classes). Reading
            stops as soon as that many are read.
        labels_out: if a list is given, the labels found (folder classes, or dataset labels) are
            appended to it, in the order of the returned images.
        cap: without a `limit`, read at most this many images of a dataset or iterable (which may be
            endless) and warn if more were there; arrays and folders are read whole.
        class_names_out: if a list is given and `data` is a folder of class folders, their names (the
            labels' order) are appended to it: the folder is scanned once.

    Raises:
        ValueError: empty data, non-finite values, or images of the wrong shape.
        TypeError: no data (None).
    """
    if data is None:
        raise TypeError("the images are None; give a numpy array, a tf.data.Dataset, an iterable of batches or the "
                        "path to a folder of images.")
    height, width, channels = input_shape
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None; got {limit!r}.")
    if isinstance(data, (str, os.PathLike)):
        array, labels, names = _from_folder(Path(data), (height or 224, width or 224), limit, seed)
        if labels_out is not None and labels is not None:
            labels_out.extend(labels)
        if class_names_out is not None and labels is not None:
            class_names_out.extend(names)
    else:
        dataset = hasattr(data, "as_numpy_iterator")
        tensor = not dataset and hasattr(data, "shape") and hasattr(data, "dtype")  # numpy or a framework tensor
        if tensor or (not isinstance(data, Iterable) and not dataset) or is_labelled_pair(data):
            batches, bound = [data], None
        else:
            if hasattr(data, "as_numpy_iterator"):
                data = data.as_numpy_iterator()
            batches, bound = data, limit if limit is not None else cap
        array = _read_batches(batches, bound, limit is None, height, width, channels, labels_out)
    if limit is not None:
        array = array[:limit]
    if labels_out is not None and len(labels_out) > len(array):
        del labels_out[len(array):]
    if len(array) == 0:
        raise ValueError("representative data is empty: give at least one image.")
    expected = (height, width, channels)
    if array.ndim != 4 or any(e is not None and e != g for e, g in zip(expected, array.shape[1:])):
        raise ValueError(
            f"representative images have shape {array.shape[1:]}, but the model takes {expected} "
            "(height, width, channels); resize them, or pass a folder of images (read and resized for you)."
        )
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=(1, 2, 3)).sum())
        raise ValueError(f"representative data has NaN or infinite values in {bad} image(s); clean them first.")
    return array


def _read_batches(batches, bound: int | None, capped: bool, height, width, channels, labels_out) -> np.ndarray:
    """Images of `batches` until `bound` are read (None: all); stops there, never reads an endless source on."""
    arrays, count = [], 0
    iterator = iter(batches)
    for batch in iterator:
        if is_labelled_pair(batch) and labels_out is not None:
            found = np.asarray(batch[1])
            if found.ndim == 2 and found.shape[1] > 1:
                found = found.argmax(1)  # one-hot labels
            labels_out.extend(found.reshape(-1).tolist())
        images = _as_float_images(batch, "representative data")
        if arrays and images.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"representative data: images of different sizes ({arrays[0].shape[1:]} and "
                             f"{images.shape[1:]}); resize them to the model's input, or pass the folder that holds "
                             "them and let it resize.")
        arrays.append(images)
        count += len(images)
        if bound is not None and count >= bound:
            if capped and next(iterator, None) is not None:
                warnings.warn(f"read the first {bound} images of a dataset or iterable that has more (or is "
                              "endless); pass a limit (max_samples for verify) to read another number.",
                              stacklevel=4)
            break
    if not arrays:
        return np.zeros((0, height or 1, width or 1, channels), np.float32)
    return np.concatenate(arrays)[:bound] if bound is not None else np.concatenate(arrays)


def _from_folder(folder: Path, size: tuple[int, int], limit: int | None, seed: int):
    found = scan_folder(folder)
    order = np.arange(len(found.paths))
    if limit is not None and limit < len(order):
        rng = np.random.default_rng(seed)
        if found.labels is not None:
            # Round-robin over shuffled classes, so a small calibration set still covers every class.
            by_class = [rng.permutation(np.flatnonzero(np.asarray(found.labels) == c))
                        for c in range(len(found.class_names))]
            order = np.array([i for group in _interleave(by_class) for i in group])[:limit]
        else:
            order = rng.permutation(order)[:limit]
    paths = [found.paths[i] for i in order]
    images, bad = load_images(paths, size)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {folder}: "
                      f"{', '.join(str(p) for p in bad[:5])}{' ...' if len(bad) > 5 else ''}", stacklevel=3)
    labels = None
    if found.labels is not None:
        bad_set = set(bad)
        labels = [found.labels[i] for i in order if found.paths[i] not in bad_set]
    return preprocess_input(images), labels, found.class_names


def _interleave(groups):
    longest = max((len(g) for g in groups), default=0)
    for k in range(longest):
        yield [g[k] for g in groups if k < len(g)]
