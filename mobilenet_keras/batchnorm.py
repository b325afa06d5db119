"""BatchNormalization that trains through TensorFlow's fused kernel.

Keras 3 (3.15) normalizes with separate moment, subtract, scale and shift ops on every backend, forward and
backward. On a CPU those ops over MobileNet's large early feature maps cost more than the convolutions:
measured side by side in one process (benchmarks/training_step_speed.py), a whole MobileNet 0.25 training
step at 128 px ran 1.5x faster with `FusedBatchNormV3` doing the normalization and its gradient.
tf_keras used the fused kernel by default; Keras 3 dropped it.

A saved `.keras` file records it as plain `keras.layers.BatchNormalization` (its config and weights are
that layer's), so the file loads wherever Keras does, without this package; loaded so, it trains with
Keras's own ops again. Only the training path changes. Inference (`training=False`, a frozen layer, the
SavedModel, the TFLite converter, which folds BatchNormalization into the convolution) runs Keras's own
code, so a model's answers
are the ones `keras.layers.BatchNormalization` gives. Whatever the fused kernel can't do (a mask, renorm,
synchronized statistics, float16/bfloat16 inputs, a non-last axis, another backend) also falls back to it.
"""

from __future__ import annotations

import keras


# Named like Keras's layer on purpose: a .keras file stores each layer's weights under a path made from its
# class name, so only this name lets Keras's own BatchNormalization find them when the file is loaded.
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with the same arguments, weights, config and inference outputs,
    whose training step runs TensorFlow's fused kernel.

    The moving statistics follow Keras's rule exactly: `moving = moving * momentum + batch * (1 -
    momentum)` with the biased batch variance (the fused kernel returns the Bessel-corrected one, which is
    scaled back).
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], inputs.dtype)
        beta = self.beta if self.center else tf.zeros([channels], inputs.dtype)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
        variance = variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _fused_applies(self, inputs, training, mask) -> bool:
        return (training is True and self.trainable and mask is None and not self.renorm
                and not self.synchronized and keras.backend.backend() == "tensorflow"
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and inputs.shape[-1] is not None
                and keras.backend.standardize_dtype(inputs.dtype) == "float32" and self.compute_dtype == "float32")


def _serialize_as_keras_batchnorm() -> None:
    # Keras writes a class's public `keras.*` name into saved files when its export table has one. Listing
    # this subclass under BatchNormalization's name (one way only: loading still finds Keras's class) keeps
    # .keras files free of a dependency on this package. The table is internal to Keras (pinned to 3.15 in
    # setup.cfg); without it the layer is registered as a custom class instead.
    try:
        from keras.src import api_export
    except ImportError:
        api_export = None
    table = getattr(api_export, "REGISTERED_OBJS_TO_NAMES", None)
    if isinstance(table, dict) and table.get(keras.layers.BatchNormalization):
        table[BatchNormalization] = table[keras.layers.BatchNormalization]
    else:
        keras.saving.register_keras_serializable(package="mobilenet_keras")(BatchNormalization)


_serialize_as_keras_batchnorm()
