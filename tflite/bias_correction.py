"""Bias correction for int8 weight rounding (Nagel et al. 2019, "Data-Free Quantization", section 4.2).

Rounding a convolution's weights to int8 shifts each output channel by the expected value of
(rounded - true weights) . (the layer's input). In MobileNet V1 that shift is large: depthwise
channels whose BatchNorm folds in a big gain (ImageNet's dead channels have variance ~1e-36, so
gamma / sqrt(var + eps) reaches ~45) and whose inputs have a large mean turn a 0.4% weight error
into a systematic offset that later layers amplify. Measured on a CIFAR-10 classifier from the 0.25
ImageNet backbone, per-channel int8 weights alone dropped top-1 agreement with the float model to
81%; removing the expected shift brought it back to 95% (see benchmarks/RESULTS.md).

The correction is computed with TFLite's own weight scheme (per output channel, symmetric, 127
levels, after folding BatchNorm) and stored in the float model: in the BatchNorm beta that follows
a convolution, or in the convolution's bias. The float outputs move by exactly the shift the int8
file will undo, so the file ends up closer to the original float model.
"""

from __future__ import annotations

import numpy as np

from mobilenet_keras.folding import fold_kernel, folding_gain
from tflite.batched import batch_outputs

_BATCH = 16


def _symmetric_per_channel_error(kernel: np.ndarray, channel_axis: int) -> np.ndarray:
    reduce = tuple(i for i in range(kernel.ndim) if i != channel_axis)
    scale = np.abs(kernel).max(axis=reduce, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    return np.round(kernel / scale) * scale - kernel


def _producers(model) -> dict[int, object]:
    return {id(layer.output): layer for layer in model.layers if not isinstance(layer.output, (list, tuple, dict))}


def _corrections_plan(model):
    """(conv layer, BatchNorm after it or None) for every Conv2D / DepthwiseConv2D that a correction applies to."""
    import keras

    producers = _producers(model)
    followed_by_bn = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            producer = producers.get(id(layer.input))
            if producer is not None:
                followed_by_bn[producer.name] = layer
    plan = []
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            continue
        bn = followed_by_bn.get(layer.name)
        if bn is not None or layer.use_bias:
            plan.append((layer, bn))
    return plan


def _input_means(model, layers, calibration: np.ndarray) -> list[np.ndarray]:
    import keras

    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    sums = None
    for outputs in batch_outputs(probe, calibration, _BATCH):
        batch_sums = [np.asarray(o, np.float64).sum(axis=(0, 1, 2)) for o in outputs]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums)]
    counts = [len(calibration) * int(np.prod(layer.input.shape[1:3])) for layer in layers]
    return [s / n for s, n in zip(sums, counts)]


def convolution_input_means(model, calibration: np.ndarray) -> dict[str, np.ndarray]:
    """The mean input channel of every convolution that `bias_corrected` corrects, over `calibration`:
    the same for every `skip`, so a float-prefix search measures them once."""
    layers = [conv for conv, _ in _corrections_plan(model)]
    return dict(zip((layer.name for layer in layers), _input_means(model, layers, calibration))) if layers else {}


def bias_corrected(model, calibration: np.ndarray, skip: tuple[str, ...] | list[str] = (),
                   input_means: dict[str, np.ndarray] | None = None):
    """A copy of `model` whose biases pre-compensate the expected int8 weight rounding error.

    Args:
        model: a Keras 3 functional model (e.g. from `MobileNetV1`); it is not changed.
        calibration: float images in the model's input convention, as for `convert`.
        skip: layers that stay in float (a conversion's denylist, or the small kernels a dynamic-range
            conversion leaves in float): their weights are not rounded, so not corrected.
        input_means: `convolution_input_means(model, calibration)`, when measured already.
    """
    import keras

    from mobilenet_keras.model import copy_model

    corrected = copy_model(model)
    plan = [(conv, bn) for conv, bn in _corrections_plan(corrected) if conv.name not in skip]
    if not plan:
        return corrected
    if input_means is None:
        input_means = convolution_input_means(corrected, calibration)
    for conv, bn in plan:
        mean = input_means[conv.name]
        kernel = np.asarray(conv.get_weights()[0], np.float64)
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        gain = folding_gain(bn) if bn is not None else None
        folded = fold_kernel(kernel, gain if gain is not None else 1.0, depthwise)
        if depthwise:
            error = _symmetric_per_channel_error(folded, channel_axis=2)
            shift = error.sum(axis=(0, 1)) * np.repeat(mean, kernel.shape[3])
        else:
            error = _symmetric_per_channel_error(folded, channel_axis=3)
            shift = np.einsum("hwio,i->o", error, mean)
        if bn is not None:
            weights = bn.get_weights()
            names = [w.path.split("/")[-1] for w in bn.weights]
            beta = np.asarray(weights[names.index("beta")], np.float64)
            weights[names.index("beta")] = (beta - shift).astype(weights[names.index("beta")].dtype)
            bn.set_weights(weights)
        else:
            conv_weights = conv.get_weights()
            conv_weights[1] = (conv_weights[1] - shift).astype(conv_weights[1].dtype)
            conv.set_weights(conv_weights)
    return corrected
