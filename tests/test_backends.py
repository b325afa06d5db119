"""The builder uses Keras layers only, so it runs on another backend (PyTorch here)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np, keras
from mobilenet_keras import MobileNetV1
assert keras.backend.backend() == "torch", keras.backend.backend()
model = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=7)
out = model.predict(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32"), verbose=0)
assert out.shape == (2, 7) and np.allclose(out.sum(axis=1), 1, atol=1e-5), out
print("ok", model.count_params())
"""


def test_builds_and_runs_on_the_torch_backend():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (it comes with the 'test' extra: pip install -e '.[test]')")
    env = dict(os.environ, KERAS_BACKEND="torch")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from mobilenet_keras import MobileNetV1

    expected = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=7).count_params()
    assert f"ok {expected}" in result.stdout
