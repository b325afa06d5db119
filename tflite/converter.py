"""Keras model -> .tflite file, in every mode of `tflite.modes`."""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from mobilenet_keras.files import check_output_path, scratch_folder, write_bytes_atomic
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE
from mobilenet_keras.quiet import quiet_tensorflow, tensorflow_logs_shown
from tflite.adaround import rounded_or_bias_corrected as round_to_grid
from tflite.batched import predict
from tflite.bias_correction import bias_corrected, convolution_input_means
from tflite.equalization import is_mobilenet, prepare
from tflite.modes import get_mode
from tflite.names import keras_layers_in
from tflite.representative import (CALIBRATION_IMAGES, check_single_image_input, collect, warn_if_few_distinct,
                                   warn_if_unit_range)

# MobileNet's input convention: raw pixels 0..255 through mobilenet_keras.preprocessing's scale and
# offset, i.e. [-1, 1]. Pinning a MobileNet's input range to it makes the quantized input map raw pixels
# 0..255 onto [-1, 1] (scale 2/255, uint8 zero point 127: the converter rounds [-1, 1]'s 127.5 down; pixel p
# reads as (p - 127) * 2/255, half a step above preprocess_input's), whatever range the calibration images reached.
MOBILENET_INPUT_RANGE = (float(INPUT_OFFSET), float(255 * INPUT_SCALE + INPUT_OFFSET))
DEFAULT_INPUT_RANGE = MOBILENET_INPUT_RANGE  # the name before input_range=None chose per model
# Layers that mark a MobileNet of this package (mobilenet_keras.MobileNetV1) at the top level of a model.
_MOBILENET_LAYERS = ("conv1", "conv_dw_1")
AUTO = "auto"
# Dynamic-range conversion keeps kernels smaller than this in float (TFLite's default).
DYNAMIC_MIN_ELEMENTS = 1024
# Recipes whose files quantize activations from calibration: the integer steps (dead channels, equalization,
# rounding by error) apply to them.
INTEGER_RECIPES = ("integer", "int16x8")
# The activations that each recipe's rounding by error models between layers (bits of their grid; None:
# float, as a dynamic-range file keeps them between its hybrid kernels).
ACTIVATION_BITS = {"integer": 8, "int16x8": 16, "dynamic": None}


