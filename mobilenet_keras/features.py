"""Multi-scale feature maps for detection and segmentation heads."""

from __future__ import annotations

import keras

from mobilenet_keras import specs

LEVELS = (4, 8, 16, 32)


def feature_layer_names(model: keras.Model) -> dict[str, str]:
    """Name of the last layer at each stride of `model`: `{"stride_4": "conv_pw_3_relu", ...}`.

    Strides are read from the model's own depthwise layers, so a backbone built with
    `output_stride=16` or `8` lists only the levels it has (its last map stays at that stride).
    """
    names: dict[str, str] = {}
    stride = model.get_layer("conv1").strides[0]
    for spec in specs.BLOCKS:
        stride *= model.get_layer(f"conv_dw_{spec.block_id}").strides[0]
        if stride in LEVELS:
            names[f"stride_{stride}"] = f"conv_pw_{spec.block_id}_relu"
    return names


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model that shares `model`'s layers and outputs a dict of its feature maps by stride.

    Outputs are keyed `stride_4`, `stride_8`, `stride_16` and `stride_32`: the maps after
    `conv_pw_3_relu`, `conv_pw_5_relu`, `conv_pw_11_relu` and `conv_pw_13_relu` of the standard
    network. Weights are shared, so training the extractor trains `model`.
    """
    if not (hasattr(model, "get_layer") and hasattr(model, "layers")):
        raise TypeError(f"feature_extractor takes a Keras model (MobileNetV1(...), or keras.models.load_model(path)); "
                        f"got {type(model).__name__}.")
    try:
        layer_names = feature_layer_names(model)
    except ValueError:
        raise ValueError(f"{model.name} is not a MobileNet V1 built by MobileNetV1 (layer names differ).") from None
    outputs = {key: model.get_layer(name).output for key, name in layer_names.items()}
    # the one input tensor, not the one-element list `model.inputs`: Keras warns on every call of a model
    # whose input structure differs from what it is called with
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
