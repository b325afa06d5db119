"""Choosing how each int8 weight rounds (up or down) to keep each convolution's output, not each weight.

Nearest rounding of TFLite's per-channel grid (symmetric, scale = max |w| / 127 per output channel,
after BatchNorm folding) treats every weight alike. In MobileNet's first blocks that is costly:
depthwise channels whose BatchNorm folds in gains of ~40 compute a small variation on top of a large
mean, and rounding their nine weights alone (float activations) moved 15% of a CIFAR-10 classifier's
answers (conv_dw_3; see benchmarks/RESULTS.md).

As in AdaRound (Nagel et al. 2020), each weight may round down or up, chosen to minimise the layer's
output error on the calibration images, E[(dw . x)^2] = dw^T H dw with H the covariance of the
layer's inputs (the mean part is left to bias correction, which this module applies with the chosen
rounding). AdaRound relaxes the choice and runs gradient descent; here the objective is quadratic
and small (9 weights per depthwise channel, at most a few hundred per pointwise output channel), so
coordinate descent on the up/down choices, started from nearest rounding, finds a local optimum in
a few sweeps in numpy.

The result is a model whose folded kernels lie exactly on TFLite's grid: each output channel keeps
its largest |w| (so the converter computes the same scale) and every other weight is an integer
multiple of that scale, so the converter's own rounding reproduces the chosen integers (tested
against the file's int8 weights). Works on models of this package (`tflite.equalization.is_mobilenet`).
"""

from __future__ import annotations

import numpy as np

from mobilenet_keras import specs

LEVELS = 127
DEFAULT_SWEEPS = 4
DEFAULT_IMAGES = 64  # calibration images whose layer inputs give each layer's covariance
_BATCH = 16


def grid_scale(folded: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """TFLite's per-channel weight scale: max |w| / 127 over every axis but `channel_axis` (1 for all-zero channels)."""
    moved = np.moveaxis(folded, channel_axis, -1)
    scale = np.abs(moved).reshape(-1, moved.shape[-1]).max(axis=0) / LEVELS
    return np.where(scale == 0, 1.0, scale)


def round_quadratic(weights: np.ndarray, scale: np.ndarray, hessian: np.ndarray,
                    sweeps: int = DEFAULT_SWEEPS) -> np.ndarray:
    """Integers q (same shape as `weights`, (D, O)) in [-127, 127], each floor or ceil of weights / scale,
    that lower sum_o (q_o s_o - w_o)^T H_o (q_o s_o - w_o) from nearest rounding by coordinate descent.

    `hessian` is (D, D), shared by every output column, or (O, D, D), one per column.
    """
    w = np.asarray(weights, np.float64)
    s = np.asarray(scale, np.float64)[None, :]
    ratio = w / s
    q = np.clip(np.round(ratio), -LEVELS, LEVELS)
    low = np.clip(np.floor(ratio), -LEVELS, LEVELS)
    high = np.clip(np.ceil(ratio), -LEVELS, LEVELS)
    delta = q * s - w  # (D, O)
    shared = hessian.ndim == 2
    if shared:
        gradient = hessian @ delta
        diagonal = np.repeat(np.diag(hessian)[:, None], w.shape[1], axis=1)
    else:
        gradient = np.einsum("oij,jo->io", hessian, delta)
        diagonal = np.einsum("oii->io", hessian)
    for _ in range(sweeps):
        changed = False
        for j in range(w.shape[0]):
            alternative = np.where(q[j] == low[j], high[j], low[j])
            step = (alternative - q[j]) * s[0]
            gain = 2 * step * gradient[j] + step * step * diagonal[j]
            flip = (gain < -1e-18 * np.abs(diagonal[j])) & (step != 0)
            if not flip.any():
                continue
            changed = True
            step = np.where(flip, step, 0.0)
            q[j] = np.where(flip, alternative, q[j])
            if shared:
                gradient += np.outer(hessian[:, j], step)
            else:
                gradient += hessian[:, :, j].T * step[None, :]
        if not changed:
            break
    return q


def _patches(tf, values: np.ndarray, layer) -> np.ndarray:
    """(N, oh, ow, kh * kw * C) patches of a convolution's input as TF convolves them (its padding, strides)."""
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    return tf.image.extract_patches(values, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, dh, dw, 1],
                                    padding=layer.padding.upper()).numpy()


