"""Quantization-aware training (QAT) of a trained Keras 3 MobileNet with tensorflow-model-optimization.

    from mobilenet_keras.optimize import qat
    qat_model = qat.quantize(model, calibration)          # folded tf_keras twin, ranges from calibration
    qat.fine_tune(qat_model, data.train, data.validation, epochs=2)
    tflite.convert(qat_model, "model_qat.tflite", "qat")   # int8 with the trained ranges

tfmot accepts only tf_keras models, so QAT runs on a tf_keras twin built from the same block table
(`mobilenet_keras.optimize.tf_keras_twin`) in the form TFLite runs: each BatchNorm folded into the convolution before
it, so that training sees the weights (and their per-channel int8 grid) the file will hold. Before
training, every quantizer range is set from the model itself (weights) and from calibration images
(activations): tfmot's defaults ([-6, 6] for every activation, [0, 0] for the input) start QAT at
chance accuracy.

tfmot is imported only inside these functions: importing it sets TF_USE_LEGACY_KERAS=1 for the
process, which is restored right after, so Keras 3 code keeps working beside a QAT run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mobilenet_keras import specs
from mobilenet_keras.optimize.tfmot_loader import load_tfmot
from tflite.representative import CALIBRATION_IMAGES

DEFAULT_EPOCHS = 2
DEFAULT_LEARNING_RATE = 1e-5
_INPUT_STEP = 2.0 / 255.0  # MobileNet's [-1, 1] (mobilenet_keras.preprocessing) over int8's 256 levels
# The input quantizer's range: [-1, 1] moved up half a step, so that its zero point is a whole number
# (-1 / step = -127.5 is not; TensorFlow's FakeQuant and TFLite's converter round that .5 differently,
# and every white pixel then differed by one step between the QAT model and its file) and so that
# each of the 256 pixel values has a step of its own (int8 zero point -1: pixel k -> k - 128). The
# input quantizer keeps it through training (`qat_scheme.FixedInputQuantizer`).
INPUT_RANGE = (-127 * _INPUT_STEP, 128 * _INPUT_STEP)


def folded_twin(model):
    """A tf_keras model of `model` with every BatchNorm folded into its convolution (same outputs, to rounding)."""
    import tf_keras

    from mobilenet_keras.folding import folded_weights
    from mobilenet_keras.model import build_network
    from mobilenet_keras.optimize.tf_keras_twin import architecture_of, check_only_mobilenet_layers

    twin = build_network(tf_keras, fold_batchnorm=True, **architecture_of(model))
    check_only_mobilenet_layers(model, twin, folded=True)
    for name, values in folded_weights(model).items():
        twin.get_layer(name).set_weights(values)
    if any(layer.name == "conv_preds" for layer in model.layers):
        twin.get_layer("conv_preds").set_weights(model.get_layer("conv_preds").get_weights())
    return twin


def quantize(model, calibration=None, num_calibration: int = CALIBRATION_IMAGES, equalization: bool = True,
             rounding: bool = True):
    """A quantization-aware tf_keras model of the Keras 3 `model`, ready to `fine_tune` and convert.

    Args:
        model: a trained Keras 3 MobileNet (from `MobileNetV1` or `mobilenet_keras.training.trainer`).
        calibration: images (in any form `tflite.representative.collect` takes) to set the activation
            ranges from, and to prepare the weights with, before training; None copies the weights as
            they are and leaves tfmot's initial ranges (for loading saved weights).
        num_calibration: how many of them to use.
        equalization: with calibration images, start from the model that `tflite.convert(...,
            equalization=True)` quantizes: dead channels absorbed into the next layer and each ReLU6
            output's channels equalized over [0, 6] (`tflite.equalization`; the float outputs stay the
            same), so that training starts on the finer int8 grid. False absorbs the dead channels only
            (an exact change).
        rounding: with calibration images, start from the weights the converter's fully integer file
            holds (with `equalization=True`, as the converter's default): each folded kernel rounded up
            or down on the int8 grid to keep its layer's output (`tflite.adaround`, with its bias
            correction), so that the QAT model before training computes what that file computes. False
            starts from the unrounded weights with bias correction only.

    Returns:
        A `tf_keras.Model` whose convolutions and activations are fake-quantized as in the int8 file.
    """
    images = None
    if calibration is not None:
        from tflite.bias_correction import bias_corrected
        from tflite.equalization import prepare
        from tflite.representative import collect

        images = collect(calibration, tuple(model.input_shape[1:]), limit=num_calibration)
        model, _ = prepare(model, images, equalization=equalization)
        if rounding:
            # Weights already on the grid: the fake quantizers then round them to themselves, and training
            # starts where post-training quantization ends instead of at nearest rounding.
            from tflite.adaround import rounded_or_bias_corrected

            model = rounded_or_bias_corrected(model, images, bias_correction=True)
        else:
            # The expected int8 rounding error of each convolution folded into its bias
            # (tflite.bias_correction), as post-training quantization does by default.
            model = bias_corrected(model, images)
    twin = folded_twin(model)
    with load_tfmot() as (tfmot, scheme):
        import tf_keras

        def annotate(layer):
            if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
                config = scheme.ConvWeightsConfig(depthwise=True)
            elif isinstance(layer, tf_keras.layers.Conv2D) and layer.name != "conv_preds":
                config = scheme.ConvWeightsConfig()
            else:
                return tfmot.quantization.keras.quantize_annotate_layer(layer)
            return tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=config)

        annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
        annotated.set_weights(twin.get_weights())
        with tfmot.quantization.keras.quantize_scope(scheme.CUSTOM_OBJECTS):
            qat_model = tfmot.quantization.keras.quantize_apply(annotated, scheme.FoldedMobileNetScheme())
    if images is not None:
        init_ranges(qat_model, twin, images)
    return qat_model


def set_weight_ranges(qat_model) -> None:
    """Set every weight quantizer's per-channel range to its kernel's current max |w| (TFLite's scheme).

    tfmot's LastValue quantizers record the range of the last training batch's weights, one optimizer
    step behind the final weights; this brings them level with the weights the file will hold.
    """
    from mobilenet_keras.optimize.qat_scheme import channel_bounds

    for layer in qat_model.layers:
        for weight, quantizer, ranges in getattr(layer, "_weight_vars", []):
            low = ranges["min_var"]
            bound = np.abs(np.asarray(weight)).reshape(-1, low.shape[0]).max(axis=0)
            if type(quantizer).__name__ == "PerChannelWeightsQuantizer":
                bound = channel_bounds(bound)
            low.assign(-bound)
            ranges["max_var"].assign(bound)


def init_ranges(qat_model, float_twin, images: np.ndarray, input_range=INPUT_RANGE) -> None:
    """Set the QAT model's input, weight and activation ranges before training.

    Activations take the min and max (with 0 inside) that `float_twin` reaches on `images`, as
    post-training calibration would; the input takes `input_range`; weights their own max |w|.
    """
    import tf_keras

    set_weight_ranges(qat_model)
    observed = []  # (float layer name, {"min_var", "max_var"}); read from tfmot's wrappers, not by
    # variable name, which tf_keras suffixes (_1, _2 ...) when a process builds a second QAT model
    for layer in qat_model.layers:
        if hasattr(layer, "quantizer_vars"):  # the QuantizeLayer on the input
            layer.quantizer_vars["min_var"].assign(input_range[0])
            layer.quantizer_vars["max_var"].assign(input_range[1])
        ranges = getattr(layer, "_output_quantizer_vars", None)
        if ranges:
            observed.append((layer.layer.name, ranges))
        for activation in getattr(layer, "_quantize_activations", []):
            if getattr(activation, "_post_activation_vars", None):
                observed.append((layer.layer.name, activation._post_activation_vars))
    probe = tf_keras.Model(float_twin.inputs, [float_twin.get_layer(name).output for name, _ in observed])
    outputs = probe.predict(images, batch_size=32, verbose=0)
    for (_, ranges), values in zip(observed, outputs):
        ranges["min_var"].assign(min(float(np.min(values)), 0.0))
        ranges["max_var"].assign(max(float(np.max(values)), 0.0))


PRESERVE = (None, "sparsity", "clusters")


def _preserving(qat_model, preserve: str, names: list[str]):
    """A callback that keeps the pointwise kernels pruned (zeros stay zero) or clustered (values stay put)."""
    import tf_keras

    kernels = []
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in names:
            kernel = layer._weight_vars[0][0]
            values = np.asarray(kernel)
            kernels.append((kernel, values != 0 if preserve == "sparsity" else values))

    class Preserve(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for kernel, kept in kernels:
                kernel.assign(kernel * kept if preserve == "sparsity" else kept)

    return Preserve()


def ends_in_softmax(model) -> bool:
    """True when `model`'s last layer (inside tfmot's wrappers, if any) applies a softmax, False when it gives
    logits (no activation); a ValueError for another activation, which no classification loss here reads."""
    from mobilenet_keras.weights import unwrapped

    activation = getattr(getattr(unwrapped(model.layers[-1]), "activation", None), "__name__", "linear")
    if activation in ("softmax", "linear"):
        return activation == "softmax"
    raise ValueError(f"{model.name} ends in {activation}; fine-tuning here trains a softmax classifier or one that "
                     "gives logits (classifier_activation='softmax' or None).")


def fit_tf_keras(model, train, validation, epochs: int, learning_rate: float, label_smoothing: float = 0.1,
                 callbacks=None, verbose: int = 1, metric: str = "accuracy") -> dict:
    """Fine-tune a tfmot-wrapped tf_keras model (softmax output, one-hot labels) with Adam; the history as a dict.
    `metric`: the name of the top-1 figure (`agreement` when the targets are a teacher's answers)."""
    import tf_keras

    from mobilenet_keras.training.trainer import build_optimizer

    # A classifier built with classifier_activation=None gives logits: read as probabilities, they train on a
    # meaningless loss without a word.
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                  loss=tf_keras.losses.CategoricalCrossentropy(from_logits=not ends_in_softmax(model),
                                                               label_smoothing=label_smoothing),
                  metrics=[tf_keras.metrics.CategoricalAccuracy(name=metric)])
    build_optimizer(model)
    history = model.fit(train, validation_data=validation, epochs=epochs, verbose=verbose, callbacks=callbacks or [])
    return {k: [float(x) for x in v] for k, v in history.history.items()}


