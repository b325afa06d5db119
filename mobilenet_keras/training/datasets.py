"""Image datasets for training: a folder of class subfolders, or the embedded `digits` set.

Every dataset yields `(images, one_hot_labels)` batches with images already in the model's input
convention ([-1, 1]); augmentation (random resized crop, optional horizontal flip) runs as Keras
preprocessing layers inside the tf.data pipeline, so the exported model stays free of it.

Bad files: a folder is checked before training. Files that are not readable images stop the run with
a message naming them (remove or convert them); grayscale, palette and RGBA images are converted to
RGB as they are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilenet_keras.images import IMAGE_SUFFIXES, load_image, scan_folder, tensorflow_format_problem
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE

DIGITS = "digits"


@dataclass
class ImageData:
    """Training and validation batches plus what a report needs about them."""

    train: object  # tf.data.Dataset of (float images in [-1, 1], one-hot labels), augmented
    validation: object
    train_plain: object  # the training batches without augmentation (calibration draws from these)
    class_names: list[str]
    image_size: int
    num_train: int
    num_validation: int
    source: str
    skipped: list[str] = field(default_factory=list)

    def validation_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All validation images and integer labels as numpy arrays (for verification and reports)."""
        return _arrays(self.validation)

    def calibration_arrays(self, count: int) -> np.ndarray:
        """Up to `count` training images, not augmented, for quantization calibration."""
        return _arrays(self.train_plain, count)[0]


