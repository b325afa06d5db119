"""Choosing how each int8 weight rounds (up or down) to keep each convolution's output, not each weight.

Nearest rounding of TFLite's per-channel grid (symmetric, scale = max |w| / 127 per output channel,
after BatchNorm folding) treats every weight alike. In MobileNet's first blocks that is costly:
depthwise channels whose BatchNorm folds in gains of ~40 compute a small variation on top of a large
mean, and rounding their nine weights alone (float activations) moved 15% of a CIFAR-10 classifier's
answers (conv_dw_3; see benchmarks/RESULTS.md).

As in AdaRound (Nagel et al. 2020), each weight may round down or up, chosen to minimise the layer's
output error on the calibration images. The error is asymmetric, as in AdaRound's section 4: the
rounded layer reads the input the int8 file will give it (every earlier layer already rounded, every
ReLU6 output on its int8 grid over its calibrated range), and it is compared with the float model's
layer on the float model's input (for an int16x8 file, `activation_bits=16`: its inputs on int16's
grid; for a dynamic-range file, None: float inputs). With d = rounded - float weights and e = (file's input) - (float
input), the output error d . x^ + w . e splits into a mean, which bias correction removes (folded
into the BatchNorm's beta), and a centred part whose expectation is quadratic in d:
d^T Cov(x^) d + 2 d^T Cov(x^, e) w + const. So each layer's rounding also absorbs some of the error
that earlier layers' int8 activations brought in (measured on the CIFAR-10 benchmark model: SQNR
22.2 -> 26.8 dB and top-1 agreement 98.1% -> 99.0% against rounding each layer on float inputs;
benchmarks/RESULTS.md). AdaRound relaxes the choice and runs gradient descent; here the objective
is small (9 weights per depthwise channel, at most a few hundred per pointwise output channel), so
coordinate descent on the up/down choices, started from nearest rounding, finds a local optimum in a
few sweeps in numpy. Layers are taken in order, each on the first `num_images` calibration images
(all of them give the activation ranges, in one pass before).

The result is a model whose folded kernels lie exactly on TFLite's grid: each output channel keeps
its largest |w| (so the converter computes the same scale) and every other weight is an integer
multiple of that scale, so the converter's own rounding reproduces the chosen integers (tested
against the file's int8 weights). Works on models of this package (`tflite.equalization.is_mobilenet`).
"""

from __future__ import annotations

import numpy as np

from mobilenet_keras import specs
from tflite.batched import predict

LEVELS = 127
DEFAULT_SWEEPS = 4
DEFAULT_IMAGES = 64  # calibration images whose layer inputs give each layer's covariance
_BATCH = 16
_ROWS = 2048  # patch rows per chunk of the statistics