# Names of other formats: a TFLite file written under one of them (`convert(model, "model.keras", ...)`)
# replaces the model it was made from, or a file a tool reads as its own format.
_OTHER_FORMATS = {".keras": "Keras model", ".weights.h5": "Keras weights", ".h5": "Keras/HDF5", ".hdf5": "HDF5",
                  ".onnx": "ONNX", ".pb": "SavedModel/protobuf", ".json": "JSON", ".txt": "text", ".csv": "CSV",
                  ".md": "Markdown", ".py": "Python", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def _other_format(path: Path) -> str | None:
    name = path.name.lower()
    return next((suffix for suffix in _OTHER_FORMATS if name.endswith(suffix)), None)


def convert(
    model,
    output_path: str | os.PathLike,
    mode: str,
    representative_data=None,
    num_calibration: int = CALIBRATION_IMAGES,
    batch_size: int | None = 1,
    denylist: Iterable[str] | str | None = None,
    *,
    input_range: tuple[float, float] | None = None,
    bias_correction: bool = True,
    equalization: bool | None = None,
    adaround: bool | None = None,
    target_agreement: float = 0.99,
    verbose: bool = False,
) -> Path:
    """Convert a Keras model to a TFLite file and return its path.

    Args:
        model: a Keras 3 model with a fixed input size (e.g. from `MobileNetV1`), taking images in
            its own convention ([-1, 1] for MobileNet: normalisation happens before the model).
        output_path: the `.tflite` file to write. It is written to a temporary file in the same
            folder and renamed, so a failed conversion leaves nothing there.
        mode: one of `tflite.MODES`: `float32`, `dynamic`, `float16`, `int8`, `uint8`,
            `int8_float_io`, `int16x8`, or `qat` / `qat_uint8` (a quantization-aware-trained
            model from `mobilenet_keras.optimize.qat`: its trained ranges are used, no calibration).
        representative_data: calibration images for the integer and int16x8 modes (optional for
            `dynamic`, where they feed the rounding by error or the bias correction): a numpy array, a
            `tf.data.Dataset`, an iterable of batches, or a folder of images. Float arrays are in the
            model's convention; uint8 arrays and folders are raw pixels and are scaled by
            `preprocess_input` (see `tflite.representative`).
        num_calibration: how many images to calibrate on (a folder is sampled across classes).
        batch_size: the file's static batch (1: what Android apps run), or None for a dynamic batch.
        denylist: Keras layer names to keep in float inside an integer file (selective quantization,
            e.g. the worst layers that `tflite.layer_errors` lists). None or [] (the default) quantizes
            every layer: the file is fully integer, as integer-only accelerators (NPUs, the Edge TPU)
            need. `"auto"` is the opt-in float prefix: for a MobileNet of this package, the fully
            integer file with every integer step (dead channels, equalization, rounding by error, bias
            correction) when it reaches `target_agreement` with the float model on the calibration
            images, or when its SQNR there is at least that of the float-prefix file; that file (and,
            for other models, the only candidate) keeps the fewest leading convolutions in float (0,
            then the stem, then whole blocks, up to 9 layers) that reach the target, with the steps
            that `bias_correction`, `equalization` and `adaround` turn on. A file with float layers
            runs on CPU and GPU delegates, not on integer-only hardware, and `tflite.verify` fails it
            unless called with `allow_float_ops=True`.
        input_range: the float range the model's input covers; int8, uint8 and int8_float_io files
            quantize their input over it (an int16x8 file over its calibration images' range). None
            (the default): for a MobileNet of this package (layers `conv1` and `conv_dw_1`), its
            preprocessing's range [-1, 1], so a `uint8` file takes raw pixels 0..255
            (scale 2/255, zero point 127); for any other model, the range of the calibration images
            (widened to hold 0), so a model that takes 0..255 pixels is not clipped to [-1, 1]. A
            one-line warning says when calibration images fall outside the range used.
        bias_correction: when calibration images are given, fold the expected int8 weight-rounding error of every
            convolution into its bias first (`tflite.bias_correction`); the file is still checked
            against the original model.
        equalization: for the integer modes and int16x8, on a MobileNet of this package: absorb dead
            channels into the next layer and equalize each ReLU6 output's channels over [0, 6] first
            (`tflite.equalization`; the float model's outputs stay the same). None (the default): on
            for a fully integer file (no denylist), off for a float prefix (with the prefix on top it
            did not beat bias correction alone).
        adaround: for the integer modes, int16x8 and dynamic (with representative_data), on a MobileNet
            of this package: round each folded kernel to TFLite's int8 grid up or down to keep the
            layer's output on the calibration images, layer by layer on the inputs the file gives it
            (int8, int16 or, in a dynamic-range file, float activations), so that it also absorbs
            earlier layers' error (`tflite.adaround`), with its own bias correction, instead of nearest
            rounding. None (the default): on for a fully integer file, int16x8 and dynamic, off for a
            float prefix (with the prefix on top, raw-pixel agreement of the CIFAR test classifier fell
            from 97% to 96%). When a file made with either step on by default can't be run by LiteRT's
            CPU delegate, it is made again without the steps that were on by default, with a warning (a
            random-weight MobileNet once gave such a file).
        target_agreement: top-1 agreement that `denylist="auto"` aims for.
        verbose: print a progress line while calibrating.

    Raises:
        ValueError: an unknown mode, missing, empty or malformed representative data, a model
            without a fixed input size, or an output path that can't be written.
    """
    spec = get_mode(mode)
    output_path = check_output_path(output_path)
    if isinstance(target_agreement, bool) or not isinstance(target_agreement, numbers.Real) \
            or not 0 < target_agreement <= 1:
        raise ValueError(f"target_agreement is a fraction above 0 and at most 1 (0.99 = 99%); got "
                         f"{target_agreement!r}.")
    other_format = _other_format(output_path)
    if other_format:
        raise ValueError(f"output_path {output_path} ends in {other_format}, a {_OTHER_FORMATS[other_format]} "
                         f"file's name; a TFLite file would be written there: name it "
                         f"{output_path.name[:-len(other_format)] or 'model'}.tflite.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}.")
    batch_size = None if batch_size is None else int(batch_size)
    check_single_image_input(model, "convert")
    model = float32_model(model)
    input_shape = tuple(model.input_shape[1:])
    if any(side is None for side in input_shape):
        raise ValueError(
            f"the model takes images of any size {input_shape}; a TFLite file needs a fixed size. "
            "Rebuild it with input_shape=(height, width, 3) and copy the weights over."
        )
    if spec.takes_qat_model and not any(type(layer).__name__.startswith("Quantize") for layer in model.layers):
        raise ValueError(f"mode {mode!r} takes a quantization-aware-trained model (tfmot's quantize_model); this "
                         "model has no quantization wrappers. Use mode 'int8' with representative_data instead.")
    auto = isinstance(denylist, str) and denylist == AUTO
    if isinstance(denylist, str) and not auto:
        raise ValueError(f"denylist must be a list of layer names, None or {AUTO!r}; got {denylist!r}.")
    denylist = [] if auto or denylist is None else list(denylist)
    auto = auto and spec.integer  # a float prefix exists in integer modes only; elsewhere "auto" asks for nothing
    if denylist and not spec.integer:
        raise ValueError(f"denylist applies to integer modes (int8, uint8, int8_float_io); not to {mode!r}.")
    if denylist:
        layer_names = {layer.name for layer in model.layers}
        unknown = [name for name in denylist if name not in layer_names]
        if unknown:
            raise ValueError(f"denylist names layers the model does not have: {unknown}.")

    if input_range is not None:
        check_input_range(input_range)  # before the calibration images are read
    calibration = None
    if spec.calibrated and representative_data is None:
        raise ValueError(f"mode {mode!r} needs representative_data (about {num_calibration} typical images).")
    if representative_data is not None and (spec.calibrated or spec.recipe == "dynamic"):
        calibration = collect(representative_data, input_shape, limit=num_calibration)
        warn_if_few_distinct(calibration)
    if spec.recipe == "integer":
        input_range = resolve_input_range(model, calibration, input_range)
    elif spec.recipe == "int16x8" and calibration is not None:
        # The int16x8 file takes no input range: it quantizes its float input symmetrically over the
        # calibration's largest |value|. Dead channels are judged over that and the model's own range.
        reach = max(float(np.abs(calibration).max()), *(abs(v) for v in MOBILENET_INPUT_RANGE))
        input_range = (-reach, reach)

    prepared = model
    integer_path = spec.recipe in INTEGER_RECIPES and calibration is not None and is_mobilenet(model)
    # A dynamic-range file's weights round by error too when calibration images are given; its small
    # kernels stay float (the converter's own rule), and its activations are float between layers.
    dynamic_path = spec.recipe == "dynamic" and calibration is not None and is_mobilenet(model)
    kept_float = _dynamic_float_layers(model) if spec.recipe == "dynamic" else ()
    # Every integer step is the default of a fully integer file only (see the docstring).
    fully_integer = integer_path and not auto and not denylist
    defaulted = [step for step, value, default in (("equalization", equalization, fully_integer),
                                                   ("rounding by error", adaround, fully_integer or dynamic_path))
                 if value is None and default]
    equalization = fully_integer if equalization is None else equalization
    adaround = (fully_integer or dynamic_path) if adaround is None else adaround
    if integer_path and equalization:
        prepared, _ = prepare(model, calibration, input_range=input_range)
    rounded = {}
    input_means = {}  # of `prepared`'s convolutions: each float prefix's bias correction starts from them

    def convert_with(float_layers: list[str], progress: bool = verbose) -> bytes:
        source = prepared
        key = tuple(float_layers) + kept_float  # every layer the file keeps in float: not rounded, not corrected
        if (integer_path or dynamic_path) and adaround:
            # Each layer rounds on the inputs this very file gives it, so every set of float layers
            # has a rounding of its own; the float layers keep their weights.
            if key not in rounded:
                rounded.clear()
                rounded[key] = round_to_grid(prepared, calibration, bias_correction=bias_correction, skip=key,
                                             activation_bits=ACTIVATION_BITS[spec.recipe])
            source = rounded[key]
        elif bias_correction and calibration is not None:
            if not input_means:
                input_means.update(convolution_input_means(prepared, calibration))
            source = bias_corrected(prepared, calibration, skip=key, input_means=input_means)
        return _convert_bytes(source, spec, input_shape, batch_size, calibration, float_layers, input_range,
                              progress)

    if auto and spec.integer and spec.calibrated:
        # int8 and uint8 files differ by an exact zero-point shift of their input; a float input is
        # quantized inside the graph, so int8_float_io keeps a search of its own
        searched = _prefix_key(model, calibration, spec.input_type == "float32", batch_size, input_range,
                               target_agreement, bias_correction, equalization, adaround)
        expected = predict(model, calibration)

        def every_integer_step() -> bytes:
            equalized, _ = prepare(model, calibration, input_range=input_range)
            source = round_to_grid(equalized, calibration, bias_correction=bias_correction)
            return _convert_bytes(source, spec, input_shape, batch_size, calibration, [], input_range, verbose)

        def float_prefix() -> tuple[bytes, float]:
            return _with_float_prefix(model, calibration, convert_with, target_agreement, verbose, searched, expected)

        if integer_path:
            flatbuffer = _fully_integer_or_prefix(every_integer_step, float_prefix, expected, calibration,
                                                  target_agreement, verbose, searched)
        else:
            flatbuffer = float_prefix()[0]
    else:
        flatbuffer = convert_with(denylist)
        if defaulted and not _runs(flatbuffer, calibration):
            steps = " and ".join(defaulted)
            warnings.warn(f"LiteRT can't run the file made with {steps}; making it without.", stacklevel=2)
            if "equalization" in defaulted:
                equalization, prepared = False, model
            if "rounding by error" in defaulted:
                adaround = False
            rounded.clear()
            input_means.clear()  # they were `prepared`'s
            flatbuffer = convert_with(denylist)
            if not _runs(flatbuffer, calibration):
                warnings.warn("LiteRT can't run this file either (its CPU delegate refused to prepare it); another "
                              "delegate may.", stacklevel=2)
    return write_bytes_atomic(output_path, flatbuffer)


def _dynamic_float_layers(model) -> tuple[str, ...]:
    """The convolutions that a dynamic-range conversion leaves in float: kernels under
    `DYNAMIC_MIN_ELEMENTS` weights."""
    import keras

    return tuple(layer.name for layer in model.layers
                 if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                 and int(np.prod(layer.kernel.shape)) < DYNAMIC_MIN_ELEMENTS)


def _runs(flatbuffer: bytes, calibration: np.ndarray) -> bool:
    """Whether LiteRT (with its CPU delegate) loads the file and runs it on two calibration images."""
    try:
        _run_file(flatbuffer, calibration[:2])
    except (RuntimeError, ValueError):
        return False
    return True


def is_package_mobilenet(model) -> bool:
    """True for a model built by `mobilenet_keras.MobileNetV1` (its layer names at the top level)."""
    names = {layer.name for layer in getattr(model, "layers", [])}
    return all(name in names for name in _MOBILENET_LAYERS)


def float32_model(model):
    """`model` itself, or for a mixed-precision Keras 3 model (trained under `mixed_float16` or `mixed_bfloat16`)
    a float32 copy with the same weights: TFLite's converter can't translate float16 or bfloat16 compute
    ("Could not translate MLIR to FlatBuffer"), and every mode starts from float32 weights anyway (mixed
    precision keeps its variables in float32)."""
    import keras

    if not isinstance(model, keras.Model):
        return model  # tf_keras (QAT) models are converted as they are
    policies = {str(getattr(getattr(layer, "dtype_policy", None), "name", "")) for layer in model.layers}
    if not any(name.startswith("mixed_") for name in policies):
        return model
    try:
        copy = model.__class__.from_config(_float32_policies(model.get_config()))
        copy.set_weights(model.get_weights())
    except Exception as exc:  # noqa: BLE001 - a custom class that can't be rebuilt from its config
        raise ValueError(f"{model.name} computes in mixed precision and could not be rebuilt in float32 for the "
                         f"converter ({type(exc).__name__}: {exc}); convert a float32 copy of it.") from None
    return copy


def _float32_policies(config):
    if isinstance(config, dict):
        inner = config.get("config")
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(inner, dict) \
                and str(inner.get("name", "")).startswith("mixed_"):
            return {**config, "config": {**inner, "name": "float32"}}
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def check_input_range(input_range) -> tuple[float, float]:
    """`input_range` as (low, high) floats, or a ValueError saying what it must be."""
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"input_range must be two numbers (low, high); got {input_range!r}.") from None
    if not (low <= 0 <= high and low < high) or not np.isfinite([low, high]).all():
        raise ValueError(f"input_range must be finite, hold 0 and have low < high; got {input_range}.")
    return low, high