def fine_tune(qat_model, train, validation=None, epochs: int = DEFAULT_EPOCHS,
              learning_rate: float = DEFAULT_LEARNING_RATE, label_smoothing: float | None = None,
              preserve: str | None = None, callbacks=None, verbose: int = 1, teacher=None) -> dict:
    """Train the QAT model at a low learning rate; returns the Keras history.

    `train` and `validation` are `tf.data` datasets (or anything tf_keras's `fit` takes) of images
    in the model's convention and one-hot labels, such as `mobilenet_keras.training.datasets.ImageData.train`.
    `preserve="sparsity"` keeps the zeros of a pruned model's pointwise kernels at zero after every
    step (the other weights train); `preserve="clusters"` keeps a clustered model's pointwise kernels
    as they are (everything else trains), so the int8 file keeps what `mobilenet_keras.optimize.compress` gained.
    `label_smoothing` applies to the labels (None: 0.1).
    `teacher` (the float Keras model, ending in softmax): train on its probabilities for each training
    image instead of the labels (distillation; no label smoothing: giving one is an error), so that QAT learns the
    float model's answers, which is what `tflite.verify` compares the file with; `train` (and `validation`, when
    given) must then be a tf.data.Dataset of (images, one-hot float labels) batches. Both then score against the
    teacher: the history's figures are `agreement` and `val_agreement` (top-1 agreement with the teacher), not
    accuracy, and `val_loss` is the distillation loss.
    """
    if preserve not in PRESERVE:
        raise ValueError(f"preserve must be one of {PRESERVE}; got {preserve!r}.")
    if teacher is not None:
        if label_smoothing:
            raise ValueError(f"fine_tune(teacher=...) trains on the teacher's probabilities, which are not smoothed; "
                             f"leave label_smoothing out (got {label_smoothing!r}).")
        train = _teacher_labels(train, teacher)
        validation = _teacher_labels(validation, teacher, "validation") if validation is not None else None
        label_smoothing = 0.0
    else:
        from mobilenet_keras.optimize.batches import check_batches

        for name, data in (("train", train), ("validation", validation)):
            if data is not None:
                check_batches(data, qat_model.input_shape[1:], qat_model.output_shape[-1], "fine_tune", name)
        label_smoothing = 0.1 if label_smoothing is None else label_smoothing
    callbacks = list(callbacks or [])
    if preserve is not None:
        callbacks.append(_preserving(qat_model, preserve, specs.pointwise_names()))
    history = fit_tf_keras(qat_model, train, validation, epochs, learning_rate, label_smoothing, callbacks, verbose,
                           metric="agreement" if teacher is not None else "accuracy")
    set_weight_ranges(qat_model)
    return history


