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


def _layer_macs(layer) -> int:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, h, w, c = layer.output.shape
        kh, kw = layer.kernel_size
        return h * w * c * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c = layer.output.shape
        kh, kw = layer.kernel_size
        return h * w * c * kh * kw * layer.input.shape[-1]
    if isinstance(layer, keras.layers.Dense):
        return layer.input.shape[-1] * layer.units
    return 0


def count_complexity(model: keras.Model) -> Complexity:
    """Multiply-adds of the convolutions and dense layers of `model`, and its parameter count.

    Batch norm, activations and pooling are not counted, as in the paper and TF-slim's tables.
    The model needs a fixed input size.
    """
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        if shape is not None and isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            if None in tuple(layer.output.shape)[1:]:
                raise ValueError("count_complexity needs a model built with a fixed input size, not (None, None, 3).")
    macs = sum(_layer_macs(layer) for layer in model.layers)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return Complexity(multiply_adds=int(macs), parameters=int(model.count_params()), trainable_parameters=trainable)


def complexity(alpha: float = 1.0, resolution: int = 224, include_top: bool = True, classes: int = 1000,
               depth_multiplier: int = 1) -> Complexity:
    """Multiply-adds and parameters of MobileNet V1 at width `alpha` and square `resolution`."""
    from mobilenet_keras.model import MobileNetV1

    model = MobileNetV1(input_shape=(resolution, resolution, 3), alpha=alpha, include_top=include_top,
                        classes=classes, depth_multiplier=depth_multiplier)
    return count_complexity(model)