def _input_statistics(model, names: list[str], images: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (mean, covariance)} of each convolution's input patch (depthwise: per channel, (C, k), (C, k, k))."""
    import keras
    import tensorflow as tf

    layers = [model.get_layer(n) for n in names]
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    sums: dict[str, list] = {}
    for start in range(0, len(images), _BATCH):
        outputs = probe.predict_on_batch(images[start:start + _BATCH])
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for n, layer, values in zip(names, layers, outputs):
            values = np.asarray(values, np.float32)
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                patches = _patches(tf, values, layer)
                channels = values.shape[-1]
                k = patches.shape[-1] // channels
                # extract_patches orders depth as (kh, kw, C): regroup to (C, kh * kw)
                patches = patches.reshape(-1, k, channels).transpose(2, 0, 1).astype(np.float64)  # (C, M, k)
                first = patches.sum(axis=1)
                second = np.einsum("cmi,cmj->cij", patches, patches)
                rows = patches.shape[1]
            else:
                patches = _patches(tf, values, layer) if tuple(layer.kernel_size) != (1, 1) or \
                    tuple(layer.strides) != (1, 1) else values
                patches = patches.reshape(-1, patches.shape[-1]).astype(np.float64)
                first = patches.sum(axis=0)
                second = patches.T @ patches
                rows = patches.shape[0]
            if n in sums:
                sums[n][0] += first
                sums[n][1] += second
                sums[n][2] += rows
            else:
                sums[n] = [first, second, rows]
    statistics = {}
    for n, (first, second, rows) in sums.items():
        mean = first / rows
        if mean.ndim == 2:  # depthwise
            covariance = second / rows - np.einsum("ci,cj->cij", mean, mean)
        else:
            covariance = second / rows - np.outer(mean, mean)
        statistics[n] = (mean, covariance)
    return statistics


def adaround(model, calibration: np.ndarray, *, bias_correction: bool = True, sweeps: int = DEFAULT_SWEEPS,
             num_images: int = DEFAULT_IMAGES, skip=(), info: dict | None = None):
    """A copy of `model` (a MobileNet of this package) whose folded kernels lie on TFLite's int8 grid,
    rounded to keep each layer's output (see the module doc), with the rounding's mean shift folded into
    each BatchNorm's beta when `bias_correction`.

    Args:
        model: a Keras 3 `MobileNetV1` (with BatchNorm layers); not changed.
        calibration: float images in the model's convention.
        sweeps: coordinate-descent sweeps per layer.
        num_images: how many of the calibration images give the input covariances.
        skip: layers left as they are (a conversion's float layers).
        info: a dict that receives {layer: (output error with nearest rounding, with the chosen rounding)}.
    """
    from mobilenet_keras.model import copy_model
    from tflite.equalization import ConvWeights, is_mobilenet

    if not is_mobilenet(model):
        raise ValueError("adaround takes a MobileNet built by MobileNetV1 (conv1, conv_dw_1, ... with BatchNorm).")
    model = copy_model(model)
    weights = ConvWeights(model)
    names = [n for n in specs.convolution_names() if n not in skip]
    statistics = _input_statistics(model, names, calibration[:num_images])
    for n in names:
        mean, covariance = statistics[n]
        folded, _ = weights.folded(n)
        gain = weights.gain(n)
        depthwise = weights.depthwise[n]
        if depthwise:
            kh, kw, out = folded.shape
            multiplier = out // mean.shape[0]
            flat = folded.reshape(kh * kw, out)
            hessian = np.repeat(covariance, multiplier, axis=0)  # output channel c * m + k reads input c
            input_mean = np.repeat(mean, multiplier, axis=0).T  # (k, out)
        else:
            flat = folded.reshape(-1, folded.shape[-1])
            hessian = covariance
            input_mean = None
        scale = grid_scale(flat)
        nearest = np.clip(np.round(flat / scale), -LEVELS, LEVELS)
        chosen = round_quadratic(flat, scale, hessian, sweeps)
        delta = chosen * scale - flat
        if info is not None:
            before = nearest * scale - flat
            info[n] = (_quadratic(before, hessian), _quadratic(delta, hessian))
        if bias_correction:
            shift = (delta * input_mean).sum(axis=0) if depthwise else delta.T @ mean
            _, values, _ = weights.bn[n]
            values["beta"] = values["beta"] - shift
        # Unfold: the converter multiplies the kernel by the same gain again. Dead channels (gain 0) keep 0.
        safe = np.where(gain == 0, 1.0, gain)
        kernel = (chosen * scale / safe).reshape(folded.shape)
        weights.kernel[n] = kernel.reshape(weights.kernel[n].shape)
    weights.write()
    return model


def _quadratic(delta: np.ndarray, hessian: np.ndarray) -> float:
    if hessian.ndim == 2:
        return float(np.einsum("io,ij,jo->", delta, hessian, delta))
    return float(np.einsum("io,oij,jo->", delta, hessian, delta))
