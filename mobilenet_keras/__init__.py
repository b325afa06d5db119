"""MobileNet V1 for Keras 3: the builder, its preprocessing and its multi-scale features."""

from mobilenet_keras.complexity import Complexity, complexity, count_complexity
from mobilenet_keras.features import feature_extractor, feature_layer_names
from mobilenet_keras.model import MobileNetV1
from mobilenet_keras.preprocessing import decode_predictions, preprocess_input

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "MobileNetV1",
    "complexity",
    "count_complexity",
    "decode_predictions",
    "feature_extractor",
    "feature_layer_names",
    "preprocess_input",
]
