"""The MobileNet V1 builder: a Keras 3 functional model driven by the block table in `specs`."""

from __future__ import annotations

import math
import numbers
import os
import types
from typing import Any, Callable

import keras

from mobilenet_keras import batchnorm as fused_batchnorm
from mobilenet_keras import pretrained, specs
from mobilenet_keras.weights import load_weights

_POOLING = (None, "avg", "max")
_OUTPUT_STRIDES = (None, 8, 16, 32)
MIN_SIZE = 32
# Upper bounds that no real model reaches, so a typo (alpha=25, classes=10**9) fails at once with a
# message instead of exhausting memory while the layers are built.
MIN_ALPHA = 1 / 32  # the stem's 32 filters keep one
MAX_ALPHA = 16.0
MAX_DEPTH_MULTIPLIER = 64
MAX_CLASSES = 1_000_000
MAX_SIZE = 16384
MAX_CHANNELS = 1024


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def MobileNetV1(  # noqa: N802 - named like keras.applications.MobileNet on purpose
    input_shape: tuple[int | None, int | None, int] | None = None,
    alpha: float = 1.0,
    depth_multiplier: int = 1,
    dropout: float = 1e-3,
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_tensor: Any = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | Callable | None = "softmax",
    output_stride: int | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build MobileNet V1 (Howard et al. 2017), layer for layer as `keras.applications.MobileNet`.

    Args:
        input_shape: `(height, width, 3)`, each side at least 32. Defaults to `(224, 224, 3)` with
            the top and to `(None, None, 3)` (any size) without it.
        alpha: width multiplier: every layer has `int(filters * alpha)` filters. ImageNet weights
            exist for 0.25, 0.5, 0.75 and 1.0.
        depth_multiplier: channel multiplier of the depthwise convolutions (an integer >= 1).
            The paper's "resolution multiplier" is set by `input_shape` instead.
        dropout: dropout rate before the classifier.
        include_top: whether to add global average pooling, dropout, the 1x1 `conv_preds`
            classifier and the `predictions` activation.
        weights: `None` (random), `"imagenet"` (Keras's published file for this alpha and size,
            downloaded once into `~/.keras/models`), or the path to a Keras `.h5` or `.weights.h5`
            file (or a `.keras` model file, for its weights: it must match exactly, as a `.weights.h5`
            file). An `.h5` file without the top loads into a model with the top: the backbone is filled
            and the new classifier keeps its random initialisation.
        input_tensor: optional Keras tensor to use as the model's input.
        pooling: without the top, `None` (the 4D feature map), `"avg"` or `"max"` (a 2D vector).
        classes: number of classes of the top.
        classifier_activation: activation of the `predictions` layer: `"softmax"`, `None` for
            logits, or any Keras activation.
        output_stride: ratio of input to output resolution: `None` or 32 (the paper), 16 or 8.
            Below 32, later strides become 1 and depthwise convolutions dilate (as in TF-slim),
            which keeps the ImageNet weights valid for dense prediction.
        name: model name; defaults to `mobilenet_{alpha:.2f}_{rows}` as in Keras.

    Returns:
        A `keras.Model`. Layer names (`conv1`, `conv_dw_3_bn`, `conv_pw_13_relu`, `conv_preds`,
        `predictions`, ...) are the same as keras.applications and are part of this API.

    Raises:
        ValueError: for arguments outside what is listed above, with what is allowed.
    """
    return build_network(
        keras,
        input_shape=input_shape,
        alpha=alpha,
        depth_multiplier=depth_multiplier,
        dropout=dropout,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        output_stride=output_stride,
        name=name,
    )


def _validate(input_shape, alpha, depth_multiplier, include_top, weights, pooling, classes,
              classifier_activation, output_stride, dropout) -> tuple[int | None, int | None, int]:
    if not _is_number(alpha) or not math.isfinite(alpha) or not MIN_ALPHA <= alpha <= MAX_ALPHA:
        raise ValueError(f"alpha must be a number > 0 and finite, from {MIN_ALPHA} (so every layer keeps a filter) to "
                         f"{MAX_ALPHA:g} (ImageNet weights: 0.25, 0.5, 0.75, 1.0); got {alpha!r}.")
    if not _is_integer(depth_multiplier) or not 1 <= depth_multiplier <= MAX_DEPTH_MULTIPLIER:
        raise ValueError(f"depth_multiplier must be an integer >= 1 and <= {MAX_DEPTH_MULTIPLIER}; "
                         f"got {depth_multiplier!r}.")
    if pooling not in _POOLING:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}.")
    if output_stride not in _OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be None, 8, 16 or 32; got {output_stride!r}.")
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}.")
    if include_top not in (True, False):  # numpy's bools too
        raise ValueError(f"include_top must be True or False; got {include_top!r}.")
    if include_top and (not _is_integer(classes) or not 1 <= classes <= MAX_CLASSES):
        raise ValueError(f"classes must be an integer from 1 to {MAX_CLASSES}; got {classes!r}.")
    if include_top and classes == 1 and classifier_activation == "softmax":
        raise ValueError("classes=1 with a softmax gives 1.0 for every image and can't learn; for two classes use "
                         "classes=2, or classes=1 with classifier_activation='sigmoid'.")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, 'imagenet' or the path to a weights file (a str or Path); got "
                         f"{type(weights).__name__} {weights!r}.")
    if weights is not None and weights != "imagenet" and not os.path.isfile(weights):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path to a weights file; {str(weights)!r} is not a file."
        )
    if weights is not None and classifier_activation not in (None, "softmax") and include_top and weights == "imagenet":
        raise ValueError(
            f"With ImageNet weights, classifier_activation must be None or 'softmax'; got {classifier_activation!r}."
        )

    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape!r}.") from None
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape}.")
    rows, cols, channels = input_shape
    for side in (rows, cols):
        if side is not None and (not _is_integer(side) or not MIN_SIZE <= side <= MAX_SIZE):
            raise ValueError(f"input height and width must be integers, at least {MIN_SIZE} and at most "
                             f"{MAX_SIZE} (or None); got {input_shape}.")
    if not _is_integer(channels) or not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"input channels must be an integer from 1 to {MAX_CHANNELS}; got {input_shape}.")
    input_shape = tuple(None if v is None else int(v) for v in input_shape)
    if weights is not None and channels != 3:
        raise ValueError(f"pretrained weights need 3 input channels (RGB); got input_shape={input_shape}.")
    return input_shape


def _is_keras_tensor(k: types.ModuleType, value) -> bool:
    try:
        return bool(k.backend.is_keras_tensor(value))
    except ValueError:  # tf_keras's answer for an array or a string
        return False


def _batchnorm_class(k: types.ModuleType) -> type:
    if k is keras:
        return fused_batchnorm.BatchNormalization
    return k.layers.BatchNormalization  # tf_keras's own trains through the fused kernel already


def build_network(
    k: types.ModuleType,
    *,
    input_shape=None,
    alpha=1.0,
    depth_multiplier=1,
    dropout=1e-3,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    output_stride=None,
    name=None,
    fold_batchnorm=False,
):
    """Build MobileNet V1 with the Keras namespace `k`: `keras`, or `tf_keras` for tensorflow-model-optimization.

    Takes `MobileNetV1`'s arguments. `fold_batchnorm=True` builds the inference form that TFLite runs:
    every convolution carries a bias and no BatchNormalization follows it (the QAT twin trains in this
    form, so that its simulated weight quantization is the one the converted file uses).
    """
    if input_tensor is not None:  # its shape is the input shape: checked, and named in the model's name, as one
        if not _is_keras_tensor(k, input_tensor):  # an array or eager tensor printed itself in a long error
            raise ValueError(f"input_tensor must be a Keras tensor (keras.Input(...), or a layer's output); got "
                             f"{type(input_tensor).__name__}. To run the model on data, build it and call it.")
        given = tuple(input_tensor.shape)[1:]
        if input_shape is not None and tuple(input_shape) != given:
            raise ValueError(f"input_shape {tuple(input_shape)} differs from input_tensor's shape {given}; give one "
                             "of them.")
        input_shape = given
    input_shape = _validate(input_shape, alpha, depth_multiplier, include_top, weights, pooling,
                            classes, classifier_activation, output_stride, dropout)
    rows, cols, _ = input_shape
    weights_size = None
    if weights == "imagenet":
        weights_size = pretrained.check_published(alpha, rows, cols, include_top, depth_multiplier, classes)

    layers = k.layers
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
        inputs = img_input
    else:
        img_input = input_tensor
        inputs = k.utils.get_source_inputs(input_tensor) if hasattr(k.utils, "get_source_inputs") else input_tensor

    normalization = _batchnorm_class(k)

    def batchnorm(x, name):
        return x if fold_batchnorm else normalization(name=name)(x)

    stem = specs.STEM
    x = layers.Conv2D(specs.scaled_filters(stem.filters, alpha), stem.kernel, strides=stem.stride,
                      padding="same", use_bias=fold_batchnorm, name="conv1")(img_input)
    x = batchnorm(x, "conv1_bn")
    x = layers.ReLU(6.0, name="conv1_relu")(x)

    for plan in specs.plan_blocks(output_stride):
        i = plan.spec.block_id
        if plan.stride == 1:
            padding = "same"
        else:
            # TF-slim pads only bottom/right before a strided 3x3; Keras's weights expect that.
            x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{i}")(x)
            padding = "valid"
        x = layers.DepthwiseConv2D(specs.DEPTHWISE_KERNEL, strides=plan.stride, padding=padding,
                                   depth_multiplier=depth_multiplier, dilation_rate=plan.dilation,
                                   use_bias=fold_batchnorm, name=f"conv_dw_{i}")(x)
        x = batchnorm(x, f"conv_dw_{i}_bn")
        x = layers.ReLU(6.0, name=f"conv_dw_{i}_relu")(x)
        x = layers.Conv2D(specs.scaled_filters(plan.spec.filters, alpha), 1, padding="same",
                          use_bias=fold_batchnorm, name=f"conv_pw_{i}")(x)
        x = batchnorm(x, f"conv_pw_{i}_bn")
        x = layers.ReLU(6.0, name=f"conv_pw_{i}_relu")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="global_average_pooling2d")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, 1, padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        x = layers.Activation(classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="global_max_pooling2d")(x)

    if name is None:
        name = f"mobilenet_{alpha:0.2f}_{rows if rows is not None else 'any'}"
    model = k.Model(inputs, x, name=name)

    if weights == "imagenet":
        file = pretrained.file_name(alpha, weights_size, include_top)
        weights = _imagenet_file(k, file)
    if weights is not None:
        load_weights(model, weights)
    return model


def _imagenet_file(k, file: str) -> str:
    """Keras's ImageNet weights file (downloaded once into $KERAS_HOME/models), or a ValueError that
    says how to do without the network."""
    try:
        return k.utils.get_file(file, pretrained.BASE_URL + file, cache_subdir="models")
    except Exception as exc:  # noqa: BLE001 - urllib, socket and Keras raise several types offline
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        raise ValueError(f"could not download Keras's ImageNet weights {file} ({reason[:200]}); pass a path to "
                         f"the .h5 file or put it in $KERAS_HOME/models (~/.keras/models).") from None


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of a Keras 3 model with its own weights (set from `model`'s), whose weights can change freely.

    Lambda layers are shared, not rebuilt: rebuilding one means deserializing its Python function,
    which Keras's safe mode refuses, although the function is already in this process. They hold no
    weights, so sharing them changes nothing.
    """

    def clone(layer):
        if isinstance(layer, keras.layers.Lambda):
            return layer
        try:
            return layer.__class__.from_config(layer.get_config())
        except Exception as exc:  # noqa: BLE001 - a custom layer's own code: say which layer and what to do
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"can't copy layer {layer.name!r} ({type(layer).__name__}) to change the model's weights: "
                             f"its get_config() does not rebuild it ({first}). Give the layer a get_config() that "
                             "returns its constructor's arguments (Keras's custom-layer guide), or convert without "
                             "the steps that change weights (bias_correction=False, equalization=False, "
                             "adaround=False).") from None

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def load_model_file(path: str | os.PathLike) -> keras.Model:
    """Load a `.keras` file, with a one-line ValueError that says what is wrong with it and what to do.

    Refuses, before Keras reads it: a missing file, a damaged one (not a zip archive, or no config.json),
    and one holding a Lambda layer (Keras's safe mode would refuse to run code from the file).
    """
    import json
    import zipfile
    import zlib

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist; give a .keras file written by model.save or mobilenet-keras train.")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            head = b""
        if head[4:8] == b"TFL3":  # the flatbuffer's file identifier
            raise ValueError(f"{path} is a TFLite file, not a .keras archive: name it .tflite (predict and verify "
                             "take it so), or give the .keras model it was converted from.") from None
        if head == b"\x89HDF\r\n\x1a\n":  # a whole .h5 model of Keras 2 or a weights file: not damaged, another format
            raise ValueError(f"{path} is an HDF5 file (a weights file or a Keras 2 .h5 model), not a .keras archive: "
                             "build the model with MobileNetV1(..., weights=PATH) for a weights file, or save the "
                             "model as .keras (model.save('model.keras')).") from None
        raise ValueError(f"{path} is damaged ({type(exc).__name__}: not a complete .keras archive); "
                         "save or train the model again.") from None
    if '"class_name": "Lambda"' in json.dumps(config):
        raise ValueError(f"{path} holds a Lambda layer, which Keras refuses to load in safe mode (it would run code "
                         "from the file); rebuild the model without Lambda layers (MobileNetV1 has none), or load "
                         "it yourself with keras.models.load_model(..., safe_mode=False) if you trust the file.")
    try:
        return keras.models.load_model(path)
    except (zipfile.BadZipFile, zlib.error) as exc:  # a sound directory over damaged members (a bad CRC)
        raise ValueError(f"{path} is damaged ({' '.join(str(exc).split())[:200]}); save or train the model "
                         "again.") from None
    except (ValueError, TypeError, KeyError, OSError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path} could not be loaded by Keras ({reason}).") from None