def _teacher_labels(train, teacher, name: str = "train"):
    """`train` (a tf.data dataset of (images, labels) batches) with each batch's labels replaced by `teacher`'s
    probabilities for its images."""
    import tensorflow as tf

    if not isinstance(train, tf.data.Dataset):
        raise ValueError(f"fine_tune(teacher=...) needs `{name}` as a tf.data.Dataset of (images, labels) batches; "
                         f"got {type(train).__name__}.")
    spec = train.element_spec
    classes = teacher.output_shape[-1]
    if not (isinstance(spec, tuple) and len(spec) == 2 and spec[1].dtype.is_floating and spec[1].shape.rank == 2
            and spec[1].shape[-1] == classes):
        raise ValueError(f"fine_tune(teacher=...) needs `{name}` to give (images, labels) batches with one-hot float "
                         f"labels of {classes} classes, as the teacher's outputs; got {spec}.")
    if getattr(getattr(teacher.layers[-1], "activation", None), "__name__", None) != "softmax":
        raise ValueError("fine_tune(teacher=...) needs a teacher that ends in softmax (the float model as "
                         "`MobileNetV1` or `train` builds it), since its outputs become the training targets.")

    def soft(images, labels):
        probabilities = tf.cast(teacher(images, training=False), labels.dtype)
        return images, tf.ensure_shape(probabilities, labels.shape)

    return train.map(soft).prefetch(2)


