"""Pruning and weight clustering with tensorflow-model-optimization, through the tf_keras twin.

    pruned = compress.prune(model, data.train, sparsity=0.5)        # a Keras 3 model, half its 1x1 weights zero
    clustered = compress.cluster(model, data.train, clusters=16)   # 16 distinct values per 1x1 kernel
    tflite.convert(pruned, "model_pruned_int8.tflite", "int8", representative_data=calibration)
    tflite.convert(clustered, "model_clustered_int8.tflite", "int8", representative_data=calibration,
                   equalization=False, adaround=False)  # keeps the 16 values (see below)

Both act on the pointwise (1x1) convolutions, which hold nearly all of MobileNet's weights; the stem,
the depthwise kernels (9 weights per channel) and the classifier are left whole, as the MobileNet
pruning and clustering recipes do. The result is an ordinary Keras 3 model (the tfmot wrappers
stripped), converted and verified like any other; the saving shows after compression (`gzip_size`).
Convert a clustered model with `equalization=False, adaround=False`: equalization rescales each input
row of a 1x1 kernel and rounding by error moves single weights, which splits the clusters (pruned
zeros stay zero either way); for QAT of it, `qat.quantize(clustered, calibration, equalization=False,
rounding=False)`.
"""

from __future__ import annotations

import gzip
import numbers
import os
from pathlib import Path

import numpy as np

from mobilenet_keras import specs

DEFAULT_EPOCHS = 2
DEFAULT_LEARNING_RATE = 1e-4


def gzip_size(path: str | os.PathLike) -> int:
    """Bytes of the file after gzip -9: what an app download or an OTA update carries."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def sparsity(model, names: list[str] | None = None) -> float:
    """Fraction of exactly-zero weights in the named layers' kernels (default: the pointwise convolutions)."""
    kernels = [model.get_layer(name).get_weights()[0] for name in (names or specs.pointwise_names())]
    return float(sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels))


def _steps(model, dataset, what: str) -> int:
    """Training steps per epoch of `dataset`, checked to be (images, one-hot labels) batches for `model`."""
    import tensorflow as tf

    from mobilenet_keras.optimize.batches import check_batches, check_classifier

    classes = check_classifier(model, what)
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"{what}: the training data must be a finite, batched tf.data.Dataset (e.g. ImageData.train); "
                         f"got {type(dataset).__name__}.")
    count = int(dataset.cardinality())
    if count == tf.data.UNKNOWN_CARDINALITY:  # e.g. after .filter() or from a generator: finite, but how long?
        raise ValueError(f"{what}: tf.data can't tell how many batches the training data holds (a filter or a "
                         "generator), and the pruning schedule needs it: add "
                         ".apply(tf.data.experimental.assert_cardinality(BATCHES)).")
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError(f"{what}: the training data repeats forever; pass one epoch of it (no .repeat()).")
    if count < 1:
        raise ValueError(f"{what}: the training data holds no batches.")
    check_batches(dataset, model.input_shape[1:], classes, what)
    return count


def _back_to_keras(stripped, like):
    import keras

    from mobilenet_keras.weights import transfer_weights

    model = keras.models.clone_model(like)
    transfer_weights(stripped, model)
    return model


def prune(model, train, *, sparsity: float = 0.5, epochs: int = DEFAULT_EPOCHS,
          learning_rate: float = DEFAULT_LEARNING_RATE, verbose: int = 1):
    """Magnitude pruning of the pointwise convolutions to `sparsity`, with polynomial decay over the training.

    Args:
        model: a trained Keras 3 MobileNet.
        train: batched `tf.data.Dataset` of (images in the model's convention, one-hot labels).
        sparsity: final fraction of zero weights in each pointwise kernel, in (0, 1).
        epochs, learning_rate: the pruning fine-tune (Adam).

    Returns:
        A Keras 3 model of the same architecture with the pruned weights.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be a number between 0 and 1 (e.g. 0.5); got {sparsity!r}.")
    sparsity = float(sparsity)
    from mobilenet_keras.optimize.qat import fit_tf_keras
    from mobilenet_keras.optimize.tfmot_loader import load_tfmot
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    end = max(_steps(model, train, "prune") * epochs - 1, 1)
    twin = tf_keras_twin(model)
    targets = set(specs.pointwise_names())
    with load_tfmot() as (tfmot, _):
        import tf_keras

        schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                                         begin_step=0, end_step=end, frequency=max(end // 10, 1))

        def wrap(layer):
            if layer.name in targets:
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        pruned = tf_keras.models.clone_model(twin, clone_function=wrap)
        fit_tf_keras(pruned, train, None, epochs, learning_rate, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
                     verbose=verbose)
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    return _back_to_keras(stripped, model)


def cluster(model, train, *, clusters: int = 16, epochs: int = DEFAULT_EPOCHS,
            learning_rate: float = DEFAULT_LEARNING_RATE, verbose: int = 1):
    """Weight clustering of the pointwise convolutions: each kernel keeps `clusters` distinct values.

    Centroids start by k-means++ and train with the weights (tfmot's `cluster_weights`). Returns a
    Keras 3 model of the same architecture with the clustered weights.
    """
    if isinstance(clusters, bool) or not isinstance(clusters, numbers.Integral) or not 2 <= clusters <= 256:
        raise ValueError(f"clusters must be an integer from 2 to 256 (e.g. 16); got {clusters!r}.")
    clusters = int(clusters)
    from mobilenet_keras.optimize.qat import fit_tf_keras
    from mobilenet_keras.optimize.tfmot_loader import load_tfmot
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    _steps(model, train, "cluster")
    twin = tf_keras_twin(model)
    targets = set(specs.pointwise_names())
    with load_tfmot() as (tfmot, _):
        import tf_keras

        init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS

        def wrap(layer):
            if layer.name in targets:
                return tfmot.clustering.keras.cluster_weights(layer, number_of_clusters=clusters,
                                                              cluster_centroids_init=init)
            return layer

        clustered = tf_keras.models.clone_model(twin, clone_function=wrap)
        fit_tf_keras(clustered, train, None, epochs, learning_rate, verbose=verbose)
        stripped = tfmot.clustering.keras.strip_clustering(clustered)
    return _back_to_keras(stripped, model)
