"""Convert Keras MobileNets to TFLite in every quantization mode, and check each file against the float model."""

from tflite.converter import convert
from tflite.modes import MODES, Mode, get_mode
from tflite.runtime import TFLiteModel

__all__ = ["MODES", "Mode", "TFLiteModel", "convert", "get_mode"]
