"""How tensorflow-model-optimization quantizes the BatchNorm-folded MobileNet twin.

This module imports tfmot at the top (its classes subclass tfmot's), so only `mobilenet_keras.optimize.qat`
imports it, inside the functions that need it.

Why not tfmot's default scheme as is:
- Its per-axis weight quantizer reduces over the last axis, which for a DepthwiseConv2D kernel
  (kh, kw, channels, multiplier) is the multiplier: one scale for the whole kernel. The TFLite file
  stores one scale per channel, so training saw a coarser grid than the file uses.
- On a folded network (Conv2D -> ReLU6, no BatchNorm between) its `LayerReLUQuantize` transform
  gives the convolution a no-op config, so the weights would not be quantized during training at all.
- Its input quantizer (AllValuesQuantizer) widens its range to every training batch's min and max;
  MobileNet's input range is known, and the one `mobilenet_keras.optimize.qat.INPUT_RANGE` sets is where the
  QAT model and its file quantize every pixel value alike, so it must stay put.
Here every Conv2D / DepthwiseConv2D kernel is quantized per output channel, symmetric and
narrow-range (TFLite's int8 weight scheme), outputs are quantized after the ReLU6 only, and the
layout transform only adds the input quantizer, whose range training does not change.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.keras.compat import keras  # tf_keras, as tfmot uses it
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_layout_transform,
    default_8bit_quantize_scheme,
    default_8bit_transforms,
)
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer
from tensorflow_model_optimization.python.core.quantization.keras import utils as quantize_utils
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import model_transformer
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations.transforms import LayerNode

_NUM_BITS = 8
_INITIAL_RANGE = 6.0  # replaced from the weights before training (mobilenet_keras.optimize.qat.init_ranges)
# No channel's range is narrower than this fraction of its layer's widest. Folding ImageNet's dead
# channels leaves kernels of ~1e-12 beside a bias of ~1: with their own range, the file's int32 bias
# (bias / (input scale * weight scale)) overflows and the channel's constant output is lost. It is
# 1e-4, not more: conv1 of the CIFAR test classifier has a live channel at 8e-4 of its layer's widest,
# and a wider range there put the QAT model off the grid of the post-training file it starts from.
RANGE_FLOOR = 1e-4


def channel_bounds(max_abs):
    """Per-channel symmetric range from each channel's max |w| (a numpy array or a tf tensor), with the floor."""
    if isinstance(max_abs, np.ndarray):
        return np.maximum(max_abs, RANGE_FLOOR * max_abs.max())
    return tf.maximum(max_abs, RANGE_FLOOR * tf.reduce_max(max_abs))


class PerChannelWeightsQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Symmetric, narrow-range int8 with one range per output channel, for Conv2D and DepthwiseConv2D.

    A depthwise kernel (kh, kw, C, M) has C * M output channels; it is viewed as (kh, kw, 1, C * M)
    (the same memory order) so that the last axis is the output channel, as TFLite stores it.
    """

    def __init__(self, depthwise: bool = False):
        self.depthwise = depthwise

    def _channels(self, shape) -> int:
        return int(shape[-2] * shape[-1]) if self.depthwise else int(shape[-1])

    def build(self, tensor_shape, name, layer):
        channels = self._channels(tensor_shape)
        min_var = layer.add_weight(name + "_min", shape=(channels,), trainable=False,
                                   initializer=keras.initializers.Constant(-_INITIAL_RANGE))
        max_var = layer.add_weight(name + "_max", shape=(channels,), trainable=False,
                                   initializer=keras.initializers.Constant(_INITIAL_RANGE))
        return {"min_var": min_var, "max_var": max_var}

    def __call__(self, inputs, training, weights, **kwargs):
        shape = inputs.shape
        values = tf.reshape(inputs, (*shape[:-2], 1, self._channels(shape))) if self.depthwise else inputs
        low, high = weights["min_var"], weights["max_var"]
        if training:  # the range of the current weights, as tfmot's LastValueQuantize, with the floor
            bound = channel_bounds(tf.reduce_max(tf.abs(values), axis=list(range(len(shape) - 1))))
            low, high = low.assign(-bound), high.assign(bound)
        quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            values, low, high, num_bits=_NUM_BITS, narrow_range=True)
        return tf.reshape(quantized, shape) if self.depthwise else quantized

    def get_config(self):
        return {"depthwise": self.depthwise}


class ConvWeightsConfig(tfmot.quantization.keras.QuantizeConfig):
    """A convolution followed by ReLU6: kernel quantized per channel, output left for the ReLU6's quantizer."""

    def __init__(self, depthwise: bool = False):
        self.depthwise = depthwise
        self.attribute = "depthwise_kernel" if depthwise else "kernel"

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, self.attribute), PerChannelWeightsQuantizer(self.depthwise))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.attribute, quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"depthwise": self.depthwise}


class FixedInputQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """8-bit asymmetric FakeQuant over the range held in its two variables, which training leaves alone
    (`mobilenet_keras.optimize.qat.init_ranges` sets them)."""

    def build(self, tensor_shape, name, layer):
        low = layer.add_weight(name=name + "_min", initializer=keras.initializers.Constant(-1.0), trainable=False)
        high = layer.add_weight(name=name + "_max", initializer=keras.initializers.Constant(1.0), trainable=False)
        return {"min_var": low, "max_var": high}

    def __call__(self, inputs, training, weights, **kwargs):
        return tf.quantization.fake_quant_with_min_max_vars(inputs, weights["min_var"], weights["max_var"],
                                                            num_bits=_NUM_BITS, narrow_range=False)

    def get_config(self):
        return {}


class _FixedInputLayerQuantize(default_8bit_transforms.InputLayerQuantize):
    """tfmot's InputLayer -> QuantizeLayer transform, with `FixedInputQuantizer`."""

    def replacement(self, match_layer):
        layer = quantize_layer.QuantizeLayer(FixedInputQuantizer())
        config = quantize_utils.serialize_layer(layer, use_legacy_format=True)
        config["name"] = layer.name
        return LayerNode(config, input_layers=[match_layer])

    def custom_objects(self):
        return {"QuantizeLayer": quantize_layer.QuantizeLayer, "FixedInputQuantizer": FixedInputQuantizer}


class _InputOnlyLayout(default_8bit_quantize_layout_transform.Default8BitQuantizeLayoutTransform):
    def apply(self, model, layer_quantize_map):
        return model_transformer.ModelTransformer(
            model, [_FixedInputLayerQuantize()], set(layer_quantize_map), layer_quantize_map
        ).transform()


class FoldedMobileNetScheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):
    """tfmot's default 8-bit registry, with only the input quantizer added by the layout transform."""

    def get_layout_transformer(self):
        return _InputOnlyLayout()


CUSTOM_OBJECTS = {
    "PerChannelWeightsQuantizer": PerChannelWeightsQuantizer,
    "FixedInputQuantizer": FixedInputQuantizer,
    "ConvWeightsConfig": ConvWeightsConfig,
}
