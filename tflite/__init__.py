"""Convert Keras MobileNets to TFLite in every quantization mode, and check each file against the float model.

    import tflite
    path = tflite.convert(model, "model_int8.tflite", "int8", representative_data="images/")
    report = tflite.verify(model, path, "validation_images/")
    assert report.passed, report.failures   # report.verdict: PASS, FAIL or INCONCLUSIVE (< 200 images)
"""

from tflite.converter import convert
from tflite.debug import LayerError, layer_errors
from tflite.modes import MODES, Mode, get_mode
from tflite.runtime import TFLiteModel
from tflite.latency import Latency
from tflite.verify import (DEFAULT_THRESHOLDS, MIN_VERDICT_IMAGES, Thresholds, VerificationReport, judge_outputs,
                           verify)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MIN_VERDICT_IMAGES",
    "MODES",
    "LayerError",
    "Latency",
    "Mode",
    "TFLiteModel",
    "Thresholds",
    "VerificationReport",
    "convert",
    "get_mode",
    "judge_outputs",
    "layer_errors",
    "verify",
]
