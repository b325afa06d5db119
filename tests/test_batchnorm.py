"""The fused BatchNormalization against Keras's own: same outputs, gradients and moving statistics."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mobilenet_keras import MobileNetV1
from mobilenet_keras.batchnorm import BatchNormalization as FusedBatchNormalization


def _pair(**kwargs):
    keras.utils.set_random_seed(0)
    ours, theirs = FusedBatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
    x = np.random.default_rng(0).normal(3.0, 2.0, (4, 6, 5, 8)).astype("float32")
    ours.build(x.shape)
    theirs.build(x.shape)
    rng = np.random.default_rng(1)
    values = [rng.uniform(0.5, 2.0, v.shape).astype("float32") for v in ours.weights]
    for weights in (ours.weights, theirs.weights):
        for variable, value in zip(weights, values):
            variable.assign(value)
    return ours, theirs, x


@pytest.mark.parametrize("kwargs", [{}, {"center": False}, {"scale": False}, {"momentum": 0.5, "epsilon": 0.01}])
def test_training_step_matches_keras(kwargs):
    ours, theirs, x = _pair(**kwargs)
    results = []
    for layer in (ours, theirs):
        x_tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_tensor)
            y = layer(x_tensor, training=True)
            loss = tf.reduce_sum(y * tf.sin(tf.range(8, dtype=tf.float32)))  # not symmetric in channels
        grads = tape.gradient(loss, [x_tensor] + layer.trainable_weights)
        results.append((y.numpy(), [g.numpy() for g in grads], [v.numpy() for v in layer.non_trainable_weights]))
    (y1, g1, s1), (y2, g2, s2) = results
    np.testing.assert_allclose(y1, y2, atol=1e-4)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-3)
    for a, b in zip(s1, s2):  # moving mean and the biased moving variance, as Keras updates them
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(s1[0], 0.0)


def test_inference_and_frozen_layers_are_keras_own():
    ours, theirs, x = _pair()
    np.testing.assert_array_equal(ours(x, training=False), theirs(x, training=False))
    ours.trainable = theirs.trainable = False
    before = [v.numpy() for v in ours.non_trainable_weights]
    np.testing.assert_array_equal(ours(x, training=True), theirs(x, training=True))
    for a, b in zip(before, ours.non_trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_falls_back_where_the_kernel_does_not_apply():
    ours, theirs, _ = _pair(axis=1)  # normalizes over rows, not channels
    x = np.random.default_rng(2).normal(size=(4, 6, 5, 8)).astype("float32")
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True), atol=1e-5)
    flat = FusedBatchNormalization()
    np.testing.assert_allclose(flat(np.ones((3, 4), "float32") * [[1], [2], [3]], training=True),
                               np.ones((3, 4)) * [[-1.2247], [0], [1.2247]], atol=1e-3)


def test_a_saved_model_loads_in_plain_keras_without_the_package(tmp_path):
    """The .keras file names keras.layers.BatchNormalization: a process that never imports mobilenet_keras
    loads it (safe mode) and gives the same predictions."""
    import subprocess
    import sys

    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None)
    kinds = {type(layer) for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert kinds == {FusedBatchNormalization}
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, keras\n"
            f"model = keras.models.load_model({str(tmp_path / 'm.keras')!r}, safe_mode=True)\n"
            "assert type(model.get_layer('conv_dw_3_bn')) is keras.layers.BatchNormalization\n"
            "assert not [m for m in sys.modules if m.startswith('mobilenet_keras')]\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), atol=1e-6)


def test_fit_under_the_fused_layers_follows_keras():
    """One SGD step of a small MobileNet: the same weights and statistics as with Keras's layer."""
    x = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 3
    results = []
    for fused in (True, False):
        keras.utils.set_random_seed(0)
        model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None, dropout=0.0)
        if not fused:
            model = keras.models.clone_model(model, clone_function=lambda layer: (
                keras.layers.BatchNormalization.from_config(layer.get_config())
                if isinstance(layer, FusedBatchNormalization) else layer.__class__.from_config(layer.get_config())))
        results.append(model)
    results[1].set_weights(results[0].get_weights())
    for model in results:
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in results[1].layers)
    for a, b in zip(results[0].get_weights(), results[1].get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-3)