def resolve_input_range(model, calibration: np.ndarray | None, input_range=None) -> tuple[float, float]:
    """The input range an integer file quantizes over (see `convert`), with a warning when the
    calibration images reach outside it (they would be clipped)."""
    if input_range is None:
        if is_package_mobilenet(model) or calibration is None:
            input_range = MOBILENET_INPUT_RANGE
        else:
            input_range = (min(float(calibration.min()), 0.0), max(float(calibration.max()), 0.0))
    low, high = check_input_range(input_range)
    if calibration is not None:
        seen_low, seen_high = float(calibration.min()), float(calibration.max())
        slack = 1e-6 * (high - low)
        if seen_low < low - slack or seen_high > high + slack:
            warnings.warn(f"calibration images reach [{seen_low:.4g}, {seen_high:.4g}], outside the input range "
                          f"[{low:.4g}, {high:.4g}] the file quantizes over: those values will be clipped (check "
                          "the images' preprocessing, or pass input_range).", stacklevel=3)
        elif (low, high) == MOBILENET_INPUT_RANGE and is_package_mobilenet(model):
            warn_if_unit_range(calibration, "calibration images", stacklevel=4)
    return (low, high)


# How many leading convolutions may stay in float: the stem and the first four blocks of MobileNet.
_PREFIX_STEPS = (0, 1, 3, 5, 7, 9)
# Where the search stopped, per (architecture, weights, calibration, settings, float or integer input): int8,
# uint8 and the Android file share one interior, so the pipeline's second and third integer files start
# their search where the first one stopped instead of converting every shorter prefix again.
_PREFIX_FOUND: dict[str, tuple[int, bool]] = {}  # fingerprint -> (prefix length, reached the target)
_PREFIX_FOUND_MAX = 16


