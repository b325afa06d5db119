"""Folding a BatchNormalization into the convolution before it: the maths that TFLite applies when it
converts, shared by bias correction (`tflite.bias_correction`) and quantization-aware training
(`mobilenet_keras.optimize.qat`), so both see the weights the file will hold."""

from __future__ import annotations

import numpy as np

from mobilenet_keras import specs


def folding_gain(bn) -> np.ndarray:
    """gamma / sqrt(moving variance + epsilon) of a BatchNorm layer (float64): what folding multiplies a kernel's
    output channels by (the folded bias is beta - moving mean * gain)."""
    gamma, _, _, moving_var = (np.asarray(w, np.float64) for w in bn.get_weights())
    return gamma / np.sqrt(moving_var + bn.epsilon)


def fold_kernel(kernel: np.ndarray, gain: np.ndarray, depthwise: bool) -> np.ndarray:
    """`kernel` with output channel i multiplied by `gain[i]`, in float64.

    A depthwise kernel (kh, kw, C, multiplier) is returned as (kh, kw, C * multiplier): output channel
    c * multiplier + m reads input channel c, which is the order TFLite's depthwise kernel uses.
    A Conv2D kernel (kh, kw, in, out) keeps its shape.
    """
    kernel = np.asarray(kernel, np.float64)
    if depthwise:
        kh, kw, channels, multiplier = kernel.shape
        return kernel.reshape(kh, kw, channels * multiplier) * gain
    return kernel * gain


def folded_weights(model) -> dict[str, list[np.ndarray]]:
    """`{convolution name: [kernel, bias]}` of a MobileNetV1 with each BatchNorm folded into its convolution.

    Kernels keep their Keras shapes (a depthwise kernel stays (kh, kw, C, multiplier)); computed in
    float64, returned as float32.
    """
    folded = {}
    for name in specs.convolution_names():
        kernel = np.asarray(model.get_layer(name).get_weights()[0])
        bn = model.get_layer(f"{name}_bn")
        _, beta, mean, _ = (np.asarray(w, np.float64) for w in bn.get_weights())
        gain = folding_gain(bn)
        depthwise = kernel.ndim == 4 and kernel.shape[-1] != gain.size
        folded_kernel = fold_kernel(kernel, gain, depthwise).reshape(kernel.shape)
        folded[name] = [folded_kernel.astype(np.float32), (beta - mean * gain).astype(np.float32)]
    return folded
