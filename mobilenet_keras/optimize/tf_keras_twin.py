"""A tf_keras (Keras 2) twin of a Keras 3 MobileNet, built from the same block table.

tensorflow-model-optimization (quantization-aware training, pruning, clustering) accepts only
tf_keras models. Rather than keep a second copy of the architecture, the twin is built by the same
builder function (`mobilenet_keras.model.build_network`) with the `tf_keras` namespace, from build
arguments read off the Keras 3 model, and the weights are copied across by layer name. The twin's
outputs equal the Keras 3 model's; `mobilenet_keras.weights.transfer_weights` copies trained weights
back, from a twin or from tfmot's quantization-wrapped model.

`tf_keras` is imported inside the functions, never at module import: importing it (or tfmot) must
not change which Keras the rest of a program uses.
"""

from __future__ import annotations

from typing import Any

from mobilenet_keras import specs


def _layer(model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _alpha(model) -> float:
    """The width multiplier that gives every layer of `model` its filter count under `specs.scaled_filters`."""
    widths = [(specs.STEM.filters, model.get_layer("conv1").filters)]
    widths += [(spec.filters, model.get_layer(f"conv_pw_{spec.block_id}").filters) for spec in specs.BLOCKS]
    last_base, last = widths[-1]
    # int(last_base * alpha) == last holds on [last / base, (last + 1) / base); try points across it.
    for fraction in (0.0, 0.5, 0.25, 0.75, 0.999):
        alpha = (last + fraction) / last_base
        if all(specs.scaled_filters(base, alpha) == filters for base, filters in widths):
            return round(alpha, 6) if specs.scaled_filters(last_base, round(alpha, 6)) == last else alpha
    raise ValueError(f"{model.name}: the filter counts of its layers match no width multiplier of MobileNet V1.")


def _output_stride(model) -> int | None:
    stride = model.get_layer("conv1").strides[0]
    dilated = False
    for spec in specs.BLOCKS:
        layer = model.get_layer(f"conv_dw_{spec.block_id}")
        stride *= layer.strides[0]
        dilated = dilated or layer.dilation_rate[0] > 1
    return stride if dilated else None


def architecture_of(model) -> dict[str, Any]:
    """The `MobileNetV1` arguments that rebuild `model`'s architecture (weights not included).

    Raises:
        ValueError: `model` was not built by `MobileNetV1` (its layer names differ).
    """
    names = {layer.name for layer in model.layers}
    missing = [name for name in specs.convolution_names() if name not in names]
    if missing:
        raise ValueError(f"{model.name} is not a MobileNet V1 built by MobileNetV1 (it has no layer {missing[0]!r}).")
    arguments: dict[str, Any] = {
        "input_shape": tuple(model.input_shape[1:]),
        "alpha": _alpha(model),
        "depth_multiplier": int(model.get_layer("conv_dw_1").depth_multiplier),
        "output_stride": _output_stride(model),
        "name": model.name,
    }
    preds = _layer(model, "conv_preds")
    arguments["include_top"] = preds is not None
    if preds is not None:
        arguments["classes"] = int(preds.filters)
        dropout = _layer(model, "dropout")
        arguments["dropout"] = float(dropout.rate) if dropout is not None else 0.0
        activation = model.get_layer("predictions").get_config()["activation"]
        arguments["classifier_activation"] = None if activation == "linear" else activation
    elif _layer(model, "global_average_pooling2d") is not None:
        arguments["pooling"] = "avg"
    elif _layer(model, "global_max_pooling2d") is not None:
        arguments["pooling"] = "max"
    return arguments


def tf_keras_twin(model):
    """A tf_keras model with `model`'s layers, names, shapes, BatchNorm settings and weights.

    Args:
        model: a Keras 3 model built by `MobileNetV1` (or trained by `mobilenet_keras.training.trainer`).

    Returns:
        A `tf_keras.Model` whose outputs equal `model`'s, ready for tensorflow-model-optimization.
    """
    import tf_keras

    from mobilenet_keras.model import build_network
    from mobilenet_keras.weights import transfer_weights

    twin = build_network(tf_keras, **architecture_of(model))
    for layer in twin.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            source = model.get_layer(layer.name)
            layer.momentum = source.momentum
            layer.epsilon = source.epsilon
            # tf_keras's fused kernel rounds differently from Keras 3's formula (8e-6 apart on softmax
            # outputs); unfused, it computes the same expression and the twin's outputs are identical.
            layer.fused = False
    transfer_weights(model, twin)
    _check_same_outputs(model, twin)
    return twin


def check_only_mobilenet_layers(model, rebuilt, folded: bool = False) -> None:
    """ValueError naming the layers of `model` that `rebuilt` (its copy built from the block table) lacks: a
    layer a user added (a Rescaling in front, a softmax after a logits model) would be left out without a word,
    and pruning, clustering or QAT would train another network. `folded`: `rebuilt` has its BatchNorms folded
    into the convolutions (QAT's), so those are not missing."""
    from collections import Counter

    def kinds(network):
        return Counter(type(layer).__name__ for layer in network.layers
                       if not (folded and "BatchNormalization" in type(layer).__name__))

    extra = kinds(model) - kinds(rebuilt)
    if extra:
        rebuilt_names = {layer.name for layer in rebuilt.layers}
        named = [f"{layer.name} ({type(layer).__name__})" for layer in model.layers
                 if type(layer).__name__ in extra and layer.name not in rebuilt_names] or sorted(extra)
        raise ValueError(f"{model.name} has layers that MobileNetV1 does not build: {', '.join(named[:5])}. "
                         "tensorflow-model-optimization works on a tf_keras copy rebuilt from MobileNetV1's table, "
                         "which would leave them out; give it the MobileNetV1 model alone (scale images in the input "
                         "pipeline, add layers after this step).")


def _check_same_outputs(model, twin) -> None:
    """ValueError unless `twin` gives `model`'s outputs on random images (to float32's precision, or to the
    model's own compute precision when it was built under a mixed precision policy)."""
    import numpy as np

    check_only_mobilenet_layers(model, twin)
    shape = (2, *(side or 64 for side in model.input_shape[1:]))
    images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    expected = np.asarray(model(images, training=False), np.float32)
    got = np.asarray(twin(images, training=False), np.float32)
    compute = str(getattr(getattr(model, "dtype_policy", None), "compute_dtype", "float32"))
    tolerance = 1e-4 if compute == "float32" else 5e-2  # bfloat16 keeps 8 bits of mantissa
    difference = float(np.abs(expected - got).max()) if expected.shape == got.shape else float("inf")
    if difference > tolerance * max(1.0, float(np.abs(expected).max())):
        raise ValueError(f"the tf_keras copy of {model.name} rebuilt from MobileNetV1's table gives other outputs "
                         f"({difference:.3g} apart, computing in {compute}): its layers are connected otherwise; "
                         "give it a model built by MobileNetV1.")
