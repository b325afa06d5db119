"""The one place that imports tensorflow-model-optimization (tfmot).

Importing tfmot sets TF_USE_LEGACY_KERAS=1 for the whole process; `load_tfmot` restores it right
after, so Keras 3 code keeps working beside a QAT, pruning or clustering run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def load_tfmot() -> Iterator[tuple[ModuleType, ModuleType]]:
    """Yield `(tfmot, mobilenet_keras.optimize.qat_scheme)` without leaving TF_USE_LEGACY_KERAS changed."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot

        from mobilenet_keras.optimize import qat_scheme

        yield tfmot, qat_scheme
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
