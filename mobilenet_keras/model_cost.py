"""Multiply-adds and parameters, counted from a built model's layers (a multiply-add counts once)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class Complexity:
    """Cost of one forward pass of one image."""

    multiply_adds: int
    parameters: int  # all weights, BatchNorm moving statistics included (as model.count_params())
    trainable_parameters: int  # what the paper's "Million Parameters" column counts

    def __str__(self) -> str:
        return f"{self.multiply_adds / 1e6:,.1f}M multiply-adds, {self.parameters / 1e6:,.2f}M parameters"


def _leaf_layers(model: keras.Model):
    """Every layer of `model`, nested models (a backbone inside a Sequential or a functional wrapper) opened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _positions(shape) -> int:
    """Spatial positions of a (batch, ..., channels) shape."""
    return int(np.prod(tuple(shape)[1:-1], dtype=np.int64))


def _layer_macs(layer) -> int:
    """Multiply-adds of one layer; a layer with a kernel of a kind not counted here is refused, since leaving it
    out would give a figure too small without a word."""
    L = keras.layers
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return _positions(layer.output.shape) * layer.output.shape[-1] * int(np.prod(layer.kernel_size))
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        inner = layer.input.shape[-1] * layer.depth_multiplier
        return _positions(layer.output.shape) * inner * (int(np.prod(layer.kernel_size)) + layer.output.shape[-1])
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return (_positions(layer.input.shape) * layer.input.shape[-1] * int(np.prod(layer.kernel_size))
                * layer.output.shape[-1])
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        return (_positions(layer.output.shape) * layer.output.shape[-1] * int(np.prod(layer.kernel_size))
                * layer.input.shape[-1] // getattr(layer, "groups", 1))
    if isinstance(layer, L.Dense):
        return _positions(layer.input.shape) * layer.input.shape[-1] * layer.units
    if any("kernel" in w.path.rsplit("/", 1)[-1] for w in layer.weights):
        raise ValueError(f"count_complexity counts convolutions and Dense layers; layer {layer.name!r} "
                         f"({type(layer).__name__}) has a kernel it doesn't know how to count.")
    return 0


def count_complexity(model: keras.Model) -> Complexity:
    """Multiply-adds of the convolutions and dense layers of `model` (nested models included), and its parameter
    count.

    Batch norm, activations and pooling are not counted, as in the paper and TF-slim's tables.
    The model needs a fixed input size.
    """
    layers = list(_leaf_layers(model))
    for layer in layers:
        if layer.weights and getattr(layer, "output", None) is not None and None in tuple(layer.output.shape)[1:]:
            raise ValueError("count_complexity needs a model built with a fixed input size, not (None, None, 3).")
    macs = sum(_layer_macs(layer) for layer in layers)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return Complexity(multiply_adds=int(macs), parameters=int(model.count_params()), trainable_parameters=trainable)


def complexity(alpha: float = 1.0, resolution: int = 224, include_top: bool = True, classes: int = 1000,
               depth_multiplier: int = 1) -> Complexity:
    """Multiply-adds and parameters of MobileNet V1 at width `alpha` and square `resolution`."""
    from mobilenet_keras.model import MobileNetV1

    model = MobileNetV1(input_shape=(resolution, resolution, 3), alpha=alpha, include_top=include_top,
                        classes=classes, depth_multiplier=depth_multiplier)
    return count_complexity(model)
