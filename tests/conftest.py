"""Shared fixtures: where the reference data lives, and small helpers to read it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mobilenet_keras.testing.reference_data import (  # noqa: F401 - re-exported for the tests
    CIFAR, DATA, IMAGES, LABELS, ROOT, TFLITE_REFERENCE, WEIGHTS_025, require)


@pytest.fixture(scope="session")
def weights_025() -> Path:
    return require(WEIGHTS_025)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The real photos as uint8 RGB arrays of their own sizes."""
    from PIL import Image

    folder = require(IMAGES)
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}:
            out[path.name] = np.asarray(Image.open(path).convert("RGB"))
    return out


def resize_batch(images, size: int) -> np.ndarray:
    """Resize uint8 RGB images to size x size and stack them as float32 0..255."""
    from PIL import Image

    return np.stack([
        np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.float32) for img in images
    ])


@pytest.fixture(scope="session")
def digits_pipeline_run(tmp_path_factory):
    """`mobilenet-keras pipeline --out RUN --quiet`, the default run as the README gives it, run once per
    session: (RUN, the finished process). Read-only for its users (copy what you change)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("digits_pipeline") / "run"
    result = subprocess.run([sys.executable, "-m", "mobilenet_keras", "pipeline", "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=1200)
    return out, result