def grid_scale(folded: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """TFLite's per-channel weight scale: max |w| / 127 over every axis but `channel_axis` (1 for all-zero channels)."""
    moved = np.moveaxis(folded, channel_axis, -1)
    scale = np.abs(moved).reshape(-1, moved.shape[-1]).max(axis=0) / LEVELS
    return np.where(scale == 0, 1.0, scale)


def round_quadratic(weights: np.ndarray, scale: np.ndarray, hessian: np.ndarray,
                    sweeps: int = DEFAULT_SWEEPS, linear: np.ndarray | None = None) -> np.ndarray:
    """Integers q (same shape as `weights`, (D, O)) in [-127, 127], each floor or ceil of weights / scale,
    that lower sum_o d_o^T H_o d_o + 2 d_o^T g_o, d_o = q_o s_o - w_o, from nearest rounding by
    coordinate descent.

    `hessian` is (D, D), shared by every output column, or (O, D, D), one per column; `linear` is g,
    (D, O) (None: 0).
    """
    w = np.asarray(weights, np.float64)
    s = np.asarray(scale, np.float64)[None, :]
    ratio = w / s
    q = np.clip(np.round(ratio), -LEVELS, LEVELS)
    # A weight that rounds to +-127 stays there: it may be the channel's largest, whose ratio is 127 only up
    # to float rounding (126.99999...), and moving it would move the scale the converter computes.
    edge = np.abs(q) == LEVELS
    low = np.where(edge, q, np.clip(np.floor(ratio), -LEVELS, LEVELS))
    high = np.where(edge, q, np.clip(np.ceil(ratio), -LEVELS, LEVELS))
    delta = q * s - w  # (D, O)
    shared = hessian.ndim == 2
    if shared:
        gradient = hessian @ delta
        diagonal = np.repeat(np.diag(hessian)[:, None], w.shape[1], axis=1)
    else:
        gradient = np.einsum("oij,jo->io", hessian, delta)
        diagonal = np.einsum("oii->io", hessian)
    if linear is not None:
        gradient = gradient + linear
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


def _paired_moments(layer, reached: np.ndarray, reference: np.ndarray):
    """Moments of a convolution's input patches as the file reaches them (x = `reached`) and of their
    difference from the float model's (e = `reached` - `reference`): (E[x], E[e], E[x x^T], E[x e^T],
    E[e e^T]); depthwise: per channel, shapes (C, k), (C, k), (C, k, k) x 3."""
    import keras
    import tensorflow as tf

    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    as_patches = tuple(layer.kernel_size) != (1, 1) or tuple(layer.strides) != (1, 1) or depthwise

    def rows_of(values):  # (rows, k, C) for a depthwise layer, (rows, D) otherwise; float32
        patches = _patches(tf, values, layer) if as_patches else values
        if depthwise:  # extract_patches orders depth as (kh, kw, C)
            return patches.reshape(-1, patches.shape[-1] // values.shape[-1], values.shape[-1])
        return patches.reshape(-1, patches.shape[-1])

    sums, rows = None, 0
    for start in range(0, len(reached), _BATCH):
        x_rows, reference_rows = rows_of(reached[start:start + _BATCH]), rows_of(reference[start:start + _BATCH])
        # In chunks of rows, so that the float64 copies stay small: one pass over whole batches of
        # large early layers spent most of its time moving memory.
        for chunk in range(0, len(x_rows), _ROWS):
            x = x_rows[chunk:chunk + _ROWS].astype(np.float64)
            both = np.concatenate([x, x - reference_rows[chunk:chunk + _ROWS]], axis=1)  # [x, e]
            total = both.sum(axis=0)
            if depthwise:  # (rows, 2k, C) -> one (2k, 2k) product per channel
                both = np.ascontiguousarray(both.transpose(2, 0, 1))
                total = total.T
            product = np.matmul(np.swapaxes(both, -1, -2), both)
            sums = [total, product] if sums is None else [sums[0] + total, sums[1] + product]
            rows += len(x)
    first, second = sums[0] / rows, sums[1] / rows
    k = first.shape[-1] // 2
    return first[..., :k], first[..., k:], second[..., :k, :k], second[..., :k, k:], second[..., k:, k:]


def _chain(model) -> list:
    """The backbone's layers from `conv1` to the last convolution's ReLU6 (with the padding before a
    strided depthwise convolution), each reading the one before it."""
    present = {layer.name for layer in model.layers}
    names = []
    for n in specs.convolution_names():
        pad = n.replace("conv_dw_", "conv_pad_")
        if n.startswith("conv_dw_") and pad in present:
            names.append(pad)
        names += [n, f"{n}_bn", f"{n}_relu"]
    chain = [model.get_layer(n) for n in names]
    for before, layer in zip(chain, chain[1:]):
        if layer.input is not before.output:
            raise NotAChain(f"{layer.name} does not read {before.name}'s output")
    return chain


class NotAChain(ValueError):
    """The model's backbone has layers between MobileNetV1's: rounding by error walks it layer by layer."""


# Steps of a ReLU6 output's grid over [0, top]: int8 activations are asymmetric (256 levels from the
# calibrated minimum, 0 here), int16 ones symmetric around 0 (zero point 0: 32,767 steps up to top).
ACTIVATION_STEPS = {8: 255, 16: 32767}


def _activation_grid(values: np.ndarray, top: float, bits: int | None = 8) -> np.ndarray:
    """ReLU6 outputs on the integer grid of the range [0, top] that the converter calibrates (None: float)."""
    if bits is None:
        return values
    if top <= 0:
        return np.zeros_like(values)
    steps = ACTIVATION_STEPS[bits]
    step = top / steps
    return (np.clip(np.round(values / step), 0, steps) * step).astype(np.float32)


def _call(layer, values: np.ndarray) -> np.ndarray:
    return np.asarray(layer(values, training=False), np.float32)


def adaround(model, calibration: np.ndarray, *, bias_correction: bool = True, sweeps: int = DEFAULT_SWEEPS,
             num_images: int = DEFAULT_IMAGES, skip=(), info: dict | None = None,
             activation_bits: int | None = 8):
    """A copy of `model` (a MobileNet of this package) whose folded kernels lie on TFLite's int8 grid,
    rounded to keep each layer's output on the inputs the int8 file gives it (see the module doc), with
    the layer's mean output error folded into each BatchNorm's beta when `bias_correction`.

    Args:
        model: a Keras 3 `MobileNetV1` (with BatchNorm layers); not changed.
        calibration: float images in the model's convention. All of them give the activation ranges
            (as the converter's calibration does); the first `num_images` give the layer statistics.
        sweeps: coordinate-descent sweeps per layer.
        num_images: how many of the calibration images give the input statistics.
        skip: layers left as they are (a conversion's float layers); their outputs stay float where
            the next convolution is a float layer too.
        activation_bits: 8 for an int8 file, 16 for an int16x8 one, None for a dynamic-range one: the grid
            each ReLU6 output is put on before the next layer reads it (256 levels over its calibrated
            range, int16's 32,768 from 0, or none). Rounding chosen for int8 inputs compensates int8
            errors that a 16-bit or float file does not have.
        info: a dict that receives {layer: (output error with nearest rounding, with the chosen rounding)},
            each the mean squared error of the layer's folded output on the file's inputs, summed over
            output channels (its mean part excluded when `bias_correction`, which removes it).

    Raises:
        NotAChain: the backbone has layers of its own between MobileNetV1's (the converter then falls
            back to bias correction alone, with a warning).
    """
    from mobilenet_keras.model import copy_model
    from tflite.equalization import ConvWeights, channel_maxima, is_mobilenet

    if not is_mobilenet(model):
        raise ValueError("adaround takes a MobileNet built by MobileNetV1 (conv1, conv_dw_1, ... with BatchNorm).")
    import keras

    reference = model
    model = copy_model(model)
    chain = _chain(model)  # raises NotAChain before any statistics
    weights = ConvWeights(model)
    convolutions = specs.convolution_names()
    skip = set(skip)
    tops = {n: float(np.max(m)) for n, m in channel_maxima(reference, calibration).items()}
    images = np.asarray(calibration[:num_images], np.float32)
    # What conv1 reads (the image, through any layers before it); the same in the file (its input is on
    # the uint8 pixel grid already) and in the float model.
    start = keras.Model(reference.inputs, reference.get_layer(convolutions[0]).input)
    reached = expected = predict(start, images, _BATCH)
    for layer in chain:
        n = layer.name
        if n in weights.depthwise and n not in skip:
            _round_layer(weights, n, _paired_moments(layer, reached, expected), bias_correction, sweeps, info)
            weights.write_layer(n)
        reached, expected = _call(layer, reached), _call(reference.get_layer(n), expected)
        if n.endswith("_relu") and n[:-len("_relu")] in weights.depthwise:
            producer = n[:-len("_relu")]
            reader = weights.reader(producer)
            if not (producer in skip and reader in skip):
                reached = _activation_grid(reached, tops[producer], activation_bits)
    return model


def rounded_or_bias_corrected(model, calibration: np.ndarray, *, bias_correction: bool = True, skip=(),
                              activation_bits: int | None = 8):
    """`adaround(model, ...)`; for a backbone that rounding by error cannot walk (`NotAChain`), a warning
    and the model with bias correction alone (`tflite.bias_correction`), or as it is without it."""
    import warnings

    try:
        return adaround(model, calibration, bias_correction=bias_correction, skip=skip,
                        activation_bits=activation_bits)
    except NotAChain as error:
        warnings.warn(f"rounding by error skipped ({error}: it walks MobileNetV1's backbone layer by layer); "
                      "rounding to nearest" + (" with bias correction." if bias_correction else "."), stacklevel=3)
    if not bias_correction:
        return model
    from tflite.bias_correction import bias_corrected

    return bias_corrected(model, calibration, skip=skip)


def _round_layer(weights, n: str, moments, bias_correction: bool, sweeps: int, info: dict | None) -> None:
    mean_x, mean_e, xx, xe, ee = moments
    if bias_correction:  # the mean error goes to the bias: round for the centred part only
        xx, xe, ee = xx - _outer(mean_x, mean_x), xe - _outer(mean_x, mean_e), ee - _outer(mean_e, mean_e)
    folded, _ = weights.folded(n)
    gain = weights.gain(n)
    if weights.depthwise[n]:
        kh, kw, out = folded.shape
        multiplier = out // mean_x.shape[0]
        flat = folded.reshape(kh * kw, out)
        # output channel c * m + k reads input channel c: one (k, k) statistic per output channel
        mean_x, mean_e, xx, xe, ee = (np.repeat(v, multiplier, axis=0) for v in (mean_x, mean_e, xx, xe, ee))
        mean_x, mean_e = mean_x.T, mean_e.T  # (k, out), like flat
        linear = np.matmul(xe, flat.T[:, :, None])[..., 0].T  # (k, out): xe[o] @ flat[:, o]
    else:
        flat = folded.reshape(-1, folded.shape[-1])
        mean_x, mean_e = mean_x[:, None], mean_e[:, None]
        linear = xe @ flat
    scale = grid_scale(flat)
    chosen = round_quadratic(flat, scale, xx, sweeps, linear)
    delta = chosen * scale - flat
    if info is not None:
        nearest = np.clip(np.round(flat / scale), -LEVELS, LEVELS) * scale - flat
        constant = _quadratic(flat, ee)
        info[n] = tuple(_quadratic(d, xx) + 2 * float(np.sum(d * linear)) + constant for d in (nearest, delta))
    if bias_correction:
        _, values, _ = weights.bn[n]
        values["beta"] = values["beta"] - (delta * mean_x).sum(axis=0) - (flat * mean_e).sum(axis=0)
    # Unfold: the converter multiplies the kernel by the same gain again. Dead channels (gain 0) keep 0.
    safe = np.where(gain == 0, 1.0, gain)
    weights.kernel[n] = (chosen * scale / safe).reshape(folded.shape).reshape(weights.kernel[n].shape)


def _outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., :, None] * b[..., None, :]


def _quadratic(delta: np.ndarray, hessian: np.ndarray) -> float:
    """sum_o delta_o^T H_o delta_o; `hessian` (D, D) shared or (O, D, D)."""
    if hessian.ndim == 2:
        return float(np.sum(delta * (hessian @ delta)))
    return float(np.sum(delta.T * np.matmul(hessian, delta.T[:, :, None])[..., 0]))
