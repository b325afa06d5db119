"""Small, seeded CIFAR-10 slices and classifiers from the real 0.25 ImageNet backbone, shared by tests
and benchmarks. Slices are taken in sorted file order: training images from offset 0, held-out
images from 200, calibration images from 400 (per class), so no image is in two roles.

The classifier and its converted files take minutes to make. Within a process they are made once; after
`share_across_processes(folder)` (the test suite's conftest calls it with the folder its pytest-xdist workers
share) they are also made once for all processes, under a file lock, and read from there by the others."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from mobilenet_keras.images import load_images, scan_folder
from mobilenet_keras.testing.reference_data import CIFAR, WEIGHTS_025, require

SIZE = 96

_shared: list[Path] = []  # the folder that processes share their classifiers and files in, once set


def share_across_processes(folder: str | Path) -> None:
    """Keep the classifiers and converted files in `folder`, made by the first process that asks for one (the
    others wait for it and load it). Every process that shares the folder must run this module's code."""
    _shared[:] = [Path(folder)]


@contextlib.contextmanager
def _made_once(name: str):
    """The path `name` in the shared folder, held under its lock: the caller makes the file there when it
    does not exist yet (atomically: a process killed midway leaves no file). Without a shared folder, a
    path in a folder of this process's own."""
    if not _shared:
        yield _own_folder() / name
        return
    folder = _shared[0]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder / name


@functools.lru_cache(maxsize=None)
def _own_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mobilenet_keras_cifar_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


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
    from mobilenet_keras.training.trainer import build_optimizer

    images, labels, _ = cifar_slice(per_class, 0, size)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    build_optimizer(model)
    model.fit(preprocess_input(images), labels, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def _trained_once(name: str, train):
    """`train()`'s model, or the one saved under `name` in the shared folder by the process that trained it."""
    import keras

    from mobilenet_keras.files import atomic_path

    with _made_once(f"{name}.keras") as path:
        if path.exists():
            return keras.saving.load_model(path)
        model = train()
        if _shared:  # another process may ask for it
            with atomic_path(path) as scratch:
                model.save(scratch)
        return model


@functools.lru_cache(maxsize=None)
def classifier(size: int = SIZE, per_class: int = 200, epochs: int = 8):
    """The 0.25 ImageNet backbone, frozen, with a 10-class head trained on 2,000 CIFAR-10 images."""
    def train():
        import keras

        keras.utils.set_random_seed(0)
        model = _backbone_with_head(size)
        for layer in model.layers:
            layer.trainable = layer.name == "conv_preds"
        return _fit(model, size, per_class, epochs, 3e-3)

    return _trained_once(f"classifier_{size}_{per_class}_{epochs}", train)


@functools.lru_cache(maxsize=None)
def fine_tuned_classifier(size: int = SIZE, per_class: int = 200, epochs: int = 3):
    """The same, fine-tuned end to end (BatchNorm momentum 0.9 so its statistics follow the weights)."""
    def train():
        import keras

        keras.utils.set_random_seed(0)
        model = _backbone_with_head(size)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        return _fit(model, size, per_class, epochs, 1e-3)

    return _trained_once(f"fine_tuned_classifier_{size}_{per_class}_{epochs}", train)


@functools.lru_cache(maxsize=None)
def converted(mode: str, size: int = SIZE, denylist: str | None = None) -> Path:
    """`classifier()` converted in `mode` with 200 calibration images, once per test session (read-only);
    `denylist` is `tflite.convert`'s (None: fully integer, "auto": the float prefix)."""
    import tflite

    name = f"cifar_{size}_{mode}.tflite" if denylist is None else f"cifar_{size}_{mode}_{denylist}.tflite"
    with _made_once(name) as path:
        if path.exists():
            return path
        calibration = cifar_slice(20, 400, size)[0]
        return tflite.convert(classifier(size), path, mode, representative_data=calibration, denylist=denylist)