def _prefix_key(model, calibration, *settings) -> str:
    """A fingerprint of the model's weights, the calibration images and the conversion settings."""
    import hashlib

    digest = hashlib.sha256(repr((settings, calibration.shape, str(calibration.dtype))).encode())
    try:
        architecture = model.to_json()  # layers, activations, shapes
    except Exception:  # noqa: BLE001 - a layer that can't serialize: its class, name and shapes instead
        architecture = repr([(type(layer).__name__, layer.name, getattr(layer, "output_shape", None))
                             for layer in model.layers])
    digest.update(architecture.encode())
    for weight in model.weights:
        digest.update(getattr(weight, "path", weight.name).encode())
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy())).tobytes())
    digest.update(np.ascontiguousarray(calibration).tobytes())
    return digest.hexdigest()


# Per fingerprint (`_prefix_key`): whether the fully integer file won (True) or lost (False) in this
# process, so that the uint8 and Android files of the same model make the same choice without the search.
_FULLY_INTEGER_WON: dict[str, bool] = {}


def _run_file(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    """The outputs of a converted (not yet written) file on `images`, through LiteRT."""
    from tflite.runtime import TFLiteModel

    with scratch_folder() as tmp:
        path = Path(tmp, "candidate.tflite")
        path.write_bytes(flatbuffer)
        return TFLiteModel(path).predict(images)


def _agreement(expected: np.ndarray, flatbuffer: bytes, calibration: np.ndarray) -> dict[str, float]:
    """`tflite.verify.compare` of the file's outputs on the calibration images with `expected`."""
    from tflite.verify import compare

    return compare(expected, _run_file(flatbuffer, calibration))


def _fully_integer_or_prefix(convert_every_step, float_prefix, expected: np.ndarray, calibration: np.ndarray,
                             target_agreement: float, verbose: bool, searched: str | None) -> bytes:
    """`denylist="auto"` for a MobileNet of this package: the fully integer file with every integer step
    (`convert_every_step`: dead channels, equalization, rounding by error, bias correction) when it
    reaches `target_agreement` on the calibration images, or when its SQNR there is at least that of
    the file `float_prefix()` picks; otherwise that float-prefix file.

    Why SQNR decides between two files that both miss or sit near the target: agreement on a few hundred
    images is a count of a handful of flips. On the CIFAR-10 benchmark model (89.9% accurate), when each
    layer was rounded on float inputs, the fully integer file agreed on 97.5% of the 200 calibration
    images at 22.1 dB, the file with the stem and block 1 in float on 99.0% at 27.3 dB; on 2,000 held-out
    images they agreed on 98.1% and 98.6%. Rounded on the file's own inputs, the fully integer file
    reaches 99.0% held out and `auto` keeps it (benchmarks/RESULTS.md, section quantization_quality_trained).
    """
    def measured(flatbuffer: bytes) -> dict[str, float] | None:
        try:
            return _agreement(expected, flatbuffer, calibration)
        except (RuntimeError, ValueError):  # e.g. a delegate that refuses to prepare the graph: not this file
            return None

    known = _FULLY_INTEGER_WON.get(searched) if searched is not None else None
    if known is not None:
        if known:  # still run it: the uint8 twin of a good int8 file is another graph for the delegate
            flatbuffer = convert_every_step()
            if measured(flatbuffer) is not None:
                return flatbuffer
        return float_prefix()[0]
    flatbuffer = convert_every_step()
    figures = measured(flatbuffer)
    if verbose:
        found = "can't be run" if figures is None else (
            f"top-1 agreement {figures['top1_agreement']:.2%}, SQNR {figures['sqnr_db']:.1f} dB "
            "on the calibration images")
        print(f"  fully integer (dead channels, equalization, rounding by error): {found}", file=sys.stderr)
    won = figures is not None and figures["top1_agreement"] >= target_agreement
    if not won:
        prefixed, prefix_sqnr = float_prefix()
        won = figures is not None and figures["sqnr_db"] >= prefix_sqnr
        if verbose:
            print(f"  {'fully integer' if won else 'float prefix'} kept (the higher SQNR)", file=sys.stderr)
        if not won:
            flatbuffer = prefixed
    _remember(_FULLY_INTEGER_WON, searched, won)
    return flatbuffer


def _with_float_prefix(model, calibration, convert_with, target_agreement: float, verbose: bool,
                       searched: str | None = None, expected: np.ndarray | None = None) -> tuple[bytes, float]:
    """Convert with the fewest leading convolutions in float that reach `target_agreement`: (the file,
    its SQNR in dB on the calibration images).

    The first layers see the raw image: their activations and high-gain BatchNorm-folded weights
    are where int8 loses most (see benchmarks/RESULTS.md). A float layer's output is still
    quantized before the next int8 layer, so the float part is kept contiguous from the input.
    Agreement is measured against the float model on the calibration images. `searched` (from
    `_prefix_key`: the model, calibration, settings and whether the input is float) starts from where
    an earlier conversion in this process stopped: the prefixes below it missed the target there, and
    when none reached it, only its best is converted again.
    """
    import keras

    convolutions = [layer.name for layer in model.layers
                    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if expected is None:
        expected = predict(model, calibration)
    best = None
    start, reached = _PREFIX_FOUND.get(searched, (0, True)) if searched else (0, True)
    for steps in _PREFIX_STEPS:
        if steps > len(convolutions):
            break
        if steps < start or (not reached and steps != start):
            continue  # known to miss the target, or (nothing reached it) not the best of the misses
        flatbuffer = convert_with(convolutions[:steps], progress=verbose and best is None)
        figures = _agreement(expected, flatbuffer, calibration)
        if verbose:
            print(f"  {steps} leading layer(s) in float: top-1 agreement {figures['top1_agreement']:.2%}, "
                  f"SQNR {figures['sqnr_db']:.1f} dB on the calibration images", file=sys.stderr)
        if figures["top1_agreement"] >= target_agreement:
            _remember_prefix(searched, steps, True)
            return flatbuffer, figures["sqnr_db"]
        # Short of the target, rank by SQNR: a few hundred images make agreement a noisy count.
        if best is None or figures["sqnr_db"] > best[0]:
            best = (figures["sqnr_db"], flatbuffer, steps)
    if best is None:  # nothing tried: the remembered start does not fit this model after all
        _PREFIX_FOUND.pop(searched, None)
        return _with_float_prefix(model, calibration, convert_with, target_agreement, verbose, expected=expected)
    _remember_prefix(searched, best[2], False)
    return best[1], best[0]


def _remember_prefix(searched: str | None, steps: int, reached: bool) -> None:
    _remember(_PREFIX_FOUND, searched, (steps, reached))


def _remember(memo: dict, searched: str | None, answer) -> None:
    """Keep `answer` for the fingerprint `searched` in `memo`, at most _PREFIX_FOUND_MAX of them; the first
    answer for a fingerprint stands, so the outcome does not depend on which file was converted first."""
    if searched is None or searched in memo:
        return
    if len(memo) >= _PREFIX_FOUND_MAX:
        memo.pop(next(iter(memo)))
    memo[searched] = answer


def model_converter(model, batch_size: int | None = 1):
    """A TFLiteConverter over `model`'s forward pass with its weights frozen in (builtin ops only).

    The converter freezes a concrete function of the call itself: a SavedModel written and read back
    for every file (`model.export` then `from_saved_model`) gave the same graph and outputs, and cost
    4-7x as long (benchmarks/RESULTS.md, "Converting from a concrete function").
    No `trackable_obj` is passed on purpose: with one, TensorFlow goes through a SavedModel of the
    function again, and Keras 3's variables came out unfrozen there (NaN outputs, an 88 KB file).
    TensorFlow 2.21 logs that the path without one is deprecated (`converter_notes_dropped` keeps that off
    the user's stderr); tests/test_tflite_convert.py compares every mode's file with the float model, so a
    TensorFlow that drops the path fails there first.
    The file gets its signature from `with_serving_signature`.
    """
    return _converter_and_output_names(model, batch_size)[0]


def _converter_and_output_names(model, batch_size: int | None):
    """`model_converter`'s converter, and the names of the file's outputs in the order the file holds them:
    a model with a dict of outputs (`mobilenet_keras.features.feature_extractor`) gives its keys, as a
    SavedModel's signature names them (TensorFlow flattens a dict in sorted key order), others
    `output_0`, `output_1`, ..."""
    import tensorflow as tf

    input_shape = tuple(model.input_shape[1:])
    signature = [tf.TensorSpec((batch_size, *input_shape), tf.float32, name="images")]
    forward = tf.function(lambda images: model(images, training=False), input_signature=signature)
    concrete = forward.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    structure = concrete.structured_outputs
    if isinstance(structure, dict):
        names = [str(key) for key in sorted(structure)]
    else:
        names = [f"output_{i}" for i in range(len(tf.nest.flatten(structure)))]
    return converter, names


# TensorFlow's notes about the way `model_converter` drives its converter, which ask nothing of the user: a
# warning when a graph (not a SavedModel) is calibrated for an integer file (the input's statistics come from
# calibration and the input range, `_set_input_range`), and an absl log line about the missing trackable_obj
# (left out on purpose: see `model_converter`).
INPUT_STATISTICS_NOTE = r"Statistics for quantized inputs were expected, but not specified"
TRACKABLE_OBJ_NOTE = "Please consider providing the trackable_obj argument"


class _DropNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TRACKABLE_OBJ_NOTE)


@contextlib.contextmanager
def converter_notes_dropped():
    """TensorFlow's two notes about how this package calls its converter (above) kept off the user's stderr while
    the block runs, unless TensorFlow's own lines were asked for (`mobilenet_keras.quiet.tensorflow_logs_shown`)."""
    if tensorflow_logs_shown():
        yield
        return
    absl, note = logging.getLogger("absl"), _DropNote()
    absl.addFilter(note)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=INPUT_STATISTICS_NOTE)
            yield
    finally:
        absl.removeFilter(note)


