"""Making a MobileNet's weights and activations easier to quantize, with its float outputs unchanged.

Two transforms of a Keras 3 MobileNet of this package (`mobilenet_keras.MobileNetV1`), both written
into the BatchNorm parameters and kernels so that the same model converts, bias-corrects and trains
(QAT) as before:

* Dead channels (`absorb_dead_channels`). ImageNet's MobileNet has channels whose BatchNorm moving
  variance is ~1e-36: folding multiplies their kernel by gains up to ~48, and their output is a
  constant (often 0 after the ReLU6, sometimes not). A channel is dead when the bound of its folded
  pre-activation over every input the layer can receive (image in the input range, ReLU6 outputs in
  [0, 6]) puts it on one side of the ReLU6 or within `tolerance` of a constant. Its constant is
  added to the next layer (into a pointwise convolution's BatchNorm mean; through a depthwise
  convolution only when the constant is 0, since "same" zero padding turns a constant input into a
  border pattern), its own kernel and BatchNorm are zeroed and the next layer's weights that read it
  are zeroed, so the channel stops widening any weight scale or activation range.

* Activation equalization (`equalize`, after Nagel et al. 2019, "Data-Free Quantization", section
  4.1, for a network with ReLU6). An int8 file quantizes each activation tensor over one range,
  [0, 6] for every ReLU6 of MobileNet, so a channel that never exceeds 0.5 uses 1/12 of the grid.
  Channel i of a convolution's output is multiplied by s_i = 6 / (headroom * max_i) (>= 1, max_i
  its maximum on the calibration images; channels with max_i under `MIN_EQUALIZED_MAXIMUM` are left
  as they are) through its BatchNorm gamma and beta, and the next
  convolution's kernel that reads channel i is divided by s_i. ReLU6(s x) = s ReLU6(x) while
  s x <= 6, i.e. for every value up to headroom * max_i: the float model is unchanged on the
  calibration images and on any image that stays within the headroom (the int8 file clips at the
  tensor's calibrated range anyway). Into a depthwise convolution the division costs nothing (its
  weights are quantized per channel); into a pointwise one it shrinks that input's weights on the
  per-output-channel grid, so there s_i is capped (`max_pointwise_scale`).

Both return a new model; the original is not changed. Models not built by `MobileNetV1` are returned
as they are (`is_mobilenet` says which).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mobilenet_keras import specs
from tflite.batched import batch_outputs

RELU6 = 6.0
# A channel whose folded pre-activation varies by less than this over every possible input is constant.
DEAD_TOLERANCE = 1e-6
# Equalized channels fill the ReLU6 range up to their calibrated maximum times this (values above it
# would be clipped by the ReLU6 where the original model does not clip them).
DEFAULT_HEADROOM = 1.5
DEFAULT_MAX_POINTWISE_SCALE = 4.0
# Channels whose calibrated maximum is under this are left unscaled: they carry almost no signal, and
# scaling them by up to 6/1e-9 (the late layers of a random-weight MobileNet) gave requantization ratios
# that LiteRT's CPU delegate refuses to prepare.
MIN_EQUALIZED_MAXIMUM = 1e-3
_BATCH = 32


@dataclass
class Prepared:
    """What `prepare` changed: dead channels per layer and equalization scales per layer."""

    dead: dict[str, list[int]] = field(default_factory=dict)
    absorbed: dict[str, list[int]] = field(default_factory=dict)  # dead channels with a constant != 0 moved on
    kept: dict[str, list[int]] = field(default_factory=dict)  # constant != 0 before a depthwise: left as is
    scales: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def dead_count(self) -> int:
        return sum(len(v) for v in self.dead.values())

    @property
    def equalized_count(self) -> int:
        return int(sum(np.sum(s > 1) for s in self.scales.values()))


def is_mobilenet(model) -> bool:
    """True for a model with every convolution, BatchNorm and ReLU6 of `MobileNetV1` at its top level."""
    names = {layer.name for layer in getattr(model, "layers", [])}
    return all(f"{n}{suffix}" in names for n in specs.convolution_names() for suffix in ("", "_bn", "_relu"))


class ConvWeights:
    """The kernels and BatchNorm parameters of a MobileNet, in float64, written back in one go."""

    def __init__(self, model):
        self.model = model
        self.names = specs.convolution_names()
        self.kernel = {n: np.asarray(model.get_layer(n).get_weights()[0], np.float64) for n in self.names}
        self.bn = {}
        for n in self.names:
            layer = model.get_layer(f"{n}_bn")
            keys = [w.path.split("/")[-1] for w in layer.weights]
            values = dict(zip(keys, (np.asarray(w, np.float64) for w in layer.get_weights())))
            channels = len(values["moving_mean"])
            values.setdefault("gamma", np.ones(channels))
            values.setdefault("beta", np.zeros(channels))
            self.bn[n] = (keys, values, float(layer.epsilon))
        self.depthwise = {n: n.startswith("conv_dw_") for n in self.names}

    def gain(self, n):
        _, v, eps = self.bn[n]
        return v["gamma"] / np.sqrt(v["moving_variance"] + eps)

    def folded(self, n):
        """(kernel (kh, kw, in, out) with out channels in TFLite's order, bias) of the folded convolution."""
        kernel, gain = self.kernel[n], self.gain(n)
        _, v, _ = self.bn[n]
        if self.depthwise[n]:
            kh, kw, c, m = kernel.shape
            kernel = kernel.reshape(kh, kw, c * m)
        return kernel * gain, v["beta"] - v["moving_mean"] * gain

    def write(self):
        for n in self.names:
            self.write_layer(n)

    def write_layer(self, n):
        """Write convolution `n`'s kernel and BatchNorm into the model."""
        self.model.get_layer(n).set_weights(
            [self.kernel[n].astype(np.float32)] + self.model.get_layer(n).get_weights()[1:])
        keys, values, _ = self.bn[n]
        self.model.get_layer(f"{n}_bn").set_weights([values[k].astype(np.float32) for k in keys])

    # channel i of layer n's output is read by `reader(n)`'s kernel at [..., i, ...]
    def reader(self, n):
        index = self.names.index(n)
        return self.names[index + 1] if index + 1 < len(self.names) else None

    def scale_input(self, n, channel, factor):
        """Multiply what convolution `n` reads from its input channel `channel` by `factor`."""
        # (kh, kw, in, out) and depthwise (kh, kw, C, multiplier) both index the input on axis 2
        self.kernel[n][:, :, channel, :] *= factor


def _input_bound(weights: ConvWeights, n: str, input_range) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound of each output channel's folded pre-activation over every possible input."""
    kernel, bias = weights.folded(n)
    if n == weights.names[0]:
        low_in, high_in = input_range
    else:
        low_in, high_in = 0.0, RELU6
    positive, negative = np.clip(kernel, 0, None), np.clip(kernel, None, 0)
    if weights.depthwise[n]:
        reduce = (0, 1)
    else:
        reduce = (0, 1, 2)
    high = bias + high_in * positive.sum(axis=reduce) + low_in * negative.sum(axis=reduce)
    low = bias + low_in * positive.sum(axis=reduce) + high_in * negative.sum(axis=reduce)
    return low, high


def absorb_dead_channels(model, input_range=(-1.0, 1.0), tolerance: float = DEAD_TOLERANCE, info=None):
    """A copy of `model` with its dead channels' constants moved into the next layer (see the module doc)."""
    info = info if info is not None else Prepared()
    if not is_mobilenet(model):
        return model
    from mobilenet_keras.model import copy_model

    model = copy_model(model)
    weights = ConvWeights(model)
    for n in weights.names:
        low, high = _input_bound(weights, n, input_range)
        always_low = high <= 0
        always_high = low >= RELU6
        flat = (high - low) <= tolerance
        dead = np.flatnonzero(always_low | always_high | flat)
        if dead.size == 0:
            continue
        constants = np.where(always_low, 0.0, np.where(always_high, RELU6, np.clip((low + high) / 2, 0, RELU6)))
        reader = weights.reader(n)
        moved = []
        for channel in dead:
            constant = float(constants[channel])
            if constant != 0.0:
                if reader is None or weights.depthwise[reader]:
                    info.kept.setdefault(n, []).append(int(channel))
                    continue
                # The pointwise reader's output gains kernel[0, 0, channel, :] * constant: its BatchNorm
                # mean takes it, so the reader's output stays the same once this channel reads 0.
                _, v, _ = weights.bn[reader]
                v["moving_mean"] -= weights.kernel[reader][0, 0, channel, :] * constant
                info.absorbed.setdefault(n, []).append(int(channel))
            moved.append(int(channel))
            # The channel now outputs exactly 0: zero kernel, gamma and beta.
            if weights.depthwise[n]:
                c, m = divmod(int(channel), weights.kernel[n].shape[3])
                weights.kernel[n][:, :, c, m] = 0.0
            else:
                weights.kernel[n][..., channel] = 0.0
            _, v, _ = weights.bn[n]
            v["gamma"][channel] = 0.0
            v["beta"][channel] = 0.0
            v["moving_mean"][channel] = 0.0
            v["moving_variance"][channel] = 1.0
            if reader is not None:
                weights.scale_input(reader, channel, 0.0)
        if moved:
            info.dead[n] = moved
    weights.write()
    return model


def channel_maxima(model, calibration: np.ndarray) -> dict[str, np.ndarray]:
    """Each ReLU6 output channel's maximum over the calibration images."""
    import keras

    names = specs.convolution_names()
    probe = keras.Model(model.inputs, [model.get_layer(f"{n}_relu").output for n in names])
    maxima = None
    for outputs in batch_outputs(probe, calibration, _BATCH):
        batch = [np.asarray(o).max(axis=(0, 1, 2)) for o in outputs]
        maxima = batch if maxima is None else [np.maximum(a, b) for a, b in zip(maxima, batch)]
    return dict(zip(names, maxima))


def equalize(model, calibration: np.ndarray, headroom: float = DEFAULT_HEADROOM,
             max_pointwise_scale: float = DEFAULT_MAX_POINTWISE_SCALE, maxima=None, info=None):
    """A copy of `model` whose ReLU6 outputs fill [0, 6] channel by channel (see the module doc)."""
    info = info if info is not None else Prepared()
    if not is_mobilenet(model):
        return model
    maxima = maxima if maxima is not None else channel_maxima(model, calibration)
    from mobilenet_keras.model import copy_model

    model = copy_model(model)
    weights = ConvWeights(model)
    for n in weights.names:
        reader = weights.reader(n)
        if reader is None:
            # The last ReLU6 feeds the pooling and the classifier: left as it is. Equalizing it into
            # conv_preds through the pooling was tried (2026-12-04): on the CIFAR-10 benchmark model 255 of
            # its 256 channels already reach 6 / headroom on calibration images, on the two test classifiers
            # all do: the files did not change.
            continue
        top = np.asarray(maxima[n], np.float64) * headroom
        scale = np.where(top >= MIN_EQUALIZED_MAXIMUM * headroom, RELU6 / np.maximum(top, 1e-12), 1.0)
        scale = np.clip(scale, 1.0, None if weights.depthwise[reader] else max_pointwise_scale)
        if np.all(scale == 1.0):
            continue
        _, v, _ = weights.bn[n]
        v["gamma"] *= scale
        v["beta"] *= scale
        for channel in np.flatnonzero(scale != 1.0):
            weights.scale_input(reader, channel, 1.0 / scale[channel])
        info.scales[n] = scale
    weights.write()
    return model


def prepare(model, calibration: np.ndarray | None, *, dead_channels: bool = True, equalization: bool = True,
            input_range=(-1.0, 1.0), headroom: float = DEFAULT_HEADROOM,
            max_pointwise_scale: float = DEFAULT_MAX_POINTWISE_SCALE):
    """(model with dead channels absorbed, then equalized; `Prepared`); `model` itself when it is not a
    MobileNet of this package or nothing applies."""
    info = Prepared()
    if not is_mobilenet(model):
        return model, info
    if dead_channels:
        model = absorb_dead_channels(model, input_range, info=info)
    if equalization and calibration is not None:
        model = equalize(model, calibration, headroom, max_pointwise_scale, info=info)
    return model, info
