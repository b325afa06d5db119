"""Small, seeded CIFAR-10 slices and a briefly fine-tuned classifier, shared by the tflite tests."""

from __future__ import annotations

import functools

import numpy as np

from mobilenet_keras.images import scan_folder, load_images
from tests.conftest import CIFAR, WEIGHTS_025, require


@functools.lru_cache(maxsize=None)
def cifar_slice(per_class: int, offset: int, size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """`per_class` images of each class starting at `offset` (sorted file order), uint8 at size x size."""
    folder = scan_folder(require(CIFAR))
    labels = np.asarray(folder.labels)
    picks = np.concatenate([np.flatnonzero(labels == c)[offset:offset + per_class]
                            for c in range(len(folder.class_names))])
    images, bad = load_images([folder.paths[i] for i in picks], (size, size))
    assert not bad
    return images, labels[picks], tuple(folder.class_names)


@functools.lru_cache(maxsize=None)
def frozen_backbone_classifier(size: int = 96, per_class: int = 200, epochs: int = 2):
    """The 0.25 ImageNet backbone, frozen, with a 10-class head trained briefly on CIFAR-10."""
    import keras

    from mobilenet_keras import preprocess_input

    require(WEIGHTS_025)
    keras.utils.set_random_seed(0)
    images, labels, _ = cifar_slice(per_class, 0, size)
    model = _build(size)
    for layer in model.layers:
        layer.trainable = layer.name == "conv_preds"
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(preprocess_input(images), labels, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model


def _build(size):
    import warnings

    from mobilenet_keras import MobileNetV1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the backbone file has no head: that's the point here
        return MobileNetV1(input_shape=(size, size, 3), alpha=0.25, classes=10, weights=str(WEIGHTS_025),
                           dropout=0.2)