SIGNATURE_KEY = "serving_default"  # the signature a SavedModel's converter names; LiteRT's signature runner reads it


def with_serving_signature(flatbuffer: bytes, output_names: list[str] | None = None) -> bytes:
    """`flatbuffer` with the signature a SavedModel's conversion writes (`serving_default`: `images` in,
    `output_names` out, by default `output_0`, `output_1`, ...), so that `Interpreter.get_signature_runner()`
    and tools that read signatures find one; unchanged when it has a signature already."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = _read_model(flatbuffer)
    if model.signatureDefs:
        return flatbuffer
    graph = model.subgraphs[0]

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name.encode(), int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE_KEY.encode()
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map("images" if i == 0 else f"images_{i}", index)
                        for i, index in enumerate(graph.inputs)]
    if output_names is None or len(output_names) != len(graph.outputs):
        output_names = [f"output_{i}" for i in range(len(graph.outputs))]
    signature.outputs = [tensor_map(name, index) for name, index in zip(output_names, graph.outputs)]
    model.signatureDefs = [signature]
    return _write_model(model)


def calibration_generator(calibration: np.ndarray, verbose: bool = False):
    """The converter's representative_dataset over an array, one image per step, with a progress line."""
    total = len(calibration)

    def generate():
        for i in range(total):
            if verbose and (i % 10 == 0 or i == total - 1):
                print(f"\r  calibrating {i + 1}/{total}", end="" if i < total - 1 else "\n", file=sys.stderr,
                      flush=True)
            yield [calibration[i:i + 1]]

    return generate


