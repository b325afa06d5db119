"""What the fine-tuning steps of tensorflow-model-optimization (pruning, clustering, QAT) are given to train
on, checked before tf_keras's `fit` meets it: its errors from inside a traced training step run to pages."""

from __future__ import annotations


def check_classifier(model, what: str) -> int:
    """The number of classes of `model`, a classifier (class scores per image); otherwise a ValueError."""
    if len(model.output_shape) != 2 or not any(layer.name == "conv_preds" for layer in model.layers):
        raise ValueError(f"{what} fine-tunes a classifier, and this model gives outputs of shape "
                         f"{tuple(model.output_shape[1:])} per image (no classifier: include_top=False?); build it "
                         "with its classifier, or apply it to the classifier and take the backbone after.")
    return int(model.output_shape[-1])


def check_batches(dataset, input_shape, classes: int, what: str, name: str = "train") -> None:
    """A tf.data dataset of (images [batch, H, W, C], one-hot float labels [batch, classes]) batches, or a
    ValueError that says what it gives instead. Other kinds of data (numpy arrays, generators) go to `fit`."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return
    spec = dataset.element_spec
    expected = (f"batches of (images [batch, {', '.join(str(s) for s in input_shape)}], one-hot labels "
                f"[batch, {classes}])")
    # (images, labels) or (images, labels, sample weights), as fit takes them
    if not (isinstance(spec, tuple) and len(spec) in (2, 3) and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise ValueError(f"{what}: `{name}` must give {expected}; it gives {spec}.")
    images, labels = spec[:2]
    # A shape tf.data can't tell (a py_function without set_shape) is left to fit.
    if images.shape.rank is not None and (
            images.shape.rank != 4 or not images.shape[1:].is_compatible_with(tf.TensorShape(list(input_shape)))):
        batched = " (unbatched? add .batch(32))" if images.shape.rank == 3 else ""
        raise ValueError(f"{what}: `{name}` must give {expected}; its images have shape {images.shape}{batched}.")
    if not images.dtype.is_floating:  # fine-tuned on 0..255 as if it were [-1, 1], the BatchNorm statistics drift
        raise ValueError(f"{what}: `{name}` gives {images.dtype.name} images; the model takes floats in its "
                         "input convention: scale raw pixels with mobilenet_keras.preprocess_input (datasets.load's "
                         "batches are scaled already).")
    if labels.shape.rank is not None and (labels.shape.rank != 2 or labels.shape[-1] not in (None, classes)):
        hint = " (class numbers? one-hot them: tf.one_hot(labels, classes))" if labels.shape.rank == 1 else ""
        raise ValueError(f"{what}: `{name}` must give {expected}; its labels are {labels.dtype.name} of shape "
                         f"{labels.shape}{hint}.")
