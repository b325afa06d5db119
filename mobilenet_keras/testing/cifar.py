"""Small, seeded CIFAR-10 slices and classifiers from the real 0.25 ImageNet backbone, shared by tests
and benchmarks. Slices are taken in sorted file order: training images from offset 0, held-out
images from 200, calibration images from 400 (per class), so no image is in two roles."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from mobilenet_keras.images import load_images, scan_folder
from mobilenet_keras.testing.reference_data import CIFAR, WEIGHTS_025, require

SIZE = 96


@functools.lru_cache(maxsize=None)
def cifar_slice(per_class: int, offset: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """`per_class` images of each class starting at `offset` (sorted file order), uint8 at size x size."""
    folder = scan_folder(require(CIFAR))
    labels = np.asarray(folder.labels)
    picks = np.concatenate([np.flatnonzero(labels == c)[offset:offset + per_class]
                            for c in range(len(folder.class_names))])
    images, bad = load_images([folder.paths[i] for i in picks], (size, size))
    assert not bad
    return images, labels[picks], tuple(folder.class_names)


def _backbone_with_head(size: int):
    from mobilenet_keras import MobileNetV1

    require(WEIGHTS_025)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the backbone file has no head: that's the point here
        return MobileNetV1(input_shape=(size, size, 3), alpha=0.25, classes=10, weights=str(WEIGHTS_025),
                           dropout=0.2)


def _fit(model, size: int, per_class: int, epochs: int, learning_rate: float):
    import keras

    from mobilenet_keras import preprocess_input

    images, labels, _ = cifar_slice(per_class, 0, size)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(preprocess_input(images), labels, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


@functools.lru_cache(maxsize=None)
def classifier(size: int = SIZE, per_class: int = 200, epochs: int = 8):
    """The 0.25 ImageNet backbone, frozen, with a 10-class head trained on 2,000 CIFAR-10 images."""
    import keras

    keras.utils.set_random_seed(0)
    model = _backbone_with_head(size)
    for layer in model.layers:
        layer.trainable = layer.name == "conv_preds"
    return _fit(model, size, per_class, epochs, 3e-3)


@functools.lru_cache(maxsize=None)
def fine_tuned_classifier(size: int = SIZE, per_class: int = 200, epochs: int = 3):
    """The same, fine-tuned end to end (BatchNorm momentum 0.9 so its statistics follow the weights)."""
    import keras

    keras.utils.set_random_seed(0)
    model = _backbone_with_head(size)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return _fit(model, size, per_class, epochs, 1e-3)


@functools.lru_cache(maxsize=None)
def converted(mode: str, size: int = SIZE, denylist: str | None = None) -> Path:
    """`classifier()` converted in `mode` with 200 calibration images, once per test session (read-only);
    `denylist` is `tflite.convert`'s (None: fully integer, "auto": the float prefix)."""
    import tflite

    folder = Path(tempfile.mkdtemp(prefix="mobilenet_keras_cifar_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    calibration = cifar_slice(20, 400, size)[0]
    name = f"{mode}.tflite" if denylist is None else f"{mode}_{denylist}.tflite"
    return tflite.convert(classifier(size), folder / name, mode, representative_data=calibration, denylist=denylist)