def _float32(converter, tf, spec, calibration, input_range, denylist, layer_names, verbose) -> bytes:
    return converter.convert()


def _dynamic(converter, tf, spec, calibration, input_range, denylist, layer_names, verbose) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _float16(converter, tf, spec, calibration, input_range, denylist, layer_names, verbose) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _qat(converter, tf, spec, calibration, input_range, denylist, layer_names, verbose) -> bytes:
    # The model's fake-quantization nodes carry the trained ranges: no calibration.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = getattr(tf, spec.input_type)
    converter.inference_output_type = getattr(tf, spec.output_type)
    return converter.convert()


def _int16x8(converter, tf, spec, calibration, input_range, denylist, layer_names, verbose) -> bytes:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration_generator(calibration, verbose)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter.convert()


def _integer(converter, tf, spec, calibration, input_range, denylist, layer_names, verbose) -> bytes:
    # Calibrate, adjust the recorded ranges, then quantize: the same two steps the converter runs
    # internally, split so that the input range and the denylist apply.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration_generator(calibration, verbose)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # noqa: SLF001 - documented by QuantizationDebugger
    calibrated = converter.convert()
    if input_range is not None:
        calibrated = _set_input_range(calibrated, input_range)
    return _quantize(calibrated, spec, _denylisted_tensors(calibrated, denylist, layer_names))


