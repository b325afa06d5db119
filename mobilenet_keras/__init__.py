"""MobileNet V1 for Keras 3: the builder, its preprocessing and its multi-scale features.

The names below are imported on first use (PEP 562), so that `import mobilenet_keras` and the
command line's `--help` do not import Keras and TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from mobilenet_keras.quiet import install_import_filter

__version__ = "0.2.0"

install_import_filter()  # TensorFlow's start-up lines, when the package imports it (MOBILENET_KERAS_VERBOSE=1 shows)

_EXPORTS = {
    "Complexity": "mobilenet_keras.model_cost",
    "complexity": "mobilenet_keras.model_cost",
    "count_complexity": "mobilenet_keras.model_cost",
    "feature_extractor": "mobilenet_keras.features",
    "feature_layer_names": "mobilenet_keras.features",
    "MobileNetV1": "mobilenet_keras.model",
    "decode_predictions": "mobilenet_keras.preprocessing",
    "preprocess_input": "mobilenet_keras.preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mobilenet_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