def save_weights(qat_model, path: str | os.PathLike) -> Path:
    """Save the QAT model's weights and ranges (an `.h5` file), written to a temporary file and renamed.

    A whole-model `.keras` save does not reload under tfmot's quantize_scope (variables of the
    wrappers do not line up); `load` rebuilds the QAT model from the float model and reads these.
    """
    from mobilenet_keras.files import write_weights

    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"{path}: QAT weights are saved as a '.weights.h5' file.")
    return write_weights(qat_model, path)


def load(model, path: str | os.PathLike):
    """The QAT model of `model` with the weights and ranges that `save_weights` wrote to `path`."""
    if not Path(path).is_file():
        raise ValueError(f"QAT weights file {path} does not exist (write it with "
                         "mobilenet_keras.optimize.qat.save_weights).")
    qat_model = quantize(model)
    qat_model.load_weights(str(path))
    return qat_model


def float_model(qat_model, like):
    """A Keras 3 model with `like`'s architecture holding the QAT model's trained float weights.

    The folded convolutions go back as kernels with an identity BatchNorm after them (gamma 1,
    beta the folded bias, mean 0, variance 1 - epsilon), so the model computes what the QAT model
    computes without fake quantization.
    """
    import keras

    model = keras.models.clone_model(like)
    model.set_weights(like.get_weights())
    trained = {}
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in specs.convolution_names() or inner.name == "conv_preds":
            kernel = layer._weight_vars[0][0]  # the float kernel (the layer's attribute is its fake-quantized form)
            trained[inner.name] = [np.asarray(kernel), np.asarray(inner.bias)]
    for name in specs.convolution_names():
        kernel, bias = trained[name]
        model.get_layer(name).set_weights([kernel])
        bn = model.get_layer(f"{name}_bn")
        ones = np.ones_like(bias)
        bn.set_weights([ones, bias, np.zeros_like(bias), ones - bn.epsilon])
    if "conv_preds" in trained:
        model.get_layer("conv_preds").set_weights(trained["conv_preds"])
    return model