# How each mode's `recipe` (tflite.modes) sets up TFLiteConverter.
RECIPES = {"float32": _float32, "dynamic": _dynamic, "float16": _float16, "qat": _qat, "int16x8": _int16x8,
           "integer": _integer}


def _convert_bytes(model, spec, input_shape, batch_size, calibration, denylist, input_range, verbose) -> bytes:
    import tensorflow as tf

    layer_names = {layer.name for layer in model.layers}
    # TensorFlow's converter logs a dozen lines per file: not the user's business
    with quiet_tensorflow(), converter_notes_dropped():
        converter, output_names = _converter_and_output_names(model, batch_size)
        flatbuffer = RECIPES[spec.recipe](converter, tf, spec, calibration, input_range, denylist, layer_names,
                                          verbose)
    return with_serving_signature(flatbuffer, output_names)


def _read_model(flatbuffer: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))


def _write_model(model_object) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_object))


def _set_input_range(calibrated: bytes, input_range: tuple[float, float]) -> bytes:
    low, high = input_range
    if not low <= 0 <= high or not low < high:
        raise ValueError(f"input_range must contain 0 (low <= 0 <= high, low < high); got {input_range}.")
    model = _read_model(calibrated)
    graph = model.subgraphs[0]
    for index in graph.inputs:
        quantization = graph.tensors[index].quantization
        if quantization is not None:
            quantization.min = [float(low)]
            quantization.max = [float(high)]
    return _write_model(model)


def _denylisted_tensors(calibrated: bytes, layers: list[str], layer_names: set[str]) -> list[str]:
    """Names of the op outputs that belong to the Keras layers in `layers`."""
    if not layers:
        return []
    graph = _read_model(calibrated).subgraphs[0]
    found: dict[str, list[str]] = {layer: [] for layer in layers}
    for op in graph.operators:
        for index in op.outputs:
            name = graph.tensors[index].name.decode()
            for layer in keras_layers_in(name, layer_names):
                if layer in found:
                    found[layer].append(name)
    missing = [layer for layer, names in found.items() if not names]
    if missing:
        raise ValueError(f"no TFLite op comes from layers {missing}; denylist convolution layers "
                         "(BatchNormalization and ReLU fold into them).")
    return sorted({name for names in found.values() for name in names})


def _quantize(calibrated: bytes, spec, denylisted_nodes: list[str]) -> bytes:
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    dtypes = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
    return tflite_convert.mlir_quantize(
        calibrated,
        disable_per_channel=False,
        input_data_type=dtypes[spec.input_type],
        output_data_type=dtypes[spec.output_type],
        denylisted_nodes=denylisted_nodes or None,
    )
