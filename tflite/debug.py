"""Per-layer quantization error, to find the layers that an int8 file gets wrong."""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass

from mobilenet_keras.quiet import quiet_tensorflow
from tflite.names import keras_layers_in
from tflite.converter import calibration_generator, converter_notes_dropped, float32_model, model_converter
from tflite.representative import CALIBRATION_IMAGES, collect


@dataclass(frozen=True)
class LayerError:
    """Error of one quantized op's output against its float value, on the debug images."""

    layer: str  # the Keras layer it comes from (what `convert(..., denylist=[...])` takes)
    op: str
    tensor: str
    rmse_over_scale: float  # RMS error in units of the output's quantization step (about 0.29 is ideal)
    mean_abs_error: float
    max_abs_error: float
    scale: float


def _keras_layer(tensor_name: str, layer_names: set[str]) -> str:
    # Report the layer that holds the weights of a fused op: it is the one to denylist.
    found = keras_layers_in(tensor_name, layer_names)
    for name in found:
        if not name.endswith(("_bn", "_relu")):
            return name
    return found[0] if found else tensor_name


def layer_errors(model, representative_data, debug_data=None, num_calibration: int = CALIBRATION_IMAGES,
                 num_debug: int = 50, verbose: bool = False) -> list[LayerError]:
    """Quantize `model` to int8 and measure each op's output error, worst first.

    Uses `tf.lite.experimental.QuantizationDebugger`: the quantized model runs with the float value
    of each op's output beside its quantized one. An RMSE over scale well above 0.3 (the rounding
    error of a uniform quantizer) marks a layer that loses information; put the worst on
    `convert(..., denylist=[...])` to keep them in float (and verify that file with
    `verify(..., allow_float_ops=True)`: it no longer runs on integer-only accelerators).

    Args:
        model: the float Keras model.
        representative_data: calibration images (any form `tflite.representative.collect` takes).
        debug_data: images to measure on (defaults to the calibration images).
        num_calibration, num_debug: how many images of each to use.
    """
    import tensorflow as tf

    model = float32_model(model)
    input_shape = tuple(model.input_shape[1:])
    calibration = collect(representative_data, input_shape, limit=num_calibration)
    debug = calibration[:num_debug] if debug_data is None else collect(debug_data, input_shape, limit=num_debug)
    with warnings.catch_warnings(), quiet_tensorflow(), converter_notes_dropped():  # TensorFlow's and LiteRT's lines
        converter = model_converter(model, batch_size=1)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration_generator(calibration, verbose)
        # the debugger runs tf.lite.Interpreter inside, whose deprecation notice the caller can't act on
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=calibration_generator(debug))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layer_names = {layer.name for layer in model.layers}
    rows = []
    for record in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(record["scale"])
        mse = float(record["mean_squared_error"])
        rows.append(LayerError(
            layer=_keras_layer(record["tensor_name"], layer_names),
            op=record["op_name"],
            tensor=record["tensor_name"],
            rmse_over_scale=math.sqrt(mse) / scale if scale else math.inf,
            mean_abs_error=abs(float(record["mean_error"])),
            max_abs_error=float(record["max_abs_error"]),
            scale=scale,
        ))
    return sorted(rows, key=lambda row: row.rmse_over_scale, reverse=True)