def _arrays(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    images, labels, seen = [], [], 0
    for x, y in dataset:
        images.append(np.asarray(x))
        labels.append(np.argmax(np.asarray(y), axis=-1))
        seen += len(images[-1])
        if limit is not None and seen >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def augmentation(image_size: int, flip: bool = True):
    """Random resized crop (zoom in by up to 35% with independent width and height, then shift) and,
    for subjects without a handedness, a horizontal flip."""
    import keras

    layers = [
        keras.layers.RandomZoom(height_factor=(-0.35, 0.0), width_factor=(-0.35, 0.0), fill_mode="reflect"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect"),
    ]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    return keras.Sequential(layers, name="augmentation")


def _finish(train, validation, image_size, augment, flip, num_classes, cache):
    import tensorflow as tf

    def prepare(images, labels):
        images = tf.cast(images, tf.float32) * INPUT_SCALE + INPUT_OFFSET
        return images, tf.one_hot(tf.cast(labels, tf.int32), num_classes)

    train = train.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    validation = validation.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        train, validation = train.cache(), validation.cache()
    plain = train
    if augment:
        augmenter = augmentation(image_size, flip)
        train = train.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    autotune = tf.data.AUTOTUNE
    return train.prefetch(autotune), validation.prefetch(autotune), plain.prefetch(autotune)


def _check_images(folder) -> None:
    """Every file must be one TensorFlow's decoder reads (JPEG, PNG, GIF, BMP by their bytes, not their
    name) and whole (PIL reads it to the end); the message names them, the reason for the first."""
    bad, first_reason = [], None
    for path in folder.paths:
        problem = tensorflow_format_problem(path)
        if problem is None:
            try:
                load_image(path)
            except ValueError as exc:
                problem = str(exc).removeprefix(f"{path} ").rstrip(".")
        if problem is not None:
            bad.append(str(path))
            first_reason = first_reason or problem
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{len(bad)} file(s) are not images TensorFlow can read: {listed} (the first {first_reason}). "
                         "Remove or convert them, then rerun.")


def check_split(num_images: int, num_classes: int, validation_split: float, source) -> tuple[int, int]:
    """(training, validation) image counts, or a ValueError that says how many images the split needs."""
    import math

    num_validation = int(num_images * validation_split)  # as keras.utils.image_dataset_from_directory
    num_train = num_images - num_validation
    if num_validation < 1:
        need = math.ceil(1 / validation_split - 1e-9)
        raise ValueError(f"the validation split of {source} is empty: {num_images} images x validation fraction "
                         f"{validation_split:g} = {validation_split * num_images:.2f}, rounded down to 0. Need at "
                         f"least {need} images in all (about {math.ceil(need / max(num_classes, 1))} per class for "
                         f"{num_classes} classes), or a larger validation fraction.")
    return num_train, num_validation


def image_folder(path: str | os.PathLike, image_size: int = 96, batch_size: int = 32,
                 validation_split: float = 0.2, seed: int = 0, augment: bool = True, flip: bool = True,
                 check_files: bool = True, cache: bool = True) -> ImageData:
    """Batches from a folder with one subfolder per class (jpg, png, bmp, gif).

    Args:
        path: the folder.
        image_size: images are resized to image_size x image_size.
        batch_size: images per batch.
        validation_split: fraction held out for validation, drawn with `seed` (the same split every
            run with the same seed).
        augment: random resized crop (and flip) on the training batches.
        flip: include the horizontal flip (turn off for text, digits, or other handed subjects).
        check_files: open every file once first, so a bad file is named before training starts.
    """
    import keras

    folder = scan_folder(path)
    if folder.labels is None:
        raise ValueError(f"{path} has no class subfolders: put the images of each class in a folder of its own "
                         "(e.g. data/cat/*.jpg, data/dog/*.jpg).")
    counts = np.bincount(folder.labels, minlength=len(folder.class_names))
    empty = [name for name, count in zip(folder.class_names, counts) if not count]
    if empty:
        raise ValueError(f"class folder(s) {', '.join(empty)} in {path} hold no images ({', '.join(IMAGE_SUFFIXES)}).")
    present = [name for name, count in zip(folder.class_names, counts) if count]
    if len(present) < 2:
        raise ValueError(f"{path} has images in only one class ({', '.join(present)}); a classifier needs two or more.")
    if not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be between 0 and 1; got {validation_split}.")
    from mobilenet_keras.training.run_folder import check_class_names

    check_class_names(folder.class_names, path)
    num_train, num_validation = check_split(len(folder.paths), len(folder.class_names), validation_split, path)
    if check_files:
        _check_images(folder)
    common = dict(labels="inferred", label_mode="int", class_names=folder.class_names, color_mode="rgb",
                  batch_size=batch_size, image_size=(image_size, image_size), seed=seed,
                  validation_split=validation_split, interpolation="bilinear", verbose=False)
    train = keras.utils.image_dataset_from_directory(path, subset="training", shuffle=True, **common)
    validation = keras.utils.image_dataset_from_directory(path, subset="validation", shuffle=True, **common)
    train, validation, plain = _finish(train, validation, image_size, augment, flip, len(folder.class_names), cache)
    return ImageData(train, validation, plain, list(folder.class_names), image_size,
                     num_train, num_validation, str(path))


def digits(image_size: int = 64, batch_size: int = 32, validation_split: float = 0.2, seed: int = 0,
           augment: bool = True) -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upscaled to
    image_size and repeated over RGB: a real dataset that needs no download. No flip (digits are handed)."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0 * 255.0).astype(np.float32)[..., None]
    images = tf.image.resize(np.repeat(images, 3, axis=-1), (image_size, image_size), method="bilinear")
    images = np.clip(np.asarray(images), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - validation_split))
    train_idx, val_idx = order[:cut], order[cut:]
    train = tf.data.Dataset.from_tensor_slices((images[train_idx], labels[train_idx]))
    train = train.shuffle(len(train_idx), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    validation = tf.data.Dataset.from_tensor_slices((images[val_idx], labels[val_idx])).batch(batch_size)
    train, validation, plain = _finish(train, validation, image_size, augment, False, 10, True)
    return ImageData(train, validation, plain, [str(d) for d in range(10)], image_size, len(train_idx), len(val_idx),
                     DIGITS)


def load(source: str | os.PathLike, **kwargs) -> ImageData:
    """`digits` for the embedded set, otherwise a folder of class subfolders."""
    if str(source) == DIGITS:
        kwargs.pop("flip", None)
        kwargs.pop("check_files", None)
        return digits(**kwargs)
    if not Path(source).exists():
        raise ValueError(f"data folder {source} does not exist (or use --data digits for the embedded set).")
    return image_folder(source, **kwargs)
