"""Mapping TFLite tensor names back to the Keras layers they come from."""

from __future__ import annotations


def _layer_of(part: str, layer_names: set[str]) -> str | None:
    # Tracing the model scopes names with a counter: "conv_pw_3_1" is layer "conv_pw_3".
    if part in layer_names:
        return part
    base, _, counter = part.rpartition("_")
    return base if counter.isdigit() and base in layer_names else None


def keras_layers_in(tensor_name: str, layer_names: set[str]) -> list[str]:
    """The Keras layers named in a TFLite tensor name, in order.

    Fused ops carry every fused layer's path, ';'-separated:
    "m/conv_pw_3_relu_1/Relu6;m/conv_pw_3_bn_1/batchnorm/add_1;m/conv_pw_3_1/convolution".
    """
    found = []
    for piece in tensor_name.split(";"):
        for part in piece.split("/"):
            layer = _layer_of(part, layer_names)
            if layer is not None and layer not in found:
                found.append(layer)
    return found
