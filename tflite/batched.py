"""A Keras model run over images in batches of one shape.

A last batch shorter than the others makes Keras trace its predict function again, on every call; after a few
calls (a conversion runs the model and its copies many times, `verify` once per file) TensorFlow warns of
retracing, a warning the user can't act on, and each trace costs time. So the last batch is padded with copies
of the last image, and their outputs dropped: the outputs are the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def batch_outputs(model, images: np.ndarray, batch_size: int) -> Iterator[list[np.ndarray]]:
    """`model.predict_on_batch` over `images`, `batch_size` at a time: per batch, a list of its outputs (one
    array per model output), for that batch's real images only."""
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        real = len(chunk)
        if real < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        outputs = model.predict_on_batch(chunk)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        yield [np.asarray(output)[:real] for output in outputs]


def predict(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The outputs of a single-output `model` for `images` as float32, as `model.predict` gives them."""
    return np.concatenate([outputs[0] for outputs in batch_outputs(model, images, batch_size)]).astype(np.float32)
